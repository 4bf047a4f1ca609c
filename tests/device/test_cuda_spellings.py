"""Every CUDA spelling torch_npu's ``contrib/transfer_to_npu.py`` maps (torch_npu 2.13.0), under ``apply()``.

Each case runs real code written for CUDA under the default patch set and checks the target's
answer: data on the target device, the target's autocast state, or the documented target meaning
(``docs/compatibility.md``). The spellings left unmapped are declared by the patch with the reason
(``ascend_patch.patches.device.UNMAPPED``), so the count below is measured, not claimed. Cases whose
mapping the simulator cannot run (sparse layouts, device storages, lazy parameters) check the
simulator's one-line refusal on "sim" instead.
"""

from __future__ import annotations

import os
import pickle
import tempfile
import types
import warnings
from collections.abc import Callable

import pytest
import torch
from conftest import device_of

import ascend_patch
from ascend_patch.patches.device import UNMAPPED
from ascend_patch.sim import SimUnsupportedError

X = torch.ones(2)


def on(value: object, t: str) -> bool:
    """``value`` (a tensor, module, generator or storage) lives on the target device type ``t``."""
    if isinstance(value, torch.nn.Module):
        value = next(value.parameters())
    return torch.device(value.device).type == t  # type: ignore[union-attr]


def _quiet(fn: Callable[[], object]) -> object:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return fn()


def _autocast_state(t: str, check: Callable[[], object]) -> object:
    with torch.autocast(t, dtype=torch.bfloat16):
        return check()


def _set_gpu_enabled(t: str, *args: object) -> bool:
    torch.set_autocast_enabled(*args)
    try:
        return torch.is_autocast_enabled(t)
    finally:
        torch.set_autocast_enabled(t, False)


def _set_gpu_dtype(t: str, setter: Callable[[torch.dtype], None]) -> bool:
    before = torch.get_autocast_dtype(t)
    want = torch.float16 if before != torch.float16 else torch.bfloat16
    setter(want)
    try:
        return torch.get_autocast_dtype(t) == want
    finally:
        torch.set_autocast_dtype(t, before)


def _floats_file() -> str:
    handle, path = tempfile.mkstemp(suffix=".bin")
    os.write(handle, bytes(16))
    os.close(handle)
    return path


def _graph_replays(t: str) -> bool:
    static_in = torch.zeros(3, device="cuda")
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        static_out = static_in * 2 + 1
    static_in.copy_(torch.tensor([1.0, 2.0, 3.0]))
    graph.replay()
    return on(static_out, t) and static_out.cpu().tolist() == [3.0, 5.0, 7.0]


def _make_graphed(t: str) -> bool:
    layer = torch.nn.Linear(2, 2).cuda()
    graphed = torch.cuda.make_graphed_callables(layer, (torch.ones(1, 2, device="cuda"),))
    return on(graphed(torch.ones(1, 2, device="cuda")), t)


def _profile_cuda_activity(t: str) -> bool:
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        torch.ones(2, device="cuda") + 1
    return len(prof.events()) > 0


def _load(t: str, map_location: object, positional: bool = False) -> bool:
    path = os.path.join(tempfile.mkdtemp(), "x.pt")
    torch.save({"x": X}, path)
    loaded = torch.load(path, map_location) if positional else torch.load(path, map_location=map_location)
    return on(loaded["x"], t)


