"""mistralai/mistral-inference: ``Transformer.from_folder`` + ``generate`` on a tiny GQA model.

``transformer_layers.py`` / ``cache.py`` import ``xformers.ops.fmha`` unconditionally; prefill attends under a
``BlockDiagonalCausalMask(...).make_local_attention(window)`` over packed prompts of different lengths,
decoding under ``BlockDiagonalCausalWithOffsetPaddedKeysMask`` over the padded KV cache. Patched:
``from_folder(folder)`` with its default ``device="cuda"`` and ``generate`` (``@torch.inference_mode()``),
greedy. Reference: the same calls with ``device="cpu"`` and eager xformers stand-ins for those masks.
"""

from __future__ import annotations

import json

import torch

from .common import Context, Outputs, install_reference_attention, ragged, seed_everything

PATHS = ("src",)
PARAMS = dict(dim=64, n_layers=2, head_dim=16, hidden_dim=128, n_heads=4, n_kv_heads=2, norm_eps=1e-5,
              vocab_size=97, rope_theta=10000.0)
PROMPTS = [[1, 5, 9, 3, 7, 11], [1, 4, 2]]


def _generate(ctx: Context, **device: str) -> Outputs:
    from mistral_inference.generate import generate
    from mistral_inference.transformer import Transformer

    model = Transformer.from_folder(ctx.work / "model", max_batch_size=len(PROMPTS), **device)
    tokens, logprobs = generate(PROMPTS, model, max_tokens=5, temperature=0.0, eos_id=None)
    return {"tokens": ragged(tokens), "logprobs": ragged(logprobs)}


def reference(ctx: Context) -> Outputs:
    install_reference_attention(ctx)
    import safetensors.torch
    from mistral_inference.args import TransformerArgs
    from mistral_inference.transformer import Transformer

    seed_everything(0)
    model = Transformer(TransformerArgs(**PARAMS))
    with torch.no_grad():
        for p in model.parameters():  # RMSNorm weights start at 1: spread them too
            p.normal_(0.0, 0.3 if p.ndim == 1 else 0.05)
    folder = ctx.work / "model"
    folder.mkdir()
    (folder / "params.json").write_text(json.dumps(PARAMS))
    safetensors.torch.save_file({k: v.contiguous() for k, v in model.state_dict().items()},
                                str(folder / "consolidated.safetensors"))
    return _generate(ctx, device="cpu")


def patched(ctx: Context) -> Outputs:
    return _generate(ctx)  # from_folder's default device="cuda" (transformer.py:302)
