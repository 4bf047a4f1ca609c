"""Zero edits: ``ascend-patch run`` and the ``ASCEND_PATCH_APPLY`` start-up switch, run as a user runs them.

Everything that runs a script runs it in a subprocess (``python -m ascend_patch run ...``, the
``ascend-patch`` console script, torchrun), on the CPU and on the simulated NPU. The tests of the
start-up switch need the .pth that ``pip install`` / ``pip install -e .`` put into site-packages:
they skip where ascend-patch is not pip-installed, and fail where an installation lacks the .pth.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import site
import socket
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import pytest

from ascend_patch._autoapply import PTH_LINE, PTH_NAME
from ascend_patch.patches import DEFAULT_PATCHES

REPO = Path(__file__).resolve().parents[2]
FIXTURES = REPO / "tests" / "fixtures" / "launch"
SCRIPT = FIXTURES / "cuda_script.py"
DDP_JOB = FIXTURES / "ddp_job.py"
TIMEOUT = 180


def clean_env(**extra: str) -> dict[str, str]:
    """This environment without any ASCEND_PATCH_* setting, this checkout importable, one thread."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("ASCEND_PATCH_")}
    env["PYTHONPATH"] = os.pathsep.join(p for p in [str(REPO), os.environ.get("PYTHONPATH", "")] if p)
    env["OMP_NUM_THREADS"] = "1"
    env.update(extra)
    return env


def run_cmd(cmd: list[str], *, cwd: Path = FIXTURES, env: dict[str, str] | None = None, timeout: float = TIMEOUT):
    """Run in a new session; on timeout kill the whole group (torchrun workers included)."""
    proc = subprocess.Popen(
        cmd, cwd=cwd, env=env or clean_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        start_new_session=True,
    )  # fmt: skip
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        pytest.fail(f"{' '.join(cmd)} timed out after {timeout}s\nstdout:\n{out[-3000:]}\nstderr:\n{err[-3000:]}")
    return subprocess.CompletedProcess(cmd, proc.returncode, out, err)


def python(*args: str, **kwargs) -> subprocess.CompletedProcess:
    return run_cmd([sys.executable, *map(str, args)], **kwargs)


def launch(*args: str, **kwargs) -> subprocess.CompletedProcess:
    return python("-m", "ascend_patch", "run", *args, **kwargs)


def json_objects(text: str) -> list[dict]:
    """Every JSON object printed in ``text`` (robust to lines of two processes run together)."""
    decoder, found, i = json.JSONDecoder(), [], 0
    while (i := text.find("{", i)) != -1:
        try:
            obj, i = decoder.raw_decode(text, i)
        except ValueError:
            i += 1
            continue
        found.append(obj)
    return found


def script_result(proc: subprocess.CompletedProcess) -> dict:
    results = [o for o in json_objects(proc.stdout) if "argv" in o]
    assert len(results) == 1, f"stdout:\n{proc.stdout}\nstderr:\n{proc.stderr[-3000:]}"
    return results[0]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def startup_hook() -> Path:
    """The installed start-up .pth."""
    try:
        metadata.distribution("ascend-patch")
    except metadata.PackageNotFoundError:
        pytest.skip("ascend-patch is not pip-installed here (pip install -e .): no start-up .pth to test")
    dirs = [*site.getsitepackages(), site.getusersitepackages()]
    for folder in dirs:
        if (Path(folder) / PTH_NAME).is_file():
            return Path(folder) / PTH_NAME
    pytest.fail(f"ascend-patch is installed but {PTH_NAME} is in none of {dirs}: reinstall (pip install -e .)")


# -- ascend-patch run ----------------------------------------------------------------------------


@pytest.mark.parametrize("target, device", [("cpu", "cpu"), ("sim", "npu:0")])
def test_cuda_script_runs_unmodified(target, device, tmp_path):
    log = tmp_path / "migration.jsonl"
    script_args = ["--device", "cuda:0", "--exit", "3", "pos", "--", "-v"]  # the script's own options
    proc = launch("--device", target, "--log-file", log, "cuda_script.py", *script_args)
    assert proc.returncode == 3, proc.stderr[-3000:]
    result = script_result(proc)
    assert result["name"] == "__main__"
    assert result["argv"] == ["cuda_script.py", *script_args]
    assert result["args"]["device"] == "cuda:0" and result["args"]["rest"] == ["pos", "-v"]
    assert result["path0"] == str(FIXTURES)
    assert result["device"] == device
    assert result["patched_env"] == ",".join(DEFAULT_PATCHES)  # what the script's subprocesses get
    assert "Traceback" not in proc.stderr
    records = [json.loads(line) for line in log.read_text().splitlines()]
    at_script = {r["patch"] for r in records if "cuda_script.py:" in json.dumps(r)}
    assert {"device", "autocast", "seed"} <= at_script, at_script


