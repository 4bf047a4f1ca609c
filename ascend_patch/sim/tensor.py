"""Tensors on the simulated ``npu:0``: a wrapper subclass around a CPU tensor.

Why a wrapper and not a storage-less PrivateUse1 backend: about half of aten has generic
(CompositeExplicitAutograd or CPU-style) kernels that never reach a Python fallback, so a C++-free
backend breaks on ordinary ops. A wrapper made with ``_make_wrapper_subclass(..., device="npu:0")``
reports the npu device to every caller, carries the Python dispatch key, and so every aten op on it
reaches ``__torch_dispatch__`` *below* autograd: we unwrap to the inner CPU tensor, run the CPU
kernel, and wrap the result. Autograd, autocast and views all work on the wrappers as they would on
device tensors.

Rules ``__torch_dispatch__`` keeps:

* in-place and ``out=`` ops hand back the argument's own wrapper; views share the inner storage;
* outputs go to npu unless the op was given ``device=cpu`` (``.cpu()`` is ``_to_copy(device=cpu)``);
* a non-scalar CPU tensor mixed with npu tensors raises the device-mismatch error real hardware
  raises (0-dim CPU tensors are allowed, as on CUDA; so are ``copy_`` and CPU index tensors);
* random ops draw from the simulated device's generator (:mod:`.rng`);
* ops that change a tensor's shape in place (``resize_``, ``t_``, ``set_``, out= resizing) update
  the wrapper's metadata through the Meta kernels, which touch nothing but sizes and strides;
* ``aten.gelu`` computes the tanh form, see :mod:`.numerics`.

Factory calls such as ``torch.zeros(3, device="npu")`` reach the PrivateUse1 dispatch key with no
wrapper among their arguments; :func:`register_backend_kernels` routes them through the same code.
"""

from __future__ import annotations

import logging
import sys
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Self

import torch
from torch._subclasses.fake_tensor import is_fake

from . import device_module, memory, numerics, rng, serialization
from .unsupported import unsupported

logger = logging.getLogger("ascend_patch.sim")

aten = torch.ops.aten
_META = torch._C.DispatchKeySet(torch._C.DispatchKey.Meta)
_META_UTILS = "torch._subclasses.meta_utils"

# The device object for npu:0; created at install, after PrivateUse1 is renamed (before that
# torch.device("npu:0") does not parse).
_device: torch.device | None = None

# Ops that legitimately take a CPU tensor together with npu tensors.
_CROSS_DEVICE_OPS = {aten.copy_.default, aten._copy_from.default, aten._copy_from_and_resize.default,
                     aten._to_copy.default, aten.lift_fresh.default, aten.lift_fresh_copy.default}  # fmt: skip
# Ops whose ``indices`` (argument 1) may be CPU tensors: CUDA and torch_npu accept host indices.
_INDEX_OPS = {aten.index.Tensor, aten.index_put.default, aten.index_put_.default,
              aten._index_put_impl_.default, aten._unsafe_index.Tensor}  # fmt: skip
_RESIZE_OPS = {aten.resize_.default, aten.resize_as_.default, aten.set_.source_Tensor,
               aten.set_.source_Storage, aten.set_.source_Storage_storage_offset, aten.set_.default}  # fmt: skip


def device() -> torch.device:
    if _device is None:
        raise RuntimeError("the simulated NPU is not installed: call ascend_patch.sim.install() first")
    return _device


