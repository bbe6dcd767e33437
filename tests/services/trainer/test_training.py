"""The training loop: checkpoints when due and at the end, validation per epoch, early stops."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from torch.utils.data import Dataset

from services.common.records import Rejection
from services.common.store import ClipStore
from services.trainer.checkpoint import CheckpointManager
from services.trainer.data import ResumableSampler, build_loader
from services.trainer.engine import EvalResult, classify_step_loss
from services.trainer.optim import build_optimizer
from services.trainer.parallelize import DistInfo
from services.trainer.training import (
    CosineSchedule,
    MetricsLog,
    RejectionLog,
    TrainProgress,
    train,
)
from services.trainer.videomae import create_classifier

CPU = DistInfo(rank=0, world=1, local_rank=0, device=torch.device("cpu"))


class _Clips(Dataset):
    """Eight random clips of 4 classes; item 5 is unreadable."""

    def __len__(self) -> int:
        return 8

    def __getitem__(self, key: tuple[int, int]) -> Any:
        _, index = key
        if index == 5:
            return Rejection(source="v5.mp4", stage="train-data", reason="UNREADABLE", detail="")
        clip = torch.randn(1, 3, 4, 16, 16, generator=torch.Generator().manual_seed(index))
        return clip, torch.tensor([index % 4]), None, index


def _train(
    store: ClipStore, output: Path, *, max_steps: int = 0, validate: Any = None
) -> tuple[Any, TrainProgress, RejectionLog]:
    torch.manual_seed(0)
    model = create_classifier(
        "vit_small_patch16_224", 4, num_frames=4, img_size=16, patch_size=8,
        embed_dim=32, depth=1, num_heads=2,
    )  # fmt: skip
    sampler = ResumableSampler(8, 0, 1, seed=0)
    loader = build_loader(_Clips(), 2, 0, sampler)
    optimizer = build_optimizer(model, 1e-3, 0.05, (0.9, 0.999))
    scaler = torch.amp.GradScaler("cpu", enabled=False)
    progress = TrainProgress(CosineSchedule(total=8, warmup=2, peak=1e-3, warmup_lr=0, min_lr=0))
    checkpoints = CheckpointManager(
        store, output.name, 3, 2, {"model": model, "optimizer": optimizer}, progress=progress
    )
    metrics = MetricsLog(output, enabled=True)
    rejections = RejectionLog(output / "rejections.jsonl", enabled=True)
    try:
        saved = train(
            model, loader, sampler, optimizer, scaler, classify_step_loss(None, 0.0), progress,
            checkpoints, epochs=2, info=CPU, amp_dtype=None, clip_grad=0.0, metrics=metrics,
            rejections=rejections, log_interval=1, max_steps=max_steps, validate=validate,
        )  # fmt: skip
    finally:
        metrics.close()
    return saved, progress, rejections


def _logged(output: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (output / "metrics.jsonl").read_text().splitlines()]


def test_two_epochs_checkpoint_when_due_and_at_the_end(
    local_store: ClipStore, tmp_path: Path
) -> None:
    validations: list[int] = []

    def validate() -> EvalResult:
        validations.append(1)
        return EvalResult(np.array([[0.9, 0.1], [0.4, 0.6]]), np.array([0, 0]), np.array([0, 1]))

    output = tmp_path / "full"
    output.mkdir()
    saved, progress, rejections = _train(local_store, output, validate=validate)

    assert (progress.step, progress.epoch, progress.batches) == (8, 2, 0)
    assert saved.key == "checkpoints/full/checkpoint-00000008.pth"
    assert sorted(local_store.list("checkpoints/full/")) == [
        "checkpoints/full/checkpoint-00000006.pth",
        "checkpoints/full/checkpoint-00000008.pth",
        "checkpoints/full/latest.json",
    ]
    logged = _logged(output)
    assert [row["step"] for row in logged if "loss" in row] == list(range(1, 9))
    # Every logged step says how long the loop waited for data, against the step time.
    for row in (row for row in logged if "loss" in row):
        assert 0 <= row["data_s"] <= row["step_s"]
        assert row["data_wait"] == pytest.approx(row["data_s"] / row["step_s"])
    assert [(row["step"], row["val_top1"]) for row in logged if "val_top1" in row] == [
        (4, 0.5),
        (8, 0.5),
    ]
    assert len(validations) == 2
    # The unreadable video is skipped (its batch trains on the other one), once per epoch.
    assert rejections.sources == {"v5.mp4"}
    assert (output / "rejections.jsonl").read_text().count("v5.mp4") == 2


def test_max_steps_stops_mid_epoch_and_saves_the_position(
    local_store: ClipStore, tmp_path: Path
) -> None:
    output = tmp_path / "cut"
    output.mkdir()
    saved, progress, _ = _train(local_store, output, max_steps=5)
    assert (progress.step, progress.epoch, progress.batches) == (5, 1, 1)
    assert saved.key == "checkpoints/cut/checkpoint-00000005.pth"
    state = CheckpointManager(local_store, "cut", 3, 2).load()
    assert state["step"] == 5 and state["data"] == {"epoch": 1, "batches": 1}
    assert [row["step"] for row in _logged(output)] == [1, 2, 3, 4, 5]
