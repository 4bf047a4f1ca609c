"""Hostile input to the Python API and to every CLI command (issue 14): one error naming the argument
and the fix, exit code 2 and one line on stderr for the CLI, and nothing done - no patch active, the
journal empty, the RNGs, the environment, ``sys.path`` and ``sys.argv`` as they were.

Each table row is one bad input. A CLI row runs in-process (``cli`` fixture) unless it is marked
``fresh``: then ``python -m ascend_patch`` runs it, so a traceback would reach the terminal.
"""

from __future__ import annotations

import json
import os
import random
import re
import subprocess
import sys
from collections.abc import Callable
from typing import Any

import pytest
import torch

import ascend_patch
from ascend_patch.engine import JOURNAL
from ascend_patch.engine.device import DeviceNotAvailable
from ascend_patch.tools.errors import InputError

TINY = {"tiny": True, "device": "cpu"}  # a verify / bench that got past its checks would build in seconds


def rng_state() -> tuple[Any, ...]:
    try:
        import numpy
    except ImportError:
        numpy_state: Any = None
    else:
        numpy_state = [s.tolist() if hasattr(s, "tolist") else s for s in numpy.random.get_state()]
    return random.getstate(), torch.random.get_rng_state().tolist(), numpy_state


def nothing_patched() -> None:
    assert ascend_patch.active() == []
    assert len(JOURNAL) == 0


# -- the Python API -------------------------------------------------------------------------------


def enter_patched(*names: Any, **options: Any) -> None:
    with ascend_patch.patched(*names, **options):
        pass


def doctor(device: str) -> Any:
    from ascend_patch.tools.doctor import doctor as run_doctor

    return run_doctor(device)


def scan(path: str) -> Any:
    from ascend_patch.tools.scan import scan as run_scan

    return run_scan(path)


def api(what: str, call: Callable[[], Any], error: type[BaseException], says: str, *,
        env: dict[str, str] | None = None, marks: Any = ()) -> Any:
    return pytest.param(call, error, says, env or {}, id=what, marks=marks)


