"""Static scan of a source tree for CUDA-only constructs, and which patch handles each.

Reads Python files with :mod:`ast` (nothing is imported or run) and lists every construct a CUDA
research repo uses that breaks or silently changes meaning on an Ascend NPU: ``torch.cuda.*``,
``.cuda()``, ``"cuda"`` / ``"cuda:N"`` device literals, ``torch.cuda.amp``, fp32 autocast regions,
flash_attn / xformers / triton imports, NCCL, float64 tensors created on a device, the
XFORMERS_ENABLED / XFORMERS_DISABLED env flags, ``torch.compile``, custom CUDA extensions
(``load_inline``, ``cpp_extension``) and ``.cu`` sources. Each finding names the patch that handles
it, or "unhandled". Import aliases are followed (``import torch as th``, ``from torch import cuda``).

Exit status for CI: 1 when anything is unhandled.
"""

from __future__ import annotations

import ast
import json
import logging
import os
import re
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

logger = logging.getLogger("ascend_patch")

UNHANDLED = "unhandled"

SKIP_DIRS = {".git", ".hg", ".svn", "__pycache__", ".tox", ".nox", ".venv", "venv", "env", "node_modules",
             "site-packages", "build", "dist", ".mypy_cache", ".pytest_cache", ".eggs"}  # fmt: skip
CUDA_SOURCE_SUFFIXES = (".cu", ".cuh")

SEED_FUNCS = {"manual_seed", "manual_seed_all", "seed", "seed_all", "initial_seed", "get_rng_state",
              "set_rng_state", "get_rng_state_all", "set_rng_state_all"}  # fmt: skip
AUTOCAST_CALLS = {"torch.autocast", "torch.amp.autocast", "torch.amp.autocast_mode.autocast", "torch.cuda.amp.autocast"}
AMP_DEVICE_CALLS = {"torch.amp.GradScaler", "torch.amp.custom_fwd", "torch.amp.custom_bwd"}
FLOAT64 = {"torch.float64", "torch.double"}
EXTENSION_CALLS = {"load", "load_inline", "CUDAExtension", "BuildExtension", "CppExtension"}
XFORMERS_FLAGS = {"XFORMERS_ENABLED", "XFORMERS_DISABLED"}
CUDA_LITERAL = re.compile(r"^cuda(:\d+)?$")
ENV_GETTERS = {"os.environ.get", "os.getenv", "os.environ.pop", "os.environ.setdefault"}

NOTES = {
    "flag": "XFORMERS_ENABLED is on for ANY non-empty value, even '0'; XFORMERS_DISABLED is opt-out. Either "
            "way the attention patch serves the xformers import it guards; the mingtok/dinov2 recipes unset a "
            "value spelled '0'/'false' while active",
    "compile": "no patch: on NPU torch.compile needs a compile backend (torchair); drop it or run eager",
    "extension": "needs a recipe: a custom CUDA kernel has no NPU build; a recipe serves its module with "
                 "PyTorch code (docs/writing-a-recipe.md#replacing-a-custom-kernel)",
    "cu": "needs a recipe: CUDA C++ source; a recipe replaces the module that loads it with PyTorch code",
    "float64": "no patch: Ascend has no float64 matmul/conv; compute in float32 or on the CPU",
    "triton": "needs a recipe: triton kernels target GPUs (triton-ascend is a separate port); a recipe serves "
              "the kernel module with PyTorch code (docs/writing-a-recipe.md#replacing-a-custom-kernel)",
    "device_type": "needs a recipe: a tensor on the target is never of type 'cuda', so this test stays False "
                   "(or an assert fails); a recipe replaces the function that branches on it",
}
DEVICE_TYPE_OPS = (ast.Eq, ast.NotEq, ast.In, ast.NotIn)


@dataclass
class Finding:
    file: str
    line: int
    construct: str
    patch: str  # the patch that handles it, or "unhandled"
    note: str = ""

    @property
    def handled(self) -> bool:
        return self.patch != UNHANDLED


