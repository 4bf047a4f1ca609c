"""list, doctor, and bad input: one line on stderr, exit code 2, no traceback."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

import ascend_patch


def real_torch_npu() -> bool:
    # Not find_spec: in this process torch_npu may be the simulated module.
    from importlib import metadata

    try:
        metadata.version("torch_npu")
    except metadata.PackageNotFoundError:
        return False
    return True


def test_list(cli):
    run = cli("list")
    assert run.code == 0
    for name in [*ascend_patch.list_patches(), "dinov2", "mobilevit"]:
        assert f"  {name} " in run.out
    data = json.loads(cli("list", "--json").out)
    assert data["recipes"] == ascend_patch.list_recipes() and "gelu" in data["patches"]


def test_doctor_on_sim(cli):
    run = cli("doctor", "--device", "sim", "--json")
    assert run.code == 0
    data = json.loads(run.out)
    assert data["versions"]["torch"] and data["versions"]["transformers"]
    assert data["torch_npu"].startswith("simulated") and data["device"] == "sim"
    assert "bfloat16" in data["autocast_dtypes"] and "float32" not in data["autocast_dtypes"]
    status = {p["name"]: p["status"] for p in data["patches"]}
    assert status["gelu"] == "applies" and status["dinov2"] == "applies"
    topics = {p["topic"] for p in data["pitfalls"]}
    assert {"TORCH_NPU_USE_COMPATIBLE_IMPL", "fp32 autocast"} <= topics


def test_doctor_on_cpu_text(cli):
    run = cli("doctor", "--device", "cpu")
    assert run.code == 0
    assert "target        cpu" in run.out and "known pitfalls:" in run.out


def test_doctor_probes_a_broken_torch_npu_in_a_child_process(tmp_path, monkeypatch):
    """A torch_npu that cannot load CANN must not be imported by doctor itself."""
    from ascend_patch.tools.doctor import _torch_npu_state

    fake = tmp_path / "torch_npu"
    fake.mkdir()
    (fake / "__init__.py").write_text("raise ImportError('libascendcl.so: cannot open shared object file')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv("PYTHONPATH", str(tmp_path))
    monkeypatch.delitem(sys.modules, "torch_npu", raising=False)  # the simulated one, restored after
    state, importable = _torch_npu_state()
    assert not importable and "libascendcl.so" in state
    assert "torch_npu" not in sys.modules


@pytest.mark.parametrize(
    "argv, message",
    [
        (["verify", "dinov2", "--tiny", "--image", "/no/such.png"], "--image '/no/such.png' does not exist"),
        (["verify", "dinov2", "--model-path", "/no/such/dir"], "is not a directory"),
        (["verify", "dinov2", "--tiny", "--without", "flash"], "not a patch of recipe 'dinov2'"),
        pytest.param(["verify", "dinov2", "--tiny", "--device", "cuda"], "torch.cuda.is_available() is False",
                     marks=pytest.mark.skipif("__import__('torch').cuda.is_available()")),
        (["verify", "dinov2", "--tiny", "--device", "tpu"], "unknown device 'tpu'"),
        (["verify", "dinov2", "--tiny", "--threshold", "0"], "must be > 0"),
        (["bench", "dinov2", "--tiny", "--batch-sizes", "1", "0"], "'0' must be >= 1"),
        (["bench", "dinov2", "--tiny", "--batch-sizes", "two"], "'two' is not an integer"),
        (["bench", "dinov2", "--tiny", "--plot", "out.jpg"], "name it *.png"),
        (["scan", "/no/such/repo"], "'/no/such/repo' does not exist"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(cli, argv, message):
    run = cli(*argv)
    assert run.code == 2
    lines = run.err.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], run.err
    assert "Traceback" not in run.err and run.out == ""


@pytest.mark.parametrize(
    "argv, message",
    [
        (["verify", "mobilevitt"],
         "unknown recipe 'mobilevitt'. Did you mean 'mobilevit'? Known: "),
        # A fresh process has no simulated NPU (tests in this one may have installed it).
        pytest.param(["bench", "mobilevit", "--tiny", "--device", "npu"], "device 'npu' requested but no NPU",
                     marks=pytest.mark.skipif(real_torch_npu(), reason="a real torch_npu is installed")),
    ],
)
def test_entry_point_in_a_fresh_process(argv, message):
    proc = subprocess.run(
        [sys.executable, "-m", "ascend_patch.tools.cli", *argv],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], proc.stderr


def test_version_and_help_import_no_torch():
    """``--help`` and ``--version`` answer at once: nothing behind them imports torch."""
    code = (
        "import sys\n"
        "from ascend_patch.tools.cli import main\n"
        "codes = [main([*argv, '--help']) for argv in ([], ['verify'], ['bench'], ['run'], ['scan'], ['doctor'])]\n"
        "codes.append(main(['--version']))\n"
        "print('torch' in sys.modules, codes, file=sys.stderr)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False)
    assert proc.stderr.strip().splitlines()[-1] == "False [0, 0, 0, 0, 0, 0, 0]", proc.stderr
    assert f"ascend-patch {ascend_patch.__version__}\n" in proc.stdout


def test_every_option_has_help_text():
    import argparse

    from ascend_patch.tools.cli import build_parser

    def parsers(parser: argparse.ArgumentParser):
        yield parser
        for action in parser._actions:  # argparse exposes subcommands only through its actions
            if isinstance(action, argparse._SubParsersAction):
                for sub in action.choices.values():
                    yield from parsers(sub)

    missing = [(p.prog, a.dest) for p in parsers(build_parser()) for a in p._actions
               if not a.help and not isinstance(a, argparse._SubParsersAction)]
    assert missing == []


def test_each_finished_phase_is_a_line_on_stderr_unless_quiet(cli):
    """Off a terminal (here) too: a full-size build or reference run is not minutes of silence."""
    run = cli("verify", "dinov2", "--tiny", "--device", "cpu")
    assert run.code == 0
    lines = run.err.splitlines()
    assert lines[0].startswith("ascend_patch: verify dinov2: built random-init tiny config") and " s" in lines[0]
    assert lines[1].startswith("ascend_patch: verify dinov2: reference (CPU fp32 unpatched) in ")
    assert lines[2].startswith("ascend_patch: verify dinov2: run 'dinov2' on cpu in ")
    assert cli("-q", "verify", "dinov2", "--tiny", "--device", "cpu").err == ""
    timed = cli("bench", "dinov2", "--tiny", "--device", "cpu", "--batch-sizes", "1", "--iters", "3")
    # The default warmup is at most --iters.
    assert timed.code == 0 and "ascend_patch: bench dinov2: batch 1: 3 + 3 iterations, p50 " in timed.err
