"""willisma/SiT: ``sample.py:main`` (lines 20-95) on a tiny SiT, in both of its modes.

Patched, as ``main``: ``device = "cuda" if torch.cuda.is_available() else "cpu"``, the model ``.to(device)``,
``torch.randn`` / ``torch.tensor`` on ``device``, then the transport's samplers on ``forward_with_cfg``:
``sample_ode`` (torchdiffeq's adaptive ``dopri5``, the default) and ``sample_sde`` (Euler-Maruyama, drawing
its noise on the CPU and moving it to the device at every step). Reference: the same lines on the CPU. The VAE
decode is left out (a download); both processes re-seed before sampling.
"""

from __future__ import annotations

import torch

from .common import Context, Outputs, perturb_zero_init, seed_everything

STAND_INS = ("torchvision",)  # timm imports it; PyPI's wheels for this torch do not load on a CPU build
CLASS_LABELS = [3, 7]


def _model() -> torch.nn.Module:
    from models import SiT

    seed_everything(0)
    return perturb_zero_init(SiT(input_size=8, patch_size=2, in_channels=4, hidden_size=64, depth=2, num_heads=4,
                                 num_classes=10, learn_sigma=False))


def _sample(model: torch.nn.Module) -> Outputs:
    from transport import Sampler, create_transport

    torch.set_grad_enabled(False)
    device = "cuda" if torch.cuda.is_available() else "cpu"  # sample.py:23
    model = model.to(device).eval()
    sampler = Sampler(create_transport("Linear", "velocity", None, None, None))  # train_utils.py defaults
    out = {}
    for mode, sample_fn in (("ode", sampler.sample_ode(sampling_method="dopri5", num_steps=4, atol=1e-6, rtol=1e-3)),
                            ("sde", sampler.sample_sde(sampling_method="Euler", diffusion_form="sigma",
                                                       num_steps=6))):
        torch.manual_seed(0)
        n = len(CLASS_LABELS)
        z = torch.randn(n, 4, 8, 8, device=device)
        y = torch.tensor(CLASS_LABELS, device=device)
        z = torch.cat([z, z], 0)
        y = torch.cat([y, torch.tensor([10] * n, device=device)], 0)
        # The SDE's noise comes from the CPU generator (integrators.py:30, randn(...).to(x)) while z came from
        # the device's: re-seed the CPU one so that both processes replay the same noise after z.
        torch.default_generator.manual_seed(1)
        out[mode] = sample_fn(z, model.forward_with_cfg, y=y, cfg_scale=4.0)[-1].chunk(2, dim=0)[0]
    return out


def reference(ctx: Context) -> Outputs:
    model = _model()
    ctx.save("state", model.state_dict())
    return _sample(model)


def patched(ctx: Context) -> Outputs:
    model = _model()
    model.load_state_dict(ctx.load("state"))
    return _sample(model)
