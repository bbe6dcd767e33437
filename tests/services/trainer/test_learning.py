"""The tiny model learns: direction of motion (needs temporal order) and pixel reconstruction."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from services.common.store import ClipStore
from services.trainer.main import resolve_config, run
from services.trainer.synthetic import write_moving_shapes


@pytest.fixture(scope="module")
def shapes(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return write_moving_shapes(tmp_path_factory.mktemp("shapes"), 48, 16, 32, seed=0)


@pytest.mark.timeout(480)
def test_finetune_reaches_90_percent_on_moving_squares(
    shapes: dict[str, Path], local_store: ClipStore, tmp_path: Path
) -> None:
    folder = shapes["train"].parent
    config = resolve_config(
        "finetune", "tiny_finetune", manifest=f"{folder}/", output=str(tmp_path / "ft"),
        overrides=("runtime.eval_every_epochs=20", "runtime.progress=false",
                   "data.test_crops=1", "data.test_segments=1"),
        store=local_store,
    )  # fmt: skip
    result = run("finetune", config, local_store)
    rows = [json.loads(line) for line in result.metrics.read_text().splitlines()]
    val = [row["val_top1"] for row in rows if "val_top1" in row]
    assert val and val[-1] >= 0.9, val
    assert result.evaluation["top1"] >= 0.9 and result.evaluation["videos"] == 4 * 24


@pytest.mark.timeout(300)
def test_pretraining_loss_falls(
    shapes: dict[str, Path], local_store: ClipStore, tmp_path: Path
) -> None:
    config = resolve_config(
        "pretrain", "tiny_pretrain", manifest=str(shapes["val"]), output=str(tmp_path / "pt"),
        overrides=("optim.epochs=8", "runtime.progress=false", "data.batch_size=8"),
        store=local_store,
    )  # fmt: skip
    result = run("pretrain", config, local_store)
    losses = [json.loads(line)["loss"] for line in result.metrics.read_text().splitlines()]
    assert result.steps == len(losses) == 8 * 12
    assert np.mean(losses[-10:]) < 0.8 * np.mean(losses[:10]), losses