def test_uncaught_exception_is_printed_as_python_prints_it():
    proc = launch("--device", "cpu", "cuda_script.py", "--raise")
    assert proc.returncode == 1
    traceback = proc.stderr[proc.stderr.index("Traceback (most recent call last):") :]
    frames = re.findall(r'File "([^"]+)", line \d+, in (\S+)', traceback)
    assert frames == [(str(SCRIPT), "<module>"), (str(SCRIPT), "main"), (str(SCRIPT), "fail_deep_inside")]
    assert traceback.rstrip().splitlines()[-1] == "RuntimeError: the script failed on purpose"


@pytest.mark.parametrize("args, code, last_err", [(["--message", "bye now"], 1, "bye now"), (["--exit", "0"], 0, None)])
def test_system_exit(args, code, last_err):
    proc = launch("--device", "cpu", "cuda_script.py", *args)
    assert proc.returncode == code, proc.stderr[-3000:]
    if last_err:
        assert proc.stderr.rstrip().splitlines()[-1] == last_err


@pytest.mark.parametrize("spelling", [["-m"], ["--", "-m"]])
def test_module_runs_as_main(spelling):
    proc = launch("--device", "sim", *spelling, "launch.cuda_script", "--exit", "4", cwd=FIXTURES.parent)
    assert proc.returncode == 4, proc.stderr[-3000:]
    result = script_result(proc)
    assert result["name"] == "__main__" and result["device"] == "npu:0"
    assert result["argv"] == [str(SCRIPT), "--exit", "4"]  # as python -m sets it
    assert result["path0"] == str(FIXTURES.parent)  # the working directory, as python -m


def test_module_stays_main_after_it_returns_and_its_package_sees_python_s_argv(tmp_path):
    """As ``python -m pkg.tool``: the package is imported while argv[0] is "-m", then argv[0] is the
    module's file, and ``__main__`` is still the module when its atexit handlers run."""
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "__init__.py").write_text("import sys\nprint('init', sys.argv)\n")
    (tmp_path / "pkg" / "tool.py").write_text(
        "import atexit, sys\nMARK = 'the module'\n\n"
        "def bye():\n    import __main__\n    print('atexit', __main__.MARK, __main__.__spec__.name)\n\n"
        "atexit.register(bye)\nprint('main', sys.argv)\n"
    )
    direct = python("-m", "pkg.tool", "a", cwd=tmp_path)
    launched = launch("--device", "cpu", "-m", "pkg.tool", "a", cwd=tmp_path)
    assert launched.returncode == direct.returncode == 0, launched.stderr
    tool = str(tmp_path / "pkg" / "tool.py")
    assert direct.stdout.splitlines() == launched.stdout.splitlines() == [
        "init ['-m', 'a']", f"main [{tool!r}, 'a']", "atexit the module pkg.tool"]


def test_console_script_with_recipe_and_patches():
    exe = shutil.which("ascend-patch", path=str(Path(sys.executable).parent))
    if exe is None:
        pytest.skip("the ascend-patch console script is not installed next to this Python")
    proc = run_cmd([exe, "run", "--recipe", "dinov2", "--patches", "default", "--device", "cpu", "cuda_script.py"])
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert script_result(proc)["patched_env"] == ",".join(["dinov2", *DEFAULT_PATCHES])


def test_report_is_printed_after_the_script_with_its_call_sites():
    script = REPO / "tests" / "fixtures" / "migration_log" / "cuda_train.py"
    proc = launch("--device", "sim", "--report", script, cwd=REPO)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "'device': 'npu:0'" in proc.stdout
    rows = {line.split()[0]: line for line in proc.stderr.splitlines() if line.startswith("tests/")}
    where = "tests/fixtures/migration_log/cuda_train.py"
    assert rows[f"{where}:24"].endswith("torch.cuda.synchronize() -> torch.npu.synchronize()")
    assert rows[f"{where}:10"].endswith('module.cuda() -> module.to("npu")')


# -- bad input: one line on stderr, exit 2, the script never runs ---------------------------------


