"""A Hugging Face model folder (config.json + weights) as a verify / bench subject, for any architecture.

The model class is the config's ``architectures[0]`` (``AutoModel`` when it names none), loaded by
``from_pretrained`` as a user's code loads it, or built from config.json alone with
``random_init``. Inputs follow the forward's parameters: ``pixel_values`` through the folder's
image processor when it has a preprocessor config (a seeded noise image, or ``image``), else a
seeded normal tensor at the config's image size; ``input_ids`` (with ``attention_mask`` /
``decoder_input_ids`` where the forward takes them) as seeded token ids.
"""

from __future__ import annotations

import inspect
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from .errors import InputError, first_line, one_line
from .inputs import Inputs

logger = logging.getLogger("ascend_patch")

WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin",
                "pytorch_model.bin.index.json")  # fmt: skip
PROCESSOR_FILE = "preprocessor_config.json"
TEXT_LENGTH = 16  # tokens of a random text input (capped by the model's position table)


def resolve_folder(target: str) -> Path:
    """A local folder, or a hub id already in the local Hugging Face cache (nothing is downloaded)."""
    path = Path(target)
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise InputError(f"{target!r} has no config.json: not a Hugging Face model folder")
        return path
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(target, local_files_only=True))
    except Exception as exc:  # noqa: BLE001 - not an id, not cached, hub library missing
        raise InputError(
            f"{target!r} is not a folder, a recipe, or a model in the local Hugging Face cache ({type(exc).__name__}); "
            "download it first (hf download ID) or pass --factory MODULE:FUNCTION"
        ) from None


def _config_value(config: Any, name: str, default: Any = None) -> Any:
    """``config.name``, else from the vision or text sub-config (CLIP-like models)."""
    for part in (config, getattr(config, "vision_config", None), getattr(config, "text_config", None)):
        value = getattr(part, name, None) if part is not None else None
        if value is not None:
            return value
    return default


@dataclass
class FolderModel:
    model: torch.nn.Module
    source: str
    folder: Path
    processor: Any  # the folder's image processor, or None

    def inputs(self, batch_size: int, seed: int = 0, image: str | os.PathLike[str] | None = None) -> Inputs:
        params = inspect.signature(self.model.forward).parameters
        kwargs: dict[str, Any] = {}
        gen = torch.Generator().manual_seed(seed)
        if "pixel_values" in params:
            kwargs["pixel_values"] = self._pixels(batch_size, gen, image)
        elif image is not None:
            raise InputError(f"--image: {type(self.model).__name__}.forward takes no pixel_values")
        if "input_ids" in params:
            config = self.model.config
            vocab = _config_value(config, "vocab_size")
            if vocab is None:
                raise InputError(f"{type(self.model).__name__}: config has no vocab_size for a random text input; "
                                 "use --factory")
            length = min(TEXT_LENGTH, _config_value(config, "max_position_embeddings", TEXT_LENGTH))
            kwargs["input_ids"] = torch.randint(0, int(vocab), (batch_size, length), generator=gen)
            if "attention_mask" in params:
                kwargs["attention_mask"] = torch.ones(batch_size, length, dtype=torch.long)
            if "decoder_input_ids" in params and getattr(config, "is_encoder_decoder", False):
                kwargs["decoder_input_ids"] = kwargs["input_ids"].clone()
        if not kwargs:
            wanted = ", ".join(name for name, p in params.items() if p.default is inspect.Parameter.empty)
            raise InputError(f"{type(self.model).__name__}.forward takes neither pixel_values nor input_ids "
                             f"(needs: {wanted or 'nothing'}): use --factory to give it example inputs")
        return Inputs((), kwargs)

    def _pixels(self, batch_size: int, gen: torch.Generator, image: str | os.PathLike[str] | None) -> torch.Tensor:
        if image is not None:
            if self.processor is None:
                raise InputError(f"--image: {str(self.folder)!r} has no {PROCESSOR_FILE}, so how the model expects "
                                 "images preprocessed is unknown; save its image processor there, or drop --image")
            from .models import open_image

            picture = open_image(image)
        elif self.processor is not None:  # noise through the model's own preprocessing: the right size and scale
            from PIL import Image

            noise = torch.randint(0, 256, (256, 256, 3), generator=gen, dtype=torch.uint8)
            picture = Image.fromarray(noise.numpy())
        else:
            config = self.model.config
            size = _config_value(config, "image_size", 224)
            height, width = (size, size) if isinstance(size, int) else tuple(size)
            channels = int(_config_value(config, "num_channels", 3))
            return torch.randn(batch_size, channels, height, width, generator=gen)
        pixels = self.processor(images=picture, return_tensors="pt")["pixel_values"]
        return pixels.float().repeat(batch_size, *([1] * (pixels.dim() - 1)))


