"""The migration log a user acts on: a CUDA script's own call sites, old -> new in full, a class each.

The default report lists only call sites in the user's (and upstream) code; the patches' bookkeeping
is the internal view. A log folder gets one JSONL file per process and rank at exit; the detail level
prints without any logging configuration; PyTorch's own calls and a third-party recipe's frames are
never taken for the user's.
"""

from __future__ import annotations

import json
import os
import runpy
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

import ascend_patch
from ascend_patch.engine import calls, runtime

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "tests" / "fixtures" / "migration_log" / "cuda_train.py"
SCRIPT_PATH = os.path.relpath(SCRIPT)  # as the log writes it: relative to the working directory
JOB = REPO / "tests" / "device" / "device_ddp_job.py"


def line_of(text: str, path: Path = SCRIPT) -> int:
    (number,) = [n for n, line in enumerate(path.read_text().splitlines(), 1) if text in line]
    return number


def run_script(target: str) -> tuple[ascend_patch.MigrationReport, ascend_patch.MigrationReport]:
    """The script run unmodified under the default patches: (the default report, the internal view)."""
    with ascend_patch.patched(device=target):
        result = runpy.run_path(str(SCRIPT), run_name="cuda_train")["main"]()
        report, internal = ascend_patch.report(), ascend_patch.report(internal=True)
    assert result["device"].startswith("npu" if target == "sim" else "cpu")
    return report, internal


# (source text of the line, patch, old -> new, class) of every call site the script has, per target.
MAPPED, CHANGED = "mapped", "changed meaning"
EXPECTED = {
    "cpu": [
        ("torch.cuda.manual_seed_all(0)", "seed",
         "torch.cuda.manual_seed_all(...) -> torch.default_generator.manual_seed(seed)", MAPPED),
        ("torch.cuda.is_available()", "device",
         "torch.cuda.is_available() -> False (cpu target, cuda_is_available='target')", CHANGED),
        ("model = torch.nn", "device", 'module.cuda() -> module.to("cpu")', MAPPED),
        (".pin_memory().cuda(", "device", 'x.cuda() -> x.to("cpu")', MAPPED),
        (".pin_memory().cuda(", "device", "x.pin_memory() -> x (no-op: a cpu target has no pinned memory)", CHANGED),
        ('device="cuda")', "device", 'torch.randint(..., device="cuda") -> torch.randint(..., device="cpu")', MAPPED),
        ("torch.cuda.Event(enable", "device", "torch.cuda.Event(...) -> ascend_patch WallClockEvent (host clock)",
         MAPPED),
        ("torch.cuda.Stream()", "device", "torch.cuda.Stream() -> ascend_patch HostStream (synchronous)", MAPPED),
        ("torch.cuda.amp.autocast(", "autocast", 'torch.cuda.amp.autocast(...) -> torch.autocast("cpu", ...)', MAPPED),
        ('labels.to("cuda:0")', "device", 'x.to("cuda:0") -> x.to("cpu")', MAPPED),
        ("torch.cuda.synchronize()", "device", "torch.cuda.synchronize() -> no-op (cpu work is synchronous)", MAPPED),
        ("torch.cuda.max_memory_allocated()", "device",
         "torch.cuda.max_memory_allocated() -> 0 (a cpu target has no device memory)", CHANGED),
    ],
    "sim": [
        ("torch.cuda.manual_seed_all(0)", "seed", "torch.cuda.manual_seed_all(...) -> torch.npu.manual_seed_all(seed)",
         MAPPED),
        ("torch.cuda.is_available()", "device",
         "torch.cuda.is_available() -> True (npu target, cuda_is_available='target')", CHANGED),
        ("model = torch.nn", "device", 'module.cuda() -> module.to("npu")', MAPPED),
        (".pin_memory().cuda(", "device", 'x.cuda() -> x.to("npu")', MAPPED),
        (".pin_memory().cuda(", "device", "x.pin_memory() -> x.pin_memory() (pinned for the npu)", MAPPED),
        ('device="cuda")', "device", 'torch.randint(..., device="cuda") -> torch.randint(..., device="npu")', MAPPED),
        ("torch.cuda.Event(enable", "device", "torch.cuda.Event(...) -> torch.npu.Event(...)", MAPPED),
        ("torch.cuda.Stream()", "device", "torch.cuda.Stream() -> torch.npu.Stream()", MAPPED),
        ("torch.cuda.amp.autocast(", "autocast", 'torch.cuda.amp.autocast(...) -> torch.autocast("npu", ...)', MAPPED),
        ('labels.to("cuda:0")', "device", 'x.to("cuda:0") -> x.to("npu:0")', MAPPED),
        ('labels.to("cuda:0")', "gelu", "GELU(x) -> torch_npu.npu_gelu(x, approximate='none')", MAPPED),
        ("torch.cuda.synchronize()", "device", "torch.cuda.synchronize() -> torch.npu.synchronize()", MAPPED),
        ("torch.cuda.max_memory_allocated()", "device",
         "torch.cuda.max_memory_allocated() -> torch.npu.max_memory_allocated()", MAPPED),
    ],
}  # fmt: skip