@pytest.mark.parametrize(
    "argv, fix",
    [
        (["missing.py"], "no such script: 'missing.py'"),
        (["--recipe", "dinov3", SCRIPT], "Did you mean 'dinov2'?"),
        (["--recipe", "gelu", SCRIPT], "use --patches gelu"),
        (["--patches", "gelu,sede", SCRIPT], "Did you mean 'seed'?"),
        (["--device", "tpu", SCRIPT], "choose one of auto, npu, cuda, cpu, sim"),
        ([], "no script to run"),
        (["--", "-m"], "no module to run"),
        ([FIXTURES], "folder without __main__.py"),
        (["--log-file", "LOG", SCRIPT], "does not exist"),
    ],
)
def test_bad_input(cli, tmp_path, argv, fix):
    """In-process: bad input is found before anything (environment, sys.path, patches) changes."""
    argv = [str(tmp_path / "missing" / "log.jsonl") if a == "LOG" else a for a in argv]
    before = dict(os.environ), list(sys.path), list(sys.argv)
    run = cli("run", *argv)
    assert run.code == 2 and run.out == ""
    assert run.err.startswith("ascend-patch run: error: ") and run.err.count("\n") == 1, run.err
    assert fix in run.err
    assert (dict(os.environ), list(sys.path), list(sys.argv)) == before


@pytest.mark.parametrize(
    "args, env, fix",
    [
        (["-m", "no_such_module_here"], {}, "no module named 'no_such_module_here'"),
        (["cuda_script.py"], {"ASCEND_PATCH_DEVICE": "tpu"}, "ASCEND_PATCH_DEVICE 'tpu'"),
        (["--device", "cuda", "cuda_script.py"], {}, "use 'cpu' or 'sim'"),
    ],
)
def test_bad_input_in_a_subprocess(args, env, fix):
    if "cuda" in args:
        import torch

        if torch.cuda.is_available():
            pytest.skip("this machine has CUDA")
    proc = launch(*args, env=clean_env(**env))
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr.startswith("ascend-patch run: error: ") and proc.stderr.count("\n") == 1, proc.stderr
    assert fix in proc.stderr


# -- the start-up switch ---------------------------------------------------------------------------


@pytest.mark.parametrize("value", [None, "0", ""])
def test_startup_hook_is_inert_when_unset(startup_hook, value):
    """Every Python process of the venv runs the .pth line: unset, it must import nothing."""
    env = clean_env() if value is None else clean_env(ASCEND_PATCH_APPLY=value)
    proc = python("-c", "import sys; print('torch' in sys.modules, 'ascend_patch' in sys.modules)", env=env)
    assert (proc.returncode, proc.stdout.strip(), proc.stderr) == (0, "False False", "")


def test_installed_hook_is_the_one_line(startup_hook):
    assert startup_hook.read_text() == PTH_LINE + "\n"


def test_run_options_win_over_a_startup_switch_already_applied(startup_hook):
    """ASCEND_PATCH_APPLY left in the environment applied the patches at start-up (auto device):
    the launcher's own --device and names decide."""
    proc = launch("--device", "sim", "cuda_script.py", env=clean_env(ASCEND_PATCH_APPLY="default"))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert script_result(proc)["device"] == "npu:0"


def test_env_switch_patches_a_plain_python_process(startup_hook):
    code = "import ascend_patch, torch; print(ascend_patch.active(), torch.ones(1).cuda().device)"
    env = clean_env(ASCEND_PATCH_APPLY="gelu, device", ASCEND_PATCH_DEVICE="sim")
    proc = python("-c", code, env=env)
    assert (proc.returncode, proc.stdout.strip()) == (0, "['gelu', 'device'] npu:0"), proc.stderr[-3000:]

    proc = python(SCRIPT, "--exit", "5", env=clean_env(ASCEND_PATCH_APPLY="default", ASCEND_PATCH_DEVICE="cpu"))
    assert proc.returncode == 5, proc.stderr[-3000:]
    assert script_result(proc)["device"] == "cpu"


@pytest.mark.parametrize(
    "env, named",
    [
        ({"ASCEND_PATCH_APPLY": "dinov3"}, "ASCEND_PATCH_APPLY='dinov3': unknown patch or recipe 'dinov3'"),
        ({"ASCEND_PATCH_APPLY": "default", "ASCEND_PATCH_DEVICE": "tpu"}, "ASCEND_PATCH_DEVICE='tpu'"),
    ],
)
def test_bad_env_value_leaves_python_running_unpatched(startup_hook, env, named):
    proc = python("-c", "import ascend_patch; print('running', ascend_patch.active())", env=clean_env(**env))
    assert (proc.returncode, proc.stdout.strip()) == (0, "running []")
    assert proc.stderr.count("\n") == 1 and named in proc.stderr and "unpatched" in proc.stderr, proc.stderr


