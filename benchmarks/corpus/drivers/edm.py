"""NVlabs/edm: the body of ``generate.py:main`` (lines 251-283) on a tiny SongUNet ``EDMPrecond``.

Patched, as ``main`` does it: ``torch_utils.distributed.init()`` (``init_process_group("nccl")`` from the
torchrun variables, ``torch.cuda.set_device``), ``device=torch.device("cuda")`` (main's default),
``StackedRandomGenerator(device, seeds)`` (one ``torch.Generator(device)`` per seed) for the latents and
the sampler's churn noise, then ``edm_sampler`` (Heun, float64 state). Reference: the same calls with
``torch.device("cpu")`` and no process group. ``main`` itself is not called: it only adds a network pickle
download and PNG writing (uint8, too coarse to compare).
"""

from __future__ import annotations

import torch

from .common import Context, Outputs, seed_everything, single_process_env

SEEDS = [0, 1]
SAMPLER = dict(num_steps=4, S_churn=20.0, S_min=0.01, S_max=80.0)  # churn > 0: the generators' noise matters


def _net() -> torch.nn.Module:
    from training.networks import EDMPrecond

    seed_everything(0)
    return EDMPrecond(img_resolution=8, img_channels=3, label_dim=0, model_type="SongUNet", model_channels=16,
                      channel_mult=[1, 2], channel_mult_emb=2, num_blocks=1, attn_resolutions=[4], dropout=0.0)


def _sample(net: torch.nn.Module, device: torch.device) -> Outputs:
    from generate import StackedRandomGenerator, edm_sampler

    net = net.eval().requires_grad_(False).to(device)
    rnd = StackedRandomGenerator(device, SEEDS)
    latents = rnd.randn([len(SEEDS), net.img_channels, net.img_resolution, net.img_resolution], device=device)
    images = edm_sampler(net, latents, None, randn_like=rnd.randn_like, **SAMPLER)
    return {"latents": latents, "images": images}


def reference(ctx: Context) -> Outputs:
    net = _net()
    ctx.save("state", net.state_dict())
    return _sample(net, torch.device("cpu"))


def patched(ctx: Context) -> Outputs:
    from torch_utils import distributed as dist

    single_process_env()
    dist.init()  # generate.py:251
    net = _net()
    net.load_state_dict(ctx.load("state"))
    return _sample(net, torch.device("cuda"))  # generate.py:250, main(..., device=torch.device('cuda'))
