"""device: every CUDA spelling of a device lands on the target, values unchanged, revert exact."""

from __future__ import annotations

import io
import os
import struct
import tempfile
import warnings

import pytest
import torch
from conftest import device_of

import ascend_patch
from ascend_patch.patches.device.factories import FACTORIES, TENSOR_NEW
from ascend_patch.patches.device.mapping import translate

# Where "sim" has one device, npu:0; the cpu target folds every index into "cpu".
SPELLINGS = ["cuda", "cuda:0", "cuda:1", torch.device("cuda"), torch.device("cuda", 1), 0, 1]


def _spellings(target: str) -> list:
    if target == "sim":  # the simulated NPU has one device: npu:1 does not exist there
        return [s for s in SPELLINGS if s not in ("cuda:1", 1) and s != torch.device("cuda", 1)]
    return SPELLINGS


@pytest.mark.parametrize(
    "device, target, expected",
    [
        ("cuda", "npu", "npu"),
        ("cuda:3", "npu", "npu:3"),
        (" cuda:2", "npu", "npu:2"),
        ("cuda", "cpu", "cpu"),
        ("cuda:1", "cpu", "cpu"),
        (torch.device("cuda"), "npu", torch.device),  # kinds are kept: a device stays a device
        (torch.device("cuda", 2), "npu", torch.device),
        (torch.device("cuda", 2), "cpu", torch.device),
        (1, "npu", torch.device),  # an int alone means a CUDA ordinal: it becomes a device
        (0, "cpu", torch.device),
        # not CUDA: None means "leave it alone"
        ("cpu", "npu", None),
        ("npu:0", "npu", None),
        ("meta", "cpu", None),
        ("cuda:x", "npu", None),  # invalid: torch raises its own error
        (torch.device("cpu"), "npu", None),
        (True, "npu", None),  # bool is not a device ordinal
        (torch.float16, "npu", None),
    ],
)
def test_translate(device, target, expected):
    if target == "npu":
        from ascend_patch import sim

        sim.install()  # registers the "npu" device type, as torch_npu does
    got = translate(device, target)
    if expected is torch.device:
        index = getattr(device, "index", device if isinstance(device, int) else None)
        want = torch.device(target) if target == "cpu" or index is None else torch.device(target, index)
        assert type(got) is torch.device and got == want
    else:
        assert got == expected


def test_without_the_patch_cuda_requests_fail():
    with pytest.raises((AssertionError, RuntimeError)):
        torch.zeros(2).cuda()
    with pytest.raises((AssertionError, RuntimeError)):
        torch.zeros(2, device="cuda")


def test_tensor_to_every_spelling(target):
    device = device_of(target)
    t = torch.arange(6.0).reshape(2, 3)
    with ascend_patch.patched("device", device=target):
        for spelling in _spellings(target):
            for moved in (t.to(spelling), t.to(device=spelling), t.to(spelling, torch.float64)):
                assert moved.device.type == device, spelling
                torch.testing.assert_close(moved.cpu().double(), t.double())
        assert t.cuda().device.type == device
        assert t.cuda(0).device.type == device
        assert t.cuda("cuda:0", non_blocking=True).device.type == device


def test_not_cuda_arguments_pass_through_unchanged():
    t = torch.arange(4.0)
    other = torch.zeros(2, dtype=torch.float64)
    with ascend_patch.patched("device", device="cpu"):
        assert t.to("cpu") is t
        assert t.to(torch.float64).dtype == torch.float64
        assert t.to(other).dtype == torch.float64
        assert t.to("cpu", non_blocking=True, copy=True) is not t
        assert t.to(device="meta").device.type == "meta"
        assert torch.zeros(2, device="meta").device.type == "meta"
        assert torch.zeros(2, 3).shape == (2, 3)
        with pytest.raises(RuntimeError):
            t.to("cuda:x")  # not a device: torch's own error, not ours