API_ROWS = [
    api("apply(None)", lambda: ascend_patch.apply(None), TypeError,
        "apply() takes patch and recipe names as separate strings, e.g. apply('dinov2') or apply(); got None"),
    api("apply(3)", lambda: ascend_patch.apply(3), TypeError,
        "apply() takes patch and recipe names as separate strings, e.g. apply('dinov2') or apply(); got 3"),
    api("apply(['gelu'])", lambda: ascend_patch.apply(["gelu"]), TypeError,
        "as separate strings, e.g. apply('gelu', 'seed'); got ['gelu']"),
    api("apply('nope')", lambda: ascend_patch.apply("nope"), ValueError,
        "unknown patch or recipe 'nope'. Known: aimv2, attention, autocast, device, dinov2, "),
    api("apply('gelv')", lambda: ascend_patch.apply("gelv", device="cpu"), ValueError,
        "unknown patch or recipe 'gelv'. Did you mean 'gelu'? Known: "),
    api("apply('gelu', nope=1)", lambda: ascend_patch.apply("gelu", device="cpu", nope=1), ValueError,
        "unknown option 'nope'. Options of this call: none"),
    api("apply('gelu', fp32_autocast='fp32')", lambda: ascend_patch.apply("gelu", device="cpu", fp32_autocast="fp32"),
        ValueError, "fp32_autocast is an option of the fp32_autocast patch, which is not in this apply() call: add "
        "'fp32_autocast' to the names"),
    api("apply('fp32_autocast', fp32_autocast='fp64')",
        lambda: ascend_patch.apply("fp32_autocast", device="cpu", fp32_autocast="fp64"), ValueError,
        "fp32_autocast='fp64' is not valid for patch 'fp32_autocast': choose one of 'fp32', 'bf16', 'auto', 'off'"),
    api("apply(device=1)", lambda: ascend_patch.apply(device=1), ValueError,
        "device=1: give a device name (auto, npu, cuda, cpu, sim), e.g. device='npu'"),
    api("apply(device=0)", lambda: ascend_patch.apply(device=0), ValueError,
        "device=0: give a device name (auto, npu, cuda, cpu, sim), e.g. device='npu'"),
    api("apply(device='')", lambda: ascend_patch.apply(device=""), ValueError,
        "device='': give a device name (auto, npu, cuda, cpu, sim), e.g. device='npu'"),
    api("apply(device=True)", lambda: ascend_patch.apply(device=True), ValueError, "device=True: give a device name"),
    api("apply(device='tpu')", lambda: ascend_patch.apply(device="tpu"), ValueError,
        "unknown device 'tpu': choose one of auto, npu, cuda, cpu, sim"),
    api("apply(device='npu:x')", lambda: ascend_patch.apply(device="npu:x"), ValueError,
        "device='npu:x': a device index is a whole number >= 0: give 'npu' or 'npu:N'"),
    api("apply(device='cpu:0')", lambda: ascend_patch.apply(device="cpu:0"), ValueError,
        "device='cpu:0': only npu and sim take a device index"),
    pytest.param(lambda: ascend_patch.apply("gelu", device="cuda"), DeviceNotAvailable,
                 "device 'cuda' requested but torch.cuda.is_available() is False; use 'cpu' or 'sim'", {},
                 id="apply(device='cuda') without CUDA",
                 marks=pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")),
    api("apply(log='loud')", lambda: ascend_patch.apply(device="cpu", log="loud"), ValueError,
        "log='loud' is not a log level: choose one of off, summary, detail"),
    api("patched(None)", lambda: enter_patched(None), TypeError,
        "patched() takes patch and recipe names as separate strings, e.g. patched('dinov2') or patched(); got None"),
    api("patched('gelu', device='tpu')", lambda: enter_patched("gelu", device="tpu"), ValueError,
        "unknown device 'tpu': choose one of"),
    api("revert('nope')", lambda: ascend_patch.revert("nope"), ValueError, "unknown patch or recipe 'nope'. Known: "),
    api("revert('gelv')", lambda: ascend_patch.revert("gelv"), ValueError,
        "unknown patch or recipe 'gelv'. Did you mean 'gelu'?"),
    api("revert(None)", lambda: ascend_patch.revert(None), TypeError,
        "revert() takes patch and recipe names as separate strings, e.g. revert('dinov2') or revert(); got None"),
    api("seed_everything('abc')", lambda: ascend_patch.seed_everything("abc"), TypeError,
        "seed_everything(seed): seed must be an int, got 'abc'"),
    api("seed_everything(1.5)", lambda: ascend_patch.seed_everything(1.5), TypeError, "seed must be an int, got 1.5"),
    api("seed_everything(True)", lambda: ascend_patch.seed_everything(True), TypeError,
        "seed must be an int, got True"),
    api("seed_everything(2**64)", lambda: ascend_patch.seed_everything(2**64), ValueError,
        "seed_everything(seed): seed must be in 0 .. 2**64 - 1, got 18446744073709551616"),
    api("seed_everything(-1)", lambda: ascend_patch.seed_everything(-1), ValueError, "seed must be in 0 .. 2**64 - 1"),
    api("ASCEND_PATCH_SIMULATE_NPU=maybe", lambda: ascend_patch.apply(), ValueError,
        "ASCEND_PATCH_SIMULATE_NPU='maybe' is not a switch: set it to one of 1, true, yes, on or 0, false, no, off",
        env={"ASCEND_PATCH_SIMULATE_NPU": "maybe"}),
    api("ASCEND_PATCH_DEVICE=tpu", lambda: ascend_patch.apply(), ValueError,
        "unknown device ASCEND_PATCH_DEVICE='tpu': choose one of auto, npu, cuda, cpu, sim",
        env={"ASCEND_PATCH_DEVICE": "tpu"}),
    api("ASCEND_PATCH_DEVICE=npu:x", lambda: ascend_patch.apply(), ValueError,
        "ASCEND_PATCH_DEVICE='npu:x': a device index is a whole number >= 0", env={"ASCEND_PATCH_DEVICE": "npu:x"}),
    api("ASCEND_PATCH_LOG=loud", lambda: ascend_patch.apply(device="cpu"), ValueError,
        "ASCEND_PATCH_LOG='loud' is not a log level: choose one of off, summary, detail",
        env={"ASCEND_PATCH_LOG": "loud"}),
    # The tools (verify, bench, doctor, scan) raise InputError: the CLI's one line, exit 2.
    api("verify(threshold='abc')", lambda: ascend_patch.verify("dinov2", threshold="abc", **TINY), InputError,
        "--threshold must be a finite number > 0 (0.01 = 1 %), got 'abc'"),
    api("verify(threshold=0)", lambda: ascend_patch.verify("dinov2", threshold=0, **TINY), InputError,
        "--threshold must be a finite number > 0 (0.01 = 1 %), got 0"),
    api("verify(threshold=-1)", lambda: ascend_patch.verify("dinov2", threshold=-1, **TINY), InputError,
        "--threshold must be a finite number > 0 (0.01 = 1 %), got -1"),
    api("verify(threshold=True)", lambda: ascend_patch.verify("dinov2", threshold=True, **TINY), InputError,
        "--threshold must be a finite number > 0 (0.01 = 1 %), got True"),
    api("verify(threshold=inf)", lambda: ascend_patch.verify("dinov2", threshold=float("inf"), **TINY), InputError,
        "--threshold must be a finite number > 0 (0.01 = 1 %), got inf"),
    api("verify('dinov3')", lambda: ascend_patch.verify("dinov3", **TINY), InputError,
        "unknown recipe 'dinov3'. Did you mean 'dinov2'? Known: aimv2, dinov2, mingtok, mobilevit, vtp; or give a "
        "model folder"),
    api("verify('no_such_model_xyz')", lambda: ascend_patch.verify("no_such_model_xyz", device="cpu"), InputError,
        "'no_such_model_xyz' is not a folder, a recipe, or a model in the local Hugging Face cache"),
    api("verify()", lambda: ascend_patch.verify(device="cpu"), InputError,
        "nothing to run: give a recipe, a model folder, or --factory MODULE:FUNCTION"),
    api("verify(batch_size=0)", lambda: ascend_patch.verify("dinov2", batch_size=0, **TINY), InputError,
        "--batch-size must be an integer >= 1, got 0"),
    api("verify(seed='abc')", lambda: ascend_patch.verify("dinov2", seed="abc", **TINY), InputError,
        "--seed must be an integer, got 'abc'"),
    api("verify(dtype='fp64')", lambda: ascend_patch.verify("dinov2", dtype="fp64", **TINY), InputError,
        "unknown dtype 'fp64': choose one of fp32, bf16, fp16"),
    api("verify(device='tpu')", lambda: ascend_patch.verify("dinov2", tiny=True, device="tpu"), InputError,
        "unknown device 'tpu': choose one of auto, npu, cuda, cpu, sim"),
    api("verify(without=3)", lambda: ascend_patch.verify("dinov2", without=3, **TINY), InputError,
        "--without takes patch names, e.g. without=['gelu'] or without='gelu,seed'; got 3"),
    api("verify(without='flash')", lambda: ascend_patch.verify("dinov2", without="flash", **TINY), InputError,
        "--without 'flash': not a patch of recipe 'dinov2' (its patches: gelu, seed, "),
    api("bench(batch_sizes=[1, 0])", lambda: ascend_patch.bench("dinov2", batch_sizes=[1, 0], **TINY), InputError,
        "--batch-sizes must be a list of integers >= 1, e.g. batch_sizes=(1, 8), got [1, 0]"),
    api("bench(batch_sizes=[])", lambda: ascend_patch.bench("dinov2", batch_sizes=[], **TINY), InputError,
        "--batch-sizes must be a list of integers >= 1, e.g. batch_sizes=(1, 8), got []"),
    api("bench(batch_sizes=4)", lambda: ascend_patch.bench("dinov2", batch_sizes=4, **TINY), InputError,
        "--batch-sizes must be a list of integers >= 1, e.g. batch_sizes=(1, 8), got 4"),
    api("bench(batch_sizes='1 2')", lambda: ascend_patch.bench("dinov2", batch_sizes="1 2", **TINY), InputError,
        "--batch-sizes must be a list of integers >= 1, e.g. batch_sizes=(1, 8), got '1 2'"),
    api("bench(batch_sizes=[1.5])", lambda: ascend_patch.bench("dinov2", batch_sizes=[1.5], **TINY), InputError,
        "--batch-sizes must be a list of integers >= 1, e.g. batch_sizes=(1, 8), got [1.5]"),
    api("bench(iters=0)", lambda: ascend_patch.bench("dinov2", iters=0, **TINY), InputError,
        "--iters must be an integer >= 1, got 0"),
    api("bench(iters='abc')", lambda: ascend_patch.bench("dinov2", iters="abc", **TINY), InputError,
        "--iters must be an integer >= 1, got 'abc'"),
    api("bench(warmup=-1)", lambda: ascend_patch.bench("dinov2", warmup=-1, **TINY), InputError,
        "--warmup must be an integer >= 0 (or None: min(10, iters)), got -1"),
    api("bench(warmup=0.5)", lambda: ascend_patch.bench("dinov2", warmup=0.5, **TINY), InputError,
        "--warmup must be an integer >= 0 (or None: min(10, iters)), got 0.5"),
    api("bench(plot='out.jpg')", lambda: ascend_patch.bench("dinov2", plot="out.jpg", **TINY), InputError,
        "--plot 'out.jpg': the plot is written as PNG; name it *.png"),
    api("bench('dinov3')", lambda: ascend_patch.bench("dinov3", **TINY), InputError,
        "unknown recipe 'dinov3'. Did you mean 'dinov2'?"),
    api("doctor('tpu')", lambda: doctor("tpu"), InputError,
        "--device: unknown device 'tpu': choose one of auto, npu, cuda, cpu, sim"),
    api("scan('/no/such/repo')", lambda: scan("/no/such/repo"), FileNotFoundError, "'/no/such/repo' does not exist"),
]  # fmt: skip


@pytest.mark.parametrize(("call", "error", "says", "env"), API_ROWS)
def test_api_bad_input_is_one_line_naming_the_fix_and_does_nothing(monkeypatch, call, error, says, env):
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    rngs = rng_state()
    with pytest.raises(error) as info:
        call()
    message = str(info.value)
    assert type(info.value) is error, f"{type(info.value).__name__}: {message}"
    assert "\n" not in message.strip() and says in message, message
    nothing_patched()
    assert rng_state() == rngs


# -- the command line -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def paths(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """What the rows name: a script, a file that is no image, broken --model-path folders, ..."""
    root = tmp_path_factory.mktemp("bad_input")
    (root / "ok.py").write_text("print('ran')\n")
    (root / "notes.txt").write_text("not an image\n")
    (root / "plot.png").mkdir()  # a folder where the plot would go: not writable as a file
    config = {"model_type": "dinov2", "architectures": ["Dinov2Model"], "hidden_size": 32, "num_hidden_layers": 1,
              "num_attention_heads": 2, "patch_size": 14, "image_size": 28}  # fmt: skip
    for name in ("noconfig", "badjson", "truncated"):
        (root / name).mkdir()
    (root / "noconfig" / "model.safetensors").write_bytes(b"")
    (root / "badjson" / "config.json").write_text("{not json")
    (root / "truncated" / "config.json").write_text(json.dumps(config))
    # A safetensors header that announces 64 bytes of JSON and holds one: an interrupted download.
    (root / "truncated" / "model.safetensors").write_bytes((64).to_bytes(8, "little") + b"{")
    return {"tmp": str(root), **{p.stem: str(p) for p in root.iterdir()}}


def cli_row(*argv: str, says: str, fresh: bool = False, marks: Any = ()) -> Any:
    return pytest.param(list(argv), says, fresh, id=("fresh: " if fresh else "") + " ".join(argv), marks=marks)


CLI_ROWS = [
    # ascend-patch itself
    cli_row(says="error: the following arguments are required: COMMAND (see --help)"),
    cli_row("frobnicate", says="argument COMMAND: invalid choice: 'frobnicate' (choose from 'scan', 'verify', "),
    cli_row("--nope", "list", says="unrecognized arguments: --nope (see --help)"),
    # scan
    cli_row("scan", says="the following arguments are required: path (see --help)"),
    cli_row("scan", "--nope", "{tmp}", says="unrecognized arguments: --nope"),
    cli_row("scan", "{tmp}/missing", says="scan: error: '{tmp}/missing' does not exist"),
    cli_row("scan", "{tmp}/missing", says="scan: error: '{tmp}/missing' does not exist", fresh=True),
    cli_row("scan", "{tmp}", "--json", "--csv", says="argument --csv: not allowed with argument --json"),
    # verify
    cli_row("verify", "dinov2", "--tiny", "--nope", says="unrecognized arguments: --nope"),
    cli_row("verify", says="verify: error: nothing to run: give a recipe, a model folder, or --factory MODULE:"),
    cli_row("verify", "dinov3", "--tiny", says="unknown recipe 'dinov3'. Did you mean 'dinov2'? Known: "),
    cli_row("verify", "dinov2", "--tiny", "--device", "npu:x",
            says="device='npu:x': a device index is a whole number >= 0: give 'npu' or 'npu:N'"),
    cli_row("verify", "dinov2", "--tiny", "--dtype", "fp64", says="unknown dtype 'fp64': choose one of fp32, bf16, "),
    cli_row("verify", "dinov2", "--tiny", "--threshold", "abc", says="argument --threshold: 'abc' is not a number"),
    cli_row("verify", "dinov2", "--tiny", "--threshold", "inf", says="argument --threshold: 'inf' is not a finite "),
    cli_row("verify", "dinov2", "--tiny", "--threshold", "nan", says="argument --threshold: 'nan' is not a finite "),
    cli_row("verify", "dinov2", "--tiny", "--batch-size", "0", says="argument --batch-size: '0' must be >= 1"),
    cli_row("verify", "dinov2", "--tiny", "--seed", "abc", says="argument --seed: invalid int value: 'abc'"),
    cli_row("verify", "dinov2", "--tiny", "--image", says="argument --image: expected one argument"),
    cli_row("verify", "dinov2", "--tiny", "--image", "{tmp}", says="--image '{tmp}' is a folder: give one image file"),
    cli_row("verify", "dinov2", "--tiny", "--image", "{notes}", says="--image '{notes}' is not an image PIL can read"),
    cli_row("verify", "dinov2", "--tiny", "--without", says="argument --without: expected at least one argument"),
    cli_row("verify", "dinov2", "--tiny", "--without", "gleu", says="--without 'gleu': not a patch of recipe 'dinov2'"),
    cli_row("verify", "dinov2", "--tiny", "--json", "--markdown", says="--markdown: not allowed with argument --json"),
    cli_row("verify", "dinov2", "--model-path", "{tmp}/missing",
            says="--model-path '{tmp}/missing' is not a directory (expected a from_pretrained folder)"),
    cli_row("verify", "dinov2", "--model-path", "{noconfig}",
            says="--model-path '{noconfig}' has no config.json: not a from_pretrained folder"),
    cli_row("verify", "dinov2", "--model-path", "{badjson}",
            says="--model-path '{badjson}' does not load (OSError: It looks like the config file"),
    cli_row("verify", "dinov2", "--model-path", "{truncated}",
            says="--model-path '{truncated}' does not load (SafetensorError: "),
    cli_row("verify", "dinov2", "--model-path", "{truncated}", says="check the download, or leave --model-path out",
            fresh=True),
    cli_row("verify", "--factory", "nocolon", says="--factory 'nocolon': expected MODULE:FUNCTION or FILE.py:FUNCTION"),
    cli_row("verify", "dinov2", "--patches", ",", says="argument --patches: ',': give patch names separated by commas"),
    cli_row("verify", "mingtok", "--tiny", "--repo", "{tmp}", says="--repo '{tmp}' has no mingtok/ folder: pass the "
            "root of a clone of "),
    # bench
    cli_row("bench", "dinov2", "--tiny", "--nope", says="unrecognized arguments: --nope"),
    cli_row("bench", says="bench: error: nothing to run: give a recipe"),
    cli_row("bench", "dinov2", "--tiny", "--batch-sizes", says="argument --batch-sizes: expected at least one "),
    cli_row("bench", "dinov2", "--tiny", "--batch-sizes", "2", "-3", says="argument --batch-sizes: '-3' must be >= 1"),
    cli_row("bench", "dinov2", "--tiny", "--iters", "0", says="argument --iters: '0' must be >= 1"),
    cli_row("bench", "dinov2", "--tiny", "--iters", "1.5", says="argument --iters: '1.5' is not an integer"),
    cli_row("bench", "dinov2", "--tiny", "--warmup", "-1", says="argument --warmup: '-1' must be >= 0"),
    cli_row("bench", "dinov2", "--tiny", "--dtype", "int8", says="unknown dtype 'int8': choose one of fp32, bf16, "),
    cli_row("bench", "dinov2", "--tiny", "--device", "tpu", says="unknown device 'tpu': choose one of auto, npu, cuda"),
    cli_row("bench", "dinov2", "--tiny", "--plot", "{plot}",
            says="--plot '{plot}' cannot be written: choose a writable file path"),
    cli_row("bench", "dinov2", "--tiny", "--plot", "{tmp}/missing/out.png",
            says="--plot '{tmp}/missing/out.png': folder '{tmp}/missing' does not exist"),
    cli_row("bench", "dinov2", "--model-path", "{badjson}", "--batch-sizes", "1",
            says="--model-path '{badjson}' does not load (OSError: "),
    # doctor
    cli_row("doctor", "--nope", says="unrecognized arguments: --nope"),
    cli_row("doctor", "extra", says="unrecognized arguments: extra"),
    cli_row("doctor", "--device", says="argument --device: expected one argument"),
    cli_row("doctor", "--device", "", says="doctor: error: argument --device: give a device: auto, npu, npu:N"),
    cli_row("run", "--device", "", "{ok}", says="run: error: argument --device: give a device: auto, npu"),
    cli_row("verify", "dinov2", "--tiny", "--device", " ", says="verify: error: argument --device: give a device"),
    cli_row("doctor", "--device", "tpu", says="doctor: error: --device: unknown device 'tpu': choose one of auto, "),
    cli_row("doctor", "--device", "tpu", says="doctor: error: --device: unknown device 'tpu'", fresh=True),
    cli_row("doctor", "--device", "npu:x", says="--device: device='npu:x': a device index is a whole number >= 0"),
    # list
    cli_row("list", "--nope", says="unrecognized arguments: --nope"),
    cli_row("list", "extra", says="unrecognized arguments: extra"),
    cli_row("list", "--jsn", says="unrecognized arguments: --jsn"),
    # run
    cli_row("run", says="run: error: no script to run: ascend-patch run [options] script.py [args ...]"),
    cli_row("run", "--nope", "{ok}", says="unrecognized arguments: --nope"),
    cli_row("run", "{tmp}/missing.py", says="no such script: '{tmp}/missing.py' (give the path of a .py file, or -m "),
    cli_row("run", "-m", says="no module to run: ascend-patch run [options] script.py"),
    cli_row("run", "-m", "no_such_module_xyz", says="no module named 'no_such_module_xyz' (on sys.path, from "),
    cli_row("run", "-m", "ascend_patch.no_such_module", says="no module named 'ascend_patch.no_such_module'"),
    cli_row("run", "-m", "ascend_patch.tools", says="'ascend_patch.tools' is a package and cannot be directly "
            "executed (it has no __main__)"),
    cli_row("run", "--device", "tpu", "{ok}", says="--device 'tpu': unknown device 'tpu': choose one of auto, npu, "),
    cli_row("run", "--recipe", says="argument --recipe: expected one argument"),
    cli_row("run", "--patches", ",", "{ok}", says="--patches ',': no names given: use 'default', a recipe or patch "),
    cli_row("run", "--log-file", "{tmp}", "{ok}", says="--log-file '{tmp}' is a folder: give a file path"),
    cli_row("run", "--log-file", "{tmp}", "{ok}", says="--log-file '{tmp}' is a folder: give a file path", fresh=True),
    cli_row("run", "--log-dir", "{ok}", "{ok}", says="--log-dir '{ok}' is a file, not a folder"),
]  # fmt: skip


def process_state() -> tuple[Any, ...]:
    env = {k: v for k, v in os.environ.items() if k.startswith("ASCEND_PATCH_")}
    return env, list(sys.path), list(sys.argv), sys.modules.get("__main__")


@pytest.mark.parametrize(("argv", "says", "fresh"), CLI_ROWS)
def test_cli_bad_input_is_one_line_exit_2_and_does_nothing(cli, paths, argv, says, fresh):
    argv = [a.format(**paths) for a in argv]
    says = says.format(**paths)
    if fresh:  # a fresh interpreter, as a user runs it: no traceback on the terminal either
        env = {k: v for k, v in os.environ.items() if not k.startswith("ASCEND_PATCH_")}
        proc = subprocess.run([sys.executable, "-m", "ascend_patch", *argv], capture_output=True, text=True,
                              timeout=120, env=env, check=False)  # fmt: skip
        code, out, err = proc.returncode, proc.stdout, proc.stderr
    else:
        before = process_state()
        run = cli(*argv)
        code, out, err = run.code, run.out, run.err
        nothing_patched()
        assert process_state() == before
    assert code == 2, (code, out, err[-2000:])
    assert err.endswith("\n") and err.count("\n") == 1 and "Traceback" not in err, err[-2000:]
    assert re.match(r"ascend-patch( \w+)?: error: ", err) and says in err, err
    assert out == ""
