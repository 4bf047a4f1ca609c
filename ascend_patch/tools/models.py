"""How each recipe's model is built for ``verify`` and ``bench``: model, inputs, named outputs.

Without ``--model-path`` the real full-size architecture is built from the checkpoint's own
config (written out below, so nothing is downloaded) with random weights, seeded, and the
report says so. With ``--model-path`` the model is loaded by the upstream ``from_pretrained`` from
a local directory, the same code a user runs. ``tiny=True`` builds a few-layer config of the same
architecture for tests and quick checks.

Images are preprocessed the way each checkpoint's image processor does (resize the short side,
centre crop, rescale, normalise or flip to BGR) with PIL and torch only, so a run needs neither
torchvision nor a preprocessor_config.json.
"""

from __future__ import annotations

import difflib
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

logger = logging.getLogger("ascend_patch")

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

DTYPES: dict[str, torch.dtype] = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


class InputError(ValueError):
    """Bad user input (unknown name, missing file, bad number): the CLI prints one line and exits 2."""


@dataclass
class LoadedModel:
    model: torch.nn.Module
    source: str  # what was built or loaded, for the report ("random-init facebook/dinov2-large ...")
    image_size: int
    random_init: bool


@dataclass(frozen=True)
class ModelSpec:
    """One recipe's model: how to build it, what an input looks like, which outputs to compare."""

    recipe: str
    checkpoint: str  # the Hugging Face id whose config the full-size build reproduces
    full_config: dict[str, Any]
    tiny_config: dict[str, Any]
    model_class: str  # transformers class names
    config_class: str
    crop_size: int  # input resolution the checkpoint's processor produces
    resize_ratio: float  # short side is resized to crop_size * ratio before the centre crop
    resample: str  # PIL resampling filter name
    normalize: tuple[tuple[float, ...], tuple[float, ...]] | None
    bgr: bool  # flip RGB -> BGR (MobileViT's processor does)
    random_input: str  # "randn" (normalised pixels) or "rand" (pixels in [0, 1])
    outputs: Callable[[Any], dict[str, torch.Tensor]]
    classifier_outputs: tuple[str, ...] = ()  # outputs whose argmax is compared (top-1 agreement)
    load_kwargs: dict[str, Any] = field(default_factory=dict)
    # Applied to a random-init model only (never to loaded weights), see _torch_default_init.
    init_fix: Callable[[torch.nn.Module], None] | None = None

    # -- model ------------------------------------------------------------------------------

    def build(self, model_path: str | os.PathLike[str] | None = None, tiny: bool = False) -> LoadedModel:
        import transformers

        cls = getattr(transformers, self.model_class)
        if model_path is not None:
            path = Path(model_path)
            if not path.is_dir():
                raise InputError(f"--model-path {str(path)!r} is not a directory (expected a from_pretrained folder)")
            if not (path / "config.json").is_file():
                raise InputError(f"--model-path {str(path)!r} has no config.json: not a from_pretrained folder")
            model = cls.from_pretrained(str(path), **self.load_kwargs)
            size = _config_image_size(model.config, self.crop_size)
            return LoadedModel(model.eval(), f"{self.model_class}.from_pretrained({str(path)!r})", size, False)
        config = getattr(transformers, self.config_class)(**(self.tiny_config if tiny else self.full_config))
        # Seeded so that two runs (and the reference and device runs) use the same weights.
        torch.manual_seed(0)
        model = cls._from_config(config, **self.load_kwargs)
        if self.init_fix is not None:
            self.init_fix(model)
        size = config.image_size if tiny else self.crop_size
        what = "tiny config" if tiny else f"full-size {self.checkpoint} architecture"
        return LoadedModel(model.eval(), f"random-init {what} (no weights loaded)", size, True)

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
        if image is not None and not Path(image).is_file():
            raise InputError(f"--image {str(image)!r} does not exist")

    def preprocess(self, image: str | os.PathLike[str], image_size: int) -> torch.Tensor:
        path = Path(image)
        self.check_image(path)
        try:
            from PIL import Image
        except ImportError as exc:  # pragma: no cover - PIL comes with matplotlib
            raise InputError("--image needs Pillow: pip install pillow") from exc
        try:
            img = Image.open(path).convert("RGB")
        except Exception as exc:  # PIL raises UnidentifiedImageError, OSError, ...
            raise InputError(f"--image {str(path)!r} is not an image PIL can read ({exc})") from exc
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


def _config_image_size(config: Any, default: int) -> int:
    # DINOv2 checkpoints say 518 (the position-embedding grid) but are run at 224 crops;
    # a tiny or custom checkpoint is run at its own size.
    size = getattr(config, "image_size", default)
    return default if size >= default else int(size)


def _dinov2_outputs(out: Any) -> dict[str, torch.Tensor]:
    hidden = out.last_hidden_state
    # The CLS token and the patch tokens are used differently downstream (global vs dense
    # features) and the seed port's error differed between them: report them separately.
    return {"cls_token": hidden[:, 0], "patch_tokens": hidden[:, 1:]}


def _torch_default_init(model: torch.nn.Module) -> None:
    """Re-initialise convs, linears and norms with PyTorch's own defaults (Kaiming-uniform, BN 1/0).

    MobileViT's ``_init_weights`` draws conv weights and BatchNorm scales from N(0, 0.02): every
    block then shrinks the activations ~50x and a random-init model's logits come out ~1e-13 - an
    accuracy comparison of near-zeros says nothing. PyTorch's fan-in init keeps them O(1).
    Trained checkpoints do not have this problem, so it is applied only where weights are random.
    """
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, (torch.nn.Conv2d, torch.nn.Linear, torch.nn.modules.batchnorm._BatchNorm,
                                   torch.nn.LayerNorm)):
                module.reset_parameters()


