"""What the corpus drivers share: the run context, seeding, comparison, stand-ins and the child-process main.

Imported only after ``__main__`` has (in patched mode) applied ascend_patch, so importing torch here is safe.
Nothing in this module imports ascend_patch: the reference process must stay free of it.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.abc
import importlib.machinery
import importlib.util
import json
import logging
import math
import os
import random
import runpy
import socket
import sys
import time
import traceback
import types
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

log = logging.getLogger("corpus")

Outputs = dict[str, torch.Tensor]
RESULT_TAG = "CORPUS_RESULT "
FP32_TOL = 1e-4  # the pass threshold for fp32 paths (relative L2 error)


@dataclass
class Context:
    """Where a driver runs: the checkout, a work folder shared by its two processes, and the mode."""

    name: str
    src: Path
    work: Path
    mode: str  # "reference" | "patched" | "baseline"
    seed: int = 0

    def save(self, name: str, obj: Any) -> None:
        torch.save(obj, self.work / f"{name}.pt")

    def load(self, name: str) -> Any:
        return torch.load(self.work / f"{name}.pt", map_location="cpu", weights_only=False)


# ----------------------------------------------------------------------------------------------- helpers


def seed_everything(seed: int) -> None:
    """Python, NumPy and torch (``torch.manual_seed`` also seeds every accelerator generator)."""
    random.seed(seed)
    with contextlib.suppress(ImportError):
        import numpy as np

        np.random.seed(seed)
    torch.manual_seed(seed)


def to_cpu(obj: Any) -> Any:
    """Tensors anywhere in lists/tuples/dicts, detached and on the CPU."""
    if isinstance(obj, torch.Tensor):
        return obj.detach().cpu()
    if isinstance(obj, Mapping):
        return {k: to_cpu(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(to_cpu(v) for v in obj)
    return obj


def ragged(seqs: Sequence[Sequence[float]]) -> torch.Tensor:
    """Ragged lists (tokens, log-probs) as one padded float64 tensor (-1 pads), comparable by relative error."""
    width = max((len(s) for s in seqs), default=0)
    out = torch.full((len(seqs), width), -1.0, dtype=torch.float64)
    for i, s in enumerate(seqs):
        out[i, : len(s)] = torch.tensor(list(s), dtype=torch.float64)
    return out


def state_dict_cpu(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}


def perturb_zero_init(model: torch.nn.Module, std: float = 0.02, seed: int = 0) -> torch.nn.Module:
    """Give zero-initialised weights (adaLN-zero, zero output heads) small random values, as training would.

    Untrained DiT-style models output exactly zero, which makes any comparison pass trivially (and CFG
    renormalisation divide 0 by 0).
    """
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            if p.numel() > 1 and not p.any():
                p.copy_(torch.randn(p.shape, generator=g) * std)
    return model


def free_port() -> int:
    """A free localhost port for a one-process torch.distributed rendezvous."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def single_process_env(port: int | None = None) -> None:
    """The variables torchrun would set for a world of one, on loopback."""
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port or free_port()),
                      RANK="0", LOCAL_RANK="0", WORLD_SIZE="1", LOCAL_WORLD_SIZE="1")


@contextlib.contextmanager
def chdir(path: Path) -> Iterator[None]:
    old = Path.cwd()
    os.chdir(path)
    try:
        yield
    finally:
        os.chdir(old)


def run_script(script: Path, argv: Sequence[str], cwd: Path) -> dict[str, Any]:
    """Run a repository script as ``__main__`` (its own argument parsing, its own globals) and return its globals."""
    saved = sys.argv
    sys.argv = [str(script), *argv]
    try:
        with chdir(cwd):
            return runpy.run_path(str(script), run_name="__main__")
    finally:
        sys.argv = saved