class SimTensor(torch.Tensor):
    """A tensor on the simulated ``npu:0`` whose data lives in the CPU tensor ``_inner``."""

    _inner: torch.Tensor
    # Without this, torch's default __torch_function__ re-wraps every result (CPU ones included)
    # into this class.
    __torch_function__ = torch._C._disabled_torch_function_impl

    @staticmethod
    def __new__(cls, inner: torch.Tensor, requires_grad: bool = False) -> Self:
        if isinstance(inner, SimTensor) or inner.device.type != "cpu":
            raise TypeError(f"SimTensor wraps a CPU tensor, got one on {inner.device}")
        if inner.layout != torch.strided:
            raise unsupported(f"{inner.layout} tensors on the device (only strided ones)")
        out = torch.Tensor._make_wrapper_subclass(
            cls, inner.size(), strides=inner.stride(), storage_offset=inner.storage_offset(),
            dtype=inner.dtype, layout=inner.layout, device=device(), requires_grad=requires_grad,
        )  # fmt: skip
        out._inner = inner
        memory.track(inner)
        return out

    @classmethod
    def __torch_dispatch__(cls, func, types, args=(), kwargs=None):  # type: ignore[override]
        return dispatch(func, args, kwargs or {})

    # Traceable-wrapper-subclass protocol: with it, nn.Module._apply swaps parameters in place
    # (torch.utils.swap_tensors) so they stay the same Parameter objects, as on CUDA.
    def __tensor_flatten__(self) -> tuple[list[str], None]:
        return ["_inner"], None

    @staticmethod
    def __tensor_unflatten__(inner_tensors, meta, outer_size, outer_stride):  # type: ignore[no-untyped-def]
        return SimTensor(inner_tensors["_inner"])

    # The wrapper's own storage is a size-only placeholder with a null pointer; code that
    # identifies storages by address (transformers' tied-weight detection, safetensors) must see
    # the real one. Its device reads "cpu": the one visible difference from torch_npu.
    def untyped_storage(self) -> torch.UntypedStorage:
        # Except for fake-tensor conversion (torch.compile): it describes the wrapper and its inner
        # tensor one after the other, and a wrapper that reports its inner tensor's storage looks like
        # an alias of it, which meta_utils rebuilds with wrapper.set_(meta storage) and fails ("set the
        # storage of a tensor on device npu:0 to a storage on different device meta").
        caller = sys._getframe(1)
        if caller.f_code.co_name == "describe_tensor" and caller.f_globals.get("__name__") == _META_UTILS:
            return torch.Tensor.untyped_storage(self)
        return self._inner.untyped_storage()

    def data_ptr(self) -> int:
        return self._inner.data_ptr()

    def _stable_hash_for_caching(self) -> str:
        # AOTAutograd's cache key for a subclass input: its metadata (as the default hash, minus its warning).
        return f"SimTensor({tuple(self.shape)}, {self.stride()}, {self.dtype}, requires_grad={self.requires_grad})"

    def __format__(self, format_spec: str) -> str:  # PyTorch formats 0-dim plain tensors only
        if self.dim() == 0:
            return self.item().__format__(format_spec)
        return object.__format__(self, format_spec)

    def __repr__(self, *, tensor_contents: Any = None) -> str:
        if type(self._inner) is not torch.Tensor and is_fake(self._inner):
            # A wrapper made while torch.compile traces (in its logs and error messages): no values.
            return f"{type(self).__name__}({self._inner!r}, device='{self.device}')"
        # PyTorch prefixes subclasses with their class name; an npu tensor prints as "tensor(".
        text = torch._tensor_str._str(self, tensor_contents=tensor_contents)
        is_param = text.startswith("Parameter(")  # how PyTorch marks subclass parameters
        if is_param:
            text = text[len("Parameter(") : -1]
        prefix = type(self).__name__ + "("
        if text.startswith(prefix):  # swap the prefix and pull continuation lines left to match
            shift = len(prefix) - len("tensor(")
            first, *rest = text.split("\n")
            rest = [line[shift:] if line[:shift].isspace() else line for line in rest]
            text = "\n".join(["tensor(" + first[len(prefix) :], *rest])
        if is_param:
            text = "Parameter containing:\n" + text
        return text

    def tolist(self) -> Any:  # PyTorch refuses tolist() on subclasses; device tensors allow it
        return self._inner.tolist()

    # ``t.data = other`` must replace the inner tensor too; the C++ setter alone would copy only
    # sizes and dtype into the wrapper.
    @property
    def data(self) -> torch.Tensor:  # type: ignore[override]
        return torch._C.TensorBase.data.__get__(self, type(self))

    @data.setter
    def data(self, new: torch.Tensor) -> None:
        torch._C.TensorBase.data.__set__(self, new)  # raises for a CPU tensor, as on npu
        self._inner = new._inner

    def numpy(self, *, force: bool = False) -> Any:
        if force:
            return self.detach().cpu().numpy()
        raise TypeError(
            f"can't convert {self.device} device type tensor to numpy. Use Tensor.cpu() to copy the tensor to "
            "host memory first."
        )

    def __reduce_ex__(self, protocol: int):  # type: ignore[no-untyped-def]
        # torch.save / pickle: the data as a CPU tensor, restored onto the device recorded (or
        # map_location) by torch's own rebuild function, which weights_only loading accepts. PyTorch
        # does the same for storage-less PrivateUse1 tensors (Tensor._reduce_ex_internal).
        if getattr(self, "_is_param", False):
            return torch._utils._rebuild_parameter, (self.detach(), self.requires_grad, OrderedDict())
        return (
            torch._utils._rebuild_device_tensor_from_cpu_tensor,
            (self.detach().cpu(), self.dtype, str(self.device), self.requires_grad),
        )

    def __deepcopy__(self, memo: dict) -> SimTensor:
        if id(self) in memo:
            return memo[id(self)]
        with torch.no_grad():
            new = SimTensor(self._inner.clone(memory_format=torch.preserve_format))
        new.requires_grad_(self.requires_grad)
        if getattr(self, "_is_param", False):
            new._is_param = True  # what nn.Parameter does for subclasses
        if self.grad is not None:
            new.grad = self.grad.__deepcopy__(memo)
        memo[id(self)] = new
        return new


