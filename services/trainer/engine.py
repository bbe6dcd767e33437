"""One training epoch and one evaluation pass, for pre-training and classification alike.

The step follows MAE's ``engine_pretrain.py``: set the lr of this step, autocast forward that
returns the loss, stop on a non-finite loss with a typed error, scaled backward (accumulated
over ``update_freq`` loader batches), optional gradient clipping, optimiser step, log the
all-reduced loss. What differs between modes is only
the loss function passed in (``pretrain_step_loss`` or a ``classify_step_loss``).
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from timm.data import Mixup
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from services.common.errors import H2AError
from services.common.records import Rejection
from services.trainer.data import Batch
from services.trainer.optim import set_lr
from services.trainer.parallelize import DistInfo, all_gather_objects, unwrap
from services.trainer.transforms import Frames, PretrainAugment, mix_batch
from services.trainer.videomae import pretrain_loss

__all__ = [
    "EvalResult",
    "LossFn",
    "NonFiniteLoss",
    "classify_step_loss",
    "evaluate",
    "on_device_augment",
    "pretrain_step_loss",
    "train_one_epoch",
]

LossFn = Callable[[nn.Module, tuple[Any, ...], torch.device], torch.Tensor]


class NonFiniteLoss(H2AError):
    """The loss became NaN or inf: the run stops here instead of training on garbage."""

    reason = "NON_FINITE_LOSS"


def pretrain_step_loss(
    model: nn.Module, items: tuple[Any, ...], device: torch.device
) -> torch.Tensor:
    """Dual-masking reconstruction loss of a batch ``(clips, _, masks (B, 2, N), _)``."""
    clips, _, masks, _ = items
    clips = clips.to(device, non_blocking=True)
    encoder_mask, decoder_mask = masks[:, 0].to(device), masks[:, 1].to(device)
    prediction = model(clips, encoder_mask, decoder_mask)
    return pretrain_loss(unwrap(model), clips, prediction, encoder_mask, decoder_mask)


def classify_step_loss(mixer: Mixup | None, smoothing: float) -> LossFn:
    """Cross-entropy on labels, or on Mixup/CutMix soft targets (which carry the smoothing)."""

    def loss(model: nn.Module, items: tuple[Any, ...], device: torch.device) -> torch.Tensor:
        clips, labels, _, _ = items
        clips, labels = clips.to(device, non_blocking=True), labels.to(device)
        if mixer is not None:
            clips, soft = mix_batch(mixer, clips, labels)
            return torch.sum(-soft * F.log_softmax(model(clips), dim=-1), dim=-1).mean()
        return F.cross_entropy(model(clips), labels, label_smoothing=smoothing)

    return loss


def on_device_augment(augment: PretrainAugment, loss_fn: LossFn) -> LossFn:
    """``loss_fn`` on batches whose clips are still ``Frames``: they are cut on the
    accelerator first, batched (``PretrainAugment.apply_batch``)."""

    def loss(model: nn.Module, items: tuple[Any, ...], device: torch.device) -> torch.Tensor:
        clips, *rest = items
        if isinstance(clips, Frames):
            clips = augment.apply_batch(clips, device)
        return loss_fn(model, (clips, *rest), device)

    return loss


def _autocast(device: torch.device, dtype: torch.dtype | None) -> contextlib.AbstractContextManager:
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=dtype)


def _mean_over_ranks(value: torch.Tensor, info: DistInfo) -> float:
    value = value.detach().float().clone()
    if info.distributed:
        dist.all_reduce(value)
        value /= info.world
    return value.item()


def _no_sync(model: nn.Module, accumulating: bool) -> contextlib.AbstractContextManager:
    """DDP's gradient all-reduce skipped on a micro-batch that does not end a step."""
    if accumulating and isinstance(model, DistributedDataParallel):
        return model.no_sync()
    return contextlib.nullcontext()