def rel_err(out: torch.Tensor, ref: torch.Tensor) -> float:
    """||out - ref|| / ||ref|| in float64 (||out - ref|| when the reference is all zeros)."""
    a, b = out.detach().cpu().double(), ref.detach().cpu().double()
    if a.shape != b.shape:
        raise ValueError(f"shape {tuple(a.shape)} != reference {tuple(b.shape)}")
    num = torch.linalg.vector_norm(a - b).item()
    den = torch.linalg.vector_norm(b).item()
    return num / den if den > 0 else num


Tol = float | Mapping[str, float]  # one threshold, or per output with a "default"


def tol_for(tol: Tol, name: str) -> float:
    return float(tol) if not isinstance(tol, Mapping) else float(tol.get(name, tol["default"]))


def compare(out: Mapping[str, torch.Tensor], ref: Mapping[str, torch.Tensor],
            tol: Tol = FP32_TOL) -> tuple[bool, float, str]:
    """(all outputs within their threshold, the worst error relative to its threshold, which output)."""
    missing = sorted(set(ref) - set(out))
    if missing:
        raise KeyError(f"outputs missing from the patched run: {missing}")
    def severity(err: float, name: str) -> float:  # how far past its threshold an output is
        limit = tol_for(tol, name)
        return err / limit if limit > 0 else (math.inf if err > 0 else 0.0)

    ok, worst, key = True, 0.0, ""
    for name in ref:
        err = rel_err(out[name], ref[name])
        ok = ok and math.isfinite(err) and err <= tol_for(tol, name)
        if not math.isfinite(err) or not key or severity(err, name) > severity(worst, key):
            worst, key = err, name
        if not math.isfinite(err):
            break
    return ok, worst, key


def accelerator_bytes() -> int:
    """Peak bytes the process held on an accelerator (the simulated NPU counts its tensors); 0 on a plain CPU.

    A patched run must use the device: a repository that silently took its CPU branch would otherwise match
    the CPU reference without having run on the NPU at all.
    """
    npu = getattr(torch, "npu", None)
    if npu is not None and npu.is_available():
        return int(npu.max_memory_allocated())
    if torch.cuda.is_available():
        return int(torch.cuda.max_memory_allocated())
    return 0


# ------------------------------------------------------------------------ stand-ins (reference side only)


class _Inert(types.ModuleType):
    """A module standing in for a package that cannot be installed here: attributes exist, calls raise."""

    __path__: list[str] = []

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        return _Placeholder(f"{self.__name__}.{name}")


class _Placeholder:
    def __init__(self, name: str) -> None:
        self._name = name

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        return _Placeholder(f"{self._name}.{name}")

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        raise RuntimeError(f"{self._name} belongs to a stand-in module (not installable against this torch)")

    def __mro_entries__(self, bases: tuple[Any, ...]) -> tuple[type, ...]:
        return (object,)


class _InertFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    def __init__(self, roots: Sequence[str]) -> None:
        self.roots = tuple(roots)

    def find_spec(self, name: str, path: Any, target: Any = None) -> importlib.machinery.ModuleSpec | None:
        if name.split(".")[0] in self.roots:
            return importlib.machinery.ModuleSpec(name, self, is_package=True)
        return None

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> types.ModuleType:
        return _Inert(spec.name)

    def exec_module(self, module: types.ModuleType) -> None:
        pass


def install_inert_packages(names: Sequence[str]) -> list[str]:
    """Inert stand-ins, in both processes, for packages that are absent (torchvision: PyPI's wheels for this torch
    are CUDA builds whose ``_C`` does not load on a CPU torch). Only the absent ones are replaced."""
    absent = [n for n in names if importlib.util.find_spec(n) is None]
    if absent:
        sys.meta_path.append(_InertFinder(absent))  # appended: a real install always wins
        log.info("inert stand-ins for absent packages: %s", ", ".join(absent))
    return absent


