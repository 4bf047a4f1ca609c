"""Original apple/ml-aim (timm-style) AIMv2 vision checkpoints <-> transformers ``Aimv2VisionModel``.

ml-aim (``aim/v2/torch/models.py``: ``AIMv2VisionEncoder`` built from ``aim/v1/torch/layers.py``)
names its vision tower::

    preprocessor.patchifier.proj.{weight,bias}   -> embeddings.patch_embed.{weight,bias}
    preprocessor.patchifier.norm.weight          -> embeddings.rms_norm.weight
    preprocessor.pos_embed (1, N, D)              -> embeddings.position_embedding.weight (N, D)
                                                    (absent for the sincos "native" models)
    trunk.blocks.N.attn.qkv (3D, D), merged       -> encoder.layers.N.attention.{q,k,v}_proj (D, D) each
    trunk.blocks.N.attn.proj                      -> encoder.layers.N.attention.out_proj
    trunk.blocks.N.norm_1 / norm_2                -> encoder.layers.N.rms_norm1 / rms_norm2
    trunk.blocks.N.mlp.fc1 / fc3 / fc2 (SwiGLU)   -> encoder.layers.N.ffn.gate_proj / up_proj / down_proj
                                                    (ml-aim: fc2(silu(fc1(x)) * fc3(x)))
    trunk.post_trunk_norm                         -> rms_norm
    head.k / head.v / head.linear / head.cls_token -> head.k_proj / v_proj / output_proj / cls_token
                                                    (attention-pool head, only in LiT/head checkpoints)

The merged qkv is ``[q; k; v]`` along the output dimension (``reshape(B, N, 3, H, C/H)`` in
ml-aim's ``Attention.forward``), so it splits into three equal row blocks and merges back with
``torch.cat`` - both directions are exact (no arithmetic), tested round-trip.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping

import torch

logger = logging.getLogger("ascend_patch")

# Renames with no reshaping: (ml-aim suffix, HF suffix), applied per prefix below.
_BLOCK_RENAMES: tuple[tuple[str, str], ...] = (
    ("attn.proj", "attention.out_proj"),
    ("norm_1", "rms_norm1"),
    ("norm_2", "rms_norm2"),
    ("mlp.fc1", "ffn.gate_proj"),
    ("mlp.fc3", "ffn.up_proj"),
    ("mlp.fc2", "ffn.down_proj"),
)
_TOP_RENAMES: tuple[tuple[str, str], ...] = (
    ("preprocessor.patchifier.proj", "embeddings.patch_embed"),
    ("preprocessor.patchifier.norm", "embeddings.rms_norm"),
    ("trunk.post_trunk_norm", "rms_norm"),
    ("head.k", "head.k_proj"),
    ("head.v", "head.v_proj"),
    ("head.linear", "head.output_proj"),
    ("head.cls_token", "head.cls_token"),
)
_ML_AIM_BLOCK = re.compile(r"^trunk\.blocks\.(\d+)\.(.+)$")
_HF_LAYER = re.compile(r"^encoder\.layers\.(\d+)\.(.+)$")
_QKV = ("q_proj", "k_proj", "v_proj")


class CheckpointKeyError(KeyError):
    """A key neither naming scheme knows: refuse rather than drop weights silently."""


def _rename(key: str, table: tuple[tuple[str, str], ...], reverse: bool) -> str | None:
    for ml_aim, hf in table:
        src, dst = (hf, ml_aim) if reverse else (ml_aim, hf)
        if key == src:
            return dst
        if key.startswith(src + ".") and key[len(src) + 1:].count(".") == 0:  # "<name>.weight" / ".bias"
            return dst + key[len(src):]
    return None


def is_ml_aim_state_dict(state_dict: Mapping[str, torch.Tensor]) -> bool:
    return any(k.startswith(("trunk.", "preprocessor.")) for k in state_dict)


def has_head(state_dict: Mapping[str, torch.Tensor]) -> bool:
    """Whether the checkpoint carries attention-pool head weights (either naming scheme)."""
    return any(k.startswith("head.") for k in state_dict)


def ml_aim_to_hf(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """ml-aim vision-encoder keys -> ``Aimv2VisionModel`` keys (q/k/v split)."""
    out: dict[str, torch.Tensor] = {}
    for key, value in state_dict.items():
        if key == "preprocessor.pos_embed":
            out["embeddings.position_embedding.weight"] = value.reshape(value.shape[-2], value.shape[-1])
            continue
        m = _ML_AIM_BLOCK.match(key)
        if m:
            idx, rest = m.groups()
            prefix = f"encoder.layers.{idx}."
            if rest.startswith("attn.qkv."):
                suffix = rest[len("attn.qkv."):]
                # [q; k; v] along dim 0: three equal blocks (weight rows or bias entries).
                for name, part in zip(_QKV, value.chunk(3, dim=0)):
                    out[f"{prefix}attention.{name}.{suffix}"] = part.clone()
                continue
            new = _rename(rest, _BLOCK_RENAMES, reverse=False)
            if new is not None:
                out[prefix + new] = value
                continue
        else:
            new = _rename(key, _TOP_RENAMES, reverse=False)
            if new is not None:
                out[new] = value
                continue
        raise CheckpointKeyError(f"ml-aim key {key!r} has no Aimv2VisionModel counterpart")
    return out


def hf_to_ml_aim(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """``Aimv2VisionModel`` keys -> ml-aim vision-encoder keys (q/k/v merged into qkv)."""
    out: dict[str, torch.Tensor] = {}
    qkv: dict[tuple[str, str], dict[str, torch.Tensor]] = {}  # (layer, weight|bias) -> {q_proj: ...}
    for key, value in state_dict.items():
        if key == "embeddings.position_ids":  # a non-persistent buffer; tolerate it if present
            continue
        if key == "embeddings.position_embedding.weight":
            out["preprocessor.pos_embed"] = value.unsqueeze(0)
            continue
        m = _HF_LAYER.match(key)
        if m:
            idx, rest = m.groups()
            parts = rest.split(".")
            if len(parts) == 3 and parts[0] == "attention" and parts[1] in _QKV:
                qkv.setdefault((idx, parts[2]), {})[parts[1]] = value
                continue
            new = _rename(rest, _BLOCK_RENAMES, reverse=True)
            if new is not None:
                out[f"trunk.blocks.{idx}.{new}"] = value
                continue
        else:
            new = _rename(key, _TOP_RENAMES, reverse=True)
            if new is not None:
                out[new] = value
                continue
        raise CheckpointKeyError(f"Aimv2VisionModel key {key!r} has no ml-aim counterpart")
    for (idx, suffix), parts in qkv.items():
        missing = [n for n in _QKV if n not in parts]
        if missing:
            raise CheckpointKeyError(f"layer {idx}: {suffix} of {missing} missing, cannot merge qkv")
        out[f"trunk.blocks.{idx}.attn.qkv.{suffix}"] = torch.cat([parts[n] for n in _QKV], dim=0)
    return out
