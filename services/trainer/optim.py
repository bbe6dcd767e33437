"""AdamW with the reference parameter groups, and the per-step cosine schedule with warmup.

Groups: no weight decay on 1-D parameters (norms, biases, ``q_bias``/``v_bias``) and on what the
model lists in ``no_weight_decay()``; with layer-wise decay each group also carries
``lr_scale = decay ** (L + 1 - layer_id)`` (layer id: patch_embed 0, block i -> i + 1, the rest
L + 1), as in BEiT / MAE ``lr_decay.py``.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import nn

__all__ = ["build_optimizer", "cosine_lr", "effective_lr", "set_lr"]


def effective_lr(base_lr: float, clips_per_step: int) -> float:
    """The linear scaling rule of the recipes: ``base_lr`` is the lr at 256 clips per step."""
    return base_lr * clips_per_step / 256


def _default_layer_id(name: str, num_layers: int) -> int:
    if name.startswith(("patch_embed", "encoder.patch_embed", "cls_token", "mask_token")):
        return 0
    for prefix in ("blocks.", "encoder.blocks."):
        if name.startswith(prefix):
            return int(name[len(prefix) :].split(".")[0]) + 1
    return num_layers + 1


def build_optimizer(
    model: nn.Module,
    lr: float,
    weight_decay: float,
    betas: tuple[float, float],
    eps: float = 1e-8,
    layer_decay: float = 1.0,
) -> torch.optim.AdamW:
    """AdamW over decay / no-decay groups, split further by layer when ``layer_decay < 1``.

    The layer id comes from the model's ``layer_id(name)`` when it has one (the classifier's
    timm contract), else from the parameter name.
    """
    skip = set(getattr(model, "no_weight_decay", lambda: set())())
    num_layers = len(getattr(model, "blocks", [])) or len(
        getattr(getattr(model, "encoder", None), "blocks", [])
    )
    layer_of: Callable[[str], int] = getattr(
        model, "layer_id", lambda name: _default_layer_id(name, num_layers)
    )
    groups: dict[tuple[int, bool], dict] = {}
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        no_decay = param.ndim <= 1 or name.endswith(".bias") or name in skip
        layer = layer_of(name) if layer_decay < 1 else 0
        scale = layer_decay ** (num_layers + 1 - layer) if layer_decay < 1 else 1.0
        group = groups.setdefault(
            (layer, no_decay),
            {"params": [], "weight_decay": 0.0 if no_decay else weight_decay, "lr_scale": scale},
        )
        group["params"].append(param)
    return torch.optim.AdamW(list(groups.values()), lr=lr, betas=betas, eps=eps)


def cosine_lr(
    step: int, total_steps: int, warmup_steps: int, peak: float, warmup_lr: float, min_lr: float
) -> float:
    """Linear warmup from ``warmup_lr`` to ``peak``, then half a cosine down to ``min_lr``."""
    if step < warmup_steps:
        return warmup_lr + (peak - warmup_lr) * step / warmup_steps
    progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
    return min_lr + 0.5 * (peak - min_lr) * (1 + math.cos(math.pi * min(1.0, progress)))


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = lr * group.get("lr_scale", 1.0)
