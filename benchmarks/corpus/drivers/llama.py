"""meta-llama/llama (Llama 2): ``Llama.build`` + ``Llama.generate`` on a tiny checkpoint and tokenizer.

Patched, unmodified: ``build`` calls ``init_process_group("nccl")`` and fairscale's
``initialize_model_parallel``, ``torch.cuda.set_device``, then ``torch.set_default_tensor_type(
torch.cuda.HalfTensor)`` (the model is built in fp16 on the device) and ``Attention.__init__`` allocates its
KV cache with ``torch.zeros(...).cuda()``; ``generate`` is ``@torch.inference_mode()`` and fills its buffers with
``torch.full(..., device="cuda")``. Greedy decoding with log-probs.
Reference: the same fp16 model on the CPU (a gloo group of one for fairscale; ``.cuda()`` kept on the CPU, since
the constructor has no CPU branch) and ``generate``'s greedy loop written out (generation.py:164-204): the
repository's ``generate`` hard-codes ``device="cuda"``.
"""

from __future__ import annotations

import json

import torch
import torch.nn.functional as F

from .common import Context, Outputs, cuda_calls_stay_on_cpu, ragged, seed_everything, single_process_env

TOL = 2e-3  # build() makes the model fp16 (set_default_tensor_type(torch.cuda.HalfTensor)); the reference is fp16 too
PARAMS = dict(dim=64, n_layers=2, n_heads=4, n_kv_heads=2, multiple_of=16, norm_eps=1e-5)
MAX_SEQ_LEN, MAX_GEN = 32, 5
TEXT = ["the quick brown fox jumps over the lazy dog", "pack my box with five dozen liquor jugs",
        "how vexingly quick daft zebras jump", "sphinx of black quartz judge my vow"]


def _tokenizer(ctx: Context) -> str:
    import sentencepiece as spm

    path = ctx.work / "tokenizer.model"
    with open(path, "wb") as f:
        spm.SentencePieceTrainer.train(sentence_iterator=iter(TEXT), model_writer=f, vocab_size=40,
                                       model_type="char", minloglevel=2)
    return str(path)


def _greedy(model: torch.nn.Module, prompts: list[list[int]], pad_id: int, eos_id: int) -> Outputs:
    """generation.py:164-204 with temperature=0, logprobs=True, echo=False, on the model's device."""
    bsz, total = len(prompts), min(MAX_SEQ_LEN, MAX_GEN + max(len(t) for t in prompts))
    tokens = torch.full((bsz, total), pad_id, dtype=torch.long)
    for k, t in enumerate(prompts):
        tokens[k, : len(t)] = torch.tensor(t, dtype=torch.long)
    token_logprobs = torch.zeros_like(tokens, dtype=torch.float)
    input_text_mask = tokens != pad_id
    prev = 0
    for cur in range(min(len(t) for t in prompts), total):
        logits = model.forward(tokens[:, prev:cur], prev)
        nxt = torch.where(input_text_mask[:, cur], tokens[:, cur], torch.argmax(logits[:, -1], dim=-1))
        tokens[:, cur] = nxt
        token_logprobs[:, prev + 1 : cur + 1] = -F.cross_entropy(logits.transpose(1, 2),
                                                                 tokens[:, prev + 1 : cur + 1],
                                                                 reduction="none", ignore_index=pad_id)
        prev = cur
    out_tokens, out_logprobs = [], []
    for i, toks in enumerate(tokens.tolist()):
        toks = toks[len(prompts[i]) : len(prompts[i]) + MAX_GEN]
        probs = token_logprobs[i].tolist()[len(prompts[i]) : len(prompts[i]) + MAX_GEN]
        if eos_id in toks:
            toks, probs = toks[: toks.index(eos_id)], probs[: toks.index(eos_id)]
        out_tokens.append(toks)
        out_logprobs.append(probs)
    return {"tokens": ragged(out_tokens), "logprobs": ragged(out_logprobs)}


def reference(ctx: Context) -> Outputs:
    from fairscale.nn.model_parallel.initialize import initialize_model_parallel
    from llama.model import ModelArgs, Transformer
    from llama.tokenizer import Tokenizer

    tok = Tokenizer(_tokenizer(ctx))
    prompts = [tok.encode(TEXT[0][:20], bos=True, eos=False), tok.encode(TEXT[2][:9], bos=True, eos=False)]
    ctx.save("prompts", prompts)
    single_process_env()
    torch.distributed.init_process_group("gloo")
    initialize_model_parallel(1)
    seed_everything(0)
    torch.set_default_dtype(torch.float16)
    try:
        with cuda_calls_stay_on_cpu(ctx):
            model = Transformer(ModelArgs(max_seq_len=MAX_SEQ_LEN, max_batch_size=2, vocab_size=tok.n_words,
                                          **PARAMS))
        with torch.no_grad():
            for p in model.parameters():  # fairscale leaves them uninitialised (init_method=lambda x: x)
                p.copy_(torch.randn(p.shape, dtype=torch.float32) * (0.3 if p.ndim == 1 else 0.05))
        ckpt = ctx.work / "ckpt"
        ckpt.mkdir()
        torch.save(model.state_dict(), ckpt / "consolidated.00.pth")
        (ckpt / "params.json").write_text(json.dumps(PARAMS))
        return _greedy(model, prompts, tok.pad_id, tok.eos_id)
    finally:
        torch.set_default_dtype(torch.float32)


def patched(ctx: Context) -> Outputs:
    from llama import Llama

    single_process_env()  # what torchrun sets (the README's launch)
    generator = Llama.build(ckpt_dir=str(ctx.work / "ckpt"), tokenizer_path=str(ctx.work / "tokenizer.model"),
                            max_seq_len=MAX_SEQ_LEN, max_batch_size=2)
    tokens, logprobs = generator.generate(ctx.load("prompts"), max_gen_len=MAX_GEN, temperature=0.0, logprobs=True)
    return {"tokens": ragged(tokens), "logprobs": ragged(logprobs)}
