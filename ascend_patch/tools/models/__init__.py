"""How each recipe's model is built for ``verify``, ``bench`` and the examples: model, inputs, named outputs.

One module per model (``SPEC = ModelSpec(...)``), imported only when used, as the recipes are.
Without ``--model-path`` the real full-size architecture is built from the checkpoint's own
config (written out in the model's module, so nothing is downloaded) with random weights, seeded,
and the report says so. With ``--model-path`` the model is loaded by the upstream
``from_pretrained`` from a local directory, the same code a user runs. ``tiny=True`` builds a
few-layer config of the same architecture for tests and quick checks.

Models whose code is not on PyPI (MingTok, VTP) name their :class:`Upstream`: the package to
import and where to clone it. ``--repo PATH`` puts a clone on ``sys.path``.

Images are preprocessed the way each checkpoint's image processor does (resize the short side,
centre crop, rescale, normalise or flip to BGR) with PIL and torch only, so a run needs neither
torchvision nor a preprocessor_config.json.
"""

from __future__ import annotations

import difflib
import importlib
import importlib.util
import logging
import os
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ..errors import InputError, one_line

logger = logging.getLogger("ascend_patch")

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

DTYPES: dict[str, torch.dtype] = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}

# name -> module defining SPEC; imported on first use.
MODEL_MODULES: dict[str, str] = {
    "aimv2": "ascend_patch.tools.models.aimv2",
    "dinov2": "ascend_patch.tools.models.dinov2",
    "mingtok": "ascend_patch.tools.models.mingtok",
    "mobilevit": "ascend_patch.tools.models.mobilevit",
    "vtp": "ascend_patch.tools.models.vtp",
}


@dataclass
class LoadedModel:
    model: torch.nn.Module
    source: str  # what was built or loaded, for the report ("random-init facebook/dinov2-large ...")
    image_size: int
    random_init: bool


@dataclass(frozen=True)
class Upstream:
    """Model code that is not pip-installable: the package to import and the repository holding it."""

    package: str  # top-level import name, e.g. "mingtok"
    repository: str  # clone URL; the package sits at the root of the clone

    def ensure_importable(self, repo: str | os.PathLike[str] | None = None) -> None:
        """Put ``repo`` (a clone) on ``sys.path`` if given; fail with the fix if the package is not importable."""
        if repo is not None:
            root = Path(repo).resolve()
            if not (root / self.package).is_dir():
                raise InputError(f"--repo {str(repo)!r} has no {self.package}/ folder: pass the root of a clone of "
                                 f"{self.repository}")
            if str(root) not in sys.path:
                sys.path.insert(0, str(root))
        try:
            found = importlib.util.find_spec(self.package) is not None
        except (ImportError, ValueError):
            found = False
        if not found:
            raise InputError(f"{self.package!r} is not importable: it is not on PyPI. git clone {self.repository} "
                             f"and pass --repo PATH (or put the clone on PYTHONPATH)")


def import_object(path: str) -> Any:
    """``"package.module:Name"`` -> the object."""
    module, _, name = path.partition(":")
    return getattr(importlib.import_module(module), name)


