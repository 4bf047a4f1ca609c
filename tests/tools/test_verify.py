"""verify: CPU fp32 reference vs the patched model, on cpu and the simulated NPU (tiny configs)."""

from __future__ import annotations

import json

import pytest
import torch

from ascend_patch.tools.verify import VerifyResult, verify


def by_output(run: dict) -> dict[str, dict]:
    return {o["name"]: o for o in run["outputs"]}


def test_dinov2_on_sim_gelu_patch_buys_accuracy(cli):
    run = cli("verify", "dinov2", "--device", "sim", "--tiny", "--without", "gelu", "--json")
    assert run.code == 0, run.err
    data = json.loads(run.out)
    assert data["passed"] and data["device_type"] == "npu" and data["random_init"]
    full, no_gelu = data["runs"]
    assert full["label"] == "dinov2" and "gelu" in full["active"]
    assert no_gelu["without"] == ["gelu"] and "gelu" not in no_gelu["active"]
    assert full["stats"]["gelu"]["modules_routed"] == 6  # one GELU per layer of the tiny config
    for name in ("cls_token", "patch_tokens"):
        with_, without = by_output(full)[name], by_output(no_gelu)[name]
        assert with_["passed"] and with_["deterministic"] and without["deterministic"]
        assert with_["cosine_similarity"] > 0.99999
        assert with_["mean_relative_error"] < 1e-5
        # The simulator runs plain GELU as the tanh form, as aclnnGelu does: >10x the error.
        assert without["mean_relative_error"] > 10 * with_["mean_relative_error"]
        assert without["max_abs_diff"] > with_["max_abs_diff"]


def test_threshold_decides_pass_and_exit_code(cli):
    # Between the two errors: the recipe passes, the run without gelu fails.
    run = cli("verify", "dinov2", "--device", "sim", "--tiny", "--without", "gelu", "--threshold", "1e-5")
    assert run.code == 0, run.out
    lines = {tuple(line.split()[:3]): line for line in run.out.splitlines() if line.startswith(("cls", "patch"))}
    assert lines[("cls_token", "dinov2", "1.00000000")].endswith("PASS")
    assert next(line for key, line in lines.items() if key[1] == "without").endswith("FAIL")
    assert "verdict: PASS" in run.out and "GELU module(s) routed" in run.out
    failing = cli("verify", "dinov2", "--device", "sim", "--tiny", "--threshold", "1e-12")
    assert failing.code == 1 and "verdict: FAIL" in failing.out


@pytest.mark.parametrize("device", ["cpu", "sim"])
def test_mobilevit_logits_and_top1(cli, device):
    run = cli("verify", "mobilevit", "--device", device, "--tiny", "--batch-size", "2", "--markdown")
    assert run.code == 0, run.err
    assert "| output | run | cos sim |" in run.out
    row = next(line for line in run.out.splitlines() if line.startswith("| logits | mobilevit"))
    assert "100.0 %" in row and row.rstrip(" |").endswith("PASS")


def test_python_api_on_cpu_is_exact():
    result = verify("mobilevit", device="cpu", tiny=True, without=["all"])
    assert isinstance(result, VerifyResult) and result.passed
    assert [r.label for r in result.runs] == ["mobilevit", "without all patches"]
    logits = result.runs[0].outputs[0]
    assert logits.name == "logits" and logits.top1_agreement == 1.0
    assert logits.max_abs_diff == 0.0 and logits.cosine_similarity == pytest.approx(1.0)
    assert result.runs[1].active == []


def test_from_pretrained_folder_and_image(tmp_path, cli):
    from PIL import Image

    from ascend_patch.tools.models import get_spec

    spec = get_spec("dinov2")
    spec.build(tiny=True).model.save_pretrained(tmp_path / "ckpt")  # a local weights folder
    pixels = (torch.rand(90, 120, 3, generator=torch.Generator().manual_seed(0)) * 255).to(torch.uint8)
    Image.fromarray(pixels.numpy()).save(tmp_path / "cat.png")
    run = cli("verify", "dinov2", "--device", "sim", "--model-path", tmp_path / "ckpt", "--image",
              tmp_path / "cat.png", "--json")  # fmt: skip
    assert run.code == 0, run.err
    data = json.loads(run.out)
    assert data["model"].startswith("Dinov2Model.from_pretrained(") and not data["random_init"]
    assert data["input"].endswith("cat.png")
    assert by_output(data["runs"][0])["patch_tokens"]["mean_relative_error"] < 1e-5


def test_bf16_run_is_compared_in_fp32():
    result = verify("dinov2", device="cpu", dtype="bf16", tiny=True)
    cls = result.runs[0].outputs[0]
    assert result.dtype == "bf16"
    assert 1e-4 < cls.mean_relative_error < 0.05  # bf16 rounding shows; nothing is broken
