"""facebookresearch/DiT: ``sample.py:main`` (lines 21-60) on a tiny DiT with 10-step DDPM.

Patched, as ``main``: ``device = "cuda" if torch.cuda.is_available() else "cpu"`` (true on the NPU, so every
``.to(device)`` / ``torch.randn(..., device=device)`` / ``torch.tensor(..., device=device)`` is a CUDA
request), ``torch.set_grad_enabled(False)``, and the CFG sampling loop ``diffusion.p_sample_loop(
model.forward_with_cfg, ...)``, which draws ``torch.randn_like`` noise on the device at every step.
Reference: the same lines, where the device rule yields ``"cpu"``. The VAE decode and PNG writing of
``main`` are left out (a Hugging Face download). The weights come from the reference, then both re-seed
before sampling: the simulated NPU's generator replays the CPU's stream for the same seed.
"""

from __future__ import annotations

import torch

from .common import Context, Outputs, perturb_zero_init, seed_everything

STAND_INS = ("torchvision",)  # timm imports it; PyPI's wheels for this torch do not load on a CPU build
CLASS_LABELS = [3, 7]


def _model() -> torch.nn.Module:
    from models import DiT

    seed_everything(0)
    return perturb_zero_init(DiT(input_size=8, patch_size=2, in_channels=4, hidden_size=64, depth=2, num_heads=4,
                                 num_classes=10, learn_sigma=True))


def _sample(model: torch.nn.Module) -> Outputs:
    from diffusion import create_diffusion

    torch.set_grad_enabled(False)
    device = "cuda" if torch.cuda.is_available() else "cpu"  # sample.py:25
    model = model.to(device).eval()
    diffusion = create_diffusion("10")
    torch.manual_seed(0)
    n = len(CLASS_LABELS)
    z = torch.randn(n, 4, 8, 8, device=device)
    y = torch.tensor(CLASS_LABELS, device=device)
    z = torch.cat([z, z], 0)
    y = torch.cat([y, torch.tensor([10] * n, device=device)], 0)
    samples = diffusion.p_sample_loop(model.forward_with_cfg, z.shape, z, clip_denoised=False,
                                      model_kwargs=dict(y=y, cfg_scale=4.0), progress=False, device=device)
    return {"samples": samples.chunk(2, dim=0)[0]}


def reference(ctx: Context) -> Outputs:
    model = _model()
    ctx.save("state", model.state_dict())
    return _sample(model)


def patched(ctx: Context) -> Outputs:
    model = _model()
    model.load_state_dict(ctx.load("state"))
    return _sample(model)
