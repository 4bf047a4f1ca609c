"""The AST walk: each CUDA-only construct of one module, with its verdict from :mod:`.verdicts`."""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass

from . import verdicts
from .verdicts import Verdict

UNHANDLED = "unhandled"

AUTOCAST_CALLS = {"torch.autocast", "torch.amp.autocast", "torch.amp.autocast_mode.autocast", "torch.cuda.amp.autocast"}
AMP_DEVICE_CALLS = {"torch.amp.GradScaler": "grad_scaler", "torch.amp.custom_fwd": "custom_fwd",
                    "torch.amp.custom_bwd": "custom_fwd"}  # fmt: skip
FLOAT64 = {"torch.float64", "torch.double"}
EXTENSION_CALLS = {"load", "load_inline", "CUDAExtension", "BuildExtension", "CppExtension"}
XFORMERS_FLAGS = {"XFORMERS_ENABLED", "XFORMERS_DISABLED"}
CUDA_LITERAL = re.compile(r"^cuda(:\d+)?$")
ENV_GETTERS = {"os.environ.get", "os.getenv", "os.environ.pop", "os.environ.setdefault"}
IMPORT_ERRORS = {"ImportError", "ModuleNotFoundError", "Exception", "BaseException"}
HF32 = ("Ascend's counterpart of TF32 is HF32, switched by torch.npu.matmul.allow_hf32 and "
        "torch.npu.conv.allow_hf32 (torch_npu; conv defaults to True): set those to the value meant here")  # fmt: skip

