"""FoundationVision/LlamaGen: ``autoregressive/sample/sample_c2i.py:main`` (lines 18-86) on a tiny GPT + VQ.

Patched, as ``main`` with its defaults (bf16, no compile): ``device = "cuda" if torch.cuda.is_available()``,
the VQ decoder and the GPT ``.to(device=device, dtype=torch.bfloat16)``, class labels on the device, then
``generate``: ``with torch.device(device)`` around ``setup_caches``, decoding under
``torch.backends.cuda.sdp_kernel(enable_flash=False, enable_mem_efficient=False, enable_math=True)``, CFG and
top-k ``torch.multinomial`` sampling on the device, and ``vq_model.decode_code``. Reference: the same lines on
the CPU. Both re-seed before sampling (the simulated NPU's generator replays the CPU stream for a seed).
"""

from __future__ import annotations

import torch

from .common import Context, Outputs, seed_everything

TOL = {"default": 2e-2, "tokens": 0.0}  # main() runs the GPT in bf16 (its --precision default); tokens must match
CLASS_LABELS = [3, 7]
LATENT = 4  # 4x4 codes, a 64x64 image through the 16x VQ decoder


def _models() -> tuple[torch.nn.Module, torch.nn.Module]:
    from autoregressive.models.gpt import ModelArgs, Transformer
    from tokenizer.tokenizer_image.vq_model import VQ_models

    seed_everything(0)
    vq = VQ_models["VQ-16"](codebook_size=64, codebook_embed_dim=8)
    gpt = Transformer(ModelArgs(n_layer=2, n_head=4, dim=64, multiple_of=16, vocab_size=64, block_size=LATENT ** 2,
                                num_classes=10, cls_token_num=1, model_type="c2i"))
    return vq, gpt


def _sample(vq: torch.nn.Module, gpt: torch.nn.Module) -> Outputs:
    from autoregressive.models.generate import generate

    torch.set_grad_enabled(False)
    device = "cuda" if torch.cuda.is_available() else "cpu"  # sample_c2i.py:24
    vq.to(device).eval()
    gpt = gpt.to(device=device, dtype=torch.bfloat16).eval()
    c_indices = torch.tensor(CLASS_LABELS, device=device)
    torch.manual_seed(0)
    index_sample = generate(gpt, c_indices, LATENT ** 2, cfg_scale=4.0, cfg_interval=-1, temperature=1.0, top_k=8,
                            top_p=1.0, sample_logits=True)
    samples = vq.decode_code(index_sample, [len(CLASS_LABELS), 8, LATENT, LATENT])
    return {"tokens": index_sample.float(), "samples": samples.float()}


def reference(ctx: Context) -> Outputs:
    vq, gpt = _models()
    ctx.save("state", {"vq": vq.state_dict(), "gpt": gpt.state_dict()})
    return _sample(vq, gpt)


def patched(ctx: Context) -> Outputs:
    vq, gpt = _models()
    state = ctx.load("state")
    vq.load_state_dict(state["vq"])
    gpt.load_state_dict(state["gpt"])
    return _sample(vq, gpt)
