"""facebookresearch/lingua: ``apps/main/generate.py``'s loading and generation on a tiny LMTransformer.

Both model files import ``xformers.ops`` unconditionally; ``attn_impl="fmha"`` builds
``fmha.attn_bias.LowerTriangularMask()`` and calls ``fmha.memory_efficient_attention``. Patched:
``load_consolidated_model_and_tokenizer`` (``model.cuda()``), the model's forward with ``attn_impl="fmha"``, then
``PackedCausalTransformerGenerator`` (``device="cuda"`` default) and its ``generate``: ``@torch.inference_mode()``,
``.cuda()`` on the packed prompts, prefill through ``flex_attention_comp = torch.compile(flex_attention)``
(lingua/transformer.py:19) with a block mask over packed documents, decoding with SDPA and a KV cache. Greedy.
Reference: the CPU model's own ``attn_impl="sdpa"`` path (causal), and the generator's outputs recomputed
with full causal forwards: per-prompt log-likelihoods and greedy continuations. An eager xformers stand-in is
installed only so that the modules import.
"""

from __future__ import annotations

import json

import torch
import torch.nn.functional as F

from .common import Context, Outputs, install_reference_attention, ragged, seed_everything

ARGS = dict(dim=64, n_layers=2, n_heads=4, vocab_size=258, max_seqlen=64, multiple_of=16)
PROMPTS = ["hello world", "abc"]
MAX_GEN = 4


def _tokens(tok: object) -> torch.Tensor:
    ids = tok.encode("the lazy dog sleeps", add_bos=True, add_eos=False)  # type: ignore[attr-defined]
    return torch.tensor([ids])


def reference(ctx: Context) -> Outputs:
    install_reference_attention(ctx)
    from apps.main.transformer import LMTransformer, LMTransformerArgs
    from lingua.checkpoint import CONSOLIDATE_NAME
    from lingua.tokenizer import ByteTokenizer

    seed_everything(0)
    model = LMTransformer(LMTransformerArgs(**ARGS))
    model.init_weights()
    model.eval()
    ckpt = ctx.work / "consolidated"
    ckpt.mkdir()
    torch.save({"model": model.state_dict()}, ckpt / CONSOLIDATE_NAME)
    (ckpt / "params.json").write_text(json.dumps({"model": ARGS, "distributed": {"model_dtype": "fp32"},
                                                  "data": {"tokenizer": {"name": "bytes", "path": None}}}))
    tok = ByteTokenizer()
    with torch.no_grad():
        logits = model(_tokens(tok), attn_impl="sdpa")
        loglik, generated = [], []
        for prompt in PROMPTS:
            ids = tok.encode(prompt, add_bos=True, add_eos=False)
            full = model(torch.tensor([ids]), attn_impl="sdpa")[0]
            loglik.append((-F.cross_entropy(full[:-1], torch.tensor(ids[1:]), reduction="none")).tolist())
            seq: list[int] = []
            for _ in range(MAX_GEN):
                nxt = int(model(torch.tensor([ids + seq]), attn_impl="sdpa")[0, -1].argmax())
                seq.append(nxt)
                if nxt == tok.eos_id:
                    break
            generated.append(tok.encode(tok.decode(seq)))
    return {"logits": logits, "loglikelihood": ragged(loglik), "generation": ragged(generated)}


def patched(ctx: Context) -> Outputs:
    from apps.main.generate import (PackedCausalTransformerGenerator, PackedCausalTransformerGeneratorArgs,
                                    load_consolidated_model_and_tokenizer)

    model, tok, _ = load_consolidated_model_and_tokenizer(str(ctx.work / "consolidated"))
    with torch.no_grad():
        logits = model(_tokens(tok).cuda(), attn_impl="fmha")
    cfg = PackedCausalTransformerGeneratorArgs(max_gen_len=MAX_GEN, max_tokens=64, dtype="fp32", temperature=0.0)
    generation, loglik, _ = PackedCausalTransformerGenerator(cfg, model, tok).generate(PROMPTS)
    return {"logits": logits, "loglikelihood": ragged([x.tolist() for x in loglik]),
            "generation": ragged([tok.encode(g) for g in generation])}