def test_run_reaches_the_scripts_subprocesses(startup_hook):
    proc = launch("--device", "sim", "cuda_script.py", "--child")
    assert proc.returncode == 0, proc.stderr[-3000:]
    child = [o for o in json_objects(proc.stdout) if "child" in o]
    assert child == [{"child": "npu:0", "child_rc": 0}]


@pytest.mark.parametrize("args", [["--exit", "3"], ["--message", "bye now"], ["--raise"]])
def test_run_behaves_as_a_direct_run(startup_hook, args):
    """``ascend-patch run script.py`` vs ``python script.py`` patched at start-up: same output,
    traceback and exit status."""
    via_run = launch("--device", "cpu", "cuda_script.py", *args)
    direct = python("cuda_script.py", *args, env=clean_env(ASCEND_PATCH_APPLY="default", ASCEND_PATCH_DEVICE="cpu"))
    assert via_run.returncode == direct.returncode
    assert via_run.stderr == direct.stderr
    ran, ref = script_result(via_run), script_result(direct)
    assert ran.pop("patched_env") and ref.pop("patched_env") == "default"
    assert ran == ref


# -- torchrun ----------------------------------------------------------------------------------------


def torchrun(port: int) -> list[str]:
    return ["-m", "torch.distributed.run", "--nnodes", "1", "--nproc-per-node", "2", "--max-restarts", "0",
            "--master-addr", "127.0.0.1", "--master-port", str(port)]  # fmt: skip


def run_ddp(make_args) -> subprocess.CompletedProcess:
    """Run the 2-rank job; a port taken between picking and binding it gets one more try."""
    for _ in range(3):
        proc = python(*make_args(free_port()), cwd=REPO, timeout=300)
        if proc.returncode == 0 or "address already in use" not in proc.stderr.lower():
            break
    assert proc.returncode == 0, f"stdout:\n{proc.stdout[-3000:]}\nstderr:\n{proc.stderr[-5000:]}"
    return proc


def check_ranks(proc: subprocess.CompletedProcess) -> None:
    ranks = sorted((o for o in json_objects(proc.stdout) if "rank" in o), key=lambda o: o["rank"])
    assert [r["rank"] for r in ranks] == [0, 1], proc.stdout
    for result in ranks:
        assert result["name"] == "__main__" and result["backend"] == "gloo" and result["device"] == "cpu"
        assert result["all_reduce"] == [1.0 + 2.0, 10.0 + 20.0]
        assert result["weight_grad"] == [[4.5] * 4] * 2 and result["bias_grad"] == [3.0, 3.0]


def test_torchrun_workers_through_the_launcher(tmp_path):
    """torchrun -m ascend_patch run --device cpu --log-dir D job.py: each worker is the launcher, and each
    leaves its own migration log, with the job's own call sites."""
    logs = tmp_path / "logs"
    check_ranks(run_ddp(lambda port: [*torchrun(port), "-m", "ascend_patch", "run", "--device", "cpu", "--log-dir",
                                      logs, DDP_JOB]))  # fmt: skip
    files = sorted(logs.glob("ascend_patch_*_*.jsonl"))
    assert [f.name.split("_")[2] for f in files] == ["0", "1"], files
    job = os.path.relpath(DDP_JOB, REPO)
    for path in files:
        records = [json.loads(line) for line in path.read_text().splitlines()]
        calls = {r["change"]: r["where"] for r in records if r["action"] == "call"}
        nccl = 'torch.distributed.init_process_group(backend="nccl") -> torch.distributed.init_process_group(backend="gloo")'
        assert calls[nccl] == f"{job}:22", calls
        assert calls["torch.cuda.synchronize() -> no-op (cpu work is synchronous)"] == f"{job}:32"


def test_launcher_around_torchrun(startup_hook):
    """ascend-patch run --device cpu -m torch.distributed.run ... job.py: the workers are patched at
    start-up by ASCEND_PATCH_APPLY, which the launcher exports."""
    check_ranks(run_ddp(lambda port: ["-m", "ascend_patch", "run", "--device", "cpu", *torchrun(port), DDP_JOB]))


# -- packaging -------------------------------------------------------------------------------------