NOTES = {
    "flag": "XFORMERS_ENABLED is on for ANY non-empty value, even '0'; XFORMERS_DISABLED is opt-out. Either "
            "way the attention patch serves the xformers import it guards; the mingtok/dinov2 recipes unset a "
            "value spelled '0'/'false' while active",
    "compile": "no patch: on NPU torch.compile needs a compile backend (torchair); drop it or run eager",
    "extension": "needs a recipe: a custom CUDA kernel has no NPU build; a recipe serves its module with "
                 "PyTorch code (docs/writing-a-recipe.md#replacing-a-custom-kernel)",
    "cu": "needs a recipe: CUDA C++ source; a recipe replaces the module that loads it with PyTorch code",
    "float64": "no patch: Ascend has no float64 matmul/conv; compute in float32 or on the CPU",
    "device_type": "needs a recipe: a tensor on the target is never of type 'cuda', so this test stays False "
                   "(or an assert fails); a recipe replaces the function that branches on it",
    "tf32": f"no patch: the CUDA TF32 switches do not reach the NPU; {HF32}",
    "cudnn": "no patch: there is no cuDNN on Ascend, the switch does nothing (harmless; drop it)",
    "visible": "no patch: Ascend ignores CUDA_VISIBLE_DEVICES; set ASCEND_RT_VISIBLE_DEVICES instead",
    "nvidia_smi": "no patch: there is no nvidia-smi on an Ascend host; `npu-smi info` lists the NPUs "
                  "(another output format), torch.npu.mem_get_info() answers memory questions",
}
# Packages with no Ascend build (or another one): a hard import fails; one guarded by
# ``try/except ImportError`` is the upstream's own fallback and is not reported.
CUDA_PACKAGES = {
    "triton": "needs a recipe: triton kernels target GPUs (triton-ascend is a separate port); a recipe serves "
              "the kernel module with PyTorch code (docs/writing-a-recipe.md#replacing-a-custom-kernel)",
    "apex": "no patch: NVIDIA apex has no NPU build; use the torch.amp / torch.nn equivalents, or Ascend's "
            "separate apex port",
    "pynvml": "no patch: NVML has no Ascend counterpart in Python; use torch.npu.mem_get_info / "
              "torch.npu.utilization, or `npu-smi info`",
    "bitsandbytes": "no patch: bitsandbytes' CUDA kernels have no NPU build; quantize another way or run unquantized",
    "deepspeed": "no patch: DeepSpeed runs on Ascend only through its own NPU accelerator (torch_npu installed, "
                 "DS_ACCELERATOR=npu); check the ops this code uses there",
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


def _known_patches() -> set[str]:
    from ...patches import patch_names  # a table only: imports no patch module, no torch

    return set(patch_names())


class Visitor(ast.NodeVisitor):
    """Collects findings for one module. ``aliases`` maps local names to dotted import paths."""

    def __init__(self, file: str) -> None:
        self.file = file
        self.findings: list[Finding] = []
        self.aliases: dict[str, str] = {}
        self.imported: set[str] = set()  # absolute modules imported (for naming a recipe)
        self.done: set[int] = set()  # ids of nodes already reported as part of a larger construct
        self.guarded = 0  # inside ``try: ... except ImportError``

    # -- helpers ----------------------------------------------------------------------------------

    def add(self, node: ast.AST, construct: str, patch: str | None, note: str = "") -> None:
        if patch is None:
            patch = UNHANDLED
        elif patch != UNHANDLED and patch not in _known_patches():
            note, patch = f"needs a {patch!r} patch, which this ascend_patch version does not have", UNHANDLED
        self.findings.append(Finding(self.file, getattr(node, "lineno", 0), construct, patch, note))

    def add_verdict(self, node: ast.AST, construct: str, verdict: Verdict) -> None:
        self.add(node, construct, verdict.patch, verdict.note)

    def add_served(self, node: ast.AST, construct: str, key: str, note: str = "") -> None:
        patch = verdicts.served(key)
        if patch is None:
            note = f"no patch declares {verdicts.SERVED_BY[key]}, which this construct reaches at run time"
        self.add(node, construct, patch, note)

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

    def makes_float64(self, node: ast.AST) -> bool:
        """A call that gives a float64 tensor: ``zeros(.., dtype=torch.float64)``, ``.double()``, ``.to(torch.double)``."""
        if not isinstance(node, ast.Call):
            return False
        if isinstance(node.func, ast.Attribute) and node.func.attr == "double" and not node.args:
            return True
        return any(self.is_float64(a) for a in node.args) or any(
            k.arg == "dtype" and self.is_float64(k.value) for k in node.keywords
        )

    @staticmethod
    def string(node: ast.AST | None) -> str | None:
        return node.value if isinstance(node, ast.Constant) and isinstance(node.value, str) else None

    def is_device(self, node: ast.AST | None) -> bool:
        """An argument that names a device other than an explicit "cpu" (a literal or an expression)."""
        return node is not None and not self.is_float64(node) and self.string(node) != "cpu" and not (
            isinstance(node, ast.Constant) and not isinstance(node.value, str))

    # -- statements --------------------------------------------------------------------------------

    def visit_Try(self, node: ast.Try) -> None:
        catches = any(
            h.type is None or any(self.dotted(t) in IMPORT_ERRORS
                                  for t in (h.type.elts if isinstance(h.type, ast.Tuple) else [h.type]))
            for h in node.handlers
        )  # fmt: skip
        self.guarded += catches
        for stmt in node.body:
            self.visit(stmt)
        self.guarded -= catches
        for part in (*node.handlers, *node.orelse, *node.finalbody):
            self.visit(part)

    visit_TryStar = visit_Try

    def visit_Expr(self, node: ast.Expr) -> None:
        if self.string(node.value) is not None:
            return  # a docstring / bare string: prose, not a call
        self.generic_visit(node)

    # -- imports ----------------------------------------------------------------------------------

    def visit_Import(self, node: ast.Import) -> None:
        for alias in node.names:
            if alias.asname:
                self.aliases[alias.asname] = alias.name
            self.imported.add(alias.name)
            self._check_module(node, alias.name)

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        module = node.module or ""
        if node.level:  # relative imports are the repo's own modules
            return
        self.imported.add(module)
        names = [alias.name for alias in node.names]
        if self._check_module(node, module, names):
            return
        for alias in node.names:
            full = f"{module}.{alias.name}"
            self.aliases[alias.asname or alias.name] = full
            self._classify_name(node, full, imported=True)

    def _check_module(self, node: ast.AST, module: str, names: list[str] | None = None) -> bool:
        top = module.partition(".")[0]
        if top in verdicts.shimmed_packages():
            shown = f"from {module} import {', '.join(names)}" if names else f"import {module}"
            verdict = verdicts.shim_import(module, names or ())
            if verdict.patch is None and self.guarded:  # the shim's ImportError is caught: upstream falls back
                verdict = Verdict(verdicts.shimmed_packages()[top], f"{verdict.note.split(' (')[0]}: the "
                                  "ImportError is caught here, so upstream's own fallback runs")
            self.add_verdict(node, shown, verdict)
            return True
        if top in CUDA_PACKAGES:
            if not self.guarded:
                self.add(node, f"import {module}", UNHANDLED, CUDA_PACKAGES[top])
            return True
        if names is None and (module == "torch.cuda" or module.startswith("torch.cuda.")):
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
        elif name in ("torch.backends.cuda.matmul.allow_tf32", "torch.backends.cudnn.allow_tf32",
                      "torch.set_float32_matmul_precision", "torch.backends.cuda.matmul.fp32_precision",
                      "torch.backends.cudnn.conv.fp32_precision", "torch.backends.fp32_precision"):
            self.add(node, shown, UNHANDLED, NOTES["tf32"])
        elif name == "torch.backends.cudnn.benchmark":
            self.add(node, shown, UNHANDLED, NOTES["cudnn"])
        elif name == "torch.profiler.ProfilerActivity.CUDA":
            self.add_served(node, shown, "profiler_cuda")
        elif name == "torch.cuda" or name.startswith("torch.cuda."):
            self.add_verdict(node, shown, verdicts.cuda_name(name))
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
                self.add_served(node, f"{func}({device!r})", AMP_DEVICE_CALLS[func])
                self.mark(node)
            return
        if func in ENV_GETTERS and node.args and self.string(node.args[0]) in XFORMERS_FLAGS:
            self.add(node, f"{func}({self.string(node.args[0])!r})", verdicts.shimmed_packages()["xformers"],
                     NOTES["flag"])
            self.mark(node)
            return
        if CUDA_LITERAL.match(self.string(kwargs.get("pin_memory_device")) or "-"):
            self.add_served(node, "pin_memory_device='cuda'", "pin_memory_device",
                            "recent torch ignores it (the current accelerator pins); where torch passes it on, "
                            "the device patch's Tensor.pin_memory pins for the target")
            self.mark(kwargs["pin_memory_device"])
        if func is not None and func.rsplit(".", 1)[-1] in ("FullyShardedDataParallel", "FSDP") \
                and "device_id" in kwargs:
            self.add_served(node, "FullyShardedDataParallel(device_id=...)", "fsdp_device_id")
        if isinstance(node.func, ast.Attribute) and not (func or "").startswith("torch.") \
                and self._check_method(node, node.func, kwargs):  # x.cuda(), x.double().cuda(), ...
            return
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
            self.add_served(node, f"{func}(dtype=torch.float32)", "fp32_autocast",
                            "fp32 autocast is rejected on NPU and CPU; the policy decides what the region runs in")
        elif func == "torch.cuda.amp.autocast":
            self.add_served(node, func, "cuda_autocast")
        else:
            self.add_served(node, f"{func}({device!r})", "autocast")
        self.mark(node)

    def _check_method(self, node: ast.Call, func: ast.Attribute, kwargs: dict[str, ast.AST]) -> bool:
        """``x.cuda()``, ``x.type("torch.cuda.HalfTensor")`` and float64 sent to a device; True if reported."""
        if func.attr == "cuda":
            if self.makes_float64(func.value):
                inner = func.value.func  # type: ignore[attr-defined]
                shown = ".double().cuda()" if isinstance(inner, ast.Attribute) and inner.attr == "double" else \
                    "float64 tensor .cuda()"
                self.add(node, shown, UNHANDLED, NOTES["float64"])
            else:
                self.add_served(node, ".cuda()", "tensor_cuda")
            return True
        if func.attr == "double" and isinstance(func.value, ast.Call) and isinstance(func.value.func, ast.Attribute) \
                and func.value.func.attr in ("cuda", "to"):
            self.add(node, ".cuda().double()", UNHANDLED, NOTES["float64"])
            self.mark(func.value)
            return True
        spec = self.string(node.args[0]) if func.attr == "type" and node.args else None
        if spec is not None and spec.startswith("torch.cuda."):
            self.add_served(node, f".type({spec!r})", "tensor_type")
            return True
        if func.attr == "to" and self.makes_float64(func.value):
            device = kwargs.get("device", node.args[0] if node.args else None)
            if self.is_device(device):
                self.add(node, "float64 tensor .to(device)", UNHANDLED, NOTES["float64"])
                self.mark(node)
                return True
        return False

    def _check_float64(self, node: ast.Call, func: str, kwargs: dict[str, ast.AST]) -> None:
        """A float64 tensor made on (or sent to) a device other than an explicit "cpu"."""
        dtype_args = [a for a in node.args if self.is_float64(a)]
        if "dtype" in kwargs and self.is_float64(kwargs["dtype"]):
            dtype_args.append(kwargs["dtype"])
        if not dtype_args:
            return
        device = kwargs.get("device")
        if device is None and func.rsplit(".", 1)[-1] == "to":
            device = next((a for a in node.args if not self.is_float64(a)), None)
        if not self.is_device(device):
            return
        self.add(node, f"{func.rsplit('.', 1)[-1]}(dtype=float64, device=...)", UNHANDLED, NOTES["float64"])
        self.mark(node)

    # -- literals and env reads --------------------------------------------------------------------

    def visit_Constant(self, node: ast.Constant) -> None:
        if id(node) in self.done or not isinstance(node.value, str):
            return
        if CUDA_LITERAL.match(node.value):
            self.add_served(node, f"device {node.value!r}", "device_literal")
        elif node.value == "nccl" or re.fullmatch(r"(\w+:\w+,)*cuda:nccl(,\w+:\w+)*", node.value):
            self.add_served(node, f"backend {node.value!r}", "nccl")
        elif "CUDA_VISIBLE_DEVICES" in node.value:
            self.add(node, "CUDA_VISIBLE_DEVICES", UNHANDLED, NOTES["visible"])
        elif "nvidia-smi" in node.value:
            self.add(node, "nvidia-smi", UNHANDLED, NOTES["nvidia_smi"])

    def visit_Subscript(self, node: ast.Subscript) -> None:
        key = self.string(node.slice)
        if self.dotted(node.value) == "os.environ" and key in XFORMERS_FLAGS:
            self.add(node, f"os.environ[{key!r}]", verdicts.shimmed_packages()["xformers"], NOTES["flag"])
            self.mark(node)
            return
        self.generic_visit(node)

    def visit_Compare(self, node: ast.Compare) -> None:
        key = self.string(node.left)
        if key in XFORMERS_FLAGS and any(self.dotted(c) == "os.environ" for c in node.comparators):
            self.add(node, f"{key!r} in os.environ", verdicts.shimmed_packages()["xformers"], NOTES["flag"])
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