def _eager_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float | None,
                     bias: torch.Tensor | None = None, causal_bottom_right: bool = False) -> torch.Tensor:
    """softmax(q k^T * scale + bias) v in fp32 for (..., L, H, D) inputs, GQA heads repeated; in q's dtype."""
    qf, kf, vf = (t.float().transpose(-3, -2) for t in (q, k, v))  # (..., H, L, D)
    if kf.shape[-3] != qf.shape[-3]:
        rep = qf.shape[-3] // kf.shape[-3]
        kf, vf = kf.repeat_interleave(rep, dim=-3), vf.repeat_interleave(rep, dim=-3)
    if bias is not None:
        # Keys no query may see can be uninitialised cache memory (NaN/inf): real kernels never read them.
        dead = ~torch.isfinite(bias).reshape(-1, bias.shape[-1]).any(0)
        kf, vf = kf.masked_fill(dead[:, None], 0.0), vf.masked_fill(dead[:, None], 0.0)
    scores = qf @ kf.transpose(-1, -2) * (scale if scale is not None else q.shape[-1] ** -0.5)
    if causal_bottom_right:
        lq, lk = scores.shape[-2:]
        keep = torch.ones(lq, lk, dtype=torch.bool).tril(lk - lq)
        scores = scores.masked_fill(~keep, float("-inf"))
    if bias is not None:
        scores = scores + bias.float()
    return (scores.softmax(-1) @ vf).transpose(-3, -2).contiguous().to(q.dtype)


def _reference_flash_attn() -> dict[str, types.ModuleType]:
    """flash_attn's forward API in eager PyTorch (flash-attn 2.7 signatures), for the reference process only."""
    fa = types.ModuleType("flash_attn")
    iface = types.ModuleType("flash_attn.flash_attn_interface")
    bp = types.ModuleType("flash_attn.bert_padding")

    def flash_attn_func(q: Tensor, k: Tensor, v: Tensor, dropout_p: float = 0.0, softmax_scale: float | None = None,
                        causal: bool = False, **unused: Any) -> Tensor:
        assert dropout_p == 0.0, "reference stand-in: no dropout"
        return _eager_attention(q, k, v, softmax_scale, causal_bottom_right=causal)

    def flash_attn_varlen_func(q: Tensor, k: Tensor, v: Tensor, cu_seqlens_q: Tensor, cu_seqlens_k: Tensor,
                               max_seqlen_q: int, max_seqlen_k: int, dropout_p: float = 0.0,
                               softmax_scale: float | None = None, causal: bool = False, **unused: Any) -> Tensor:
        assert dropout_p == 0.0, "reference stand-in: no dropout"
        outs = []
        for i in range(len(cu_seqlens_q) - 1):
            qs, qe = int(cu_seqlens_q[i]), int(cu_seqlens_q[i + 1])
            ks, ke = int(cu_seqlens_k[i]), int(cu_seqlens_k[i + 1])
            outs.append(_eager_attention(q[qs:qe], k[ks:ke], v[ks:ke], softmax_scale, causal_bottom_right=causal))
        return torch.cat(outs)

    def index_first_axis(x: torch.Tensor, indices: torch.Tensor) -> torch.Tensor:
        return x[indices]

    def unpad_input(hidden: Tensor, mask: Tensor,
                    unused_mask: Tensor | None = None) -> tuple[Tensor, Tensor, Tensor, int, Tensor]:
        seqlens = mask.sum(dim=-1, dtype=torch.int32)
        indices = torch.nonzero(mask.flatten(), as_tuple=False).flatten()
        cu = F.pad(torch.cumsum(seqlens, dim=0, dtype=torch.int32), (1, 0))
        return hidden.reshape(-1, *hidden.shape[2:])[indices], indices, cu, int(seqlens.max()), seqlens

    def pad_input(hidden: torch.Tensor, indices: torch.Tensor, batch: int, seqlen: int) -> torch.Tensor:
        out = hidden.new_zeros(batch * seqlen, *hidden.shape[1:])
        out[indices] = hidden
        return out.reshape(batch, seqlen, *hidden.shape[1:])

    for name, fn in (("flash_attn_func", flash_attn_func), ("flash_attn_varlen_func", flash_attn_varlen_func)):
        setattr(fa, name, fn)
        setattr(iface, name, fn)
    for fn in (index_first_axis, unpad_input, pad_input):
        setattr(bp, fn.__name__, fn)
    fa.__path__ = []  # a package, so that "flash_attn.bert_padding" resolves
    fa.flash_attn_interface, fa.bert_padding = iface, bp  # type: ignore[attr-defined]
    fa.__version__ = "2.7.0"  # type: ignore[attr-defined]
    return {"flash_attn": fa, "flash_attn.flash_attn_interface": iface, "flash_attn.bert_padding": bp}