@dataclass
class ScanResult:
    root: str
    files_scanned: int
    findings: list[Finding] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)  # files that could not be parsed

    @property
    def unhandled(self) -> list[Finding]:
        return [f for f in self.findings if not f.handled]

    @property
    def exit_code(self) -> int:
        return 1 if self.unhandled else 0

    def to_dict(self) -> dict:
        data = asdict(self)
        data["unhandled"] = len(self.unhandled)
        data["by_patch"] = _counts(self.findings)
        return data

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    def to_text(self) -> str:
        lines = [(f"scanned {self.files_scanned} file(s) under {self.root}: {len(self.findings)} CUDA construct(s), "
                  f"{len(self.unhandled)} unhandled")]
        if self.findings:
            rows = [("location", "construct", "patch", "note")] + [
                (f"{f.file}:{f.line}", f.construct, f.patch, f.note) for f in self.findings
            ]
            widths = [max(len(r[i]) for r in rows) for i in range(3)]
            lines.append("")
            for n, row in enumerate(rows):
                lines.append(("  ".join(c.ljust(w) for c, w in zip(row[:3], widths)) + "  " + row[3]).rstrip())
                if n == 0:
                    lines.append("  ".join("-" * w for w in widths) + "  ----")
            lines.append("")
            lines.append("by patch: " + ", ".join(f"{k} {v}" for k, v in _counts(self.findings).items()))
        for error in self.errors:
            lines.append(f"not parsed: {error}")
        if self.findings and not self.unhandled:
            needed = sorted({f.patch for f in self.findings})
            lines.append(f"all handled: ascend_patch.apply({', '.join(map(repr, needed))})")
        return "\n".join(lines)

    __str__ = to_text