# spelling -> check(target device type). Grouped as transfer_to_npu groups them.
CASES: dict[str, Callable[[str], object]] = {
    # torch_fn_white_list: factories and loaders with a device argument
    **{
        f"torch.{name}": (lambda name, args, kw: lambda t: on(getattr(torch, name)(*args, device="cuda", **kw), t))(
            name, args, kw
        )
        for name, args, kw in [
            ("zeros", (2,), {}),
            ("ones", (2,), {}),
            ("empty", (2,), {}),
            ("full", ((2,), 1.0), {}),
            ("rand", (2,), {}),
            ("randn", (2,), {}),
            ("randint", (0, 5, (2,)), {}),
            ("randperm", (4,), {}),
            ("arange", (3,), {}),
            ("linspace", (0, 1, 3), {}),
            ("logspace", (0, 1, 3), {}),
            ("eye", (2,), {}),
            ("tensor", ([1.0],), {}),
            ("as_tensor", ([1.0],), {}),
            ("empty_strided", ((2,), (1,)), {}),
            ("scalar_tensor", (1.0,), {}),
            ("zeros_like", (X,), {}),
            ("ones_like", (X,), {}),
            ("empty_like", (X,), {}),
            ("full_like", (X, 1.0), {}),
            ("rand_like", (X,), {}),
            ("randn_like", (X,), {}),
            ("randint_like", (X, 5), {}),
            ("tril_indices", (3, 3), {}),
            ("triu_indices", (3, 3), {}),
            ("normal", (0.0, 1.0, (2,)), {}),
            ("bartlett_window", (4,), {}),
            ("blackman_window", (4,), {}),
            ("hamming_window", (4,), {}),
            ("hann_window", (4,), {}),
            ("kaiser_window", (4,), {}),
            ("from_file", (_floats_file(),), {"size": 4, "dtype": torch.float32}),
        ]
    },  # fmt: skip
    "torch.range": lambda t: on(_quiet(lambda: torch.range(0, 3, device="cuda")), t),
    "torch.frombuffer (no device argument: host memory)": lambda t: (
        torch.frombuffer(bytearray(8), dtype=torch.float32).device.type == "cpu"
    ),
    "torch.load(map_location='cuda')": lambda t: _load(t, "cuda"),
    "torch.load(f, 'cuda:0') positional": lambda t: _load(t, "cuda:0", positional=True),
    "torch.load(map_location={'cuda:0': 'cuda:0'})": lambda t: _load(t, {"cpu": "cuda:0"}),
    "torch.set_default_device('cuda')": lambda t: _default_device(t),
    "device=<int>": lambda t: on(torch.zeros(2, device=0), t),
    "device=torch.device('cuda', 0)": lambda t: on(torch.zeros(2, device=torch.device("cuda", 0)), t),
    "device='cuda:0'": lambda t: on(torch.zeros(2, device="cuda:0"), t),
    "torch.fft.fftfreq": lambda t: on(torch.fft.fftfreq(4, device="cuda"), t),
    "torch.fft.rfftfreq": lambda t: on(torch.fft.rfftfreq(4, device="cuda"), t),
    "torch.get_device_module('cuda')": lambda t: (
        torch.get_device_module("cuda") is (torch.cuda if t == "cpu" else torch.npu)
    ),  # type: ignore[attr-defined]
    # torch_tensor_fn_white_list
    **{
        f"Tensor.{name}": (lambda name, args: lambda t: on(getattr(X, name)(*args, device="cuda"), t))(name, args)
        for name, args in [
            ("new_empty", ((2,),)),
            ("new_empty_strided", ((2,), (1,))),
            ("new_full", ((2,), 1.0)),
            ("new_ones", ((2,),)),
            ("new_tensor", ([1.0],)),
            ("new_zeros", ((2,),)),
        ]
    },  # fmt: skip
    "Tensor.to('cuda')": lambda t: on(X.to("cuda"), t),
    "Tensor.to(0)": lambda t: on(X.to(0), t),
    "Tensor.to(device='cuda:0', dtype=...)": lambda t: on(X.to(device="cuda:0", dtype=torch.half), t),
    "Tensor.to('cuda', torch.half)": lambda t: X.to("cuda", torch.half).dtype == torch.half,
    "Tensor.pin_memory('cuda')": lambda t: X.pin_memory("cuda").device.type == "cpu",
    "Tensor.pin_memory()": lambda t: X.pin_memory().device.type == "cpu",
    # torch_module_fn_white_list and the Tensor/Module specials
    "Module.to('cuda')": lambda t: on(torch.nn.Linear(2, 2).to("cuda"), t),
    "Module.to(0)": lambda t: on(torch.nn.Linear(2, 2).to(0), t),
    "Module.to(device='cuda:0')": lambda t: on(torch.nn.Linear(2, 2).to(device="cuda:0"), t),
    "Module.to_empty(device='cuda')": lambda t: on(torch.nn.Linear(2, 2).to_empty(device="cuda"), t),
    "Module.to_empty(device=0)": lambda t: on(torch.nn.Linear(2, 2).to_empty(device=0), t),
    "Module.cuda()": lambda t: on(torch.nn.Linear(2, 2).cuda(), t),
    "Module.cuda(0)": lambda t: on(torch.nn.Linear(2, 2).cuda(0), t),
    "Tensor.cuda()": lambda t: on(X.cuda(), t),
    "Tensor.cuda(0)": lambda t: on(X.cuda(0), t),
    "Tensor.cuda('cuda:0')": lambda t: on(X.cuda("cuda:0"), t),
    # is_cuda follows torch.cuda.is_available(): True on an accelerator target, False on cpu.
    "Tensor.is_cuda": lambda t: X.cuda().is_cuda is (t == "npu"),
    "TypedStorage.is_cuda": lambda t: _quiet(lambda: torch.zeros(2).storage().is_cuda) is False,
    "torch.Generator('cuda')": lambda t: on(torch.Generator("cuda"), t),
    "torch.Generator(device='cuda:0')": lambda t: on(torch.Generator(device="cuda:0"), t),
    "isinstance(g, torch.Generator)": lambda t: isinstance(torch.default_generator, torch.Generator),
    "torch.Event('cuda')": lambda t: torch.Event("cuda").query(),
    "torch.Event(device='cuda:0', enable_timing=True)": lambda t: _event_times(
        lambda **kw: torch.Event(device="cuda:0", **kw), t
    ),
    "torch.Stream('cuda')": lambda t: torch.Stream("cuda").query(),
    "with torch.device('cuda')": lambda t: _device_context(t),
    # autocast
    "torch.autocast('cuda')": lambda t: _autocast_on(t, lambda: torch.autocast("cuda", dtype=torch.bfloat16)),
    "torch.cuda.amp.autocast()": lambda t: _autocast_on(t, lambda: torch.cuda.amp.autocast(dtype=torch.bfloat16)),
    "torch.cuda.amp.autocast_mode.autocast": lambda t: _autocast_on(
        t, lambda: torch.cuda.amp.autocast_mode.autocast(dtype=torch.bfloat16)
    ),
    "torch.cuda.amp.GradScaler()": lambda t: _quiet(lambda: torch.cuda.amp.GradScaler())._device == t,
    "torch.amp.GradScaler('cuda')": lambda t: torch.amp.GradScaler("cuda")._device == t,
    "torch.cuda.amp.custom_fwd": lambda t: _custom_fwd(t, lambda f: torch.cuda.amp.custom_fwd(f)),
    "torch.amp.custom_fwd(device_type='cuda')": lambda t: _custom_fwd(
        t, lambda f: torch.amp.custom_fwd(f, device_type="cuda")
    ),
    "torch.cuda.amp.custom_bwd": lambda t: _custom_bwd(t, lambda f: torch.cuda.amp.custom_bwd(f)),
    "torch.amp.custom_bwd(device_type='cuda')": lambda t: _custom_bwd(
        t, lambda f: torch.amp.custom_bwd(f, device_type="cuda")
    ),
    "torch.is_autocast_enabled()": lambda t: _autocast_state(t, torch.is_autocast_enabled) is True,
    "torch.is_autocast_enabled('cuda')": lambda t: _autocast_state(t, lambda: torch.is_autocast_enabled("cuda")),
    "torch.set_autocast_enabled(True)": lambda t: _set_gpu_enabled(t, True),
    "torch.set_autocast_enabled('cuda', True)": lambda t: _set_gpu_enabled(t, "cuda", True),
    "torch.get_autocast_dtype('cuda')": lambda t: (
        _autocast_state(t, lambda: torch.get_autocast_dtype("cuda")) == torch.bfloat16
    ),
    "torch.set_autocast_dtype('cuda', dtype)": lambda t: _set_gpu_dtype(
        t, lambda d: torch.set_autocast_dtype("cuda", d)
    ),
    "torch.get_autocast_gpu_dtype()": lambda t: (
        _autocast_state(t, lambda: _quiet(torch.get_autocast_gpu_dtype)) == torch.bfloat16
    ),
    "torch.set_autocast_gpu_dtype(dtype)": lambda t: _set_gpu_dtype(
        t, lambda d: _quiet(lambda: torch.set_autocast_gpu_dtype(d))
    ),
    "torch.cuda.amp.common.amp_definitely_not_available()": lambda t: (
        torch.cuda.amp.common.amp_definitely_not_available() is (t == "cpu")
    ),
    # legacy tensor types; DoubleTensor keeps float64
    **{
        f"torch.cuda.{name}": (
            lambda name, dtype: (
                lambda t: (lambda v: on(v, t) and v.dtype == dtype and isinstance(v, getattr(torch.cuda, name)))(
                    getattr(torch.cuda, name)([1, 0])
                )
            )
        )(name, dtype)
        for name, dtype in [
            ("FloatTensor", torch.float32),
            ("DoubleTensor", torch.float64),
            ("HalfTensor", torch.float16),
            ("BFloat16Tensor", torch.bfloat16),
            ("LongTensor", torch.int64),
            ("IntTensor", torch.int32),
            ("ShortTensor", torch.int16),
            ("CharTensor", torch.int8),
            ("ByteTensor", torch.uint8),
            ("BoolTensor", torch.bool),
        ]
    },  # fmt: skip
    "Tensor.type('torch.cuda.HalfTensor')": lambda t: (lambda v: on(v, t) and v.dtype == torch.half)(
        X.type("torch.cuda.HalfTensor")
    ),
    "Tensor.type(torch.cuda.LongTensor)": lambda t: X.type(torch.cuda.LongTensor).dtype == torch.int64,
    # torch.cuda: devices
    "torch.cuda.is_available": lambda t: torch.cuda.is_available() is (t == "npu"),
    "torch.cuda.device_count": lambda t: torch.cuda.device_count() == (1 if t == "npu" else 0),
    "torch.cuda.current_device": lambda t: torch.cuda.current_device() == 0,
    "torch.cuda.set_device": lambda t: torch.cuda.set_device("cuda:0") is None,
    "torch.cuda.synchronize": lambda t: torch.cuda.synchronize("cuda:0") is None,
    "torch.cuda.get_device_name": lambda t: isinstance(torch.cuda.get_device_name("cuda:0"), str),
    "torch.cuda.get_device_properties": lambda t: torch.cuda.get_device_properties(0).total_memory > 0,
    "torch.cuda.get_device_capability": lambda t: torch.cuda.get_device_capability("cuda:0") >= (8, 0),
    "torch.cuda.is_bf16_supported": lambda t: torch.cuda.is_bf16_supported(),
    "torch.cuda.is_initialized": lambda t: torch.cuda.is_initialized(),
    "torch.cuda.init": lambda t: torch.cuda.init() is None,
    "torch.cuda.ipc_collect": lambda t: torch.cuda.ipc_collect() is None,
    "torch.cuda.utilization": lambda t: torch.cuda.utilization("cuda:0") == 0,
    "torch.cuda.get_arch_list": lambda t: torch.cuda.get_arch_list() == [],
    "torch.cuda.get_gencode_flags": lambda t: torch.cuda.get_gencode_flags() == "",
    "torch.cuda.device": lambda t: _in_context(t, lambda: torch.cuda.device("cuda:0")),
    "torch.cuda.device_of": lambda t: _in_context(t, lambda: torch.cuda.device_of(X.cuda())),
    "torch.cuda.can_device_access_peer": lambda t: torch.cuda.can_device_access_peer("cuda:0", 0) is False,
    "torch.cuda.current_blas_handle": lambda t: torch.cuda.current_blas_handle() == 0,
    "torch.cuda.default_generators": lambda t: on(torch.cuda.default_generators[0], t),
    # torch.cuda: random (the seed patch)
    "torch.cuda.manual_seed": lambda t: _seeded(t, torch.cuda.manual_seed),
    "torch.cuda.manual_seed_all": lambda t: _seeded(t, torch.cuda.manual_seed_all),
    "torch.cuda.seed": lambda t: torch.cuda.seed() is None,
    "torch.cuda.seed_all": lambda t: torch.cuda.seed_all() is None,
    "torch.cuda.initial_seed": lambda t: isinstance(torch.cuda.initial_seed(), int),
    "torch.cuda.get_rng_state": lambda t: torch.cuda.get_rng_state("cuda:0").dtype == torch.uint8,
    "torch.cuda.set_rng_state": lambda t: _rng_state_roundtrip(t),
    "torch.cuda.get_rng_state_all": lambda t: len(torch.cuda.get_rng_state_all()) >= 1,
    "torch.cuda.set_rng_state_all": lambda t: torch.cuda.set_rng_state_all(torch.cuda.get_rng_state_all()) is None,
    # torch.cuda: memory (npu: the device's counters; cpu target: no device memory, counters 0)
    **{
        f"torch.cuda.{name}": (lambda name: lambda t: isinstance(getattr(torch.cuda, name)("cuda:0"), int))(name)
        for name in (
            "memory_allocated",
            "max_memory_allocated",
            "memory_reserved",
            "max_memory_reserved",
            "memory_cached",
            "max_memory_cached",
        )
    },  # fmt: skip
    **{
        f"torch.cuda.{name}": (lambda name: lambda t: getattr(torch.cuda, name)("cuda:0") is None)(name)
        for name in (
            "reset_peak_memory_stats",
            "reset_max_memory_allocated",
            "reset_max_memory_cached",
            "reset_accumulated_memory_stats",
        )
    },  # fmt: skip
    "torch.cuda.empty_cache": lambda t: torch.cuda.empty_cache() is None,
    "torch.cuda.mem_get_info": lambda t: (lambda free, total: 0 <= free <= total)(*torch.cuda.mem_get_info("cuda:0")),
    "torch.cuda.memory_stats": lambda t: "allocated_bytes.all.current" in torch.cuda.memory_stats("cuda:0"),
    "torch.cuda.memory_stats_as_nested_dict": lambda t: "allocated_bytes" in torch.cuda.memory_stats_as_nested_dict(),
    "torch.cuda.memory_summary": lambda t: "memory" in torch.cuda.memory_summary("cuda:0"),
    "torch.cuda.memory.memory_summary (module path)": lambda t: "memory" in torch.cuda.memory.memory_summary(),
    "torch.cuda.memory_snapshot": lambda t: torch.cuda.memory_snapshot() == [],
    "torch.cuda.set_per_process_memory_fraction": lambda t: (
        torch.cuda.set_per_process_memory_fraction(0.5, "cuda:0") is None
    ),
    "torch.cuda.get_per_process_memory_fraction": lambda t: 0 < torch.cuda.get_per_process_memory_fraction() <= 1,
    "torch.cuda.host_memory_stats": lambda t: torch.cuda.host_memory_stats() == {},
    "torch.cuda.host_memory_stats_as_nested_dict": lambda t: torch.cuda.host_memory_stats_as_nested_dict() == {},
    "torch.cuda.reset_peak_host_memory_stats": lambda t: torch.cuda.reset_peak_host_memory_stats() is None,
    "torch.cuda.reset_accumulated_host_memory_stats": lambda t: (
        torch.cuda.reset_accumulated_host_memory_stats() is None
    ),
    "torch.cuda.get_allocator_backend": lambda t: torch.cuda.get_allocator_backend() == "native",
    "torch.cuda.memory._record_memory_history": lambda t: torch.cuda.memory._record_memory_history() is None,
    "torch.cuda.memory._snapshot": lambda t: torch.cuda.memory._snapshot()["segments"] == [],
    "torch.cuda.memory._dump_snapshot": lambda t: _dump_snapshot(),
    "except torch.cuda.OutOfMemoryError": lambda t: torch.cuda.OutOfMemoryError is torch.OutOfMemoryError,
    # torch.cuda: streams, events, graphs, markers
    "torch.cuda.Event": lambda t: _event_times(lambda **kw: torch.cuda.Event(**kw), t),
    "torch.cuda.Stream": lambda t: torch.cuda.Stream(device="cuda:0").query(),
    "torch.cuda.stream": lambda t: _in_context(t, lambda: torch.cuda.stream(torch.cuda.Stream())),
    "torch.cuda.StreamContext": lambda t: _in_context(t, lambda: torch.cuda.StreamContext(torch.cuda.current_stream())),
    "torch.cuda.current_stream": lambda t: torch.cuda.current_stream("cuda:0").query(),
    "torch.cuda.default_stream": lambda t: torch.cuda.default_stream("cuda:0").query(),
    "torch.cuda.set_stream": lambda t: _set_stream(),
    "torch.cuda.set_sync_debug_mode": lambda t: torch.cuda.set_sync_debug_mode(0) is None,
    "torch.cuda.get_sync_debug_mode": lambda t: torch.cuda.get_sync_debug_mode() == 0,
    "torch.cuda.CUDAGraph + torch.cuda.graph": _graph_replays,
    "torch.cuda.graphs.CUDAGraph (module path)": lambda t: torch.cuda.graphs.CUDAGraph is torch.cuda.CUDAGraph,
    "torch.cuda.make_graphed_callables": _make_graphed,
    "torch.cuda.graph_pool_handle": lambda t: torch.cuda.graph_pool_handle() is not None,
    "torch.cuda.is_current_stream_capturing": lambda t: torch.cuda.is_current_stream_capturing() is False,
    "torch.cuda.nvtx.range_push/range_pop": lambda t: (
        (torch.cuda.nvtx.range_push("a"), torch.cuda.nvtx.range_pop()) == (0, 0)
    ),
    "with torch.cuda.nvtx.range('a')": lambda t: _nvtx_range(),
    "torch.cuda.nvtx.mark / range_start / range_end": lambda t: _nvtx_marks(),
    "torch.profiler ProfilerActivity.CUDA": _profile_cuda_activity,
    # internals that ask torch.cuda see the truth, so they take the target's path
    "torch._utils._get_available_device_type": lambda t: torch._utils._get_available_device_type() != "cuda",
    "torch.compile of CUDA-written code": lambda t: on(
        torch.compile(lambda a: torch.zeros(2, device="cuda") + a, backend="eager")(X.cuda()), t
    ),
}

