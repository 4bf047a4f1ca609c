"""CUDA/NPU graphs emulated by recording aten ops at capture and running them again at replay.

``torch.cuda.CUDAGraph`` / ``torch.npu.NPUGraph`` capture the kernels a region of code launches and
replay them later on the same memory. This module gives hosts without graph capture (the CPU, the
simulated NPU) the same API with the same results:

    g = Graph()
    with graph(g):                        # capture: a TorchDispatchMode records every aten op
        static_out = model(static_in)
    static_in.copy_(new_data)
    g.replay()                            # the recorded ops run again on the same tensors
    use(static_out)                       # holds the result for new_data

**What is emulated.** During capture a :class:`~torch.utils._python_dispatch.TorchDispatchMode`
records each aten op (function, arguments, outputs) and also runs it, so tensors produced inside the
capture hold real values. Replay runs the recorded ops again, in order, below autograd (as kernels
run on device memory: no autograd history, no version-counter bumps, no inference-tensor checks):

* an op that writes its arguments (in-place, ``out=``, batch-norm running stats) writes them again;
* an op that produced a fresh tensor computes it again and copies the result into the tensor it
  produced at capture time, so later ops, and the caller's static outputs, see the new values;
* a view (any output whose schema says it aliases an input, or that shares an input's storage) is
  not replayed: it aliases memory that the ops above refill;
* an allocation (``empty``, ``empty_like``, ...) is not replayed: as on the device it launches no
  kernel, and the memory keeps what the last replay left there;
* a random op draws fresh numbers from its generator's current state on every replay, as CUDA's
  philox offsets advance per replay.

Capture has no side effects on memory that existed before it, as on the device, where captured
kernels do not run: writes to such tensors (an optimizer step on the parameters, running stats,
gradients accumulated into existing ``.grad``) are undone at :meth:`Graph.capture_end`, and so are
the draws from the CPU and simulated-NPU generators (and any generator an op was given). So the usual
recipe (warm up, capture one training step, replay N times) takes exactly N steps, as on CUDA.

Capture works while autograd records: a training step (forward, ``backward()``, ``optimizer.step()``)
is captured as the aten ops autograd runs, the backward ones included (the autograd engine carries
the mode into its device threads). Tensors on the simulated NPU (:class:`~.tensor.SimTensor`) are
recorded at their own level: the mode runs before the subclass's ``__torch_dispatch__``, and replay
calls the op on the wrappers again, which unwrap as in eager code.

**What is not.** No speedup (replay is eager execution with a copy per op) and no memory pool
(``pool`` handles are opaque tokens; the recording keeps every tensor it touched alive, as a real
graph keeps its pool alive). Streams are ignored: everything is synchronous, so ``stream=``, side
streams and ``capture_error_mode`` change nothing (the mode is still validated). Ops whose output
shape depends on data (``nonzero``, ``masked_select``) are replayed only while the shape stays the
same, and host reads inside a capture (``.item()``) keep their capture-time value; CUDA capture
rejects both, so correct CUDA code has neither. Python-level effects of the captured code (``.grad``
attributes set, optimizer state created) happen once, at capture, as on CUDA. Changes to the shape
or storage of pre-existing tensors during capture (``resize_``, ``set_``) are not undone.
"""

from __future__ import annotations

import itertools
import logging
import threading
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeAlias, Union

import torch
from torch.utils._python_dispatch import TorchDispatchMode, _get_current_dispatch_mode_stack
from torch.utils._pytree import tree_leaves

from . import rng

__all__ = ["Graph", "graph", "graph_pool_handle", "is_current_stream_capturing", "make_graphed_callables"]

logger = logging.getLogger("ascend_patch.sim")

aten = torch.ops.aten

PoolHandle: TypeAlias = tuple[int, int]
"""An opaque memory-pool token, shaped like CUDA's ``MempoolId_t``: ``(0, n)`` from
:func:`graph_pool_handle`, ``(n, 0)`` for a graph's own pool."""

_CAPTURE_ERROR_MODES = ("global", "thread_local", "relaxed")
# Allocations launch no kernel on the device: their memory keeps its contents across replays.
_ALLOCATIONS = {"aten::empty", "aten::empty_like", "aten::empty_strided", "aten::new_empty",
                "aten::new_empty_strided", "aten::empty_permuted"}  # fmt: skip