@pytest.mark.parametrize("target", ["cpu", "sim"])
def test_default_report_lists_the_scripts_call_sites_only(target):
    report, _ = run_script(target)
    expected = [(f"{SCRIPT_PATH}:{line_of(text)}", patch, change, category)
                for text, patch, change, category in EXPECTED[target]]  # fmt: skip
    rows = [(r.where, r.patch, r.change, r.category) for r in report]
    assert sorted(rows) == sorted(expected)
    assert [r.action for r in report] == ["call"] * len(expected)
    # One call site a row, counted: three steps of the loop are one row each.
    (to,) = [r for r in report if r.change.startswith('x.to("cuda:0")')]
    assert to.count == 3 and to.target == "Tensor.to"
    (event,) = [r for r in report if r.target == "torch.cuda.Event"]
    assert event.count == 2
    # torch.manual_seed (line 7) calls torch.cuda.manual_seed_all itself: not the user's CUDA call.
    assert f"{SCRIPT_PATH}:{line_of('torch.manual_seed(0)')}" not in {r.where for r in report}

    text = str(report)
    lines = text.splitlines()
    assert lines[0] == f"ascend_patch migration log: {len(expected)} call site(s) went through a patch"
    assert lines[1].split() == ["where", "class", "patch", "old", "->", "new"]
    body = lines[3:-1]
    assert len(body) == len(expected) and all(line.startswith(SCRIPT_PATH + ":") for line in body)
    assert f"{SCRIPT_PATH}:{line_of('torch.cuda.synchronize()')}" in text
    assert "changed meaning  device    torch.cuda.is_available() -> " in text
    assert 'x.to("cuda:0") -> x.to(' in text and "(x3)" in text
    assert " patched " not in text and "sys.modules" not in text
    assert lines[-1].startswith("(") and "patch record(s) and counters not shown: ascend_patch.report(internal=True)" \
        in lines[-1]  # fmt: skip


def test_internal_view_keeps_the_bookkeeping():
    report, internal = run_script("cpu")
    assert len(report) < len(internal) == len(report.all_records)
    actions = {r.action for r in internal}
    assert {"patched", "copy", "call"} <= actions, actions  # ("waiting" too while a target module is not imported)
    assert {r.action for r in report} == {"call"}
    # filter() sees every record in either view, as before the views existed.
    assert report.filter(patch="device", action="patched") == internal.filter(patch="device", action="patched") != []
    assert report.filter(category=CHANGED) and all(r.action == "call" for r in report.filter(category=CHANGED))
    text = str(internal)
    assert text.startswith("ascend_patch migration log: ")
    assert "\npatch records:\n" in text and "sys.modules['flash_attn']" in text and " stats " in text
    # The detail level shows the internal view by default.
    ascend_patch.apply("seed", device="cpu", log="detail")
    try:
        assert ascend_patch.report().internal and "patch records:" in str(ascend_patch.report())
    finally:
        ascend_patch.apply("seed", device="cpu", log="summary")
        ascend_patch.revert("seed")
    assert not ascend_patch.report().internal


