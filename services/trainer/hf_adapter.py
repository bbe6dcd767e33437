"""State-dict adapter between VideoMAE V2 and Hugging Face ``transformers`` VideoMAE, both ways.

``export_transformers_state_dict`` renames our (the reference's) keys to ``transformers`` names
and splits the fused ``qkv`` projection, so the result loads strictly into
``VideoMAEForPreTraining`` or ``VideoMAEForVideoClassification`` built from
``transformers_config(model)``. ``import_transformers_state_dict`` is its inverse and also reads
the transformers 4.x names of the VideoMAE checkpoints on the Hugging Face hub. Like torchtitan's
``state_dict_adapter.py``, the mapping lives beside the model file rather than in it.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import torch
import torch.nn as nn

from services.trainer.videomae import PretrainVisionTransformer

__all__ = [
    "export_transformers_state_dict",
    "import_transformers_state_dict",
    "transformers_config",
]

# Ours -> Hugging Face transformers VideoMAE (5.x: split qkv, ``query.bias``/``value.bias``,
# no key bias). Inside a block; q_bias/v_bias map to the split projections' biases.
_HF_BLOCK_MAP = {
    "norm1": "layernorm_before",
    "attn.proj": "attention.output.dense",
    "norm2": "layernorm_after",
    "mlp.fc1": "intermediate.dense",
    "mlp.fc2": "output.dense",
    "attn.qkv": "attention.attention",
    "attn.q_bias": "attention.attention.query.bias",
    "attn.v_bias": "attention.attention.value.bias",
}
_HF_STACK_MAP = {
    "blocks": "videomae.encoder.layer",
    "encoder.blocks": "videomae.encoder.layer",
    "decoder.blocks": "decoder.decoder_layers",
}
_HF_MODULE_MAP = {
    "patch_embed.proj": "videomae.embeddings.patch_embeddings.projection",
    "encoder.patch_embed.proj": "videomae.embeddings.patch_embeddings.projection",
    "norm": "videomae.layernorm",
    "encoder.norm": "videomae.layernorm",
    "fc_norm": "fc_norm",
    "head": "classifier",
    "encoder_to_decoder": "encoder_to_decoder",
    "decoder.norm": "decoder.norm",
    "decoder.head": "decoder.head",
}
_HF_QKV = ("query", "key", "value")
_BLOCK_MODULE = re.compile(r"^((?:encoder\.|decoder\.)?blocks)\.(\d+)\.(.+)$")


def transformers_config(model: nn.Module) -> dict[str, Any]:
    """Keyword arguments of ``transformers.VideoMAEConfig`` describing ``model``."""
    pretrain = isinstance(model, PretrainVisionTransformer)
    enc = model.encoder if pretrain else model
    blk = enc.blocks[0]
    cfg: dict[str, Any] = dict(
        image_size=enc.img_size,
        patch_size=enc.patch_size,
        num_channels=enc.patch_embed.proj.in_channels,
        num_frames=enc.num_frames,
        tubelet_size=enc.tubelet_size,
        hidden_size=enc.embed_dim,
        num_hidden_layers=enc.depth,
        num_attention_heads=blk.attn.num_heads,
        intermediate_size=blk.mlp.fc1.out_features,
        hidden_act="gelu",
        layer_norm_eps=1e-6,
        qv_bias=True,
        use_mean_pooling=isinstance(enc.fc_norm, nn.LayerNorm),
    )
    if pretrain:
        dec = model.decoder.blocks[0]
        cfg.update(
            decoder_hidden_size=model.decoder_embed_dim,
            decoder_num_hidden_layers=len(model.decoder.blocks),
            decoder_num_attention_heads=dec.attn.num_heads,
            decoder_intermediate_size=dec.mlp.fc1.out_features,
            norm_pix_loss=True,
        )
    else:
        cfg["num_labels"] = enc.num_classes
    return cfg


def _to_hf_module(module: str) -> str:
    match = _BLOCK_MODULE.match(module)
    if match:
        stack, idx, inner = match.groups()
        if inner in _HF_BLOCK_MAP:
            return f"{_HF_STACK_MAP[stack]}.{idx}.{_HF_BLOCK_MAP[inner]}"
    elif module in _HF_MODULE_MAP:
        return _HF_MODULE_MAP[module]
    raise ValueError(f"{module} has no transformers VideoMAE counterpart")


def export_transformers_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """State dict of ``model`` under Hugging Face ``transformers`` VideoMAE names.

    Loads strictly into ``VideoMAEForPreTraining`` (pre-training model) or
    ``VideoMAEForVideoClassification`` (classifier) built from ``transformers_config(model)``.
    """
    out: dict[str, torch.Tensor] = {}
    for key, value in model.state_dict().items():
        if key == "mask_token":
            out[key] = value
        elif key.endswith("attn.qkv.weight"):
            base = _to_hf_module(key.removesuffix(".weight"))
            for name, part in zip(_HF_QKV, value.chunk(3, dim=0), strict=True):
                out[f"{base}.{name}.weight"] = part
        elif key.endswith(("attn.q_bias", "attn.v_bias")):
            out[_to_hf_module(key)] = value
        else:
            module, _, leaf = key.rpartition(".")
            out[f"{_to_hf_module(module)}.{leaf}"] = value
    return out


def import_transformers_state_dict(
    state_dict: Mapping[str, torch.Tensor],
) -> dict[str, torch.Tensor]:
    """Inverse of ``export_transformers_state_dict``: Hugging Face VideoMAE names to ours.

    Also reads transformers 4.x names (``attention.attention.q_bias``/``v_bias``), the layout
    of the VideoMAE checkpoints published on the Hugging Face hub.
    """
    pretrain = any(k.startswith(("decoder.", "encoder_to_decoder")) for k in state_dict)
    stacks = {v: k for k, v in _HF_STACK_MAP.items() if k.startswith("encoder.") == pretrain}
    stacks["decoder.decoder_layers"] = "decoder.blocks"
    blocks = {v: k for k, v in _HF_BLOCK_MAP.items()}
    blocks |= {
        "attention.attention.q_bias": "attn.q_bias",
        "attention.attention.v_bias": "attn.v_bias",
    }
    modules = {
        v: k for k, v in _HF_MODULE_MAP.items()
        if k.startswith(("encoder.", "decoder.", "encoder_to")) == pretrain or k == "head"
    }  # fmt: skip
    out: dict[str, torch.Tensor] = {}
    qkv: dict[str, dict[str, torch.Tensor]] = {}
    for key, value in state_dict.items():
        stack = next((s for s in stacks if key.startswith(s + ".")), None)
        if key == "mask_token":
            out[key] = value
        elif stack is not None:
            idx, _, inner = key.removeprefix(stack + ".").partition(".")
            prefix = f"{stacks[stack]}.{idx}."
            module, _, leaf = inner.rpartition(".")
            name = module.rpartition(".")[2]
            if module.startswith("attention.attention.") and leaf == "weight":
                qkv.setdefault(prefix, {})[name] = value  # merged into qkv below
            elif inner in blocks:
                out[prefix + blocks[inner]] = value
            elif module in blocks:
                out[f"{prefix}{blocks[module]}.{leaf}"] = value
            else:
                raise ValueError(f"{key} has no VideoMAE V2 counterpart")
        else:
            module, _, leaf = key.rpartition(".")
            if module not in modules:
                raise ValueError(f"{key} has no VideoMAE V2 counterpart")
            out[f"{modules[module]}.{leaf}"] = value
    for prefix, parts in qkv.items():
        out[prefix + "attn.qkv.weight"] = torch.cat([parts[n] for n in _HF_QKV], dim=0)
    return out