@dataclass(frozen=True)
class ModelSpec:
    """One recipe's model: how to build it, what an input looks like, which outputs to compare."""

    recipe: str
    checkpoint: str  # the checkpoint whose config the full-size build reproduces
    full_config: dict[str, Any]
    tiny_config: dict[str, Any]
    model_class: str  # "module:Name", e.g. "transformers:Dinov2Model"
    config_class: str
    crop_size: int  # input resolution the checkpoint's processor produces
    resize_ratio: float  # short side is resized to crop_size * ratio before the centre crop
    resample: str  # PIL resampling filter name
    normalize: tuple[tuple[float, ...], tuple[float, ...]] | None
    bgr: bool  # flip RGB -> BGR (MobileViT's processor does)
    random_input: str  # "randn" (normalised pixels) or "rand" (pixels in [0, 1])
    # The forward under test: model and pixels -> named output tensors.
    run: Callable[[torch.nn.Module, torch.Tensor], dict[str, torch.Tensor]]
    classifier_outputs: tuple[str, ...] = ()  # outputs whose argmax is compared (top-1 agreement)
    load_kwargs: dict[str, Any] = field(default_factory=dict)
    # Applied to a random-init model only (never to loaded weights), see _torch_default_init.
    init_fix: Callable[[torch.nn.Module], None] | None = None
    upstream: Upstream | None = None  # None: the model class comes from an installed package
    # The input resolution a config was built for (a tiny or custom checkpoint runs at its own size).
    config_image_size: Callable[[Any], int] = lambda config: int(config.image_size)
    # Model-side settings that follow the run dtype (MingTok autocasts to its ``model_dtype``).
    set_run_dtype: Callable[[torch.nn.Module, torch.dtype], None] | None = None
    # Recipe options per run dtype (MingTok's fp32 regions stay fp32 in an fp32 run).
    recipe_options: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)

    # -- model ------------------------------------------------------------------------------

    def build(self, model_path: str | os.PathLike[str] | None = None, tiny: bool = False,
              repo: str | os.PathLike[str] | None = None) -> LoadedModel:
        if self.upstream is not None:
            self.upstream.ensure_importable(repo)
        cls = import_object(self.model_class)
        if model_path is not None:
            path = Path(model_path)
            if not path.is_dir():
                raise InputError(f"--model-path {str(path)!r} is not a directory (expected a from_pretrained folder)")
            if not (path / "config.json").is_file():
                raise InputError(f"--model-path {str(path)!r} has no config.json: not a from_pretrained folder")
            try:
                model = cls.from_pretrained(str(path), **self.load_kwargs)
            except (ModuleNotFoundError, InputError):
                raise
            except Exception as exc:  # noqa: BLE001 - bad config.json (OSError), SafetensorError, size mismatch
                # A broken download is bad input (exit 2), as for a model folder (hf_folder._load_weights).
                raise InputError(f"--model-path {str(path)!r} does not load ({one_line(exc)}): check the "
                                 "download, or leave --model-path out for random weights") from None
            size = min(self.config_image_size(model.config), self.crop_size)
            name = self.model_class.partition(":")[2]
            return LoadedModel(model.eval(), f"{name}.from_pretrained({str(path)!r})", size, False)
        config = import_object(self.config_class)(**(self.tiny_config if tiny else self.full_config))
        # Seeded so that two runs (and the reference and device runs) use the same weights.
        torch.manual_seed(0)
        model = cls._from_config(config, **self.load_kwargs) if hasattr(cls, "_from_config") else cls(config)
        if self.init_fix is not None:
            self.init_fix(model)
        size = self.config_image_size(config) if tiny else self.crop_size
        what = "tiny config" if tiny else f"full-size {self.checkpoint} architecture"
        return LoadedModel(model.eval(), f"random-init {what} (no weights loaded)", size, True)

    def prepare(self, model: torch.nn.Module, device: str, dtype: torch.dtype) -> torch.nn.Module:
        """Move the model to the run's device and dtype, and set what follows the dtype."""
        model = model.to(device=device, dtype=dtype)
        if self.set_run_dtype is not None:
            self.set_run_dtype(model, dtype)
        return model

    def options_for(self, dtype: str) -> dict[str, Any]:
        return dict(self.recipe_options.get(dtype, {}))

    # -- inputs -----------------------------------------------------------------------------

    def inputs(self, image_size: int, batch_size: int = 1, image: str | os.PathLike[str] | None = None,
               seed: int = 0) -> torch.Tensor:
        """A batch of pixels: the image preprocessed and repeated, or a seeded random tensor."""
        if image is None:
            gen = torch.Generator().manual_seed(seed)
            draw = torch.randn if self.random_input == "randn" else torch.rand
            return draw(batch_size, 3, image_size, image_size, generator=gen)
        pixels = self.preprocess(image, image_size)
        return pixels.unsqueeze(0).repeat(batch_size, 1, 1, 1)

    @staticmethod
    def check_image(image: str | os.PathLike[str] | None) -> None:
        """Fail before the model is built, not after."""
        if image is not None and Path(image).is_dir():
            raise InputError(f"--image {str(image)!r} is a folder: give one image file")
        if image is not None and not Path(image).is_file():
            raise InputError(f"--image {str(image)!r} does not exist")

    def preprocess(self, image: str | os.PathLike[str], image_size: int) -> torch.Tensor:
        from PIL import Image

        img = open_image(image)
        short = round(image_size * self.resize_ratio)
        w, h = img.size
        scale = short / min(w, h)
        img = img.resize((max(short, round(w * scale)), max(short, round(h * scale))),
                         getattr(Image.Resampling, self.resample))
        w, h = img.size
        left, top = (w - image_size) // 2, (h - image_size) // 2
        img = img.crop((left, top, left + image_size, top + image_size))
        data = torch.frombuffer(bytearray(img.tobytes()), dtype=torch.uint8)
        pixels = data.view(image_size, image_size, 3).permute(2, 0, 1).float() / 255.0
        if self.normalize is not None:
            mean, std = (torch.tensor(v).view(3, 1, 1) for v in self.normalize)
            pixels = (pixels - mean) / std
        if self.bgr:
            pixels = pixels.flip(0)
        return pixels.contiguous()


