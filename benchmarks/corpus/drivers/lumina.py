"""Alpha-VLLM/Lumina-Image-2.0: a tiny NextDiT sampled the way ``sample.py:main`` does (lines 159-296).

``models/model.py`` imports ``flash_attn_varlen_func`` and ``flash_attn.bert_padding`` unconditionally and
takes that path whenever activations are bf16/fp16: padded caption tokens are unpacked with
``index_first_axis`` / ``unpad_input``, attended with ``flash_attn_varlen_func`` and re-padded with
``pad_input``. RoPE runs in an fp32 region (``torch.cuda.amp.autocast(enabled=False)``), ``RMSNorm`` comes
from an ``apex`` try-import. Patched, as ``sample.py``: ``model.to("cuda", dtype=bf16)``, noise from
``torch.randn(..., device="cuda")`` after ``torch.random.manual_seed``, ``torch.autocast("cuda", bf16)`` around
the transport's Euler ODE sampler (torchdiffeq) on ``forward_with_cfg``. Reference: the same on the CPU with
``torch.autocast("cpu", bf16)`` and an eager flash_attn stand-in (the repository cannot import without one).
The captions of the two CFG halves have different lengths, so the varlen path really unpads.
"""

from __future__ import annotations

import torch

from .common import Context, Outputs, install_reference_attention, perturb_zero_init, seed_everything

TOL = 2e-2  # the repository's path is bf16 end to end (weights and autocast); both sides run it in bf16
DTYPE = torch.bfloat16
CAP_LEN, CAP_DIM = 8, 32


def _model() -> torch.nn.Module:
    from models.model import NextDiT

    seed_everything(0)
    model = NextDiT(patch_size=2, in_channels=16, dim=64, n_layers=2, n_refiner_layers=1, n_heads=4, n_kv_heads=2,
                    multiple_of=16, qk_norm=True, cap_feat_dim=CAP_DIM, axes_dims=(4, 6, 6), axes_lens=(64, 64, 64))
    return perturb_zero_init(model)


def _sample(ctx: Context, model: torch.nn.Module, device: str) -> Outputs:
    from transport import Sampler, create_transport

    model.eval().to(device, dtype=DTYPE)  # sample.py:159
    inputs = ctx.load("inputs")
    sampler = Sampler(create_transport("Linear", "velocity", None, None, None))  # sample.py:175-187, defaults
    with torch.no_grad(), torch.autocast(device, DTYPE):  # sample.py:226
        torch.random.manual_seed(1)  # sample.py:230
        z = torch.randn([1, 16, 8, 8], device=device).to(DTYPE)  # sample.py:274
        z = z.repeat(2, 1, 1, 1)
        kwargs = dict(cap_feats=inputs["cap_feats"].to(device, DTYPE), cap_mask=inputs["cap_mask"].to(device),
                      cfg_scale=4.0)
        sample_fn = sampler.sample_ode(sampling_method="euler", num_steps=4, atol=1e-6, rtol=1e-3, reverse=False,
                                       time_shifting_factor=6)
        samples = sample_fn(z, model.forward_with_cfg, **kwargs)[-1]
    return {"noise": z.float(), "samples": samples[:1].float()}


def reference(ctx: Context) -> Outputs:
    install_reference_attention(ctx)
    model = _model()
    ctx.save("state", model.state_dict())
    g = torch.Generator().manual_seed(2)
    mask = torch.zeros(2, CAP_LEN, dtype=torch.bool)
    mask[0, :8], mask[1, :5] = True, True  # the prompt and the (shorter) negative prompt
    ctx.save("inputs", {"cap_feats": torch.randn(2, CAP_LEN, CAP_DIM, generator=g) * mask[..., None],
                        "cap_mask": mask})
    return _sample(ctx, model, "cpu")


def patched(ctx: Context) -> Outputs:
    model = _model()
    model.load_state_dict(ctx.load("state"))
    return _sample(ctx, model, "cuda")