def _reference_xformers() -> dict[str, types.ModuleType]:
    """xformers' memory_efficient_attention and the block-diagonal / causal biases, eager, reference only."""

    class AttentionBias:
        def materialize(self, shape: Sequence[int], dtype: torch.dtype = torch.float32,
                        device: Any = "cpu") -> torch.Tensor:
            keep = self._keep(int(shape[-2]), int(shape[-1]))
            return torch.zeros(keep.shape, dtype=dtype).masked_fill(~keep, float("-inf")).expand(*shape)

        def _keep(self, lq: int, lk: int) -> torch.Tensor:
            raise NotImplementedError(f"reference stand-in: {type(self).__name__}")

    class LowerTriangularMask(AttentionBias):  # top-left aligned, as in xformers
        def _keep(self, lq: int, lk: int) -> torch.Tensor:
            return torch.ones(lq, lk, dtype=torch.bool).tril()

    class BlockDiagonalMask(AttentionBias):
        causal = False  # causal blocks are top-left aligned (xformers' BlockDiagonalCausalMask)
        window: int | None = None  # local attention: a query sees the `window` latest keys at most

        def __init__(self, q_seqlens: Sequence[int], k_seqlens: Sequence[int]) -> None:
            self.q_seqlens, self.k_seqlens = list(q_seqlens), list(k_seqlens)

        @classmethod
        def from_seqlens(cls, q_seqlen: Sequence[int], kv_seqlen: Sequence[int] | None = None,
                         **unused: Any) -> BlockDiagonalMask:
            return cls(q_seqlen, kv_seqlen if kv_seqlen is not None else q_seqlen)

        def make_causal(self) -> BlockDiagonalMask:
            return BlockDiagonalCausalMask(self.q_seqlens, self.k_seqlens)

        def make_local_attention(self, window_size: int) -> BlockDiagonalMask:
            mask = BlockDiagonalCausalMask(self.q_seqlens, self.k_seqlens)
            mask.window = window_size
            return mask

        def _block(self, ql: int, kl: int, offset: int) -> torch.Tensor:
            i = torch.arange(ql)[:, None] + offset  # query position in key coordinates
            j = torch.arange(kl)[None, :]
            keep = (j <= i) if self.causal else torch.ones(ql, kl, dtype=torch.bool)
            return keep & (i - j < self.window) if self.window is not None else keep

        def _keep(self, lq: int, lk: int) -> torch.Tensor:
            keep = torch.zeros(lq, lk, dtype=torch.bool)
            qs = ks = 0
            for ql, kl in zip(self.q_seqlens, self.k_seqlens):
                keep[qs:qs + ql, ks:ks + kl] = self._block(ql, kl, 0)
                qs, ks = qs + ql, ks + kl
            return keep

    class BlockDiagonalCausalMask(BlockDiagonalMask):
        causal = True

    class BlockDiagonalCausalWithOffsetPaddedKeysMask(BlockDiagonalMask):
        """Keys in blocks of ``kv_padding``, the first ``kv_seqlen[b]`` valid; causal from the bottom right."""

        causal = True

        @classmethod
        def from_seqlens(cls, q_seqlen: Sequence[int], kv_padding: int,  # type: ignore[override]
                         kv_seqlen: Sequence[int] | None = None, **unused: Any) -> BlockDiagonalMask:
            mask = cls(q_seqlen, kv_seqlen if kv_seqlen is not None else [kv_padding] * len(q_seqlen))
            mask.kv_padding = kv_padding  # type: ignore[attr-defined]
            return mask

        def _keep(self, lq: int, lk: int) -> torch.Tensor:
            keep = torch.zeros(lq, lk, dtype=torch.bool)
            qs = 0
            for b, (ql, kl) in enumerate(zip(self.q_seqlens, self.k_seqlens)):
                ks = b * self.kv_padding  # type: ignore[attr-defined]
                keep[qs:qs + ql, ks:ks + kl] = self._block(ql, kl, kl - ql)
                qs += ql
            return keep

    def memory_efficient_attention(query: Tensor, key: Tensor, value: Tensor, attn_bias: Any = None, p: float = 0.0,
                                   scale: float | None = None, **unused: Any) -> Tensor:
        assert p == 0.0, "reference stand-in: no dropout"
        lq, lk = query.shape[-3], key.shape[-3]
        if isinstance(attn_bias, AttentionBias):
            attn_bias = attn_bias.materialize((lq, lk))
        return _eager_attention(query, key, value, scale, bias=attn_bias)

    xf = types.ModuleType("xformers")
    ops = types.ModuleType("xformers.ops")
    fmha = types.ModuleType("xformers.ops.fmha")
    ab = types.ModuleType("xformers.ops.fmha.attn_bias")
    for cls in (AttentionBias, LowerTriangularMask, BlockDiagonalMask, BlockDiagonalCausalMask,
                BlockDiagonalCausalWithOffsetPaddedKeysMask):
        setattr(ab, cls.__name__, cls)
        setattr(fmha, cls.__name__, cls)
        setattr(ops, cls.__name__, cls)
    for mod in (fmha, ops):
        mod.memory_efficient_attention = memory_efficient_attention  # type: ignore[attr-defined]
    # Importing real xformers registers its kernels as torch ops; code that lists them (lingua's selective
    # activation checkpointing: torch.ops.xformers_flash.flash_fwd.default) needs the names to exist.
    lib = torch.library.Library("xformers_flash", "FRAGMENT")
    if not hasattr(torch.ops.xformers_flash, "flash_fwd"):
        lib.define("flash_fwd(Tensor query, Tensor key, Tensor value) -> Tensor")
    xf._torch_library = lib  # type: ignore[attr-defined]  # the registration lives as long as the module
    xf.__path__, ops.__path__, fmha.__path__ = [], [], []
    xf.ops, ops.fmha, fmha.attn_bias = ops, fmha, ab  # type: ignore[attr-defined]
    xf.__version__ = "0.0.28"  # type: ignore[attr-defined]
    return {"xformers": xf, "xformers.ops": ops, "xformers.ops.fmha": fmha, "xformers.ops.fmha.attn_bias": ab}


