"""The constructs that made real repositories fail (benchmarks/corpus, docs/compatibility.md), as fixtures.

Each test imports the CUDA-written fixture under ``ascend_patch.patched(device=...)`` and compares what it
computes on the target (cpu and the simulated NPU) with plain PyTorch on the CPU.
"""

from __future__ import annotations

import sys

import pytest
import torch
import torch.nn.functional as F
from conftest import device_of

import ascend_patch

PACKAGE = "corpus_constructs"


@pytest.fixture
def fixture_module():
    """Import a fixture module fresh (its imports meet the patches), forget it afterwards."""

    def load(name: str):
        import importlib

        return importlib.import_module(f"{PACKAGE}.{name}")

    yield load
    for name in [n for n in sys.modules if n.startswith(PACKAGE)]:
        del sys.modules[name]
    torch._dynamo.reset()


def test_device_generators_per_seed(target, fixture_module):
    """EDM / VAR: torch.Generator(device="cuda") per seed, used by randn."""
    with ascend_patch.patched(device=target):
        latents = fixture_module("sampling").edm_latents([3, 7], (2, 4))
    assert latents.device.type == device_of(target)
    expected = torch.stack([torch.randn((2, 4), generator=torch.Generator().manual_seed(s)) for s in (3, 7)])
    torch.testing.assert_close(latents.cpu(), expected, rtol=0, atol=0)


def test_inference_mode_loop_with_views(target, fixture_module):
    """Diffusion trainers: unbind and view inside torch.inference_mode on device tensors."""
    torch.manual_seed(0)
    net = torch.nn.Conv2d(3, 6, 1)

    def model(x, t):
        return net(x).view(x.shape[0], 2, 3, *x.shape[2:]) + t.view(-1, 1, 1, 1, 1)

    x = torch.randn(2, 3, 4, 4)
    with ascend_patch.patched(device=target):
        sampling = fixture_module("sampling")
        expected = sampling.denoise(model, x)
        net.cuda()
        got = sampling.denoise(model, x.cuda())
    assert got.device.type == device_of(target) and got.is_inference()
    torch.testing.assert_close(got.cpu(), expected, rtol=1e-5, atol=1e-6)


def test_compiled_exponential_race_sampling(target, fixture_module):
    """gpt-fast: exponential_ noise inside a compiled function on the device (greedy: top_k=1)."""
    logits = torch.tensor([[0.1, 2.0, -1.0, 0.5], [3.0, 0.0, 0.2, 0.1]])
    with ascend_patch.patched(device=target):
        token = fixture_module("sampling").sample_greedy(logits.cuda())
    assert token.device.type == device_of(target)
    assert token.cpu().flatten().tolist() == [1, 0]


@pytest.mark.parametrize("dtype", ["bfloat16", "float32"])
def test_compiled_training_under_cuda_autocast(target, dtype, fixture_module):
    """nanoGPT: torch.compile(model), torch.amp.autocast('cuda', bf16) around F.cross_entropy, AdamW."""
    torch.manual_seed(0)
    batches = [(torch.randint(0, 32, (4, 6)), torch.randint(0, 32, (4, 6))) for _ in range(2)]
    training = fixture_module("training")
    reference_model = training.TinyLM()
    state = {k: v.clone() for k, v in reference_model.state_dict().items()}
    expected = training.train_steps(reference_model, batches, device="cpu", compile=False)
    model = training.TinyLM()
    model.load_state_dict(state)
    with ascend_patch.patched(device=target):
        losses = training.train_steps(model, batches, dtype=dtype)
    assert next(model.parameters()).device.type == device_of(target)
    tolerance = 2e-2 if dtype == "bfloat16" else 1e-5  # bf16 autocast vs the CPU fp32 run
    torch.testing.assert_close(torch.tensor(losses), torch.tensor(expected), rtol=tolerance, atol=tolerance)