def open_image(image: str | os.PathLike[str]) -> Any:
    """The file as an RGB PIL image; one clear error when it is missing or unreadable."""
    ModelSpec.check_image(image)
    try:
        from PIL import Image
    except ImportError as exc:  # pragma: no cover - PIL comes with matplotlib
        raise InputError("--image needs Pillow: pip install Pillow") from exc
    try:
        return Image.open(image).convert("RGB")
    except Exception as exc:  # PIL raises UnidentifiedImageError, OSError, ...
        raise InputError(f"--image {str(image)!r} is not an image PIL can read ({exc})") from exc


def torch_default_init(model: torch.nn.Module) -> None:
    """Re-initialise convs, linears and norms with PyTorch's own defaults (Kaiming-uniform, BN 1/0).

    Some upstream ``_init_weights`` draw weights from N(0, 0.02): every block then shrinks the
    activations and a random-init model's outputs come out near zero - an accuracy comparison of
    near-zeros says nothing. PyTorch's fan-in init keeps them O(1). Trained checkpoints do not
    have this problem, so it is applied only where weights are random.
    """
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, (torch.nn.Conv2d, torch.nn.Linear, torch.nn.modules.batchnorm._BatchNorm,
                                   torch.nn.LayerNorm)):
                module.reset_parameters()


def model_names() -> list[str]:
    return sorted(MODEL_MODULES)


def get_spec(recipe: str) -> ModelSpec:
    """The model spec of a recipe; unknown names get the known ones and the closest match."""
    if recipe in MODEL_MODULES:
        spec = importlib.import_module(MODEL_MODULES[recipe]).SPEC
        assert isinstance(spec, ModelSpec) and spec.recipe == recipe, f"{MODEL_MODULES[recipe]}.SPEC"
        return spec
    from ...recipes import recipe_names

    if recipe in recipe_names():
        raise InputError(f"recipe {recipe!r} has no verify/bench model; available: {', '.join(model_names())}")
    known = sorted(set(recipe_names()) | set(MODEL_MODULES))
    close = difflib.get_close_matches(recipe, known, n=1)
    hint = f" Did you mean {close[0]!r}?" if close else ""
    raise InputError(f"unknown recipe {recipe!r}.{hint} Known: {', '.join(known)}")


def parse_dtype(name: str) -> torch.dtype:
    if name not in DTYPES:
        raise InputError(f"unknown dtype {name!r}: choose one of {', '.join(DTYPES)}")
    return DTYPES[name]


def resolve_device(device: str | None) -> tuple[str, str]:
    """(what the user asked for, torch device type). "sim" installs the simulated NPU -> "npu"."""
    from ...engine.device import DeviceNotAvailable, target_device

    asked = device or "auto"
    try:
        kind = target_device(asked)
    except (ValueError, DeviceNotAvailable) as exc:
        raise InputError(str(exc)) from exc
    except RuntimeError as exc:  # SimInstallError: a real torch_npu is importable, ...
        raise InputError(f"device {asked!r}: {exc}") from exc
    return asked, kind


def tensor_bytes(module: torch.nn.Module) -> int:
    """Bytes of parameters and buffers: what the weights occupy on the device."""
    tensors = list(module.parameters()) + list(module.buffers())
    return sum(t.numel() * t.element_size() for t in tensors)


def device_module(kind: str) -> Any | None:
    """``torch.npu`` / ``torch.cuda`` (None for cpu): synchronize, Event, memory counters."""
    if kind == "cpu":
        return None
    return getattr(torch, kind, None)


def synchronize(kind: str) -> None:
    mod = device_module(kind)
    if mod is not None and hasattr(mod, "synchronize"):
        mod.synchronize()