# Mapped, but the simulator cannot hold the result: sparse layouts, device storages, lazy parameters.
SIM_REFUSES: dict[str, Callable[[], object]] = {
    "LazyLinear.cuda() (UninitializedTensorMixin._allowed_methods)": lambda: torch.nn.LazyLinear(2).cuda()(
        torch.ones(1, 3, device="cuda")
    ),
    "torch.sparse_coo_tensor": lambda: torch.sparse_coo_tensor([[0, 1]], [1.0, 2.0], (2,), device="cuda"),
    "torch.sparse_csr_tensor": lambda: torch.sparse_csr_tensor([0, 1, 2], [0, 1], [1.0, 2.0], (2, 2), device="cuda"),
    "torch.sparse_compressed_tensor": lambda: torch.sparse_compressed_tensor(
        [0, 1, 2], [0, 1], [1.0, 2.0], (2, 2), layout=torch.sparse_csr, device="cuda"
    ),
    "torch.UntypedStorage(n, device='cuda')": lambda: torch.UntypedStorage(4, device="cuda"),
    **{f"torch.cuda.{kind}Storage": (lambda kind: lambda: getattr(torch.cuda, f"{kind}Storage")(2))(kind)
       for kind in ("Float", "Double", "Half", "BFloat16", "Long", "Int", "Short", "Char", "Byte", "Bool")},
}  # fmt: skip