# ---------------------------------------------------------------------------------------------
# dispatch


def _device_error(other: torch.device) -> RuntimeError:
    return RuntimeError(
        f"Expected all tensors to be on the same device, but found at least two devices, {device()} and {other}!"
    )


@dataclass(frozen=True)
class _OpInfo:
    """What dispatch needs to know about an op, computed once per op from its schema and tags."""

    cross_device: bool  # takes CPU and npu tensors together (copies)
    host_index_arg: bool  # argument 1 holds index tensors, which may be on the CPU
    random: bool
    generator_at: int | None  # position of the ``generator`` argument, if the op has one
    gelu: bool
    resizes: bool
    view: bool
    written: tuple[tuple[int, str, bool], ...]  # (position, name, kwarg_only) of arguments it writes


_op_infos: dict[Any, _OpInfo] = {}


def _op_info(func) -> _OpInfo:  # type: ignore[no-untyped-def]
    info = _op_infos.get(func)
    if info is None:
        arguments = func._schema.arguments
        info = _OpInfo(
            cross_device=func in _CROSS_DEVICE_OPS,
            host_index_arg=func in _INDEX_OPS,
            random=torch.Tag.nondeterministic_seeded in func.tags,
            generator_at=next((i for i, arg in enumerate(arguments) if arg.name == "generator"), None),
            gelu=func in numerics.GELU_OPS,
            resizes=func in _RESIZE_OPS,
            view=func.is_view,
            written=tuple(
                (i, arg.name, arg.kwarg_only)
                for i, arg in enumerate(arguments)
                if arg.alias_info is not None and arg.alias_info.is_write
            ),
        )
        _op_infos[func] = info
    return info


_CPU = torch.device("cpu")


def _unwrap(x: Any, wrappers: dict[int, SimTensor], plain: set[int], strict: bool) -> Any:
    """Inner tensor for a wrapper, cpu for the npu device; remembers what it saw. With ``strict``,
    a non-scalar CPU tensor is the device-mismatch error."""
    if isinstance(x, SimTensor):
        inner = x._inner
        wrappers[id(inner)] = x
        return inner
    if isinstance(x, torch.Tensor):
        if strict and x.dim() != 0:
            raise _device_error(x.device)
        plain.add(id(x))
        return x
    if isinstance(x, (list, tuple)):
        if any(isinstance(item, torch.Tensor) for item in x):
            return type(x)(_unwrap(item, wrappers, plain, strict) for item in x)
        return x
    if isinstance(x, torch.device) and x.type == _device.type:  # type: ignore[union-attr]
        if x.index:
            device_module._index(x)  # npu:N beyond the simulated devices fails as on torch_npu
        return _CPU
    if isinstance(x, torch.UntypedStorage) and x.device.type == _device.type:  # type: ignore[union-attr]
        return serialization.host_storage(x)  # set_(storage) from torch.load
    return x


def _wrap(x: Any, wrappers: dict[int, SimTensor], plain: set[int], to_npu: bool) -> Any:
    if isinstance(x, torch.Tensor):
        own = wrappers.get(id(x))
        if own is not None:
            if to_npu:  # in-place / out= result: the caller's own wrapper
                return own
            # ``to("cpu")`` of an inference tensor reaches us undecomposed and hands back its input's inner
            # tensor: a device-to-host copy, never the device memory itself.
            return x.clone()
        if id(x) in plain or not to_npu or x.device.type != "cpu":
            return x
        return SimTensor(x)
    if isinstance(x, (list, tuple)):
        items = [_wrap(item, wrappers, plain, to_npu) for item in x]
        return items if isinstance(x, list) else type(x)(items)  # tuples and torch.return_types
    return x


