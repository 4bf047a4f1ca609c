"""Autocast on the simulated npu: region dtypes, the fp32 rejection of torch_npu <= 2.9, fp32 when allowed."""

from __future__ import annotations

import re
import warnings

import pytest
import torch
import torch.nn.functional as F

from ascend_patch import sim

FP32_REJECTED = "In npu autocast, but the target dtype is not supported. Disabling autocast."


@pytest.fixture
def data(sim_npu):
    torch.manual_seed(0)
    linear = torch.nn.Linear(8, 8).npu()
    x = torch.randn(2, 4, 8, device="npu")
    return linear, x


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_region_dtypes_follow_torch_npu_lists(data, dtype):
    linear, x = data
    q = k = v = x.unsqueeze(1)
    with torch.autocast("npu", dtype=dtype):
        assert torch.is_autocast_enabled("npu") and torch.get_autocast_dtype("npu") == dtype
        y = linear(x)
        lower = {
            "linear": y,
            "matmul": x @ x.transpose(-1, -2),
            "bmm": torch.bmm(x, x.transpose(1, 2)),
            "baddbmm": torch.baddbmm(torch.zeros(2, 4, 4, device="npu"), x, x.transpose(1, 2)),
            "addmm": torch.addmm(x[0], x[0], torch.eye(8, device="npu")),
            "conv2d": F.conv2d(x.unsqueeze(0), torch.randn(3, 2, 1, 1, device="npu")),
            "sdpa": F.scaled_dot_product_attention(q, k, v),
        }
        fp32 = {
            "softmax": y.softmax(-1),
            "log_softmax": F.log_softmax(y, -1),
            "layer_norm": F.layer_norm(y, (8,)),
            "group_norm": F.group_norm(y.transpose(1, 2), 2),
            "sum": y.sum(),
            "exp": y.exp(),
            "mse_loss": F.mse_loss(y, y.detach()),
            "norm": torch.ops.aten.norm.Scalar(y),  # fp32_append_dtype, p left at its default
            "norm dim": torch.ops.aten.norm.ScalarOpt_dim(y, 2, [1]),
            "cumsum": y.cumsum(0),
        }
        promoted = torch.addcmul(x, y, y)  # fp32 x with a lower-precision y: widest wins
        cpu_linear = F.linear(torch.randn(2, 8), torch.randn(3, 8))  # CPU ops are not npu autocast's
    for name, out in lower.items():
        assert out.dtype == dtype, name
    for name, out in fp32.items():
        assert out.dtype == torch.float32, name
    assert promoted.dtype == torch.float32 and cpu_linear.dtype == torch.float32
    assert not torch.is_autocast_enabled("npu")
    assert linear(x).dtype == torch.float32
    with torch.autocast("npu", dtype=dtype), pytest.raises(RuntimeError, match="unsafe to autocast"):
        F.binary_cross_entropy(torch.rand(3, device="npu"), torch.rand(3, device="npu"))


def test_default_dtype_is_float16_and_backward_runs(data):
    linear, x = data
    assert torch.get_autocast_dtype("npu") == torch.float16
    with torch.autocast("npu"):
        out = linear(x)
    assert out.dtype == torch.float16
    out.float().sum().backward()
    assert linear.weight.grad.dtype == torch.float32 and linear.weight.grad.abs().sum().item() > 0
    with torch.npu.amp.autocast(dtype=torch.bfloat16):
        assert linear(x).dtype == torch.bfloat16


def test_grad_scaler_steps_an_optimizer(data):
    linear, x = data
    before = linear.weight.detach().cpu().clone()
    optimizer = torch.optim.SGD(linear.parameters(), lr=0.1)
    scaler = torch.npu.amp.GradScaler(init_scale=1024.0)
    with torch.autocast("npu", dtype=torch.float16):
        loss = linear(x).float().pow(2).mean()
    scaler.scale(loss).backward()
    assert linear.weight.grad.abs().sum().item() > 0
    scaler.step(optimizer)
    scaler.update()
    assert scaler.get_scale() == 1024.0  # finite gradients: no backoff
    unscaled = linear.weight.grad.detach().cpu()  # step() unscaled the gradients in place
    torch.testing.assert_close(linear.weight.detach().cpu(), before - 0.1 * unscaled)
    assert unscaled.abs().max().item() < 10  # not the 1024x scaled values


def test_fp32_autocast_warns_and_disables_itself_like_torch_npu_2_9(data):
    linear, x = data
    assert torch.npu.get_amp_supported_dtype() == [torch.float16, torch.bfloat16]
    with pytest.warns(UserWarning, match=re.escape(FP32_REJECTED)):
        region = torch.autocast("npu", dtype=torch.float32)
    with region:
        assert not torch.is_autocast_enabled("npu")
        assert linear(x).dtype == torch.float32
        assert linear(x.half().float()).dtype == torch.float32


def test_fp32_support_is_configurable(data, restore_amp_dtypes):
    linear, x = data
    sim.set_amp_supported_dtypes([torch.float16, torch.bfloat16, torch.float32])
    assert torch.float32 in torch.npu.get_amp_supported_dtype()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no "Disabling autocast" now
        with torch.autocast("npu", dtype=torch.float32):
            assert torch.is_autocast_enabled("npu")
            assert linear(x.half()).dtype == torch.float32  # fp16 input cast up to the region's fp32
    sim.install(amp_supported_dtypes=[torch.bfloat16])  # a repeated install only reconfigures
    assert torch.npu.get_amp_supported_dtype() == [torch.bfloat16]
    with pytest.warns(UserWarning, match=re.escape(FP32_REJECTED)):
        torch.autocast("npu", dtype=torch.float16)