# Multi-process, distributed or profiling spellings, tested in their own files (module::test).
COVERED_ELSEWHERE = {
    "init_process_group('nccl')": "test_device_distributed::test_two_process_nccl_job",
    "init_process_group(backend='cpu:gloo,cuda:nccl')": "test_device_distributed::test_map_backend",
    "init_process_group(device_id=torch.device('cuda', 0))": "test_device_distributed::test_arguments_torch_receives",
    "new_group(backend='nccl')": "test_device_distributed::test_arguments_torch_receives",
    "barrier(device_ids=[local_rank])": "test_device_distributed::test_arguments_torch_receives",
    "DistributedDataParallel(device_ids=[...], output_device)": "test_device_distributed::test_two_process_nccl_job",
    "torch.distributed.is_nccl_available()": "test_device_distributed::test_nccl_probes_answer_for_the_target",
    "torch.cuda.nccl.version() / is_available()": "test_device_distributed::test_nccl_probes_answer_for_the_target",
    "init_device_mesh('cuda', ...)": "test_device_distributed::test_arguments_torch_receives",
    "DeviceMesh('cuda', mesh)": "test_device_distributed::test_fsdp_and_device_mesh_arguments",
    "FullyShardedDataParallel(device_id=...)": "test_device_distributed::test_fsdp_and_device_mesh_arguments",
}