def dispatch(func, args: tuple, kwargs: dict) -> Any:
    """Run ``func`` on the inner CPU tensors and wrap the results (see the module docstring)."""
    special = _SPECIAL.get(func)
    if special is not None:
        return special(*args, **kwargs)
    info = _op_info(func)
    strict = not info.cross_device
    wrappers: dict[int, SimTensor] = {}
    plain: set[int] = set()
    cpu_args = [
        _unwrap(value, wrappers, plain, strict and not (i == 1 and info.host_index_arg)) for i, value in enumerate(args)
    ]
    cpu_kwargs = {name: _unwrap(value, wrappers, plain, strict) for name, value in kwargs.items()}

    if info.gelu:
        cpu_kwargs = numerics.npu_gelu_kwargs(cpu_kwargs)
    if not info.random:
        try:
            out = func(*cpu_args, **cpu_kwargs)
        except NotImplementedError as exc:
            if "Could not run" not in str(exc):
                raise
            # Device-only kernels (PyTorch's composites pick them for non-CPU tensors): nothing to run here.
            raise unsupported(f"{func} (no CPU kernel to simulate it with; torch_npu has its own)") from exc
    elif any(type(inner) is not torch.Tensor and is_fake(inner) for inner in (w._inner for w in wrappers.values())):
        # torch.compile tracing: fake kernels draw nothing and refuse generators; the compiled
        # graph's random ops run on the CPU generator (docs/simulator.md).
        out = func(*cpu_args, **cpu_kwargs)
    elif info.generator_at is not None:
        if info.generator_at < len(cpu_args):  # passed positionally (_fused_dropout)
            rng.check_device_generator(cpu_args[info.generator_at])
            if cpu_args[info.generator_at] is None:
                cpu_args[info.generator_at] = rng.generator
        else:
            rng.check_device_generator(cpu_kwargs.get("generator"))
            if cpu_kwargs.get("generator") is None:
                cpu_kwargs["generator"] = rng.generator
        out = func(*cpu_args, **cpu_kwargs)
    else:
        with rng.as_default():
            out = func(*cpu_args, **cpu_kwargs)

    if info.written:
        _sync_written(info, args, kwargs)
    # Results go to npu unless the op names another device (``.cpu()``, ``empty_like(device=)``).
    target = kwargs.get("device")
    to_npu = target is None or torch.device(target).type == _device.type  # type: ignore[union-attr]
    if info.view and torch.is_inference_mode_enabled() and not all(w.is_inference() for w in wrappers.values()):
        # A view of a normal tensor is a normal tensor, also in inference mode: autograd then shares
        # the base's version counter with it, which an inference-mode wrapper cannot take.
        with torch.inference_mode(False):
            return _wrap(out, wrappers, plain, to_npu)
    return _wrap(out, wrappers, plain, to_npu)


def _sync_written(info: _OpInfo, args: tuple, kwargs: dict) -> None:
    """After an op wrote to its arguments, bring their wrappers' shapes in line with the inners."""
    for position, name, kwarg_only in info.written:
        wrapper = kwargs.get(name) if kwarg_only or position >= len(args) else args[position]
        if not isinstance(wrapper, SimTensor):
            continue
        inner = wrapper._inner
        if info.resizes:
            memory.storage_resized(inner)
        if (
            wrapper.shape != inner.shape
            or wrapper.stride() != inner.stride()
            or wrapper.storage_offset() != inner.storage_offset()
        ):
            _set_wrapper_metadata(wrapper, inner)
        if info.resizes:
            # set_ may have moved the inner tensor to another storage; a fresh alias keeps the memory
            # accounting per storage right (the old inner's weakref callback releases the old one).
            wrapper._inner = aten.alias.default(inner)
            memory.track(wrapper._inner)


def _set_wrapper_metadata(wrapper: SimTensor, inner: torch.Tensor) -> None:
    # The Meta kernels of as_strided_/set_ change nothing but sizes, strides and the size of the
    # placeholder storage, which is what a wrapper has.
    needed = inner.untyped_storage().nbytes()
    if torch.Tensor.untyped_storage(wrapper).nbytes() < needed:
        placeholder = torch.Tensor._make_wrapper_subclass(SimTensor, [needed], dtype=torch.uint8, device=device())
        storage = torch.Tensor.untyped_storage(placeholder)
        aten.set_.source_Storage_storage_offset.redispatch(
            _META, wrapper, storage, inner.storage_offset(), inner.shape, inner.stride()
        )
    else:
        aten.as_strided_.default.redispatch(_META, wrapper, inner.shape, inner.stride(), inner.storage_offset())