# Arguments that ops write without saying so in their schema: eager batch norm updates the running
# statistics in place (functionalization special-cases it too).
_UNDECLARED_WRITES = {"aten::native_batch_norm": ("running_mean", "running_var")}
# Host reads: CUDA capture raises on them; here the value read at capture time stays.
_HOST_READS = {"aten::_local_scalar_dense", "aten::equal", "aten::is_nonzero"}

_pool_ids = itertools.count(1)
_logged_first_capture = False


# ---------------------------------------------------------------------------------------------
# what an op does to memory, from its schema


@dataclass(frozen=True, slots=True)
class _OpInfo:
    returns_alias: tuple[bool, ...]  # per schema return: does it alias an argument (views, in-place)
    written: tuple[tuple[int, str], ...]  # (position, name) of the arguments the op writes
    allocation: bool
    host_read: bool


_op_infos: dict[Any, _OpInfo] = {}


def _op_info(func: Any) -> _OpInfo:
    info = _op_infos.get(func)
    if info is None:
        schema = func._schema
        written = tuple(
            (i, arg.name)
            for i, arg in enumerate(schema.arguments)
            if (arg.alias_info is not None and arg.alias_info.is_write)
            or arg.name in _UNDECLARED_WRITES.get(schema.name, ())
        )
        info = _OpInfo(
            returns_alias=tuple(ret.alias_info is not None for ret in schema.returns),
            written=written,
            allocation=schema.name in _ALLOCATIONS and not written,
            host_read=schema.name in _HOST_READS,
        )
        _op_infos[func] = info
    return info


def _output_tensors(info: _OpInfo, out: Any) -> list[tuple[torch.Tensor, bool]]:
    """The tensors an op returned, in a fixed order, each with whether its schema marks it an alias."""
    if not info.returns_alias:
        return []
    items = (out,) if len(info.returns_alias) == 1 else tuple(out)
    found: list[tuple[torch.Tensor, bool]] = []
    for aliased, item in zip(info.returns_alias, items):
        if isinstance(item, torch.Tensor):
            found.append((item, aliased))
        elif isinstance(item, (list, tuple)):  # Tensor[] returns (split, _foreach_add)
            found.extend((t, aliased) for t in item if isinstance(t, torch.Tensor))
    return found


def _written_tensors(info: _OpInfo, args: tuple, kwargs: dict) -> list[torch.Tensor]:
    found: list[torch.Tensor] = []
    for position, name in info.written:
        value = args[position] if position < len(args) else kwargs.get(name)
        found.extend(t for t in tree_leaves(value) if isinstance(t, torch.Tensor))
    return found


def _storage(t: torch.Tensor) -> torch.UntypedStorage | None:
    """The storage holding ``t``'s data (a SimTensor's inner one), or None when it has no bytes."""
    try:
        storage = t.untyped_storage()
    except (RuntimeError, NotImplementedError):  # tensors without storage (sparse, nested, ...)
        return None
    return storage if storage.nbytes() > 0 else None


def _storage_key(t: torch.Tensor) -> int | None:
    # The StorageImpl address: stable while the storage lives, and the recording keeps every storage
    # it saw alive, so an address is never reused for another storage during a capture.
    storage = _storage(t)
    return None if storage is None else storage._cdata


# ---------------------------------------------------------------------------------------------
# recording


@dataclass(frozen=True, slots=True)
class _Record:
    """One op to run again at replay, and the capture-time outputs its new results are copied into."""

    func: Any
    args: tuple
    kwargs: dict
    refill: tuple[tuple[int, torch.Tensor], ...]  # (index in _output_tensors, capture-time tensor)

    def describe(self) -> str:
        def show(value: Any) -> str:
            if isinstance(value, torch.Tensor):
                return f"Tensor{tuple(value.shape)}:{str(value.dtype).removeprefix('torch.')}@{value.device}"
            if isinstance(value, (list, tuple)):
                return "[" + ", ".join(show(v) for v in value) + "]"
            return repr(value)

        parts = [show(a) for a in self.args] + [f"{k}={show(v)}" for k, v in self.kwargs.items()]
        return f"{self.func}({', '.join(parts)}) -> refills {len(self.refill)}"


