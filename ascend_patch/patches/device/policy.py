"""What ``torch.cuda`` claims about the machine under the patch: availability and capability."""

from __future__ import annotations

from ...engine.patch import PatchContext

CUDA_IS_AVAILABLE_CHOICES = ("target", "true", "false")

# Capability reported for torch.cuda.get_device_capability / properties.major.minor. Upstream gates
# bf16 and flash attention on ">= (8, 0)" (Ampere); on the targets both are served (bf16 natively,
# flash_attn through the "attention" shim), so the gate should open.
REPORTED_CAPABILITY = (8, 0)


def cuda_available_answer(ctx: PatchContext) -> bool:
    policy = ctx.options.get("cuda_is_available", "target")
    if policy == "true":
        return True
    if policy == "false":
        return False
    return ctx.device != "cpu"