def test_jsonl_has_every_record_with_its_class_and_change(tmp_path):
    report, _ = run_script("cpu")
    path = report.to_jsonl(tmp_path / "log.jsonl")
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    assert len([r for r in rows if r["action"] != "stats"]) == len(report.all_records)
    sync = [r for r in rows if r.get("target") == "torch.cuda.synchronize" and r["action"] == "call"]
    assert sync == [{
        "patch": "device", "action": "call", "target": "torch.cuda.synchronize",
        "detail": "torch.cuda.synchronize() -> no-op (cpu work is synchronous)", "count": 1,
        "where": f"{SCRIPT_PATH}:{line_of('torch.cuda.synchronize()')}", "category": "mapped",
        "change": "torch.cuda.synchronize() -> no-op (cpu work is synchronous)",
    }]  # fmt: skip
    assert any(r["action"] == "patched" for r in rows) and any(r["action"] == "stats" for r in rows)


def test_torch_manual_seed_is_not_logged_as_cuda_manual_seed_all(target):
    with ascend_patch.patched("seed", device=target):
        torch.manual_seed(0)
        torch.random.manual_seed(1)
        assert not ascend_patch.report().filter(patch="seed", action="call")
        line = sys._getframe().f_lineno + 1
        torch.cuda.manual_seed_all(2)
        (record,) = ascend_patch.report().filter(patch="seed", action="call")
    assert record.target == "torch.cuda.manual_seed_all"
    assert record.where == f"{os.path.relpath(__file__)}:{line}"


def test_event_stream_memory_and_availability_have_their_call_sites(target):
    here = os.path.relpath(__file__)
    with ascend_patch.patched("device", device=target):
        first = sys._getframe().f_lineno + 1
        torch.cuda.Event(enable_timing=True)
        torch.cuda.Stream()
        torch.cuda.memory_allocated()
        torch.cuda.is_available()
        torch.cuda.current_stream()
        torch.cuda.FloatTensor(2)
        report = ascend_patch.report()
    sites = {r.target: r.where for r in report}
    assert sites == {
        api: f"{here}:{first + n}" for n, api in enumerate([
            "torch.cuda.Event", "torch.cuda.Stream", "torch.cuda.memory_allocated", "torch.cuda.is_available",
            "torch.cuda.current_stream", "torch.cuda.FloatTensor"])
    }  # fmt: skip
    classes = {r.target: r.category for r in report}
    memory = "changed meaning" if target == "cpu" else "mapped"
    assert classes["torch.cuda.memory_allocated"] == memory and classes["torch.cuda.is_available"] == CHANGED
    # A user's subclass of a logged class still builds itself, and its construction is a call site too.
    with ascend_patch.patched("device", device=target):

        class Timer(torch.cuda.Event):
            pass

        ascend_patch.report(clear=True)
        line = sys._getframe().f_lineno + 1
        timer = Timer(enable_timing=True)
        (record,) = ascend_patch.report().filter(action="call")
        assert isinstance(timer, Timer) and isinstance(timer, torch.cuda.Event)
        assert torch.cuda.Event.__name__ == "Event"
    assert record.target == "torch.cuda.Event" and record.where == f"{here}:{line}"


def test_logging_off_records_nothing():
    with ascend_patch.patched("device", "seed", device="cpu", log="off"):
        torch.cuda.synchronize()
        torch.cuda.Event()
        torch.cuda.is_available()
        torch.cuda.manual_seed_all(0)
        torch.zeros(1).cuda()
        assert not ascend_patch.report().filter(action="call")
    with ascend_patch.patched("device", device="cpu"):  # log="off" held for that block only
        torch.cuda.synchronize()
        assert ascend_patch.report().filter(action="call")


