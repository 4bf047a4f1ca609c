"""distributed: a job written for NCCL and .cuda() runs on gloo/cpu; probes answer for the target."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.distributed as dist

import ascend_patch
from ascend_patch.engine.patch import PatchContext
from ascend_patch.patches import distributed as dist_patch
from ascend_patch.patches.distributed import REPORTED_NCCL_VERSION, map_backend

JOB = Path(__file__).with_name("device_ddp_job.py")
REPO = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(
    "backend, on_cpu, on_npu",
    [
        ("nccl", "gloo", "hccl"),
        ("NCCL", "gloo", "hccl"),
        (dist.Backend.NCCL, "gloo", "hccl"),
        ("gloo", "gloo", "gloo"),
        (None, None, None),
        ("cuda:nccl,cpu:gloo", "cpu:gloo", "npu:hccl,cpu:gloo"),
        ("cpu:gloo,cuda:nccl", "cpu:gloo", "cpu:gloo,npu:hccl"),
    ],
)
def test_map_backend(backend, on_cpu, on_npu):
    assert map_backend(backend, PatchContext("distributed", "cpu", {})) == on_cpu
    assert map_backend(backend, PatchContext("distributed", "npu", {})) == on_npu
    assert map_backend(backend, PatchContext("distributed", "cpu", {}, active=False)) == backend


def _record_call(builder, device: str):
    """Build a wrapper around a recorder instead of torch's function: what would torch receive?"""
    seen: dict = {}

    def original(*args, **kwargs):
        seen.update(args=args, kwargs=kwargs)

    return builder(original, PatchContext("distributed", device, {})), seen


@pytest.mark.parametrize("device", ["cpu", "npu"])
def test_arguments_torch_receives(device):
    from ascend_patch import sim

    sim.install()  # registers the "npu" device type (as torch_npu does) so npu devices can be built
    npu = device == "npu"

    init, seen = _record_call(dist_patch._init_process_group, device)
    init("nccl", init_method="env://", device_id=torch.device("cuda", 1))
    assert seen["args"] == ("hccl" if npu else "gloo",)
    assert seen["kwargs"]["device_id"] == (torch.device("npu", 1) if npu else None)

    new_group, seen = _record_call(dist_patch._new_group, device)
    new_group([0, 1], None, "nccl")
    assert seen["args"][2] == ("hccl" if npu else "gloo")

    barrier, seen = _record_call(dist_patch._barrier, device)
    barrier(device_ids=[1])
    assert seen["kwargs"]["device_ids"] == ([1] if npu else None)

    ddp_init, seen = _record_call(dist_patch._ddp_init, device)
    ddp_init("self", "module", ["cuda:1"], torch.device("cuda", 1), 0, broadcast_buffers=False)
    ids, output = seen["args"][2], seen["args"][3]
    assert ids == (["npu:1"] if npu else None)  # a string stays a string
    assert output == (torch.device("npu", 1) if npu else None)
    assert seen["args"][4] == 0 and seen["kwargs"] == {"broadcast_buffers": False}

    mesh, seen = _record_call(dist_patch._init_device_mesh, device)
    mesh("cuda", (2,))
    assert seen["args"] == (device, (2,))


@pytest.mark.parametrize("device", ["cpu", "npu"])
def test_fsdp_and_device_mesh_arguments(device):
    from ascend_patch import sim

    sim.install()
    npu = device == "npu"
    fsdp_init, seen = _record_call(dist_patch._fsdp_init, device)
    fsdp_init("self", "module", device_id=torch.device("cuda", 1), use_orig_params=True)
    assert seen["kwargs"] == {"device_id": torch.device("npu", 1) if npu else None, "use_orig_params": True}
    fsdp_init("self", "module", device_id=0)
    assert seen["kwargs"]["device_id"] == (torch.device("npu", 0) if npu else None)

    mesh_init, seen = _record_call(dist_patch._device_mesh_init, device)
    mesh_init("self", "cuda", [0, 1])
    assert seen["args"] == ("self", device, [0, 1])
    mesh_init("self", "cpu", [0])
    assert seen["args"][1] == "cpu"


def test_nccl_probes_answer_for_the_target():
    tensors = [torch.zeros(2), torch.zeros(4, 4).t()]
    with ascend_patch.patched("device", "distributed", device="cpu"):
        assert dist.is_nccl_available()
        assert torch.cuda.nccl.version() == REPORTED_NCCL_VERSION
        assert torch.cuda.nccl.is_available([torch.zeros(3).cuda()])
        assert not torch.cuda.nccl.is_available(tensors[1:])  # not contiguous
        assert not torch.cuda.nccl.is_available([tensors[0], tensors[0]])  # two on one device
    assert not dist.is_nccl_available()  # this CPU build of torch has no NCCL


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.parametrize("target, backend, device", [("cpu", "gloo", "cpu"), ("sim", "hccl", "npu:0")])
def test_two_process_nccl_job(target, backend, device):
    """On the simulated NPU the job meets the simulator's "hccl" (gloo over the npu tensors' memory)
    and DDP's reducer runs on npu tensors; LOCAL_WORLD_SIZE gives it one device index per rank."""
    port = _free_port()
    procs = []
    for rank in range(2):
        env = {
            **os.environ,
            "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "WORLD_SIZE": "2",
            "RANK": str(rank), "LOCAL_RANK": str(rank), "LOCAL_WORLD_SIZE": "2", "ASCEND_PATCH_TEST_DEVICE": target,
            "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
            "OMP_NUM_THREADS": "1",
        }  # fmt: skip
        procs.append(
            subprocess.Popen(
                [sys.executable, str(JOB)], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
            )
        )
    outputs = []
    try:
        for proc in procs:
            out, err = proc.communicate(timeout=120)
            assert proc.returncode == 0, f"rank failed:\n{err[-3000:]}"
            outputs.append(json.loads(out.strip().splitlines()[-1]))
    finally:
        for proc in procs:  # bounded: never leave a rank waiting for its peer
            if proc.poll() is None:
                proc.kill()
                proc.communicate()
    for result in outputs:
        assert result["backend"] == backend
        assert result["device"] == device
        assert result["all_reduce"] == [1.0 + 2.0, 10.0 + 20.0]
        # loss = sum(Linear(x)); rank r feeds 3 rows of (r + 1): dW = 3 (r + 1), averaged over ranks.
        assert result["weight_grad"] == [[4.5] * 4] * 2
        assert result["bias_grad"] == [3.0, 3.0]
        assert result["nccl_version"] == list(REPORTED_NCCL_VERSION)
    assert sorted(r["rank"] for r in outputs) == [0, 1]


def test_revert_restores_distributed():
    before = (
        dist.init_process_group,
        dist.new_group,
        dist.barrier,
        dist.is_nccl_available,
        torch.nn.parallel.DistributedDataParallel.__init__,
        torch.cuda.nccl.version,
    )
    with ascend_patch.patched("distributed", device="cpu"):
        assert dist.init_process_group is not before[0]
    after = (
        dist.init_process_group,
        dist.new_group,
        dist.barrier,
        dist.is_nccl_available,
        torch.nn.parallel.DistributedDataParallel.__init__,
        torch.cuda.nccl.version,
    )
    assert all(a is b for a, b in zip(after, before))
