"""The fixture package's CUDA script body (.cuda(), device="cuda", CUDA events, memory queries)
runs unmodified on cpu and the simulated NPU; the report lists its call sites by file:line."""

from __future__ import annotations

import importlib
import sys

import torch

import ascend_patch
import cuda_research_reference as reference
from conftest import device_of


def test_script_runs_unmodified_matches_the_reference_and_is_logged(target):
    device = device_of(target)
    try:
        with ascend_patch.patched(device=target, fp32_autocast="fp32"):
            run = importlib.import_module("cuda_research.run")
            result = run.main()
            report = ascend_patch.report()
        model = importlib.import_module("cuda_research").TinyViT().eval()
    finally:
        for name in [n for n in sys.modules if n.split(".")[0] == "cuda_research"]:
            del sys.modules[name]
    assert result["device"].startswith(device)
    assert result["elapsed_ms"] >= 0 and result["peak_bytes"] >= 0
    model.load_state_dict(result["state_dict"])
    with torch.no_grad():
        expected = reference.forward(model, result["images"], result["keep"])
    for key in ("cls", "logits"):  # padded sequences: compare what the kept tokens determine
        torch.testing.assert_close(result["outputs"][key], expected[key], rtol=1e-5, atol=1e-5)

    sites = {(r.patch, r.target, r.where) for r in report.filter(action="call")}
    script = "cuda_research/run.py:"
    for patch, api in [("device", "Module.cuda"), ("device", "Tensor.cuda"), ("device", "torch.ones"),
                       ("device", "torch.zeros"), ("device", "Tensor.to"), ("seed", "torch.cuda.manual_seed_all")]:
        assert any(p == patch and a == api and "cuda_research/" in w for p, a, w in sites), (patch, api)
    assert any(p == "attention" and w.startswith("tests/fixtures/cuda_research/layers.py:") for p, _, w in sites)
    assert sum(script in w for _, _, w in sites) >= 5