def test_unsupported_calls_are_classed_so():
    with ascend_patch.patched("device", device="sim"):
        line = sys._getframe().f_lineno + 2
        with pytest.raises(NotImplementedError):
            torch.cuda.FloatStorage(2)
        (record,) = [r for r in ascend_patch.report() if r.target == "torch.cuda.FloatStorage"]
    assert record.category == "unsupported" and record.where == f"{os.path.relpath(__file__)}:{line}"


def run_python(code: str, env: dict[str, str] | None = None, cwd: Path = REPO) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("ASCEND_PATCH")}
    base["PYTHONPATH"] = os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True,
                          env={**base, **(env or {})}, cwd=cwd, timeout=180)  # fmt: skip


def test_detail_prints_without_logging_config_and_never_twice():
    proc = run_python(
        """
        import logging
        import torch
        import ascend_patch
        ascend_patch.apply("device", device="cpu")   # ASCEND_PATCH_LOG=detail from the environment
        for _ in range(2):
            torch.zeros(1).cuda()                     # printed by ascend_patch (nothing configured), once
        logging.basicConfig(format="USER %(message)s")
        torch.ones(1, device="cuda")                  # printed by the user's handler only
        """,
        {"ASCEND_PATCH_LOG": "detail"},
    )
    assert proc.returncode == 0, proc.stderr
    cuda = [line for line in proc.stderr.splitlines() if "x.cuda()" in line]
    assert cuda == ['ascend_patch: device: x.cuda() -> x.to("cpu") [mapped] at <string>:7'], proc.stderr
    ones = [line for line in proc.stderr.splitlines() if "torch.ones" in line]
    assert ones == ['USER device: torch.ones(..., device="cuda") -> torch.ones(..., device="cpu") '
                    "[mapped] at <string>:9"], proc.stderr  # the user's format: the prefix is %(name)s there
    # The summary level prints nothing, configured or not.
    quiet = run_python("import torch, ascend_patch; ascend_patch.apply('device', device='cpu'); torch.zeros(1).cuda()")
    assert quiet.returncode == 0 and "x.cuda()" not in quiet.stderr, quiet.stderr


def test_log_dir_file_per_process_rank_and_exit_hook_only_when_asked(tmp_path):
    proc = run_python(
        f"""
        import atexit, os
        import torch
        import ascend_patch
        before = atexit._ncallbacks()
        ascend_patch.apply("device", device="cpu")
        assert atexit._ncallbacks() == before, "exit hook registered without a log folder"
        ascend_patch.apply("seed", device="cpu", log_dir={str(tmp_path / "logs")!r})
        ascend_patch.apply("gelu", device="cpu", log_dir={str(tmp_path / "logs")!r})
        assert atexit._ncallbacks() == before + 1
        os.chdir({str(tmp_path)!r})                   # paths stay relative to where the program started
        torch.cuda.synchronize()
        print(os.getpid())
        """,
        {"RANK": "3"},
    )
    assert proc.returncode == 0, proc.stderr
    pid = int(proc.stdout.split()[-1])
    (log,) = (tmp_path / "logs").iterdir()
    assert log.name == f"ascend_patch_3_{pid}.jsonl"
    rows = [json.loads(line) for line in log.read_text().splitlines()]
    (sync,) = [r for r in rows if r.get("target") == "torch.cuda.synchronize" and r["action"] == "call"]
    assert sync["where"] == "<string>:12"
    assert sync["change"] == "torch.cuda.synchronize() -> no-op (cpu work is synchronous)"
    assert any(r["action"] == "patched" for r in rows)  # the file has the internal records too


