"""AdamW with the reference parameter groups, and the per-step cosine schedule with warmup.

Groups: no weight decay on 1-D parameters (norms, biases, ``q_bias``/``v_bias``) and on what the
model lists in ``no_weight_decay()``; with layer-wise decay each group also carries
``lr_scale = decay ** (L + 1 - layer_id)``, the layer id being ``videomae.layer_id``'s (patch
embedding 0, block i -> i + 1, the rest L + 1), as in BEiT / MAE ``lr_decay.py``.
"""

from __future__ import annotations

import math

import torch

from services.trainer.videomae import PretrainVisionTransformer, VisionTransformer, layer_id

__all__ = ["build_optimizer", "cosine_lr", "effective_lr", "set_lr"]


def effective_lr(base_lr: float, videos_per_step: int) -> float:
    """The linear scaling rule of the recipes: ``base_lr`` is the lr at 256 videos per step.

    ``videos_per_step`` is ``batch_size x world x update_freq``: each decoded video counts
    once, not its ``num_sample`` augmented copies (VideoMAE V2 ``run_mae_pretraining.py``:
    ``total_batch_size = batch_size * num_tasks``).
    """
    return base_lr * videos_per_step / 256


def build_optimizer(
    model: VisionTransformer | PretrainVisionTransformer,
    lr: float,
    weight_decay: float,
    betas: tuple[float, float],
    eps: float = 1e-8,
    layer_decay: float = 1.0,
) -> torch.optim.AdamW:
    """AdamW over decay / no-decay groups, split further by layer when ``layer_decay < 1``.

    Args:
        model: the plain classifier or pre-training model (not its DDP / compiled wrapper).
        lr: the initial learning rate; ``set_lr`` sets each step's, times ``lr_scale``.
        weight_decay: decay of the decayed group.
        betas: AdamW betas.
        eps: AdamW eps.
        layer_decay: layer-wise lr decay; 1 gives every layer the same lr.
    """
    skip = model.no_weight_decay()
    groups: dict[tuple[int, bool], dict] = {}
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        no_decay = param.ndim <= 1 or name.endswith(".bias") or name in skip
        layer = layer_id(name, model.depth) if layer_decay < 1 else 0
        scale = layer_decay ** (model.depth + 1 - layer) if layer_decay < 1 else 1.0
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