# ---------------------------------------------------------------------------------------------
# ops that need more than unwrap / run / wrap


def _copy_from(src: torch.Tensor, dst: torch.Tensor, non_blocking: bool = False) -> torch.Tensor:
    # Reached for host<->device copies made below the Python key (torch.tensor(..., device="npu")).
    dst_inner = dst._inner if isinstance(dst, SimTensor) else dst
    src_inner = src._inner if isinstance(src, SimTensor) else src
    dst_inner.copy_(src_inner)
    return dst


def _copy_from_and_resize(src: torch.Tensor, dst: torch.Tensor) -> torch.Tensor:
    dst_inner = dst._inner if isinstance(dst, SimTensor) else dst
    dst_inner.resize_(src.shape)
    if isinstance(dst, SimTensor):
        memory.storage_resized(dst_inner)
        _set_wrapper_metadata(dst, dst_inner)
    return _copy_from(src, dst)


def _record_stream(self: torch.Tensor, stream: torch.Stream) -> None:
    # Tells a caching allocator not to reuse the memory before ``stream`` is done with it; simulated
    # ops complete synchronously, so there is nothing to wait for. The CPU has no such kernel.
    return None


_SPECIAL = {
    aten._copy_from.default: _copy_from,
    aten._copy_from_and_resize.default: _copy_from_and_resize,
    aten.record_stream.default: _record_stream,
}


def _backend_fallback(op, *args, **kwargs):  # type: ignore[no-untyped-def]
    """PrivateUse1 kernel for every op without its own: factories called with ``device="npu"``."""
    return dispatch(op, args, kwargs)


# Factories (a ``device`` argument, no tensor argument) that PyTorch implements with composite
# kernels. Left to those, they would allocate with empty() and then fill through TensorIterator
# kernels looked up for the npu device type (kaiser_window has none, DispatchStub asserts); given a
# PrivateUse1 kernel each, they run whole on the CPU and their result is wrapped.
_FACTORIES = (
    "arange", "arange.start", "arange.start_step", "range", "range.step", "linspace", "logspace", "eye", "eye.m",
    "zeros", "ones", "full", "scalar_tensor", "empty_permuted", "tril_indices", "triu_indices", "fft_fftfreq",
    "fft_rfftfreq", "rand", "rand.generator", "randn", "randn.generator", "randint", "randint.generator",
    "randint.low", "randint.low_generator", "randperm", "randperm.generator", "normal.float_float",
    "bartlett_window", "bartlett_window.periodic", "blackman_window", "blackman_window.periodic",
    "hamming_window", "hamming_window.periodic", "hamming_window.periodic_alpha",
    "hamming_window.periodic_alpha_beta", "hann_window", "hann_window.periodic", "kaiser_window",
    "kaiser_window.periodic", "kaiser_window.beta",
)  # fmt: skip


def _factory_kernel(op):  # type: ignore[no-untyped-def]
    def kernel(*args: Any, **kwargs: Any) -> Any:
        return dispatch(op, args, kwargs)

    return kernel


_libraries: list[torch.library.Library] = []  # kept alive: dropping a Library unregisters it


def register_backend_kernels(npu_device: torch.device) -> None:
    """Make ``npu:0`` usable: remember the device and route the PrivateUse1 key to :func:`dispatch`."""
    global _device
    _device = npu_device
    fallback = torch.library.Library("_", "IMPL")
    fallback.fallback(_backend_fallback, "PrivateUse1")
    # A Python *fallback* only serves calls without wrapper arguments (factories): with one, PyTorch
    # looks for a per-op Python kernel (python_op_registration_trampoline) and asserts when there is
    # none. The copies that reach this key with a wrapper argument get one each.
    per_op = torch.library.Library("aten", "IMPL")
    for op, kernel in _SPECIAL.items():
        per_op.impl(op, kernel, "PrivateUse1")
    for name in _FACTORIES:
        packet, _, overload = name.partition(".")
        per_op.impl(name, _factory_kernel(getattr(getattr(aten, packet), overload or "default")), "PrivateUse1")
    # torch.tensor(data, device="npu") under a FakeTensorMode (torch.compile) copies its CPU tensor
    # with the Python key excluded, and that _to_copy lands here.
    per_op.impl("_to_copy", _factory_kernel(aten._to_copy.default), "PrivateUse1")
    _libraries.extend([fallback, per_op])
    _run_eagerly_under_dynamo(SimTensor.__torch_dispatch__, _backend_fallback, _factory_kernel(aten.zeros.default),
                              *_SPECIAL.values())  # fmt: skip
    _register_tracing_factories()
    logger.debug("registered the PrivateUse1 kernels of the simulated npu")


