"""device: CUDA device requests land on the target device (npu, or cpu without an accelerator).

Before::

    model = Model().cuda()
    x = torch.randn(8, 16, device="cuda:0")
    torch.cuda.synchronize()                  # on NPU/CPU: "Torch not compiled with CUDA enabled"

After ``apply("device")`` the same lines run on the target: ``"cuda"`` -> ``"npu"``,
``"cuda:N"`` -> ``"npu:N"``, ``torch.device("cuda", N)`` -> ``torch.device("npu", N)`` and an int
device ``N`` -> ``npu:N``; on a cpu target every one of them is plain ``"cpu"``. Anything that is
not a CUDA spelling (``"cpu"``, ``"npu:0"``, dtypes, tensors) is passed through untouched. With an
index, ``apply(device="npu:3")``, npu:3 is the process's one CUDA device, as CUDA_VISIBLE_DEVICES=3
makes it: ``"cuda"`` / ``"cuda:0"`` / ``0`` -> ``npu:3``, any other CUDA index raises (:mod:`.mapping`).

What is wrapped, and why only these (one module each):

- :mod:`.factories`: torch factories and ``*_like`` functions (``zeros``, ``randn``, ``arange``,
  ``tensor``, ...), ``Tensor.new_*``, the classes that take a device (``torch.Generator``,
  ``torch.Event``, ``torch.Stream``, ``torch.UntypedStorage``), ``torch.get_device_module``.
  Only callables that take a device are wrapped, each as a plain Python function whose fast path
  (no CUDA spelling) is a ``kwargs`` truth test or one dict lookup: no global ``TorchFunctionMode``,
  which would tax every op of the model (benchmarks/bench_device_overhead.py).
- :mod:`.transfers`: ``Tensor.to`` / ``Tensor.cuda`` / ``Tensor.pin_memory``, ``Module.cuda`` /
  ``Module.to`` (which parses an int device itself, before any ``Tensor.to``), ``torch.load``
  and ``torch.device`` used as a context manager (``DeviceContext``, which also serves
  ``torch.set_default_device``). :mod:`.mapping` translates one device argument for all of them.
- :mod:`.cuda_api` / :mod:`.host`: ``torch.cuda.*`` forwards to ``torch.npu`` (device arguments
  mapped) or, on a cpu target, to host implementations: a wall-clock ``Event``, synchronous
  streams, memory counters that are 0 (there is no device memory), graphs replayed from recorded ops.
- :mod:`.legacy`: ``is_cuda``, ``torch.cuda.FloatTensor`` & co., ``Tensor.type("torch.cuda...")``,
  ``set_default_tensor_type``; :mod:`.profiling`: ``torch.cuda.nvtx``, ``ProfilerActivity.CUDA``.

PyTorch's own code keeps hearing the real ``torch.cuda`` (``calls.called_by_torch``): inductor,
dynamo and DataParallel would otherwise take CUDA-only paths.

``torch.cuda.is_available()`` answers according to the ``cuda_is_available`` option:

- ``"target"`` (default): True exactly when the target is an accelerator (npu). CUDA-only
  branches then run on the NPU, where their device requests are mapped; on a cpu target they stay
  off, as they do in plain CPU PyTorch, because they lead to code that needs a GPU (custom
  kernels, triton, torch internals that trust ``is_available()``).
- ``"true"``: always True, to exercise CUDA-only branches on a cpu target. Apply "attention" (and
  "autocast") with it: the branches then meet the flash_attn shim and the mapped autocast.
- ``"false"``: always False; upstream takes its non-CUDA path even on an NPU.

``device_count()`` answers 0 whenever ``is_available()`` answers False, so the two agree.

TorchScript: factory wrappers are registered in the JIT's builtin table (journaled like every other
write), so ``torch.jit.script`` still compiles code that calls ``torch.zeros``; inside scripted code
device strings are not mapped. Lazy modules: ``UninitializedTensorMixin`` keeps a list of the
``Tensor`` methods it allows, compared by identity, so our ``to``/``cuda`` are added to it.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ...engine.patch import Option, Patch, PatchContext, Replace
from ...engine.slots import MISSING
from .cuda_api import CUDA_API, _cuda_api, _is_available, cuda_target
from .factories import (
    FACTORIES,
    OPTIONAL_FACTORIES,
    TENSOR_NEW,
    _factory,
    _tensor_new,
    device_class,
    device_module,
    route_device_classes,
    storage_new,
)
from .legacy import (
    LEGACY_TENSOR_TYPES,
    legacy_tensor_type,
    set_default_tensor_type,
    storage_is_cuda,
    tensor_is_cuda,
    tensor_type,
)
from .mapping import _mapped_calls, device_index, placement
from .policy import CUDA_IS_AVAILABLE_CHOICES, cuda_available_answer
from .profiling import NVTX_VERBS, nvtx_verb, profile_init
from .transfers import (
    _allowed_methods,
    _device_context_init,
    _load,
    _module_cuda,
    _module_to,
    _tensor_cuda,
    _tensor_pin_memory,
    _tensor_to,
)

logger = logging.getLogger("ascend_patch")

# CUDA spellings torch_npu's transfer_to_npu maps that this patch leaves alone, and why (rendered in
# docs/compatibility.md by tools/refresh_docs.py; tests/device/test_cuda_spellings.py counts the rest).
UNMAPPED: dict[str, str] = {
    "torch._cudnn_init_dropout_state": "cuDNN's RNN dropout state: only cuDNN kernels read it",
    "torch._pin_memory": "private; Tensor.pin_memory is mapped",
    "torch.cuda.ExternalStream": "wraps a raw CUDA stream pointer, which no other device has",
    "torch.cuda.MemPool / use_mem_pool": "CUDA caching-allocator pools; torch_npu's are a different API",
    "torch.cuda.change_current_allocator / CUDAPluggableAllocator": "loads a CUDA allocator .so",
    "torch.cuda.caching_allocator_alloc / caching_allocator_delete": "raw device pointers into CUDA's allocator",
    "torch._C._host_emptyCache": "private; reached only by CUDA graph capture, which is emulated",
    "torch.utils.cpp_extension.include_paths(device_type='cuda')": "building CUDA extensions needs CUDA",
    "torch.autograd.profiler_util.Kernel": "profiler records: cosmetic",
    "torch.distributed.ProcessGroupNCCL": "absent from non-CUDA builds; create groups with init_process_group",
    "pipelining.PipelineStage / build_stage(device='cuda')": "pipeline parallelism is not covered yet",
    "torch.jit.script (device strings inside scripted code)": "scripted code does not call Python wrappers",
    "torch._inductor get_gpu_type": "inductor internals see the real torch.cuda (no CUDA here)",
    "torch.nn.DataParallel": "needs torch._C._scatter, which CPU and NPU builds lack; use DDP",
    "third-party is_torch_cuda_available probes (transformers, accelerate)": "answered by cuda_is_available",
}


@dataclass(frozen=True, eq=False)
class NpuCurrentDeviceSlot:
    """``torch.npu``'s current device, as a journal slot.

    ``apply(device="npu:3")`` makes npu:3 current, as CUDA_VISIBLE_DEVICES=3 makes its GPU current:
    what reads the current device without a device argument (``Event.record()``, torch_npu's own ops,
    ``torch.cuda.manual_seed`` through the "seed" patch) then acts on npu:3 too. It is read only
    once torch_npu is initialised (reading it before would initialise npu:0, taking memory on a card
    the process was told not to use); revert restores a device read then, and otherwise leaves
    npu:<index> current: a device, once initialised, cannot be un-chosen.
    """

    module: Any  # torch.npu
    name: str = "<current device>"

    def key(self) -> tuple[int, str]:
        return (id(self.module), self.name)

    def read(self) -> Any:
        # An int from C: small ints are cached objects, so the journal's identity test holds.
        return self.module.current_device() if self.module.is_initialized() else MISSING

    read_own = read

    def write(self, value: Any) -> None:
        self.module.set_device(value)

    def erase(self) -> None:
        pass  # nothing was current before apply; npu:<index> stays (see above)

    def describe(self) -> str:
        return "torch.npu current device"


def _setup(ctx: PatchContext) -> None:
    # DeviceContext (``with torch.device(...)``, set_default_device) tests ``func in
    # _device_constructors()``, an lru_cache over torch.<factory> objects. Filled while our
    # wrappers are installed, it would hold them forever and miss the originals after revert.
    from torch.utils._device import _device_constructors

    _device_constructors()
    for counter in _mapped_calls.values():
        counter[0] = 0  # in place: a re-apply reuses the wrappers built the first time, and their counters
    index = device_index(ctx)
    if index is not None and ctx.device == "npu":
        import torch

        slot = NpuCurrentDeviceSlot(torch.npu)  # type: ignore[attr-defined]
        ctx.replace(slot, index, kind="support", note=f"npu:{index} is this process's CUDA device")  # type: ignore[arg-type]
    route_device_classes(ctx)
    logger.info(
        "device: CUDA device requests -> %s; torch.cuda.is_available() -> %s (cuda_is_available=%r)",
        placement(ctx),
        cuda_available_answer(ctx),
        ctx.options["cuda_is_available"],
    )


def _skip(ctx: PatchContext) -> str | None:
    return "target is cuda: CUDA device requests already land on it" if ctx.device == "cuda" else None


def _stats() -> Mapping[str, int]:
    return {api: counter[0] for api, counter in _mapped_calls.items() if counter[0]}


def _replaces() -> tuple[Replace, ...]:
    reps: list[Replace] = [Replace(f"torch:{name}", _factory(name), copies=True) for name in FACTORIES]
    for spec in OPTIONAL_FACTORIES:
        sub, name = spec.split(":")
        reps.append(Replace(f"torch.{sub}:{name}", _factory(name, owner=f"torch.{sub}"), optional=True))
    reps += [Replace(f"torch:Tensor.{name}", _tensor_new(name)) for name in TENSOR_NEW]
    reps += [
        Replace("torch:Tensor.to", _tensor_to),
        Replace("torch:Tensor.cuda", _tensor_cuda),
        Replace("torch:Tensor.pin_memory", _tensor_pin_memory),
        Replace("torch.nn.modules.module:Module.cuda", _module_cuda),
        Replace("torch.nn.modules.module:Module.to", _module_to),
        # After Tensor.to/cuda: reads the wrappers just installed.
        Replace("torch.nn.parameter:UninitializedTensorMixin._allowed_methods", _allowed_methods),
        Replace("torch.utils._device:DeviceContext.__init__", _device_context_init),
        Replace("torch:Generator", device_class("torch.Generator")),
        Replace("torch:Event", device_class("torch.Event")),
        Replace("torch:Stream", device_class("torch.Stream")),
        Replace("torch:get_device_module", device_module, copies=True),
        Replace("torch.storage:UntypedStorage.__new__", storage_new),
        Replace("torch:load", _load, copies=True),
        Replace("torch:Tensor.is_cuda", tensor_is_cuda),
        Replace("torch.storage:TypedStorage.is_cuda", storage_is_cuda),
        Replace("torch.storage:UntypedStorage.is_cuda", storage_is_cuda),
        Replace("torch:Tensor.type", tensor_type),
        Replace("torch:set_default_tensor_type", set_default_tensor_type, copies=True),
        Replace("torch.cuda:is_available", _is_available, copies=True),
    ]
    reps += [Replace(cuda_target(name), _cuda_api(name), copies=api.copies) for name, api in CUDA_API.items()]
    reps += [Replace(f"torch.cuda:{name}", legacy_tensor_type(name)) for name in LEGACY_TENSOR_TYPES]
    reps += [Replace(f"torch.cuda.nvtx:{verb}", nvtx_verb(verb)) for verb in NVTX_VERBS]
    reps.append(Replace("torch.profiler.profiler:profile.__init__", profile_init))
    return tuple(reps)


PATCH = Patch(
    name="device",
    summary="'cuda' devices (.cuda(), .to('cuda:N'), device='cuda', torch.cuda.*) land on the target device",
    replaces=_replaces(),
    options={
        "cuda_is_available": Option(
            default="target",
            choices=CUDA_IS_AVAILABLE_CHOICES,
            doc="torch.cuda.is_available(): 'target' = True only on an accelerator target (npu); "
            "'true' = always (exercise CUDA-only branches on cpu, with the attention patch); 'false' = never",
        ),
    },
    skip_reason=_skip,
    setup=_setup,
    stats=_stats,
)