def _quietly(fn, *args, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # torch.range is deprecated
        return fn(*args, **kwargs)


def _floats_file() -> str:
    handle, path = tempfile.mkstemp(suffix=".bin")
    os.write(handle, struct.pack("4f", 1.0, 2.0, 3.0, 4.0))
    os.close(handle)
    return path


_FLOATS_FILE = _floats_file()


def _factory_calls() -> dict[str, object]:
    """name -> function(device) calling the torch factory of that name (covers all of FACTORIES)."""
    base = torch.arange(6.0).reshape(2, 3)
    calls = {
        "zeros": lambda d: torch.zeros(2, 3, device=d),
        "ones": lambda d: torch.ones(2, 3, device=d),
        "empty": lambda d: torch.empty(2, 3, device=d).fill_(1.5),
        "full": lambda d: torch.full((2, 3), 7.0, device=d),
        "rand": lambda d: torch.rand(2, 3, device=d),
        "randn": lambda d: torch.randn(2, 3, device=d),
        "randint": lambda d: torch.randint(0, 10, (2, 3), device=d),
        "randperm": lambda d: torch.randperm(7, device=d),
        "arange": lambda d: torch.arange(0, 5, 0.5, device=d),
        "range": lambda d: _quietly(torch.range, 0, 4, device=d),
        "linspace": lambda d: torch.linspace(0, 1, 5, device=d),
        "logspace": lambda d: torch.logspace(0, 2, 3, device=d),
        "eye": lambda d: torch.eye(3, device=d),
        "tensor": lambda d: torch.tensor([[1.0, 2.0], [3.0, 4.0]], device=d),
        "as_tensor": lambda d: torch.as_tensor([1.0, 2.0], device=d),
        "asarray": lambda d: torch.asarray([1.0, 2.0], device=d),
        "empty_strided": lambda d: torch.empty_strided((2, 3), (3, 1), device=d).fill_(2.0),
        "empty_permuted": lambda d: torch.empty_permuted((2, 3), (1, 0), device=d).fill_(3.0),
        "scalar_tensor": lambda d: torch.scalar_tensor(3.5, device=d),
        "zeros_like": lambda d: torch.zeros_like(base, device=d),
        "ones_like": lambda d: torch.ones_like(base, device=d),
        "empty_like": lambda d: torch.empty_like(base, device=d).fill_(4.0),
        "full_like": lambda d: torch.full_like(base, 5.0, device=d),
        "rand_like": lambda d: torch.rand_like(base, device=d),
        "randn_like": lambda d: torch.randn_like(base, device=d),
        "randint_like": lambda d: torch.randint_like(base, 10, device=d),
        "tril_indices": lambda d: torch.tril_indices(3, 3, device=d),
        "triu_indices": lambda d: torch.triu_indices(3, 3, device=d),
        "sparse_coo_tensor": lambda d: torch.sparse_coo_tensor([[0, 1]], [1.0, 2.0], (3,), device=d).to_dense(),
        "sparse_csr_tensor": lambda d: torch.sparse_csr_tensor(
            [0, 1, 2], [0, 1], [1.0, 2.0], (2, 2), device=d
        ).to_dense(),
        "normal": lambda d: torch.normal(0.0, 1.0, (2, 3), device=d),
        "bartlett_window": lambda d: torch.bartlett_window(5, device=d),
        "blackman_window": lambda d: torch.blackman_window(5, device=d),
        "hamming_window": lambda d: torch.hamming_window(5, device=d),
        "hann_window": lambda d: torch.hann_window(5, device=d),
        "kaiser_window": lambda d: torch.kaiser_window(5, device=d),
        "from_file": lambda d: torch.from_file(_FLOATS_FILE, size=4, dtype=torch.float32, device=d),
        "sparse_compressed_tensor": lambda d: torch.sparse_compressed_tensor(
            [0, 1, 2], [0, 1], [1.0, 2.0], (2, 2), layout=torch.sparse_csr, device=d
        ).to_dense(),
        # Quantized storage is uninitialised: compare the (zeroed) integer representation.
        "empty_quantized": lambda d: torch.empty_quantized(
            [2], torch.quantize_per_tensor(torch.ones(2), 1.0, 0, torch.quint8), device=d
        ).int_repr().zero_(),
        "_empty_affine_quantized": lambda d: torch._empty_affine_quantized(
            [2], scale=1.0, zero_point=0, dtype=torch.quint8, device=d
        ).int_repr().zero_(),
        "_empty_per_channel_affine_quantized": lambda d: torch._empty_per_channel_affine_quantized(
            [2], scales=torch.ones(2, dtype=torch.double), zero_points=torch.zeros(2, dtype=torch.long), axis=0,
            dtype=torch.quint8, device=d,
        ).int_repr().zero_(),
    }
    assert set(calls) == set(FACTORIES), "every wrapped factory has a test call"
    return calls


FACTORY_CALLS = _factory_calls()
RANDOM = {"rand", "randn", "randint", "randperm", "rand_like", "randn_like", "randint_like", "normal"}


@pytest.mark.filterwarnings("ignore:Sparse:UserWarning")
@pytest.mark.parametrize("name", sorted(FACTORY_CALLS))
def test_factories_land_on_the_target_with_the_reference_values(name):
    call = FACTORY_CALLS[name]
    torch.manual_seed(0)
    expected = call("cpu")
    with ascend_patch.patched("device", device="cpu"):
        for spelling in ("cuda", "cuda:1", torch.device("cuda", 0), 0):
            torch.manual_seed(0)
            got = call(spelling)
            assert got.device.type == "cpu"
            torch.testing.assert_close(got, expected, rtol=0, atol=0)


@pytest.mark.filterwarnings("ignore:Sparse:UserWarning")
@pytest.mark.parametrize("name", sorted(FACTORY_CALLS))
def test_factories_on_the_simulated_npu(name):
    from ascend_patch import sim

    sim.install()
    call = FACTORY_CALLS[name]
    try:
        call("npu")
    except Exception as exc:  # noqa: BLE001 - any failure: a factory the simulator cannot run (sparse layouts)
        # The cuda spelling must behave exactly like the npu one, failure included.
        with ascend_patch.patched("device", device="sim"), pytest.raises(type(exc)):
            call("cuda")
        return
    with ascend_patch.patched("device", device="sim"):
        torch.manual_seed(0)
        got = call("cuda")
        torch.manual_seed(0)
        again = call("cuda:0")
        expected = call("cpu")
    assert got.device.type == "npu"
    assert got.shape == expected.shape and got.dtype == expected.dtype
    # The npu generator is its own stream: random values repeat under one seed but differ from cpu.
    torch.testing.assert_close(got.cpu(), again.cpu(), rtol=0, atol=0)
    if name not in RANDOM:
        torch.testing.assert_close(got.cpu(), expected, rtol=0, atol=0)


@pytest.mark.parametrize("name", TENSOR_NEW)
def test_tensor_new_methods(name, target):
    base = torch.arange(4.0)
    args = {"new_full": ((2,), 3.0), "new_tensor": ([1.0, 2.0],), "new_empty_strided": ((2,), (1,))}.get(name, ((2,),))
    expected = getattr(base, name)(*args)
    with ascend_patch.patched("device", device=target):
        got = getattr(base, name)(*args, device="cuda")
    assert got.device.type == device_of(target)
    if "empty" not in name:
        torch.testing.assert_close(got.cpu(), expected, rtol=0, atol=0)


class SmallNet(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc1 = torch.nn.Linear(8, 16)
        self.norm = torch.nn.BatchNorm1d(16)  # has buffers: running stats move too
        self.fc2 = torch.nn.Linear(16, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(torch.relu(self.norm(self.fc1(x))))


@pytest.mark.parametrize("how", ["cuda()", "cuda(0)", "to('cuda')", "to(0)", "to(device)", "to(device, dtype)"])
def test_module_moves_and_computes_the_reference(how, target):
    device = device_of(target)
    torch.manual_seed(0)
    model = SmallNet().eval()
    x = torch.randn(5, 8)
    with torch.no_grad():  # no graph holding the weights: Module._apply may swap them (sim tensors)
        expected = model(x)
    with ascend_patch.patched("device", device=target):
        moved = {
            "cuda()": lambda: model.cuda(),
            "cuda(0)": lambda: model.cuda(0),
            "to('cuda')": lambda: model.to("cuda"),
            "to(0)": lambda: model.to(0),
            "to(device)": lambda: model.to(device=torch.device("cuda", 0)),
            "to(device, dtype)": lambda: model.to(torch.device("cuda"), torch.float64),
        }[how]()
        assert moved is model
        assert {p.device.type for p in model.parameters()} == {device}
        assert model.norm.running_mean.device.type == device
        got = model(x.cuda().to(next(model.parameters()).dtype))
    torch.testing.assert_close(got.cpu().float(), expected, rtol=1e-5, atol=1e-6)


def test_lazy_modules_can_be_moved_with_cuda():
    # UninitializedParameter allows Tensor methods by identity; ours must be on its list.
    torch.manual_seed(0)
    with ascend_patch.patched("device", device="cpu"):
        lazy = torch.nn.LazyLinear(3).cuda()
        out = lazy(torch.randn(2, 4, device="cuda"))
    assert out.shape == (2, 3)


def _sim_gap(request, target: str, reason: str) -> None:
    """Strict xfail on the simulated NPU only: turns into a failure once the simulator gains it."""
    if target == "sim":
        request.applymarker(pytest.mark.xfail(strict=True, raises=NotImplementedError, reason=reason))


def test_generator(target):
    device = device_of(target)
    before = torch.Generator  # the simulator's stand-in once it is installed, else the C class
    with ascend_patch.patched("device", device=target):
        gen = torch.Generator(device="cuda")
        assert isinstance(gen, torch.Generator) and issubclass(type(gen), torch.Generator)
        assert isinstance(torch.default_generator, torch.Generator)
        assert gen.device.type == device
        gen.manual_seed(123)
        got = torch.randn(4, generator=gen, device="cuda")
        assert torch.Generator("cuda:0").device.type == device
        assert torch.Generator().device.type == "cpu"
    expected = torch.randn(4, generator=torch.Generator().manual_seed(123))
    torch.testing.assert_close(got.cpu(), expected, rtol=0, atol=0)
    assert torch.Generator is before


def test_pin_memory(target, request):
    _sim_gap(request, target, "ascend_patch.sim has no pinned-memory allocator (getPinnedMemoryAllocator)")
    t = torch.arange(3.0)
    with ascend_patch.patched("device", device=target):
        pinned = t.pin_memory()
        assert pinned.device.type == "cpu"
        torch.testing.assert_close(pinned, t)
        assert t.pin_memory("cuda").device.type == "cpu"
        staged = torch.empty(3, pin_memory=True)
        assert staged.shape == (3,)
        assert torch.zeros_like(t, pin_memory=True).device.type == "cpu"
        assert t.new_zeros(3, pin_memory=True).device.type == "cpu"
        assert torch.tensor([1.0], pin_memory=True).device.type == "cpu"
        assert pinned.cuda(non_blocking=True).device.type == device_of(target)


def test_device_context_and_default_device(target):
    device = device_of(target)
    try:
        with ascend_patch.patched("device", device=target):
            with torch.device("cuda"):
                assert torch.zeros(2).device.type == device
                assert torch.nn.Linear(2, 2).weight.device.type == device
            assert torch.zeros(2).device.type == "cpu"
            torch.set_default_device("cuda:0")
            assert torch.ones(2).device.type == device
            torch.set_default_device(None)
    finally:
        torch.set_default_device(None)
    # Outside the patch the context manager still sees the original constructors.
    with torch.device("meta"):
        assert torch.zeros(2).device.type == "meta"


def _cuda_checkpoint(monkeypatch, value: dict[str, torch.Tensor]) -> bytes:
    """What torch.save writes on a GPU machine: the same pickle with storages tagged "cuda:0"."""
    from torch import serialization

    buffer = io.BytesIO()
    with monkeypatch.context() as m:
        m.setattr(serialization, "location_tag", lambda storage: "cuda:0")
        torch.save(value, buffer)
    return buffer.getvalue()


def test_load_a_cuda_checkpoint(monkeypatch, target):
    device = device_of(target)
    state = {"w": torch.arange(6.0).reshape(2, 3), "b": torch.tensor([1, 2])}
    blob = _cuda_checkpoint(monkeypatch, state)
    with pytest.raises(RuntimeError, match="CUDA"):
        torch.load(io.BytesIO(blob))
    with ascend_patch.patched("device", device=target):
        loaded = [
            torch.load(io.BytesIO(blob)),  # no map_location: CUDA storages go to the target
            torch.load(io.BytesIO(blob), map_location="cuda"),
            torch.load(io.BytesIO(blob), map_location=torch.device("cuda", 0)),
            torch.load(io.BytesIO(blob), map_location={"cuda:0": "cuda:0"}),
            torch.load(io.BytesIO(blob), "cuda:0", weights_only=True),
            torch.load(io.BytesIO(blob), map_location="cpu"),
        ]
    for i, got in enumerate(loaded):
        want = "cpu" if i == len(loaded) - 1 else device
        for key, value in state.items():
            assert got[key].device.type == want, (i, key)
            torch.testing.assert_close(got[key].cpu(), value, rtol=0, atol=0)


@pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated:DeprecationWarning")
def test_torchscript_still_compiles_wrapped_factories():
    with ascend_patch.patched("device", device="cpu"):

        @torch.jit.script
        def ramp(x: torch.Tensor) -> torch.Tensor:
            return torch.arange(x.shape[0], device=x.device) + torch.zeros_like(x) + x

        got = ramp(torch.ones(4))
    torch.testing.assert_close(got, torch.arange(4.0) + 1)
    torch.testing.assert_close(ramp(torch.ones(3)), torch.arange(3.0) + 1)  # still runs after revert


def test_torch_compile_traces_through_the_wrappers():
    def step(x: torch.Tensor) -> torch.Tensor:
        return x.cuda() * 2 + torch.ones(3, device="cuda:0") + x.to("cuda").sum()

    with ascend_patch.patched("device", device="cpu"):
        got = torch.compile(step, backend="eager", fullgraph=True)(torch.arange(3.0))
    torch.testing.assert_close(got, torch.arange(3.0) * 2 + 1 + 3)


def test_revert_restores_originals_by_identity():
    originals = {
        "zeros": torch.zeros, "tensor": torch.tensor, "load": torch.load, "Generator": torch.Generator,
        "is_available": torch.cuda.is_available, "Event": torch.cuda.Event,
        "default_generators": torch.cuda.default_generators,
    }  # fmt: skip
    tensor_methods = {n: vars(torch.Tensor).get(n) for n in ("to", "cuda", "pin_memory", "new_zeros")}
    module_methods = {n: vars(torch.nn.Module)[n] for n in ("to", "cuda")}
    from torch.jit import _builtins
    from torch.nn.parameter import UninitializedTensorMixin

    allowed = UninitializedTensorMixin._allowed_methods
    table_size = len(_builtins._get_builtin_table())
    with ascend_patch.patched("device", device="cpu"):
        assert torch.zeros is not originals["zeros"]
        assert "to" in vars(torch.Tensor)
        assert len(_builtins._get_builtin_table()) > table_size
        kept = torch.zeros  # a reference taken while patched (a `from torch import zeros` copy)
    assert {k: getattr(torch, k, None) for k in ("zeros", "tensor", "load", "Generator")} == {
        k: originals[k] for k in ("zeros", "tensor", "load", "Generator")
    }
    for name in ("zeros", "tensor", "load", "Generator"):
        assert getattr(torch, name) is originals[name]
    assert torch.cuda.is_available is originals["is_available"]
    assert torch.cuda.Event is originals["Event"]
    assert torch.cuda.default_generators is originals["default_generators"]
    assert {n: vars(torch.Tensor).get(n) for n in tensor_methods} == tensor_methods
    for name, method in module_methods.items():
        assert vars(torch.nn.Module)[name] is method
    assert UninitializedTensorMixin._allowed_methods is allowed
    assert len(_builtins._get_builtin_table()) == table_size
    # A wrapper that survived revert passes straight through: "cuda" is CUDA again.
    assert kept(2).shape == (2,)
    with pytest.raises((AssertionError, RuntimeError)):
        kept(2, device="cuda")


def test_report_counts_mapped_calls_only():
    with ascend_patch.patched("device", device="cpu"):
        torch.zeros(2)
        torch.zeros(2, device="cpu")
        for _ in range(3):
            torch.zeros(2, device="cuda")
        torch.ones(1).cuda()
        stats = ascend_patch.report().stats["device"]
    assert stats["torch.zeros"] == 3
    assert stats["Tensor.cuda"] == 1


def test_fft_frequencies_and_module_to_empty(target):
    device = device_of(target)
    with ascend_patch.patched("device", device=target):
        freqs = torch.fft.fftfreq(4, device="cuda")
        rfreqs = torch.fft.rfftfreq(4, d=0.5, device="cuda:0")
        with torch.device("meta"):
            shell = torch.nn.Linear(3, 2)
        shell.to_empty(device="cuda")  # meta-initialised models are materialised with to_empty
    assert freqs.device.type == rfreqs.device.type == shell.weight.device.type == device
    torch.testing.assert_close(freqs.cpu(), torch.fft.fftfreq(4))
    torch.testing.assert_close(rfreqs.cpu(), torch.fft.rfftfreq(4, d=0.5))
