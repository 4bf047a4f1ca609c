"""lucidrains/denoising-diffusion-pytorch: the README's training step and sampling on a tiny Unet, on "cuda".

Patched: ``Unet(..., flash_attn=True)`` whose ``Attend`` asks ``torch.cuda.is_available()`` and
``torch.cuda.get_device_properties(torch.device('cuda'))`` at construction and picks its SDPA backends per call
from ``q.is_cuda``; the diffusion wrapper moved with ``.cuda()``; one loss + backward (``q_sample`` is
decorated ``@autocast('cuda', enabled=False)``, timesteps and noise drawn on the device) and ``sample()``
(``@torch.inference_mode()`` on the whole DDIM loop, noise drawn on the device). Reference: the same on the CPU.
Both re-seed before each random step (the simulated NPU's generator replays the CPU stream for a seed).
"""

from __future__ import annotations

import torch

from .common import Context, Outputs, seed_everything

STAND_INS = ("torchvision", "pytorch_fid")  # imported at package import; unused by this path


def _diffusion() -> torch.nn.Module:
    from denoising_diffusion_pytorch import GaussianDiffusion, Unet

    seed_everything(0)
    model = Unet(dim=16, dim_mults=(1, 2), flash_attn=True, attn_dim_head=8, attn_heads=2)
    return GaussianDiffusion(model, image_size=16, timesteps=20, sampling_timesteps=5)


def _run(ctx: Context, diffusion: torch.nn.Module, device: str) -> Outputs:
    diffusion = diffusion.to(device) if device == "cpu" else diffusion.cuda()
    images = ctx.load("images").to(device)
    torch.manual_seed(1)
    loss = diffusion(images)
    loss.backward()
    grads = {f"grad.{n}": p.grad for n, p in diffusion.named_parameters() if p.grad is not None}
    torch.manual_seed(2)
    samples = diffusion.sample(batch_size=2)
    return {"loss": loss.detach(), "samples": samples, **grads}


def reference(ctx: Context) -> Outputs:
    diffusion = _diffusion()
    ctx.save("state", diffusion.state_dict())
    ctx.save("images", torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(3)))
    return _run(ctx, diffusion, "cpu")


def patched(ctx: Context) -> Outputs:
    diffusion = _diffusion()
    diffusion.load_state_dict(ctx.load("state"))
    return _run(ctx, diffusion, "cuda")
