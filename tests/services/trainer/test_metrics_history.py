"""A run's metrics.jsonl beside its checkpoints in the store: pipeline steps plot it, and a run
resumed in a fresh pod (no local folder) continues the history instead of starting it again."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from services.common.store import ClipStore
from services.trainer.main import run
from services.trainer.recipes import TrainConfig, apply_overrides, get_recipe
from services.trainer.synthetic import write_moving_shapes


@pytest.fixture(scope="module")
def shapes(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return write_moving_shapes(tmp_path_factory.mktemp("shapes"), 2, 16, 32, seed=6)


def _config(shapes: dict[str, Path], output: Path, *extra: str) -> TrainConfig:
    return apply_overrides(
        get_recipe("tiny_pretrain"),
        [
            f"data.train={json.dumps(str(shapes['train']))}",
            f"runtime.output={json.dumps(str(output))}",
            "checkpoint.run=history",
            "data.batch_size=2",
            "runtime.progress=false",
            "checkpoint.interval_steps=2",
            *extra,
        ],
    )


def _steps(lines: list[str]) -> list[int]:
    return [row["step"] for row in map(json.loads, lines) if "loss" in row]


def test_history_is_published_and_continued_in_a_fresh_folder(
    shapes: dict[str, Path], local_store: ClipStore, tmp_path: Path
) -> None:
    key = "checkpoints/history/metrics.jsonl"
    stopped = run(
        "pretrain", _config(shapes, tmp_path / "pod1", "runtime.max_steps=3"), local_store
    )
    assert stopped.steps == 3 and _steps(local_store.get_lines(key)) == [1, 2, 3]
    resumed = run("pretrain", _config(shapes, tmp_path / "pod2"), local_store)
    assert resumed.steps == 8
    local = (tmp_path / "pod2" / "metrics.jsonl").read_text().splitlines()
    assert _steps(local) == list(range(1, 9)) == _steps(local_store.get_lines(key))