def test_cuda_default_tensor_type_and_legacy_constructor(target, fixture_module):
    """Llama 2 + fairscale: set_default_tensor_type(torch.cuda.HalfTensor), then torch.Tensor(rows, cols)."""
    with ascend_patch.patched(device=target):
        layer = fixture_module("training").build_llama_layer()
        assert layer.weight.device.type == device_of(target) and layer.weight.dtype == torch.float16
        x = torch.randn(2, 8, device="cuda", dtype=torch.float16)
        out = layer(x)
    torch.testing.assert_close(out.cpu().float(), F.linear(x.cpu().float(), layer.weight.detach().cpu().float()),
                               rtol=1e-2, atol=1e-2)  # fmt: skip
    assert torch.get_default_dtype() == torch.float32 and torch.zeros(1).device.type == "cpu"
    assert "__new__" not in vars(torch.Tensor)


def _sdpa(q, k, v, causal):
    """[B, S, H, D] reference attention."""
    out = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), is_causal=causal)
    return out.transpose(1, 2)


def test_attention_call_sites(target, fixture_module):
    """is_cuda guards, bert_padding + varlen, block-diagonal xFormers masks, xFormers op names, try-imports."""
    torch.manual_seed(0)
    q, k, v = (torch.randn(2, 5, 2, 8) for _ in range(3))
    x, mask = torch.randn(2, 5, 8), torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]], dtype=torch.bool)
    weights = [torch.randn(8, 8) * 0.3 for _ in range(3)]
    with ascend_patch.patched(device=target, cuda_is_available="true"):
        attention = fixture_module("attention")
        assert attention.RMSNorm is None and not attention.HAS_TRITON  # fallbacks taken, not crashed
        assert torch.ops.xformers_flash.flash_fwd.default in attention.NO_RECOMPUTE
        dense = attention.flash_attention(q.cuda(), k.cuda(), v.cuda())
        packed = attention.varlen_attention(x.cuda(), mask.cuda(), *(w.cuda() for w in weights), heads=2)
        blocks = attention.block_diagonal_attention(*(t.reshape(1, 10, 2, 8).cuda() for t in (q, k, v)), [4, 6])
    torch.testing.assert_close(dense.cpu(), _sdpa(q, k, v, True), rtol=1e-5, atol=1e-5)
    for b in range(2):  # each sequence attends to its own valid tokens only
        n = int(mask[b].sum())
        qkv = [(x[b : b + 1, :n] @ w).view(1, n, 2, 4) for w in weights]
        torch.testing.assert_close(packed[b, :n].cpu(), _sdpa(*qkv, False).reshape(n, 8), rtol=1e-5, atol=1e-5)
    assert packed[0, 3:].abs().max() == 0  # padding stays zero
    flat = [t.reshape(1, 10, 2, 8) for t in (q, k, v)]
    expected = torch.cat([_sdpa(*(t[:, s:e] for t in flat), True) for s, e in ((0, 4), (4, 10))], dim=1)
    torch.testing.assert_close(blocks.cpu(), expected, rtol=1e-5, atol=1e-5)


def test_fp32_region_keeps_its_dtype_assertion(target, fixture_module):
    """VAR: an autocast(dtype=float32) region inside bf16 autocast asserts fp32 scores (the default policy)."""
    q, k = torch.randn(2, 4, 8), torch.randn(2, 4, 8)
    with ascend_patch.patched(device=target, cuda_is_available="true"):
        attention = fixture_module("attention")
        with torch.autocast("cuda", dtype=torch.bfloat16):
            probs = attention.fp32_attention_scores(q.cuda(), k.cuda())
    assert probs.dtype == torch.float32
    torch.testing.assert_close(probs.cpu(), (q @ k.transpose(-1, -2)).softmax(-1), rtol=1e-5, atol=1e-5)
    if target == "sim":  # the npu rejects fp32 autocast: the bf16 downgrade breaks the assertion
        with ascend_patch.patched(device=target, cuda_is_available="true", fp32_autocast="bf16"):
            attention = fixture_module("attention")
            with torch.autocast("cuda", dtype=torch.bfloat16), pytest.raises(AssertionError, match="bfloat16"):
                attention.fp32_attention_scores(q.cuda(), k.cuda())
