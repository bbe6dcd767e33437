"""The training loop: epochs of ``engine.train_one_epoch`` from a restored position to the end.

The loop reads as the plan, as torchtitan's: for each epoch from where the ``TrainProgress``
stands, point the sampler past the batches already trained on, train, validate; checkpoint when
due and at the end. Everything it changes is passed in: the model and optimiser, the progress,
and the ``CheckpointManager`` that saves them.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import torch
from timm.utils import ModelEmaV2
from torch import nn
from torch.utils.data import DataLoader
from tqdm import tqdm

from services.common.records import ObjectRef, Rejection
from services.common.store import ClipStore
from services.trainer.checkpoint import CheckpointManager
from services.trainer.data import Batch, ResumableSampler, ShardVideoDataset
from services.trainer.engine import EvalResult, LossFn, train_one_epoch
from services.trainer.optim import cosine_lr, effective_lr
from services.trainer.parallelize import DistInfo, unwrap
from services.trainer.recipes import TrainConfig

_logger = logging.getLogger(__name__)

__all__ = [
    "METRICS_NAME",
    "CosineSchedule",
    "MetricsLog",
    "RejectionLog",
    "TrainProgress",
    "build_schedule",
    "train",
]

METRICS_NAME = "metrics.jsonl"
"""The loss/lr/validation history of a run, locally and beside its checkpoints in the store."""


@dataclass(frozen=True, slots=True)
class CosineSchedule:
    """The lr of each step: linear warmup over ``warmup`` steps, then half a cosine."""

    total: int
    warmup: int
    peak: float
    warmup_lr: float
    min_lr: float

    def __call__(self, step: int) -> float:
        return cosine_lr(step, self.total, self.warmup, self.peak, self.warmup_lr, self.min_lr)


def build_schedule(config: TrainConfig, world: int, steps_per_epoch: int) -> CosineSchedule:
    """The schedule of a run on ``world`` processes with ``steps_per_epoch`` optimiser steps.

    Every lr of the recipe (peak, warmup start, floor) is scaled by the videos of one optimiser
    step, accumulated ones included, as the reference scales all three; ``optim.epochs`` and
    ``warmup_epochs`` are loader epochs, whatever ``data.num_sample``.
    """
    o = config.optim
    videos = config.data.batch_size * world * o.update_freq
    return CosineSchedule(
        total=o.epochs * steps_per_epoch,
        warmup=round(o.warmup_epochs * steps_per_epoch),
        peak=effective_lr(o.base_lr, videos),
        warmup_lr=effective_lr(o.warmup_lr, videos),
        min_lr=effective_lr(o.min_lr, videos),
    )


@dataclass(slots=True)
class TrainProgress:
    """Where training stands: the global step, the epoch, the batches done in it (Stateful).

    Saved as the checkpoint's own keys: ``step``; ``epoch``, the reference's key; ``data``, the
    sampler's position; ``scheduler``, the schedule's position (to read: the lr follows from the
    step and the config, so nothing restores it).
    """

    schedule: CosineSchedule
    step: int = 0
    epoch: int = 0
    batches: int = 0

    def state_dict(self) -> dict[str, Any]:
        s = self.schedule
        return {
            "step": self.step,
            "epoch": self.epoch,
            "scheduler": {"step": self.step, "total": s.total, "warmup": s.warmup, "peak": s.peak},
            "data": {"epoch": self.epoch, "batches": self.batches},
        }

    def load_state_dict(self, state: dict[str, Any], /) -> None:
        step, data = state["step"], state["data"]
        self.step, self.epoch, self.batches = step, data["epoch"], data["batches"]


class MetricsLog:
    """metrics.jsonl and TensorBoard on rank 0; nothing on the other ranks.

    With a ``store``, ``publish()`` copies metrics.jsonl to ``key`` (the loop calls it at every
    checkpoint and at the end): the history lives beside the checkpoints, where a pipeline step
    plots it and a run resumed in a fresh pod (``resumed``, no local file yet) continues it.
    """

    def __init__(
        self,
        folder: Path,
        enabled: bool,
        store: ClipStore | None = None,
        key: str = "",
        resumed: bool = False,
    ) -> None:
        self.path = folder / METRICS_NAME
        self.enabled = enabled
        self.store = store if enabled else None
        self.key = key
        self.writer = None
        if enabled:
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(str(folder / "tensorboard"))
        adopt = self.store is not None and resumed and not self.path.exists()
        if adopt and self.store.exists(key):
            self.store.download(key, self.path)

    def log(self, step: int, values: dict[str, Any]) -> None:
        if not self.enabled:
            return
        with open(self.path, "a") as handle:
            handle.write(json.dumps({"step": step, **values}) + "\n")
        for name, value in values.items():
            if isinstance(value, int | float) and self.writer is not None:
                self.writer.add_scalar(name, value, step)

    def publish(self) -> None:
        if self.store is not None and self.path.exists():
            self.store.put_file(self.key, self.path)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


class RejectionLog:
    """The videos a run skipped: rejections.jsonl on rank 0, and their sources in memory."""

    def __init__(self, path: Path, enabled: bool) -> None:
        self.path = path
        self.enabled = enabled
        self.sources: set[str] = set()

    def record(self, rejections: list[Rejection]) -> None:
        self.sources.update(r.source for r in rejections)
        if self.enabled and rejections:
            with open(self.path, "a") as handle:
                handle.writelines(r.to_json() + "\n" for r in rejections)


def train(
    model: nn.Module,
    loader: DataLoader,
    sampler: ResumableSampler | ShardVideoDataset,
    optimizer: torch.optim.Optimizer,
    scaler: torch.amp.GradScaler,
    loss_fn: LossFn,
    progress: TrainProgress,
    checkpoints: CheckpointManager,
    *,
    epochs: int,
    info: DistInfo,
    amp_dtype: torch.dtype | None,
    clip_grad: float,
    update_freq: int = 1,
    metrics: MetricsLog,
    rejections: RejectionLog,
    log_interval: int,
    max_steps: int = 0,
    validate: Callable[[], EvalResult] | None = None,
    eval_every_epochs: int = 1,
    show_progress: bool = False,
    ema: ModelEmaV2 | None = None,
) -> ObjectRef | None:
    """Train from ``progress`` to the end of its schedule, or to ``max_steps``.

    Args:
        model: the model to train, wrapped as ``parallelize`` returns it.
        loader: the training batches, drawn by ``sampler``.
        sampler: the sampler of ``loader``, or its shard stream; each epoch starts past
            ``progress.batches``.
        optimizer: the optimiser of the model's parameters.
        scaler: the fp16 grad scaler (disabled for other precisions).
        loss_fn: the loss of a batch (``engine.pretrain_step_loss`` or a classifier's).
        progress: where training stands; advanced in place.
        checkpoints: saves the run's state every ``checkpoints.interval`` steps and at the end.
        epochs: the epochs of the schedule.
        info: this process's rank and device.
        amp_dtype: the autocast dtype, None for fp32.
        clip_grad: the gradient-norm limit, 0 for none.
        update_freq: loader batches accumulated into one optimiser step.
        metrics: where losses and validation results go.
        rejections: where unreadable videos are recorded.
        log_interval: steps between two logged losses.
        max_steps: stop after this step (0: at the end of the schedule).
        validate: a validation pass, run every ``eval_every_epochs`` epochs.
        eval_every_epochs: epochs between two validations.
        show_progress: a progress bar per epoch.
        ema: a moving average of the weights, updated after every optimiser step.

    Returns:
        The final checkpoint, or None on a rank that does not write.
    """
    after_step = partial(
        _after_step,
        window=_Throughput(),
        progress=progress,
        checkpoints=checkpoints,
        metrics=metrics,
        log_interval=log_interval,
        max_steps=max_steps,
        ema=ema,
        model=unwrap(model),
    )
    while progress.epoch < epochs and progress.step < progress.schedule.total:
        sampler.set_epoch(progress.epoch, progress.batches * loader.batch_size)
        batches: Iterable[Batch] = iter(loader)
        if show_progress:
            batches = tqdm(batches, total=len(loader), desc=f"epoch {progress.epoch}", leave=False)
        train_one_epoch(
            model,
            batches,
            optimizer,
            scaler,
            progress.schedule,
            loss_fn,
            step=progress.step,
            info=info,
            amp_dtype=amp_dtype,
            clip_grad=clip_grad,
            after_step=after_step,
            on_rejections=rejections.record,
            update_freq=update_freq,
        )
        if max_steps and progress.step >= max_steps:
            break
        progress.epoch, progress.batches = progress.epoch + 1, 0
        if validate is not None and progress.epoch % eval_every_epochs == 0:
            result = validate()
            metrics.log(
                progress.step,
                {"epoch": progress.epoch, "val_top1": result.topk(1), "val_top5": result.topk(5)},
            )
    saved = checkpoints.save(progress.step)
    metrics.publish()
    return saved


@dataclass(slots=True)
class _Throughput:
    """Loader wait and step time summed over the steps since the last logged one."""

    data_s: float = 0.0
    step_s: float = 0.0
    steps: int = 0

    def add(self, values: dict[str, float]) -> dict[str, float]:
        """The step's values with the window's means in place of its own times; the window
        restarts when ``take`` is called."""
        self.data_s += values.pop("data_s", 0.0)
        self.step_s += values.pop("step_s", 0.0)
        self.steps += 1
        return values

    def take(self) -> dict[str, float]:
        steps = max(self.steps, 1)
        means = {
            "data_s": self.data_s / steps,
            "step_s": self.step_s / steps,
            "data_wait": self.data_s / self.step_s if self.step_s > 0 else 0.0,
        }
        self.data_s, self.step_s, self.steps = 0.0, 0.0, 0
        return means


def _after_step(
    step: int,
    values: dict[str, float],
    batches: int,
    *,
    window: _Throughput,
    progress: TrainProgress,
    checkpoints: CheckpointManager,
    metrics: MetricsLog,
    log_interval: int,
    max_steps: int,
    ema: ModelEmaV2 | None,
    model: nn.Module,
) -> bool:
    """Advance ``progress`` past the step's ``batches``, log, checkpoint when due; False stops
    the epoch. Checkpoints fall on step boundaries only, so a resumed run starts a window.

    A logged step carries the mean loader wait and step time of the steps since the last one
    and ``data_wait``, their ratio: the share of time the accelerator waited for data."""
    total = progress.schedule.total
    progress.step, progress.batches = step, progress.batches + batches
    if ema is not None:
        ema.update(model)
    values = window.add(dict(values))
    if step % log_interval == 0 or step == total:
        values.update(window.take())
        _logger.info(
            "step %d/%d loss %.4f lr %.3g | step %.3f s, data wait %.3f s (%.0f%%)",
            step,
            total,
            values["loss"],
            values["lr"],
            values["step_s"],
            values["data_s"],
            100 * values["data_wait"],
        )
        metrics.log(step, {"epoch": progress.epoch, **values, "time": time.time()})
    if checkpoints.due(step):
        checkpoints.save(step)
        metrics.publish()
    return step < total and not (max_steps and step >= max_steps)
