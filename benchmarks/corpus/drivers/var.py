"""FoundationVision/VAR: a tiny VQVAE + VAR, teacher-forced logits and the ``demo_sample.ipynb`` sampling call.

Patched: ``dist.initialize()`` (VAR's own: ``torch.cuda.set_device``, ``torch.empty(1).cuda().device``), the model
built on that device (``VAR.__init__`` makes ``self.rng = torch.Generator(device=dist.get_device())``), the
``flash_attn`` / ``xformers`` try-imports of ``models/basic_var.py`` resolve to the shims, so attention runs
through ``memory_efficient_attention`` (with the causal ``attn_bias`` tensor in the forward) and
``flash_attn_func`` (fp16, KV-cached inference); ``forward`` has a ``torch.cuda.amp.autocast(enabled=False)``
region. The sampling call is the notebook's: ``torch.inference_mode()`` + ``torch.autocast('cuda',
dtype=torch.float16)`` around ``autoregressive_infer_cfg(..., g_seed=...)`` (top-k sampling on ``self.rng``).
Reference: the same calls on the CPU, where the try-imports fail and ``F.scaled_dot_product_attention`` runs,
with ``torch.autocast('cpu', dtype=torch.float16)``.
"""

from __future__ import annotations

import torch

from .common import Context, Outputs, seed_everything

PATCH_NUMS = (1, 2, 4)
# The notebook's fp16 sampling is compared at fp16 precision; the fp32 forward at the fp32 threshold.
TOL = {"default": 1e-4, "image": 2e-2}


def _build() -> torch.nn.Module:
    from models import VAR, VQVAE

    seed_everything(0)
    vae = VQVAE(vocab_size=64, z_channels=8, ch=32, test_mode=True, share_quant_resi=4, v_patch_nums=PATCH_NUMS)
    var = VAR(vae_local=vae, num_classes=10, depth=2, embed_dim=64, num_heads=2, drop_path_rate=0.0,
              cond_drop_rate=0.0, attn_l2_norm=True, patch_nums=PATCH_NUMS)
    var.init_weights(init_adaln=0.5, init_adaln_gamma=1e-5, init_head=0.02, init_std=-1)
    return var


def _run(ctx: Context, var: torch.nn.Module, device: torch.device | str, amp_device: str) -> Outputs:
    inputs = ctx.load("inputs")
    var = var.to(device).eval()
    var.vae_proxy[0].to(device)
    labels = inputs["labels"].to(device)
    with torch.no_grad():
        logits = var(labels, inputs["x_BLCv_wo_first_l"].to(device))
    with torch.inference_mode(), torch.autocast(amp_device, enabled=True, dtype=torch.float16, cache_enabled=True):
        image = var.autoregressive_infer_cfg(B=2, label_B=labels, cfg=1.5, top_k=4, top_p=0.95, g_seed=0)
    return {"logits": logits, "image": image}


def reference(ctx: Context) -> Outputs:
    var = _build()
    ctx.save("state", var.state_dict())
    g = torch.Generator().manual_seed(1)
    ctx.save("inputs", {"labels": torch.tensor([1, 3]),
                        "x_BLCv_wo_first_l": torch.randn(2, var.L - var.first_l, var.Cvae, generator=g)})
    return _run(ctx, var, "cpu", "cpu")


def patched(ctx: Context) -> Outputs:
    import dist  # VAR's dist.py

    dist.initialize()  # no RANK in the environment: one device, no process group (dist.py:23-27)
    var = _build()
    var.load_state_dict(ctx.load("state"))
    return _run(ctx, var, dist.get_device(), "cuda")