def test_process_rank_and_file_name(monkeypatch, tmp_path):
    monkeypatch.setenv("RANK", "5")
    assert runtime.process_rank() == 5
    assert runtime.log_file_path(tmp_path).name == f"ascend_patch_5_{os.getpid()}.jsonl"
    monkeypatch.delenv("RANK")
    assert runtime.process_rank() == 0  # no RANK, no initialized process group
    with ascend_patch.patched("device", device="cpu"):
        torch.cuda.synchronize()
        path = runtime.write_log(tmp_path / "now")
    assert path.parent == tmp_path / "now" and "torch.cuda.synchronize" in path.read_text()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_two_process_job_leaves_one_log_per_rank(tmp_path):
    port = _free_port()
    procs = []
    for rank in range(2):
        env = {
            **{k: v for k, v in os.environ.items() if not k.startswith("ASCEND_PATCH")},
            "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "WORLD_SIZE": "2", "RANK": str(rank),
            "LOCAL_RANK": str(rank), "LOCAL_WORLD_SIZE": "2", "ASCEND_PATCH_TEST_DEVICE": "cpu",
            "ASCEND_PATCH_LOG_DIR": str(tmp_path / "logs"), "OMP_NUM_THREADS": "1",
            "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
        }  # fmt: skip
        procs.append(subprocess.Popen([sys.executable, str(JOB)], env=env, cwd=REPO, stdout=subprocess.PIPE,
                                      stderr=subprocess.PIPE, text=True))  # fmt: skip
    try:
        for proc in procs:
            _, err = proc.communicate(timeout=120)
            assert proc.returncode == 0, f"rank failed:\n{err[-3000:]}"
    finally:
        for proc in procs:  # bounded: never leave a rank waiting for its peer
            if proc.poll() is None:
                proc.kill()
                proc.communicate()
    files = sorted(p.name for p in (tmp_path / "logs").iterdir())
    assert files == [f"ascend_patch_{rank}_{proc.pid}.jsonl" for rank, proc in enumerate(procs)]
    job = os.path.relpath(JOB, REPO)
    for name in files:
        rows = [json.loads(line) for line in (tmp_path / "logs" / name).read_text().splitlines()]
        sites = {(r["target"], r["where"]) for r in rows if r["action"] == "call"}
        assert ("torch.cuda.synchronize", f"{job}:{line_of('torch.cuda.synchronize()', JOB)}") in sites
        assert ("torch.cuda.set_device", f"{job}:{line_of('torch.cuda.set_device(', JOB)}") in sites
        assert all(where.startswith(job + ":") for _, where in sites), sites
        assert any(r["action"] == "patched" for r in rows)


def test_plugin_frames_are_registered_and_looked_past(tmp_path, monkeypatch):
    monkeypatch.setattr(calls, "_plugin_paths", [])  # the registration ends with this test
    plugin = tmp_path / "my_recipe_plugin.py"
    plugin.write_text("import sys\nfrom ascend_patch.engine import calls\n\n\ndef wrapper():\n"
                      "    return calls.user_site(sys._getframe(0))\n")
    sys.path.insert(0, str(tmp_path))
    try:
        import my_recipe_plugin

        assert my_recipe_plugin.wrapper() == f"{plugin}:6"  # user code until registered (absolute: outside the cwd)
        calls.skip_frames_of(my_recipe_plugin)
        assert my_recipe_plugin.wrapper() == f"{os.path.relpath(__file__)}:{sys._getframe().f_lineno}"
    finally:
        sys.path.remove(str(tmp_path))
        sys.modules.pop("my_recipe_plugin", None)
        calls._internal_code.clear()
        calls._code_kind.clear()
        calls._sites.clear()


def test_a_class_that_cannot_be_subclassed_gets_a_forwarding_stand_in():
    from ascend_patch.engine.patch import PatchContext
    from ascend_patch.patches.device import cuda_api

    ctx = PatchContext("device", "cpu", {"cuda_is_available": "target"})
    stand_in = cuda_api._class_for_user_code(bool, bool, ctx, "Event")  # bool is final
    assert type(stand_in) is cuda_api._ForwardingClassMeta
    line = sys._getframe().f_lineno + 1
    assert stand_in(1) is True and isinstance(False, stand_in) and issubclass(bool, stand_in)
    (record,) = ascend_patch.report().filter(action="call")
    assert record.where == f"{os.path.relpath(__file__)}:{line}" and record.target == "torch.cuda.Event"