def _default_device(t: str) -> bool:
    torch.set_default_device("cuda")
    try:
        return on(torch.zeros(1), t)
    finally:
        torch.set_default_device(None)


def _device_context(t: str) -> bool:
    with torch.device("cuda"):
        return on(torch.zeros(1), t)


def _in_context(t: str, make: Callable[[], object]) -> bool:
    with make():  # type: ignore[attr-defined]
        return on(torch.zeros(1, device="cuda"), t)


def _event_times(event: Callable[..., object], t: str) -> bool:
    start, end = event(enable_timing=True), event(enable_timing=True)
    start.record()  # type: ignore[attr-defined]
    torch.ones(64, device="cuda").sum()
    end.record()  # type: ignore[attr-defined]
    end.synchronize()  # type: ignore[attr-defined]
    return start.elapsed_time(end) >= 0  # type: ignore[attr-defined]


def _autocast_on(t: str, region: Callable[[], object]) -> bool:
    layer = torch.nn.Linear(2, 2).cuda()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with region():  # type: ignore[attr-defined]
            out = layer(torch.ones(1, 2, device="cuda"))
    return on(out, t) and out.dtype == torch.bfloat16


def _custom_fwd(t: str, decorate: Callable[[Callable[..., object]], Callable[..., object]]) -> bool:
    forward = _quiet(lambda: decorate(lambda ctx, a: torch.is_autocast_enabled(t)))
    with torch.autocast(t, dtype=torch.bfloat16):
        return forward(types.SimpleNamespace(), X) is True  # type: ignore[operator]