class _Recorder(TorchDispatchMode):
    """Runs every op it sees and records what replay needs (see the module docstring)."""

    def __init__(self) -> None:
        super().__init__()
        self.records: list[_Record] = []
        self.skipped = 0  # views, allocations, host reads: nothing to run again
        self.host_reads: list[str] = []
        self._created: set[int] = set()  # storages allocated by ops of this capture
        # memory that existed before the capture and was written during it: (storage, saved bytes)
        self._saved_memory: dict[int, tuple[torch.UntypedStorage, torch.UntypedStorage]] = {}
        self._saved_generators: dict[int, tuple[torch.Generator, torch.Tensor]] = {}
        for gen in (torch.default_generator, rng.generator):
            self._save_generator(gen)

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # type: ignore[no-untyped-def]
        kwargs = kwargs or {}
        info = _op_info(func)
        written = _written_tensors(info, args, kwargs) if info.written else []
        for t in written:
            self._save_memory(t)
        for value in tree_leaves((args, kwargs)):
            if isinstance(value, torch._C.Generator):
                self._save_generator(value)

        out = func(*args, **kwargs)

        input_keys: set[int] | None = None
        refill: list[tuple[int, torch.Tensor]] = []
        for index, (t, aliased) in enumerate(_output_tensors(info, out)):
            if aliased:
                continue
            key = _storage_key(t)
            if key is None:
                continue
            if input_keys is None:
                input_keys = {
                    k for v in tree_leaves((args, kwargs)) if isinstance(v, torch.Tensor) and (k := _storage_key(v))
                }
            if key in input_keys:  # an alias the schema does not declare (_unsafe_view)
                continue
            self._created.add(key)
            if not info.allocation:
                refill.append((index, t))
        if written or refill:
            self.records.append(_Record(func, tuple(args), dict(kwargs), tuple(refill)))
        else:
            self.skipped += 1
            if info.host_read:
                self.host_reads.append(str(func))
        return out

    def _save_memory(self, t: torch.Tensor) -> None:
        storage = _storage(t)
        if storage is None or storage._cdata in self._created or storage._cdata in self._saved_memory:
            return
        self._saved_memory[storage._cdata] = (storage, storage.clone())

    def _save_generator(self, gen: torch.Generator) -> None:
        # Ops get a fresh Python object around the same C++ generator: tell generators by address.
        if gen._cdata not in self._saved_generators:
            self._saved_generators[gen._cdata] = (gen, gen.get_state())

    def undo_side_effects(self) -> None:
        """Put back the memory and generator states that existed before the capture."""
        for storage, saved in self._saved_memory.values():
            if storage.nbytes() == saved.nbytes():
                storage.copy_(saved)
            else:
                logger.debug("graph capture resized a pre-existing storage; its contents are not restored")
        for gen, state in self._saved_generators.values():
            gen.set_state(state)
        self._saved_memory.clear()
        self._saved_generators.clear()
        self._created.clear()  # only needed while capturing; the records keep the tensors alive


# ---------------------------------------------------------------------------------------------
# public API


_local = threading.local()  # .graph: the Graph capturing in this thread