def install_reference_attention(ctx: Context) -> None:
    """Eager flash_attn / xformers stand-ins for repositories that import them unconditionally.

    Reference process only: they are independent of ascend_patch (whose SDPA shims the patched run uses).
    """
    assert ctx.mode == "reference" and "ascend_patch" not in sys.modules, "stand-ins are for the reference only"
    sys.modules.update(_reference_flash_attn())
    sys.modules.update(_reference_xformers())


@contextlib.contextmanager
def cuda_calls_stay_on_cpu(ctx: Context) -> Iterator[None]:
    """Reference only: ``Tensor.cuda()`` / ``Module.cuda()`` return the CPU object, for a repository whose
    model constructor hard-codes ``.cuda()`` and has no CPU branch (CPU torch would raise there)."""
    assert ctx.mode == "reference" and "ascend_patch" not in sys.modules
    tensor_cuda, module_cuda = torch.Tensor.cuda, torch.nn.Module.cuda
    torch.Tensor.cuda = lambda self, *a, **k: self  # type: ignore[method-assign]
    torch.nn.Module.cuda = lambda self, *a, **k: self  # type: ignore[method-assign]
    try:
        yield
    finally:
        torch.Tensor.cuda, torch.nn.Module.cuda = tensor_cuda, module_cuda  # type: ignore[method-assign]