def _custom_bwd(t: str, decorate: Callable[[Callable[..., object]], Callable[..., object]]) -> bool:
    backward = _quiet(lambda: decorate(lambda ctx, a: torch.is_autocast_enabled(t)))
    ctx = types.SimpleNamespace(_fwd_used_autocast=True, _dtype=torch.bfloat16)
    return backward(ctx, X) is True  # type: ignore[operator]


def _seeded(t: str, seed: Callable[[int], None]) -> bool:
    seed(5)
    first = torch.rand(3, device="cuda")
    seed(5)
    return on(first, t) and torch.equal(first.cpu(), torch.rand(3, device="cuda").cpu())


def _rng_state_roundtrip(t: str) -> bool:
    state = torch.cuda.get_rng_state()
    first = torch.rand(3, device="cuda")
    torch.cuda.set_rng_state(state, "cuda:0")
    return torch.equal(first.cpu(), torch.rand(3, device="cuda").cpu())


def _dump_snapshot() -> bool:
    path = os.path.join(tempfile.mkdtemp(), "snapshot.pickle")
    torch.cuda.memory._dump_snapshot(path)
    with open(path, "rb") as f:
        return pickle.load(f)["segments"] == []


def _set_stream() -> bool:
    stream = torch.cuda.Stream()
    previous = torch.cuda.current_stream()
    torch.cuda.set_stream(stream)
    try:
        return torch.cuda.current_stream() is stream or torch.cuda.current_stream() == stream
    finally:
        torch.cuda.set_stream(previous)