class Graph:
    """Stand-in for ``torch.cuda.CUDAGraph`` / ``torch.npu.NPUGraph``: capture records, replay re-runs.

    ``keep_graph`` is accepted for signature compatibility; there is no native graph to keep.
    """

    def __init__(self, keep_graph: bool = False) -> None:
        self.keep_graph = keep_graph
        self._recorder: _Recorder | None = None  # set while capturing
        self._records: list[_Record] | None = None  # set once a capture has ended
        self._pool: PoolHandle | None = None
        self._thread: int | None = None
        self._debug = False

    @property
    def num_recorded_ops(self) -> int:
        """How many ops :meth:`replay` runs (0 before a capture)."""
        return len(self._records or ())

    def capture_begin(
        self, pool: PoolHandle | None = None, capture_error_mode: str = "global", check_input_liveness: bool = False
    ) -> None:
        """Start recording the ops of this thread. ``check_input_liveness`` is accepted and needs no
        check: the recording keeps every input alive."""
        if capture_error_mode not in _CAPTURE_ERROR_MODES:
            raise RuntimeError(
                'Unknown capture error mode. Expected "global", "thread_local", or "relaxed", '
                f"got {capture_error_mode!r}"
            )
        if getattr(_local, "graph", None) is not None:
            raise RuntimeError(
                "graph capture is already underway in this thread: captures cannot be nested "
                "(end the current capture before starting another)"
            )
        if self._recorder is not None or self._records is not None:
            raise RuntimeError(
                "This graph instance already owns a captured graph. To capture a new graph, create a new "
                "instance or call reset() first."
            )
        self._pool = tuple(pool) if pool is not None else (next(_pool_ids), 0)  # type: ignore[assignment]
        self._recorder = _Recorder()
        self._thread = threading.get_ident()
        _local.graph = self
        self._recorder.__enter__()

    def capture_end(self) -> None:
        """Stop recording, and undo the capture's effects on pre-existing memory and generators."""
        recorder = self._recorder
        if recorder is None:
            raise RuntimeError("capture_end() called without a capture underway on this graph")
        if threading.get_ident() != self._thread:
            raise RuntimeError("capture_end() must be called in the thread that called capture_begin()")
        recorder.__exit__(None, None, None)
        _local.graph = None
        self._recorder = None
        recorder.undo_side_effects()
        self._records = recorder.records
        if recorder.host_reads:
            warnings.warn(
                f"graph capture read tensor values on the host ({', '.join(sorted(set(recorder.host_reads)))}): "
                "CUDA/NPU capture raises there, and replay keeps the values read at capture time",
                stacklevel=2,
            )
        global _logged_first_capture
        if not _logged_first_capture:
            _logged_first_capture = True
            logger.info("CUDA/NPU graph emulated by replaying %d recorded ops", len(self._records))
        logger.debug(
            "graph captured: %d ops to replay, %d views/allocations/host reads skipped",
            len(self._records), recorder.skipped,
        )  # fmt: skip

    def instantiate(self) -> None:
        """Nothing to instantiate; checks that a capture has ended."""
        self._captured("instantiate")

    def replay(self) -> None:
        """Run the recorded ops again, below autograd, on the tensors they used at capture time."""
        records = self._captured("replay")
        with torch._C._AutoDispatchBelowADInplaceOrView():
            for record in records:
                result = record.func(*record.args, **record.kwargs)
                if not record.refill:
                    continue
                outputs = _output_tensors(_op_info(record.func), result)
                for index, target in record.refill:
                    new = outputs[index][0]
                    if new.shape != target.shape:
                        raise RuntimeError(
                            f"graph replay: {record.func} returned shape {tuple(new.shape)}, captured as "
                            f"{tuple(target.shape)}; ops with data-dependent output shapes cannot be replayed "
                            "(CUDA/NPU graphs cannot capture them either)"
                        )
                    aten.copy_.default(target, new)

    def reset(self) -> None:
        """Drop the recording (and the tensors it kept alive); the graph can capture again."""
        if self._recorder is not None:
            raise RuntimeError("reset() called during capture; call capture_end() first")
        self._records = None
        self._pool = None

    def pool(self) -> PoolHandle:
        """The opaque token of this graph's (notional) memory pool, for another capture's ``pool``."""
        self._captured("pool")
        assert self._pool is not None
        return self._pool

    def enable_debug_mode(self) -> None:
        """Let :meth:`debug_dump` write the recording."""
        self._debug = True

    def debug_dump(self, debug_path: str) -> None:
        """Write the recorded ops, one a line, to ``debug_path`` (CUDA writes a DOT graph there)."""
        if not self._debug:
            warnings.warn("Graph debug not enabled, set with [graph].enable_debug_mode()", stacklevel=2)
            return
        records = self._captured("debug_dump")
        with open(debug_path, "w", encoding="utf-8") as f:
            f.writelines(f"{i}: {record.describe()}\n" for i, record in enumerate(records))

    def raw_cuda_graph(self) -> int:
        raise RuntimeError("an emulated graph has no native CUDA/NPU graph handle")

    def raw_cuda_graph_exec(self) -> int:
        raise RuntimeError("an emulated graph has no native CUDA/NPU graph handle")

    def get_graph_data(self) -> dict:
        raise RuntimeError("an emulated graph has no native CUDA/NPU graph to describe")

    def _captured(self, method: str) -> list[_Record]:
        if self._records is None:
            raise RuntimeError(f"Graph.{method}() called without a preceding successful capture")
        return self._records