def _run_eagerly_under_dynamo(*functions: Any) -> None:
    """Make dynamo run these functions, and everything they call, as plain Python.

    The dispatcher calls them from C++. While a compiled function runs (the eager part after a graph
    break, or a disabled region) dynamo would take such frames for new frames to compile, and trace
    our dispatch with real wrappers. DTensor decorates its ``__torch_dispatch__`` with
    ``torch._disable_dynamo`` for this; that costs a wrapper call per op and imports torch._dynamo
    on the first op, where marking the code objects costs nothing (torch._C, no torch._dynamo import).
    """
    eval_frame = getattr(torch._C, "_dynamo", None)
    eval_frame = getattr(eval_frame, "eval_frame", None)
    if eval_frame is None or not hasattr(eval_frame, "set_code_exec_strategy"):
        return
    skip = eval_frame._FrameAction.SKIP
    for function in functions:
        function = getattr(function, "__func__", function)  # the classmethod
        eval_frame.set_code_exec_strategy(function.__code__, eval_frame._FrameExecStrategy(skip, skip))


# ---------------------------------------------------------------------------------------------
# torch.compile: factories and host-to-device copies while tracing

_PYTHON_KEY = torch._C.DispatchKey.Python


def _redispatch_to_mode(mode, op, args: tuple, kwargs: dict) -> Any:  # type: ignore[no-untyped-def]
    # What the Python key does for an op without a py_impl for the mode: the mode's __torch_dispatch__,
    # then the tensor subclasses' if that returns NotImplemented. The mode was popped for us.
    with mode:
        return op._op_dk(_PYTHON_KEY, *args, **kwargs)


def _tracing_factory(op):  # type: ignore[no-untyped-def]
    def kernel(mode, *args: Any, **kwargs: Any) -> Any:  # type: ignore[no-untyped-def]
        device = kwargs.get("device")
        if device is None or torch.device(device).type != _device.type:  # type: ignore[union-attr]
            return _redispatch_to_mode(mode, op, args, kwargs)
        with mode:  # made on the CPU under the same mode (fake, functional, proxy), then wrapped
            return SimTensor(op(*args, **{**kwargs, "device": _CPU}))

    return kernel


def _tracing_to_copy(mode, x: torch.Tensor, **kwargs: Any) -> Any:  # type: ignore[no-untyped-def]
    device = kwargs.get("device")
    if isinstance(x, SimTensor) or device is None or torch.device(device).type != _device.type:  # type: ignore[union-attr]
        return _redispatch_to_mode(mode, aten._to_copy.default, (x,), kwargs)
    with mode:
        return SimTensor(aten._to_copy.default(x, **{**kwargs, "device": _CPU}))


def _register_tracing_factories() -> None:
    """Let ``torch.zeros(3, device="npu")`` and ``cpu_tensor.to("npu")`` be traced by torch.compile.

    While tracing, the dispatcher hands a factory to the tracing modes (fake, functional, proxy)
    before any backend kernel, and they would make a plain tensor that claims device npu: it cannot
    mix with the wrappers (npu outside, CPU inside) and would put an npu op into the CPU graph that
    inductor compiles. With the Python dispatcher on (dynamo's fake propagation and AOTAutograd turn
    it on), an op's ``py_impl(ModeClass)`` runs in place of that mode's ``__torch_dispatch__``: the
    factory is made on the CPU under the same mode and wrapped, as :func:`dispatch` does in eager.
    """
    from torch._subclasses.fake_tensor import FakeTensorMode
    from torch._subclasses.functional_tensor import FunctionalTensorMode
    from torch.fx.experimental.proxy_tensor import ProxyTorchDispatchMode

    ops = {getattr(getattr(aten, packet), overload or "default")
           for packet, _, overload in (name.partition(".") for name in _FACTORIES)}  # fmt: skip
    ops |= {aten.empty.memory_format, aten.empty_strided.default, aten.full.default, aten.zeros.default,
            aten.ones.default, aten.scalar_tensor.default}  # fmt: skip
    for mode in (FakeTensorMode, FunctionalTensorMode, ProxyTorchDispatchMode):
        for op in ops:
            op.py_impl(mode)(_tracing_factory(op))
        aten._to_copy.default.py_impl(mode)(_tracing_to_copy)
