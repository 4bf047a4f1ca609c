"""autocast: torch.cuda.amp / torch.autocast("cuda") regions act on the target device."""

from __future__ import annotations

import warnings

import pytest
import torch
import torch.nn as nn

import ascend_patch
from conftest import device_of


def low_precision_linear(device: str):
    torch.manual_seed(0)
    layer = nn.Linear(16, 8).to(device)
    x = torch.randn(4, 16).to(device)
    return layer, x


def reference(layer, x, device, dtype):
    with torch.autocast(device.split(":")[0], dtype=dtype):
        return layer(x)


@pytest.mark.parametrize(
    "make_region",
    [
        pytest.param(lambda: torch.cuda.amp.autocast(dtype=torch.bfloat16), id="cuda.amp-kw"),
        pytest.param(lambda: torch.cuda.amp.autocast(True, torch.bfloat16, True), id="cuda.amp-positional"),
        pytest.param(lambda: torch.autocast("cuda", dtype=torch.bfloat16), id="torch.autocast"),
        pytest.param(lambda: torch.amp.autocast(device_type="cuda", dtype=torch.bfloat16), id="torch.amp-kw"),
        pytest.param(lambda: torch.autocast("cuda:0", dtype=torch.bfloat16), id="cuda:0"),
    ],
)
def test_cuda_regions_run_target_autocast_with_the_same_numbers(target, make_region):
    device = device_of(target)
    layer, x = low_precision_linear(device)
    expected = reference(layer, x, device, torch.bfloat16)
    with ascend_patch.patched("autocast", device=target):
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # no FutureWarning, no "CUDA is not available"
            with make_region():
                assert torch.is_autocast_enabled(device)
                out = layer(x)
    assert out.dtype == torch.bfloat16 and out.device.type == device
    torch.testing.assert_close(out, expected, rtol=0, atol=0)
    assert not torch.is_autocast_enabled(device)


def test_without_the_patch_cuda_autocast_is_silently_off(target):
    device = device_of(target)
    layer, x = low_precision_linear(device)
    with pytest.warns(UserWarning, match="CUDA is not available"):
        with torch.autocast("cuda", dtype=torch.bfloat16):
            out = layer(x)
    assert out.dtype == torch.float32  # the bug the patch fixes: the region ran in fp32


def test_decorator_enabled_and_cache_arguments(target):
    device = device_of(target)
    layer, x = low_precision_linear(device)
    with ascend_patch.patched("autocast", device=target):
        with warnings.catch_warnings():
            warnings.simplefilter("error")

            @torch.cuda.amp.autocast(dtype=torch.bfloat16, cache_enabled=False)
            def decorated(inp):
                return layer(inp)

            assert decorated(x).dtype == torch.bfloat16
            with torch.cuda.amp.autocast(enabled=False, dtype=torch.bfloat16):
                assert layer(x).dtype == torch.float32
            with torch.cuda.amp.autocast(dtype=torch.float16):
                assert layer(x).dtype == torch.float16


def test_copy_taken_before_apply_is_covered(target):
    from torch.cuda.amp import autocast as copied  # what upstream modules do at import

    device = device_of(target)
    layer, x = low_precision_linear(device)
    with ascend_patch.patched("autocast", device=target):
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            with copied(dtype=torch.bfloat16):
                assert layer(x).dtype == torch.bfloat16


def test_grad_scaler_trains_like_a_plain_step(target):
    device = device_of(target)
    torch.manual_seed(0)
    model = nn.Linear(8, 1).to(device)
    reference_model = nn.Linear(8, 1).to(device)
    reference_model.load_state_dict(model.state_dict())
    x, y = torch.randn(16, 8).to(device), torch.randn(16, 1).to(device)

    with ascend_patch.patched("autocast", device=target):
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            scaler = torch.cuda.amp.GradScaler(init_scale=2.0**8)
            scaler_amp = torch.amp.GradScaler("cuda")
        assert scaler._device == device and scaler_amp._device == device
        optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
        loss = nn.functional.mse_loss(model(x), y)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()

    ref_opt = torch.optim.SGD(reference_model.parameters(), lr=0.1)
    nn.functional.mse_loss(reference_model(x), y).backward()
    ref_opt.step()
    torch.testing.assert_close(model.weight, reference_model.weight, rtol=1e-6, atol=1e-6)
    assert scaler.get_scale() == 2.0**8  # no inf/nan: the scale was kept


def test_custom_fwd_casts_inputs_on_the_target(target):
    device = device_of(target)

    with ascend_patch.patched("autocast", device=target):
        with warnings.catch_warnings():
            warnings.simplefilter("error")

            class Square(torch.autograd.Function):
                @staticmethod
                @torch.cuda.amp.custom_fwd(cast_inputs=torch.float32)
                def forward(ctx, x):
                    ctx.save_for_backward(x)
                    return x * x

                @staticmethod
                @torch.cuda.amp.custom_bwd
                def backward(ctx, grad):
                    (x,) = ctx.saved_tensors
                    return 2 * x * grad

        x = torch.randn(5, dtype=torch.bfloat16).to(device).requires_grad_()
        with torch.autocast(device, dtype=torch.bfloat16):
            out = Square.apply(x)
        assert out.dtype == torch.float32  # cast_inputs acted: autocast on the target was seen
        out.sum().backward()
    torch.testing.assert_close(x.grad.float(), 2 * x.detach().float(), rtol=1e-2, atol=1e-2)


def test_revert_restores_the_raw_class_attributes():
    amp_cls = torch.cuda.amp.autocast_mode.autocast
    raw = {name: amp_cls.__dict__[name] for name in ("__new__", "__init__")}
    base_init = torch.amp.autocast_mode.autocast.__dict__["__init__"]
    custom_fwd = torch.cuda.amp.custom_fwd
    with ascend_patch.patched("autocast", device="cpu"):
        assert amp_cls.__dict__["__new__"] is not raw["__new__"]
        assert torch.cuda.amp.custom_fwd is not custom_fwd
    for name, obj in raw.items():
        assert amp_cls.__dict__[name] is obj
    assert isinstance(amp_cls.__dict__["__new__"], staticmethod)
    assert torch.amp.autocast_mode.autocast.__dict__["__init__"] is base_init
    assert torch.cuda.amp.custom_fwd is custom_fwd