class graph:
    """Context manager capturing into a :class:`Graph`: the signature of ``torch.cuda.graph``.

    ``stream`` is ignored (everything is synchronous) and so is ``enable_annotations``; ``pool`` and
    ``capture_error_mode`` go to :meth:`Graph.capture_begin`.
    """

    default_capture_stream: Any = None

    def __init__(
        self,
        cuda_graph: Graph,
        pool: PoolHandle | None = None,
        stream: Any = None,
        capture_error_mode: str = "global",
        enable_annotations: bool = False,
        check_input_liveness: bool = False,
    ) -> None:
        self.pool: tuple[()] | tuple[PoolHandle] = () if pool is None else (pool,)
        self.capture_stream = stream
        self.cuda_graph = cuda_graph
        self.capture_error_mode = capture_error_mode
        self.check_input_liveness = check_input_liveness

    def __enter__(self) -> None:
        self.cuda_graph.capture_begin(
            *self.pool, capture_error_mode=self.capture_error_mode, check_input_liveness=self.check_input_liveness
        )

    def __exit__(self, *args: object) -> None:
        self.cuda_graph.capture_end()


def graph_pool_handle() -> PoolHandle:
    """A fresh opaque pool token (memory is not pooled in the emulation)."""
    return (0, next(_pool_ids))


def is_current_stream_capturing() -> bool:
    """True while a capture records the ops issued here: in the capturing thread, and in the autograd
    threads that run its backward pass."""
    if getattr(_local, "graph", None) is not None:
        return True
    return any(isinstance(mode, _Recorder) for mode in _get_current_dispatch_mode_stack())


_ModuleOrCallable: TypeAlias = Union["torch.nn.Module", Callable[..., object]]


def make_graphed_callables(
    callables: _ModuleOrCallable | tuple[_ModuleOrCallable, ...],
    sample_args: tuple[torch.Tensor, ...] | tuple[tuple[torch.Tensor, ...], ...],
    num_warmup_iters: int = 3,
    allow_unused_input: bool = False,
    pool: PoolHandle | None = None,
) -> _ModuleOrCallable | tuple[_ModuleOrCallable, ...]:
    """``torch.cuda.make_graphed_callables``: checks its arguments as CUDA does and returns the
    callables themselves (a tuple for a tuple).

    The real function returns drop-in replacements that run the callable's forward and backward as
    graphs inside one autograd node; eager execution computes the same outputs and gradients, so the
    callables serve as their own graphed versions (a module stays the same object, as with CUDA). Not
    reproduced: the warmup and capture passes CUDA runs on ``sample_args`` (their effect on, e.g.,
    batch-norm running statistics).
    """
    if torch.is_autocast_enabled() and torch.is_autocast_cache_enabled():
        raise RuntimeError(
            "make_graphed_callables does not support the autocast caching. Please set `cache_enabled=False`."
        )
    just_one = not isinstance(callables, tuple)
    all_callables = (callables,) if just_one else callables
    all_args = (sample_args,) if just_one else sample_args
    if len(all_callables) != len(all_args):
        raise AssertionError("make_graphed_callables needs one tuple of sample args per callable")
    for c, args in zip(all_callables, all_args):  # the checks torch.cuda.make_graphed_callables makes
        if isinstance(c, torch.nn.Module):
            if c._backward_hooks or c._forward_hooks or c._forward_pre_hooks:
                raise AssertionError(
                    "Modules must not have hooks registered at the time they are passed. However, registering "
                    "hooks on modules after passing them through make_graphed_callables is allowed."
                )
            if any(b.requires_grad for b in c.buffers()):
                raise AssertionError(
                    "In any :class:`~torch.nn.Module` passed to :func:`~make_graphed_callables`, only parameters "
                    "may be trainable. All buffers must have ``requires_grad=False``."
                )
        if not all(isinstance(a, torch.Tensor) for a in torch.utils._pytree.arg_tree_leaves(*args)):
            raise AssertionError(
                "In the beta API, sample_args for each callable must contain only Tensors. Other types are not allowed."
            )
    return callables