def _nvtx_range() -> bool:
    with torch.cuda.nvtx.range("step {}", 1):
        inside = torch.cuda.nvtx.range_push("inner")
        torch.cuda.nvtx.range_pop()
    return inside == 1


def _nvtx_marks() -> bool:
    torch.cuda.nvtx.mark("here")
    range_id = torch.cuda.nvtx.range_start("span")
    torch.cuda.nvtx.range_end(range_id)
    return isinstance(range_id, int)


@pytest.fixture
def under_apply(target):
    with ascend_patch.patched(device=target):
        yield device_of(target)
    torch._dynamo.reset()


@pytest.mark.filterwarnings("ignore::UserWarning", "ignore::FutureWarning", "ignore::DeprecationWarning")
@pytest.mark.parametrize("spelling", sorted(CASES))
def test_spelling_lands_on_the_target(spelling, under_apply):
    assert CASES[spelling](under_apply)


@pytest.mark.filterwarnings("ignore::UserWarning", "ignore::DeprecationWarning")
@pytest.mark.parametrize("spelling", sorted(SIM_REFUSES))
def test_spelling_mapped_or_refused_by_the_simulator(spelling, target, under_apply):
    if target == "sim":
        with pytest.raises(NotImplementedError):  # SimUnsupportedError, or no torch.npu counterpart
            SIM_REFUSES[spelling]()
        return
    value = SIM_REFUSES[spelling]()
    assert getattr(value, "device", torch.device("cpu")).type == "cpu"


def test_simulator_refusals_name_themselves():
    with ascend_patch.patched(device="sim"):
        with pytest.raises(SimUnsupportedError, match="simulated NPU .* does not support torch.sparse_coo"):
            SIM_REFUSES["torch.sparse_coo_tensor"]()
        with pytest.raises(SimUnsupportedError, match="storages allocated on the device"):
            SIM_REFUSES["torch.UntypedStorage(n, device='cuda')"]()


def test_coverage_of_transfer_to_npu():
    """At least 160 of the CUDA spellings transfer_to_npu maps are mapped (or given a documented meaning) and tested."""
    import importlib

    for spelling, where in COVERED_ELSEWHERE.items():
        module, _, test = where.partition("::")
        assert hasattr(importlib.import_module(f"{__package__}.{module}"), test), (spelling, where)
    covered = len(CASES) + len(SIM_REFUSES) + len(COVERED_ELSEWHERE)
    assert covered >= 160, f"{covered} spellings covered"
    assert covered / (covered + len(UNMAPPED)) >= 0.9
