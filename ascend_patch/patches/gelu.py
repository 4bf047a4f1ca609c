"""gelu: GELU on NPU tensors is the exact erf form.

On Ascend, plain ``F.gelu`` runs aclnnGelu, which computes the tanh approximation whatever
``approximate`` says (unless TORCH_NPU_USE_COMPATIBLE_IMPL=1 was set before the first call).
For DINOv2-large that is 1.33 % relative error against GPU; ``torch_npu.npu_gelu(x,
approximate='none')`` brings it to 0.04 % (torch-npu-facts.md).

Before::

    self.act = nn.GELU()          # on npu: tanh form
After ``apply("gelu")``: npu tensors go to ``torch_npu.npu_gelu(x, approximate=self.approximate)``;
tensors on other devices take the original code path untouched.

Patched by type (``nn.GELU.forward``, transformers' ``GELUActivation.forward``) and not by
attribute name: transformers renamed ``mlp.activation`` to ``mlp.activation_fn`` in 5.18, and
a type patch also covers models built before ``apply``. ``F.gelu`` and its copies cover
functional call sites.
"""

from __future__ import annotations

import functools
import sys
import weakref
from typing import Any, Callable, Mapping

import torch

from ..engine import calls
from ..engine.patch import Patch, PatchContext, Replace

# Counters for the report: distinct GELU modules and functional call sites routed to npu_gelu.
# A WeakSet tells "seen this module" without keeping models alive; the count outlives them.
_routed_modules: "weakref.WeakSet[torch.nn.Module]" = weakref.WeakSet()
_routed_module_count = 0
_routed_call_sites: set[tuple[str, int]] = set()


def _count_module(module: torch.nn.Module) -> None:
    global _routed_module_count
    if module not in _routed_modules:
        _routed_modules.add(module)
        _routed_module_count += 1


def npu_gelu(x: torch.Tensor, approximate: str) -> torch.Tensor:
    import torch_npu  # present whenever an npu tensor exists (real or ascend_patch.sim)

    return torch_npu.npu_gelu(x, approximate=approximate)


def _module_forward(approximate_of: Callable[[Any], str]) -> Callable[[Any, PatchContext], Any]:
    def build(original: Callable[..., torch.Tensor], ctx: PatchContext) -> Callable[..., torch.Tensor]:
        @functools.wraps(original)
        def forward(self: torch.nn.Module, input: torch.Tensor) -> torch.Tensor:
            if input.device.type == "npu" and ctx.active:
                _count_module(self)
                approximate = approximate_of(self)
                if calls.STATE.enabled:
                    name = type(self).__name__
                    calls.log_call("gelu", name, f"{name}(x) -> torch_npu.npu_gelu(x, approximate={approximate!r})")
                return npu_gelu(input, approximate)
            return original(self, input)

        return forward

    return build


def _functional(original: Callable[..., torch.Tensor], ctx: PatchContext) -> Callable[..., torch.Tensor]:
    @functools.wraps(original)
    def gelu(input: torch.Tensor, approximate: str = "none") -> torch.Tensor:
        if input.device.type == "npu" and ctx.active:
            caller = sys._getframe(1)
            _routed_call_sites.add((caller.f_code.co_filename, caller.f_lineno))
            if calls.STATE.enabled:
                calls.log_call("gelu", "F.gelu", f"F.gelu(x) -> torch_npu.npu_gelu(x, approximate={approximate!r})")
            return npu_gelu(input, approximate)
        return original(input, approximate=approximate)

    return gelu


def _reset_counters(ctx: PatchContext) -> None:
    global _routed_module_count
    _routed_modules.clear()
    _routed_module_count = 0
    _routed_call_sites.clear()


def _stats() -> Mapping[str, int]:
    return {"modules_routed": _routed_module_count, "functional_call_sites_routed": len(_routed_call_sites)}


def _transformers_gelu_approximate(module: Any) -> str:
    # GELUActivation(use_gelu_python=True) is the erf formula written out; both are exact.
    return "none"


PATCH = Patch(
    name="gelu",
    summary="nn.GELU / F.gelu / transformers GELUActivation on npu tensors -> torch_npu.npu_gelu (exact erf)",
    replaces=(
        Replace("torch.nn.modules.activation:GELU.forward", _module_forward(lambda m: m.approximate)),
        Replace("torch.nn.functional:gelu", _functional, copies=True),
        Replace(
            "transformers.activations:GELUActivation.forward",
            _module_forward(_transformers_gelu_approximate),
            optional=True,
        ),
    ),
    setup=_reset_counters,
    stats=_stats,
)