def _has_weights(folder: Path) -> bool:
    return any((folder / name).is_file() for name in WEIGHT_FILES) or any(folder.glob("*.safetensors"))


def _load_weights(cls: Any, folder: Path, trust_remote_code: bool | None) -> torch.nn.Module:
    """``from_pretrained`` of a folder checked to be what it claims: a broken download (truncated
    weights, shapes that are not config.json's, another model's checkpoint) is bad input, not a FAIL."""
    extra = {} if trust_remote_code is None else {"trust_remote_code": trust_remote_code}
    try:
        model, info = cls.from_pretrained(folder, output_loading_info=True, **extra)
    except (ModuleNotFoundError, InputError):
        raise
    except Exception as exc:  # noqa: BLE001 - SafetensorError, size mismatch RuntimeError, OSError, ...
        raise InputError(f"{str(folder)!r}: the weights do not load ({one_line(exc)}); "
                         "check the download, or pass --random-init") from None
    missing, total = len(info.get("missing_keys", ())), len(model.state_dict())
    if total and missing * 2 > total:
        raise InputError(f"{str(folder)!r}: {missing} of {total} tensors of {cls.__name__} are not in the weights "
                         "(the checkpoint of another model?); check config.json, or pass --random-init")
    if missing:
        logger.warning("%s: %d tensor(s) not in the weights are randomly initialised: %s", folder, missing,
                       ", ".join(sorted(info["missing_keys"])[:5]))
    return model


def load_folder(target: str, *, random_init: bool = False, trust_remote_code: bool = False) -> FolderModel:
    """Build (``random_init``, seeded) or load the folder's model, and its image processor if it has one."""
    import transformers

    folder = resolve_folder(target)
    if not random_init and not _has_weights(folder):
        raise InputError(f"{str(folder)!r} has config.json but no weights ({', '.join(WEIGHT_FILES[::2])}): "
                         "pass --random-init to build the architecture from config.json alone")
    try:
        config = transformers.AutoConfig.from_pretrained(folder, trust_remote_code=trust_remote_code)
    except OSError as exc:  # not JSON, unreadable
        raise InputError(f"{str(folder / 'config.json')!r} cannot be read: {first_line(exc) or one_line(exc)}") from None
    except ValueError as exc:  # custom code without trust_remote_code, unknown model_type
        raise InputError(f"{str(folder)!r}: {first_line(exc) or one_line(exc)} (custom model code needs "
                         "--trust-remote-code)") from None
    architectures = getattr(config, "architectures", None) or []
    cls = getattr(transformers, architectures[0], None) if architectures else None
    if cls is None:  # no architecture named, or one from the folder's own code: the auto class decides
        cls = transformers.AutoModel
    name = architectures[0] if architectures else f"AutoModel ({config.model_type})"
    if random_init:
        torch.manual_seed(0)  # the same weights in every run of the same folder
        if cls is transformers.AutoModel:
            model = cls.from_config(config, trust_remote_code=trust_remote_code)
        else:
            model = cls._from_config(config)
        source = f"random-init {name} from {folder / 'config.json'} (no weights loaded)"
    else:
        model = _load_weights(cls, folder, trust_remote_code if cls is transformers.AutoModel else None)
        source = f"{name}.from_pretrained({str(folder)!r})"
    processor = None
    if (folder / PROCESSOR_FILE).is_file():
        processor = transformers.AutoImageProcessor.from_pretrained(folder, trust_remote_code=trust_remote_code)
    logger.info("%s%s", source, f", image processor {type(processor).__name__}" if processor else "")
    return FolderModel(model.eval(), source, folder, processor)