# --------------------------------------------------------------------------------------------- child main


def _where(exc: BaseException, src: Path) -> str:
    """The innermost frame inside the checkout (else the innermost frame), as path:line."""
    frames = traceback.extract_tb(exc.__traceback__)
    inside = [f for f in frames if Path(f.filename).resolve().is_relative_to(src)]
    frame = (inside or frames or [None])[-1]
    if frame is None:
        return ""
    path = Path(frame.filename).resolve()
    shown = path.relative_to(src) if path.is_relative_to(src) else Path(*path.parts[-3:])
    return f"{shown}:{frame.lineno}"


def _first_line(exc: BaseException) -> str:
    """The error's first line; for a dynamo graph-break wrapper, the op error it wraps ("got ...")."""
    lines = str(exc).strip().splitlines()
    first = f"{type(exc).__name__}: {lines[0] if lines else ''}"
    inner = next((ln.split(": got ", 1)[1] for ln in lines if ": got " in ln), None)
    return (f"{first} (got {inner})" if inner else first)[:400]


def _patched_calls(src: Path) -> list[str]:
    """The call sites that went through a patch, from ascend_patch's migration log (evidence of what ran)."""
    import ascend_patch

    calls = []
    for r in ascend_patch.report():
        if r.action == "call":
            path, _, line = r.where.rpartition(":")  # relative to the cwd at the call: make it repo-relative
            full = Path(path).resolve()
            where = f"{full.relative_to(src) if full.is_relative_to(src) else full.name}:{line}"
            calls.append(f"{r.patch}: {r.target} {r.detail} @ {where}".strip())
    return calls


def run_child(name: str, driver_name: str, src: Path, work: Path, mode: str, constructs: list[str],
              tol: Tol | None) -> int:
    """Run one driver in this process; print one ``CORPUS_RESULT {json}`` line; the exit code is always 0."""
    started = time.perf_counter()
    result: dict[str, Any] = {"repo": name, "mode": mode, "ok": False, "rel_err": None, "worst": None,
                              "constructs": constructs, "cause": None, "where": None}
    ctx = Context(name=name, src=src.resolve(), work=work.resolve(), mode=mode)
    try:
        driver = importlib.import_module(f"drivers.{driver_name}")
        install_inert_packages(getattr(driver, "STAND_INS", ()))
        for rel in getattr(driver, "PATHS", (".",)):
            sys.path.insert(0, str((ctx.src / rel).resolve()))
        tol = tol if tol is not None else getattr(driver, "TOL", FP32_TOL)
        result["tol"] = tol
        if mode == "reference":
            outputs = to_cpu(driver.reference(ctx))
            ctx.save("reference_outputs", outputs)
            assert "ascend_patch" not in sys.modules, "the reference process imported ascend_patch"
            result.update(ok=True, outputs=sorted(outputs))
        else:
            outputs = to_cpu(driver.patched(ctx))
            ok, err, key = compare(outputs, ctx.load("reference_outputs"), tol)
            used = accelerator_bytes()
            result.update(ok=ok and used > 0, rel_err=err, worst=key, accelerator_bytes=used)
            if not ok:
                result["cause"] = f"numerics: rel_err {err:.3g} > {tol_for(tol, key):g} on '{key}'"
            elif used == 0:
                result["cause"] = "ran on the CPU: the repository's path never used an accelerator"
    except BaseException as exc:  # noqa: BLE001 - every failure is a measurement, reported on the result line
        if isinstance(exc, KeyboardInterrupt):
            raise
        log.debug("driver failed", exc_info=True)
        traceback.print_exc(file=sys.stderr)
        result.update(cause=_first_line(exc), where=_where(exc, ctx.src))
    if "ascend_patch" in sys.modules:
        result["calls"] = _patched_calls(ctx.src)
    result["seconds"] = round(time.perf_counter() - started, 1)
    sys.stdout.flush()
    print(RESULT_TAG + json.dumps(result), flush=True)
    return 0