def _counts(findings: list[Finding]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for f in findings:
        counts[f.patch] = counts.get(f.patch, 0) + 1
    return dict(sorted(counts.items()))


def _known_patches() -> set[str]:
    from ..patches import patch_names  # a table only: imports no patch module, no torch

    return set(patch_names())


class _Visitor(ast.NodeVisitor):
    """Collects findings for one module. ``aliases`` maps local names to dotted import paths."""

    def __init__(self, file: str) -> None:
        self.file = file
        self.findings: list[Finding] = []
        self.aliases: dict[str, str] = {}
        self.done: set[int] = set()  # ids of nodes already reported as part of a larger construct

    # -- helpers ----------------------------------------------------------------------------------

    def add(self, node: ast.AST, construct: str, patch: str, note: str = "") -> None:
        if patch != UNHANDLED and patch not in _known_patches():
            note, patch = f"needs a {patch!r} patch, which this ascend_patch version does not have", UNHANDLED
        self.findings.append(Finding(self.file, getattr(node, "lineno", 0), construct, patch, note))

    def dotted(self, node: ast.AST) -> str | None:
        """``a.b.c`` with the first name resolved through the imports, or None if not a plain chain."""
        parts = []
        while isinstance(node, ast.Attribute):
            parts.append(node.attr)
            node = node.value
        if not isinstance(node, ast.Name):
            return None
        parts.append(self.aliases.get(node.id, node.id))
        return ".".join(reversed(parts))

    def mark(self, node: ast.AST) -> None:
        for sub in ast.walk(node):
            self.done.add(id(sub))

    def is_float64(self, node: ast.AST) -> bool:
        return self.dotted(node) in FLOAT64

    @staticmethod
    def string(node: ast.AST | None) -> str | None:
        return node.value if isinstance(node, ast.Constant) and isinstance(node.value, str) else None

    # -- imports ----------------------------------------------------------------------------------

    def visit_Import(self, node: ast.Import) -> None:
        for alias in node.names:
            if alias.asname:
                self.aliases[alias.asname] = alias.name
            self._check_module(node, alias.name)

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        module = node.module or ""
        if node.level:  # relative imports are the repo's own modules
            return
        if self._check_module(node, module):
            return
        for alias in node.names:
            full = f"{module}.{alias.name}"
            self.aliases[alias.asname or alias.name] = full
            self._classify_name(node, full, imported=True)

    def _check_module(self, node: ast.AST, module: str) -> bool:
        top = module.partition(".")[0]
        if top in ("flash_attn", "xformers"):
            self.add(node, f"import {module}", "attention", "resolved to the SDPA-backed shim")
            return True
        if top == "triton":
            self.add(node, f"import {module}", UNHANDLED, NOTES["triton"])
            return True
        if isinstance(node, ast.Import) and (module == "torch.cuda" or module.startswith("torch.cuda.")):
            # ``import torch.cuda.amp``; for ``from torch.cuda import x`` the imported names decide.
            return self._classify_name(node, module, imported=True)
        return False

    # -- names ------------------------------------------------------------------------------------

    def _classify_name(self, node: ast.AST, name: str, imported: bool = False) -> bool:
        """Report a dotted name (``torch.cuda.synchronize``); True when it is a CUDA construct."""
        shown = ("import " if imported else "") + name
        if name == "torch.compile":
            self.add(node, shown, UNHANDLED, NOTES["compile"])
        elif name.startswith("torch.utils.cpp_extension.") and name.rsplit(".", 1)[1] in EXTENSION_CALLS:
            self.add(node, shown, UNHANDLED, NOTES["extension"])
        elif name == "torch.cuda.amp" or name.startswith("torch.cuda.amp."):
            self.add(node, shown, "autocast")
        elif name == "torch.cuda.nccl" or name.startswith("torch.cuda.nccl."):
            self.add(node, shown, "distributed")
        elif name.startswith("torch.cuda.random") or (
            name.startswith("torch.cuda.") and name.split(".")[2] in SEED_FUNCS
        ):
            self.add(node, shown, "seed")
        elif name == "torch.cuda" or name.startswith("torch.cuda."):
            self.add(node, shown, "device")
        else:
            return False
        return True

    def visit_Attribute(self, node: ast.Attribute) -> None:
        if id(node) in self.done:
            return
        name = self.dotted(node)
        if name is not None:
            if self._classify_name(node, name):
                self.mark(node)  # torch.cuda.amp.autocast is one finding, not three
            return
        self.generic_visit(node)

    # -- calls ------------------------------------------------------------------------------------

    def visit_Call(self, node: ast.Call) -> None:
        if id(node) not in self.done:
            self._check_call(node)
        self.generic_visit(node)

    def _check_call(self, node: ast.Call) -> None:
        func = self.dotted(node.func)
        kwargs = {k.arg: k.value for k in node.keywords if k.arg}
        if func in AUTOCAST_CALLS:
            self._check_autocast(node, func, kwargs)
            return
        if func in AMP_DEVICE_CALLS:
            device = self.string(node.args[0]) if node.args else self.string(kwargs.get("device_type"))
            if device is not None and CUDA_LITERAL.match(device):
                self.add(node, f"{func}({device!r})", "autocast")
                self.mark(node)
            return
        if func in ENV_GETTERS and node.args and self.string(node.args[0]) in XFORMERS_FLAGS:
            self.add(node, f"{func}({self.string(node.args[0])!r})", "attention", NOTES["flag"])
            self.mark(node)
            return
        if isinstance(node.func, ast.Attribute) and not (func or "").startswith("torch."):
            self._check_method(node, node.func, kwargs)  # x.cuda(), x.double().cuda(), ...
        called = func or (node.func.attr if isinstance(node.func, ast.Attribute) else None)
        if called is not None:
            self._check_float64(node, called, kwargs)

    def _check_autocast(self, node: ast.Call, func: str, kwargs: dict[str, ast.AST]) -> None:
        if func == "torch.cuda.amp.autocast":
            dtype = kwargs.get("dtype", node.args[1] if len(node.args) > 1 else None)
            device = "cuda"
        else:
            device = self.string(node.args[0] if node.args else kwargs.get("device_type"))
            dtype = kwargs.get("dtype", node.args[1] if len(node.args) > 1 else None)
        if device is None or not CUDA_LITERAL.match(device):
            return  # torch.autocast("cpu") / a variable: nothing CUDA-specific we can see
        if dtype is not None and self.dotted(dtype) in ("torch.float32", "torch.float"):
            self.add(node, f"{func}(dtype=torch.float32)", "fp32_autocast",
                     "fp32 autocast is rejected on NPU and CPU; the policy decides what the region runs in")
        else:
            self.add(node, f"{func}({device!r})" if func != "torch.cuda.amp.autocast" else func, "autocast")
        self.mark(node)

    def _check_method(self, node: ast.Call, func: ast.Attribute, kwargs: dict[str, ast.AST]) -> None:
        if func.attr == "cuda":
            inner = func.value
            if isinstance(inner, ast.Call) and isinstance(inner.func, ast.Attribute) and inner.func.attr == "double":
                self.add(node, ".double().cuda()", UNHANDLED, NOTES["float64"])
            else:
                self.add(node, ".cuda()", "device")
        elif func.attr == "double" and isinstance(func.value, ast.Call) and isinstance(func.value.func, ast.Attribute) \
                and func.value.func.attr == "cuda":
            self.add(node, ".cuda().double()", UNHANDLED, NOTES["float64"])

    def _check_float64(self, node: ast.Call, func: str, kwargs: dict[str, ast.AST]) -> None:
        """A float64 tensor made on (or sent to) a device other than an explicit "cpu"."""
        dtype_args = [a for a in node.args if self.is_float64(a)]
        if "dtype" in kwargs and self.is_float64(kwargs["dtype"]):
            dtype_args.append(kwargs["dtype"])
        if not dtype_args:
            return
        device = kwargs.get("device")
        if device is None and func.endswith(".to"):
            device = next((a for a in node.args if not self.is_float64(a)), None)
        if device is None or self.string(device) == "cpu":
            return
        self.add(node, f"{func.rsplit('.', 1)[-1]}(dtype=float64, device=...)", UNHANDLED, NOTES["float64"])

    # -- literals and env reads --------------------------------------------------------------------

    def visit_Constant(self, node: ast.Constant) -> None:
        if id(node) in self.done or not isinstance(node.value, str):
            return
        if CUDA_LITERAL.match(node.value):
            self.add(node, f"device {node.value!r}", "device")
        elif node.value == "nccl" or re.fullmatch(r"(\w+:\w+,)*cuda:nccl(,\w+:\w+)*", node.value):
            self.add(node, f"backend {node.value!r}", "distributed")

    def visit_Subscript(self, node: ast.Subscript) -> None:
        key = self.string(node.slice)
        if self.dotted(node.value) == "os.environ" and key in XFORMERS_FLAGS:
            self.add(node, f"os.environ[{key!r}]", "attention", NOTES["flag"])
            self.mark(node)
            return
        self.generic_visit(node)

    def visit_Compare(self, node: ast.Compare) -> None:
        key = self.string(node.left)
        if key in XFORMERS_FLAGS and any(self.dotted(c) == "os.environ" for c in node.comparators):
            self.add(node, f"{key!r} in os.environ", "attention", NOTES["flag"])
            self.mark(node)
            return
        if self._compares_device_type_with_cuda(node):
            self.add(node, "x.device.type == 'cuda'", UNHANDLED, NOTES["device_type"])
            self.mark(node)
            return
        self.generic_visit(node)

    def _compares_device_type_with_cuda(self, node: ast.Compare) -> bool:
        """``x.device.type == "cuda"`` / ``str(x.device) != "cuda:0"`` / ``x.device.type in ("cuda", ...)``."""
        if not all(isinstance(op, DEVICE_TYPE_OPS) for op in node.ops):
            return False
        sides = [node.left, *node.comparators]
        literals = [s for side in sides for s in ([side] if not isinstance(side, (ast.Tuple, ast.List, ast.Set))
                                                  else side.elts)]  # fmt: skip
        if not any(CUDA_LITERAL.match(self.string(lit) or "") for lit in literals):
            return False
        return any(self._is_device_type(side) for side in sides)

    @staticmethod
    def _is_device_type(node: ast.AST) -> bool:
        if isinstance(node, ast.Attribute) and node.attr == "type":  # x.device.type
            return isinstance(node.value, ast.Attribute) and node.value.attr == "device"
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "str" and node.args:
            arg = node.args[0]  # str(x.device)
            return isinstance(arg, ast.Attribute) and arg.attr == "device"
        return False


def _files(root: Path) -> Iterator[Path]:
    if root.is_file():
        yield root
        return
    for dirpath, dirnames, filenames in os.walk(root):
        # Sorted, so the output is stable; hidden and environment folders are not the repo's code.
        dirnames[:] = sorted(d for d in dirnames if d not in SKIP_DIRS and not d.startswith("."))
        for name in sorted(filenames):
            if name.endswith((".py", *CUDA_SOURCE_SUFFIXES)):
                yield Path(dirpath) / name


def scan_source(source: str, file: str = "<string>") -> list[Finding]:
    """Findings for one module's source text, in line order."""
    tree = ast.parse(source, filename=file)
    visitor = _Visitor(file)
    visitor.visit(tree)
    return sorted(visitor.findings, key=lambda f: f.line)


def scan(path: str | os.PathLike[str]) -> ScanResult:
    """Scan a file or a folder (recursively). Raises FileNotFoundError if ``path`` does not exist."""
    root = Path(path)
    if not root.exists():
        raise FileNotFoundError(f"{str(root)!r} does not exist")
    result = ScanResult(root=str(root), files_scanned=0)
    for file in _files(root):
        shown = str(file.relative_to(root)) if root.is_dir() else str(file)
        result.files_scanned += 1
        if file.suffix in CUDA_SOURCE_SUFFIXES:
            result.findings.append(Finding(shown, 1, f"CUDA source {file.suffix}", UNHANDLED, NOTES["cu"]))
            continue
        try:
            source = file.read_text(encoding="utf-8", errors="replace")
            result.findings.extend(scan_source(source, shown))
        except (SyntaxError, ValueError) as exc:  # Python 2 files, null bytes, ...
            result.errors.append(f"{shown}: {exc.__class__.__name__}: {exc}")
            logger.warning("scan: %s not parsed (%s)", shown, exc)
    return result
