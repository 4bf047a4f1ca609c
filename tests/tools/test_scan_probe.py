"""scan's verdicts are the runtime's truth: each probe line's verdict, and each "handled" line run under apply().

tests/fixtures/scan/probe.py holds one construct per line with the verdict it must get. Every line
scan calls handled is then run in-process under ``ascend_patch.patched(device=...)`` on the CPU
and on the simulated NPU, so a "handled" the patches do not honour fails here.
"""

from __future__ import annotations

import re
import socket
from pathlib import Path

import pytest

import ascend_patch
from ascend_patch.tools.scan import scan

PROBE = Path(__file__).parents[1] / "fixtures" / "scan" / "probe.py"
LINES = PROBE.read_text().splitlines()
START = LINES.index("# -- probes") + 1  # lines before it are the setup every probe runs after
EXPECT = {n: set(m.group(1).split(",")) for n, line in enumerate(LINES, 1) if (m := re.search(r"# expect: ([\w,]+)", line))}
RESULT = scan(PROBE)  # before any patch is applied: verdicts are read from unpatched torch
BY_LINE: dict[int, list] = {}
for _finding in RESULT.findings:
    BY_LINE.setdefault(_finding.line, []).append(_finding)
HANDLED_LINES = sorted(n for n, found in BY_LINE.items() if all(f.handled for f in found))


def test_every_probe_line_gets_its_verdict():
    assert len(EXPECT) >= 40 and not RESULT.errors
    wrong = {}
    for n, expected in EXPECT.items():
        got = {f.patch for f in BY_LINE.get(n, [])} or {"none"}
        if got != expected:
            wrong[n] = (LINES[n - 1], expected, sorted(got))
    assert not wrong, wrong
    unexpected = {n: [f.construct for f in found] for n, found in BY_LINE.items() if n not in EXPECT}
    assert not unexpected, f"findings on lines that expect none: {unexpected}"


def test_unhandled_findings_say_what_to_do():
    notes = {LINES[f.line - 1].split("  #")[0]: f.note for f in RESULT.unhandled}
    assert all(notes.values()), notes
    assert "torch.npu.matmul.allow_hf32" in notes["torch.backends.cuda.matmul.allow_tf32 = True"]
    assert "torch.npu.conv.allow_hf32" in notes["torch.set_float32_matmul_precision(\"high\")"]
    assert "ASCEND_RT_VISIBLE_DEVICES" in notes['os.environ["CUDA_VISIBLE_DEVICES"] = "0"']
    assert "npu-smi" in notes['subprocess.run(["nvidia-smi", "--query-gpu=memory.used", "--format=csv"])']
    assert "cross_entropy" in notes["from xformers.ops import cross_entropy"]
    assert "flash_attn.ops" in notes["from flash_attn.ops.layer_norm import dropout_add_layer_norm"]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _run(code: str, target: str) -> None:
    setup = "\n".join(LINES[:START - 1])
    with ascend_patch.patched(device=target, log="off"):
        if "FullyShardedDataParallel(" in code:  # FSDP needs a process group (one rank, mapped backend)
            import torch.distributed as dist

            dist.init_process_group("nccl", init_method=f"tcp://127.0.0.1:{_free_port()}", rank=0, world_size=1)
            try:
                exec(compile(f"{setup}\n{code}", str(PROBE), "exec"), {})  # noqa: S102 - the probe's own line
            finally:
                dist.destroy_process_group()
        else:
            exec(compile(f"{setup}\n{code}", str(PROBE), "exec"), {})  # noqa: S102 - the probe's own line


@pytest.mark.parametrize("line", HANDLED_LINES, ids=lambda n: f"line{n}")
def test_every_handled_construct_runs_under_apply(line, target):
    code = LINES[line - 1]
    if code.startswith("try:"):  # with its except line
        code += "\n" + LINES[line]
    _run(code, target)


def test_unhandled_shim_imports_really_fail(target):
    """The other direction, for the imports: what scan calls missing from the shims fails under apply()."""
    imports = [n for n, found in BY_LINE.items()
               if any(f.construct.split(" ")[1].startswith(("flash_attn", "xformers")) and not f.handled
                      for f in found if f.construct.startswith(("import ", "from ")))]  # fmt: skip
    assert len(imports) == 5
    for n in imports:
        with pytest.raises(ImportError):
            _run(LINES[n - 1], target)