def _aimv2_outputs(out: Any) -> dict[str, torch.Tensor]:
    # AIMv2 has no CLS token: the patch features are the output (the head is dropped for
    # head-less checkpoints by the recipe).
    return {"patch_tokens": out.last_hidden_state}


def _mobilevit_outputs(out: Any) -> dict[str, torch.Tensor]:
    return {"logits": out.logits}


MODELS: dict[str, ModelSpec] = {
    "aimv2": ModelSpec(
        recipe="aimv2",
        checkpoint="apple/aimv2-large-patch14-224",
        # apple/aimv2-large-patch14-224 vision config (head-less encoder)
        full_config=dict(hidden_size=1024, intermediate_size=2816, num_hidden_layers=24, num_attention_heads=8,
                         patch_size=14, image_size=224, hidden_act="silu", rms_norm_eps=1e-5, qkv_bias=False,
                         mlp_bias=False, use_head=False, is_native=False),
        tiny_config=dict(hidden_size=64, intermediate_size=176, num_hidden_layers=4, num_attention_heads=4,
                         patch_size=14, image_size=56, use_head=False),
        model_class="Aimv2VisionModel",
        config_class="Aimv2VisionConfig",
        crop_size=224,  # CLIPImageProcessor: resize short side 224, centre crop 224, CLIP mean/std
        resize_ratio=1.0,
        resample="BICUBIC",
        normalize=((0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711)),
        bgr=False,
        random_input="randn",
        outputs=_aimv2_outputs,
    ),
    "dinov2": ModelSpec(
        recipe="dinov2",
        checkpoint="facebook/dinov2-large",
        # facebook/dinov2-large config.json (ViT-L/14)
        full_config=dict(hidden_size=1024, num_hidden_layers=24, num_attention_heads=16, mlp_ratio=4,
                         patch_size=14, image_size=518, hidden_act="gelu", layer_norm_eps=1e-6,
                         layerscale_value=1.0, qkv_bias=True, use_swiglu_ffn=False),
        tiny_config=dict(hidden_size=64, num_hidden_layers=6, num_attention_heads=4, mlp_ratio=4,
                         patch_size=14, image_size=56, hidden_act="gelu", layer_norm_eps=1e-6),
        model_class="Dinov2Model",
        config_class="Dinov2Config",
        crop_size=224,  # BitImageProcessor: resize short side 256, centre crop 224
        resize_ratio=256 / 224,
        resample="BICUBIC",
        normalize=(IMAGENET_MEAN, IMAGENET_STD),
        bgr=False,
        random_input="randn",
        outputs=_dinov2_outputs,
    ),
    "mobilevit": ModelSpec(
        recipe="mobilevit",
        checkpoint="apple/mobilevit-x-small",
        # apple/mobilevit-x-small config.json (2.3 M parameters, ImageNet-1k head)
        full_config=dict(hidden_sizes=[96, 120, 144], neck_hidden_sizes=[16, 32, 48, 64, 80, 96, 384],
                         num_attention_heads=4, image_size=256, patch_size=2, mlp_ratio=2.0, expand_ratio=4.0,
                         hidden_act="silu", conv_kernel_size=3, output_stride=32, num_labels=1000),
        tiny_config=dict(hidden_sizes=[32, 48, 64], neck_hidden_sizes=[8, 16, 24, 32, 40, 48, 96],
                         num_attention_heads=4, image_size=64, patch_size=2, num_labels=10),
        model_class="MobileViTForImageClassification",
        config_class="MobileViTConfig",
        crop_size=256,  # MobileViTImageProcessor: resize short side 288, centre crop 256, BGR, no mean/std
        resize_ratio=288 / 256,
        resample="BILINEAR",
        normalize=None,
        bgr=True,
        random_input="rand",
        outputs=_mobilevit_outputs,
        classifier_outputs=("logits",),
        init_fix=_torch_default_init,
        # MobileViT has eager attention only; say so rather than rely on the sdpa -> eager fallback.
        load_kwargs={"attn_implementation": "eager"},
    ),
}


def get_spec(recipe: str) -> ModelSpec:
    """The model spec of a recipe; unknown names get the known ones and the closest match."""
    if recipe in MODELS:
        return MODELS[recipe]
    from ..recipes import recipe_names

    if recipe in recipe_names():
        raise InputError(f"recipe {recipe!r} has no verify/bench model yet; available: {', '.join(sorted(MODELS))}")
    known = sorted(set(recipe_names()) | set(MODELS))
    close = difflib.get_close_matches(recipe, known, n=1)
    hint = f" Did you mean {close[0]!r}?" if close else ""
    raise InputError(f"unknown recipe {recipe!r}.{hint} Known: {', '.join(known)}")


def parse_dtype(name: str) -> torch.dtype:
    if name not in DTYPES:
        raise InputError(f"unknown dtype {name!r}: choose one of {', '.join(DTYPES)}")
    return DTYPES[name]


def resolve_device(device: str | None) -> tuple[str, str]:
    """(what the user asked for, torch device type). "sim" installs the simulated NPU -> "npu"."""
    from ..engine.device import DeviceNotAvailable, target_device

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
