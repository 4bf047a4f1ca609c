"""pytorch-labs/gpt-fast: the body of ``generate.py:main`` (lines 304-390) on a tiny Llama-style checkpoint.

Patched: ``device=default_device`` (``'cuda' if torch.cuda.is_available() else 'cpu'`` at import),
``_load_model`` (meta-device build, ``load_state_dict(assign=True)``, ``.to(device, bfloat16)``),
``encode_tokens(..., device=device)``, ``device_sync`` (``torch.cuda.synchronize``), ``torch.compile(
decode_one_token, mode="reduce-overhead", fullgraph=True)`` as ``main`` does with its default ``compile=True``,
then ``generate``: ``with torch.device(device)`` around ``setup_caches``, decoding under
``torch.backends.cuda.sdp_kernel(enable_math=True)`` and ``torch.nn.attention`` SDPA with a KV cache, sampling
with ``exponential_`` noise on the device after ``torch.manual_seed(1234)``. ``top_k=1``: greedy, so that
last-bit differences between two compiled runs cannot flip a sampled token.
Reference: the same on the CPU, ``torch.compile`` included (inductor's kernels round differently from eager
ones, enough to flip a token: the reference must compile too). Weights in float32 where ``main()`` uses
bfloat16: with random weights the top two logits are close, and a 1-ulp bf16 difference between two
devices' attention kernels (the CPU's flash kernel vs the math path other devices take) flips the greedy
token on any pair of devices; in float32 the tokens must match exactly.
"""

from __future__ import annotations

import torch

from .common import Context, Outputs, seed_everything

TOL = 1e-4  # tokens must match exactly
NAME = "corpus-tiny"  # the checkpoint's parent folder names the config (ModelArgs.from_name)
CONFIG = dict(n_layer=2, n_head=4, dim=64, vocab_size=97, block_size=64, intermediate_size=128)
PROMPT = [1, 17, 5, 42, 9, 3]


class _Tokenizer:
    """encode_tokens needs only encode() and bos_id()."""

    def encode(self, text: list[int]) -> list[int]:
        return list(text)

    def bos_id(self) -> int:
        return 1


def _setup(ctx: Context) -> object:
    import generate as gen
    from model import transformer_configs

    transformer_configs[NAME] = CONFIG
    return gen


def _run(ctx: Context, compile: bool) -> Outputs:
    gen = _setup(ctx)
    device = gen.default_device  # main(device=default_device)
    model = gen._load_model(ctx.work / NAME / "model.pth", device, torch.float32, use_tp=False)
    gen.device_sync(device=device)
    encoded = gen.encode_tokens(_Tokenizer(), PROMPT[1:], bos=True, device=device)
    torch.manual_seed(1234)
    if compile:
        gen.decode_one_token = torch.compile(gen.decode_one_token, mode="reduce-overhead", fullgraph=True)
    seq, _ = gen.generate(model, encoded, max_new_tokens=6, batch_size=1, interactive=False, draft_model=None,
                          temperature=0.8, top_k=1)
    gen.device_sync(device=device)
    return {"tokens": seq.float()}


def reference(ctx: Context) -> Outputs:
    gen = _setup(ctx)
    from model import Transformer

    seed_everything(0)
    model = Transformer.from_name(NAME)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape) * (0.3 if p.ndim == 1 else 0.05))
    (ctx.work / NAME).mkdir()
    torch.save(model.state_dict(), ctx.work / NAME / "model.pth")
    assert gen.default_device == "cpu"
    return _run(ctx, compile=True)


def patched(ctx: Context) -> Outputs:
    return _run(ctx, compile=True)