def train_one_epoch(
    model: nn.Module,
    batches: Iterable[Batch],
    optimizer: torch.optim.Optimizer,
    scaler: torch.amp.GradScaler,
    lr_at: Callable[[int], float],
    loss_fn: LossFn,
    *,
    step: int,
    info: DistInfo,
    amp_dtype: torch.dtype | None,
    clip_grad: float,
    after_step: Callable[[int, dict[str, float], int], bool],
    on_rejections: Callable[[list[Rejection]], None],
    update_freq: int = 1,
) -> int:
    """Train over ``batches`` starting at global ``step``; returns the step reached.

    With ``update_freq > 1`` gradients accumulate over that many loader batches per optimiser
    step, as MAE's ``engine_pretrain.py`` does with ``accum_iter``: each loss is divided by
    ``update_freq`` and the optimiser and scaler step only when a window ends, so the step equals
    one over the larger batch, and ``lr_at`` counts optimiser steps. A window left open at the
    end of the epoch is dropped (its gradients are zeroed by the next epoch's first window).

    ``after_step(step, metrics, batches)`` logs and checkpoints (``batches``: the loader
    batches the step consumed, unreadable ones included), and returns False to stop early.
    ``metrics`` holds the step's ``data_s`` (waiting for the loader) and ``step_s`` (wall
    time since the previous step ended).
    """
    model.train()
    optimizer.zero_grad(set_to_none=True)
    pending, losses, lr = 0, [], 0.0
    waited, began = 0.0, time.perf_counter()
    for batch in _timed(batches):
        waited += batch.waited_s
        batch = batch.batch
        pending += 1
        if batch.rejections:
            on_rejections(batch.rejections)
        ends_step = pending % update_freq == 0
        if batch.items is not None:
            if not losses:
                lr = lr_at(step)
                set_lr(optimizer, lr)
            with _no_sync(model, not ends_step):
                with _autocast(info.device, amp_dtype):
                    loss = loss_fn(model, batch.items, info.device)
                if not math.isfinite(loss.item()):
                    raise NonFiniteLoss(f"loss is {loss.item()} at step {step}", step=step)
                scaler.scale(loss / update_freq).backward()
            losses.append(loss.detach())
        # A window whose batches were all unreadable has nothing to step on; its batches count
        # with the next step's.
        if not ends_step or not losses:
            continue
        grad_norm = torch.zeros(())
        if clip_grad > 0:
            scaler.unscale_(optimizer)
            grad_norm = nn.utils.clip_grad_norm_(model.parameters(), clip_grad)
        scaler.step(optimizer)
        scaler.update()
        optimizer.zero_grad(set_to_none=True)
        step += 1
        loss = _mean_over_ranks(torch.stack(losses).mean(), info)
        ended = time.perf_counter()
        metrics = {
            "loss": loss,
            "lr": lr,
            "grad_norm": float(grad_norm),
            "data_s": waited,
            "step_s": ended - began,
        }
        if not after_step(step, metrics, pending):
            break
        pending, losses = 0, []
        waited, began = 0.0, ended
    return step


@dataclass(slots=True)
class _Waited:
    batch: Batch
    waited_s: float
    """How long the loop waited for the loader to hand this batch over."""


def _timed(batches: Iterable[Batch]) -> Iterator[_Waited]:
    """The batches with the time spent waiting for each: the loss's ``item()`` synchronises
    every batch, so the wait is time the accelerator had nothing to do."""
    iterator = iter(batches)
    while True:
        start = time.perf_counter()
        batch = next(iterator, None)
        if batch is None:
            return
        yield _Waited(batch, time.perf_counter() - start)


@dataclass(slots=True)
class EvalResult:
    """Per-video averaged probabilities and what follows from them."""

    probabilities: np.ndarray
    """(videos, classes): softmax per view, averaged over the video's views."""
    labels: np.ndarray
    indices: np.ndarray
    rejections: list[Rejection] = field(default_factory=list)

    def topk(self, k: int) -> float:
        if len(self.labels) == 0:
            return float("nan")
        top = np.argsort(-self.probabilities, axis=1)[:, :k]
        return float(np.mean([label in row for label, row in zip(self.labels, top, strict=True)]))

    def predictions(self) -> np.ndarray:
        """The most probable class of each video (none when no video was readable)."""
        return self.probabilities.argmax(axis=1) if len(self.labels) else np.zeros(0, int)

    def per_class_accuracy(self, num_classes: int) -> np.ndarray:
        predicted = self.predictions()
        return np.array(
            [
                float(np.mean(predicted[self.labels == c] == c))
                if np.any(self.labels == c)
                else np.nan
                for c in range(num_classes)
            ]
        )


@torch.no_grad()
def evaluate(
    model: nn.Module, batches: Iterable[Batch], info: DistInfo, amp_dtype: torch.dtype | None
) -> EvalResult:
    """Multi-view testing: batches of ``(views (B, V, C, T, H, W), labels, index)``.

    Softmax per view, probabilities averaged per video; results of all ranks gathered.
    """
    model.eval()
    probs, labels, indices, rejections = [], [], [], []
    for batch in batches:
        rejections.extend(batch.rejections)
        if batch.items is None:
            continue
        views, label, index = batch.items
        b, v = views.shape[:2]
        with _autocast(info.device, amp_dtype):
            logits = model(views.flatten(0, 1).to(info.device, non_blocking=True))
        probs.append(logits.float().softmax(-1).view(b, v, -1).mean(1).cpu().numpy())
        labels.append(label.numpy())
        indices.append(index.numpy())
    parts = all_gather_objects((probs, labels, indices, rejections), info)
    gathered = [[x for part in parts for x in part[k]] for k in range(4)]
    result = EvalResult(
        probabilities=np.concatenate(gathered[0]) if gathered[0] else np.zeros((0, 0)),
        labels=np.concatenate(gathered[1]).astype(int) if gathered[1] else np.zeros(0, int),
        indices=np.concatenate(gathered[2]).astype(int) if gathered[2] else np.zeros(0, int),
        rejections=gathered[3],
    )
    # One row per video, in index order, whatever the ranks' shares were.
    _, first = np.unique(result.indices, return_index=True)
    result.probabilities, result.labels = result.probabilities[first], result.labels[first]
    result.indices = result.indices[first]
    return result
