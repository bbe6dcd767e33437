"""A run stopped after step k and resumed from its store checkpoint continues exactly."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from services.common.store import ClipStore
from services.trainer.main import run
from services.trainer.recipes import TrainConfig, apply_overrides, get_recipe
from services.trainer.synthetic import write_moving_shapes

REPO = Path(__file__).resolve().parents[3]


@pytest.fixture(scope="module")
def shapes(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return write_moving_shapes(tmp_path_factory.mktemp("shapes"), 2, 16, 32, seed=2)


def _config(shapes: dict[str, Path], output: Path, *extra: str) -> TrainConfig:
    # 8 videos, 2 per step, 2 epochs: 8 steps, resumed mid-way through the second epoch.
    return apply_overrides(
        get_recipe("tiny_pretrain"),
        [
            f"data.train={json.dumps(str(shapes['train']))}",
            f"runtime.output={json.dumps(str(output))}",
            f"checkpoint.run={output.name}",
            "data.batch_size=2",
            "runtime.progress=false",
            "checkpoint.interval_steps=100",
            *extra,
        ],
    )


def _losses(output: Path) -> dict[int, float]:
    """Loss per step; a step logged twice (by a killed run and its restart) keeps the last."""
    lines = (output / "metrics.jsonl").read_text().splitlines()
    return {row["step"]: row["loss"] for row in map(json.loads, lines) if "loss" in row}


def test_resume_after_stop_matches_uninterrupted_run(
    shapes: dict[str, Path], local_store: ClipStore, tmp_path: Path
) -> None:
    full = run("pretrain", _config(shapes, tmp_path / "full"), local_store)
    assert full.steps == 8

    stopped = run(
        "pretrain",
        _config(shapes, tmp_path / "cut", "runtime.max_steps=5", "checkpoint.interval_steps=5"),
        local_store,
    )
    assert stopped.steps == 5 and stopped.checkpoint.endswith("checkpoint-00000005.pth")
    resumed = run("pretrain", _config(shapes, tmp_path / "cut"), local_store)
    assert resumed.steps == 8

    expected, got = _losses(tmp_path / "full"), _losses(tmp_path / "cut")
    assert sorted(got) == list(range(1, 9))  # steps 1-5 from the first process, 6-8 resumed
    for step in range(1, 9):
        assert got[step] == pytest.approx(expected[step], rel=1e-5, abs=1e-7), step
    # The resumed run's final checkpoint carries the position a third start would continue from.
    state = torch.load(
        local_store.download(local_store.key_from_uri(resumed.checkpoint), tmp_path / "c.pth"),
        weights_only=True,
    )
    assert state["step"] == 8 and state["data"] == {"epoch": 2, "batches": 0}
    assert {"model", "optimizer", "epoch", "scaler", "args", "rng", "scheduler"} <= set(state)


@pytest.mark.timeout(300)
def test_resume_after_a_killed_process(
    shapes: dict[str, Path], local_store: ClipStore, tmp_path: Path
) -> None:
    # A long run (50 epochs) checkpointing every 2 steps, killed with SIGKILL once a checkpoint
    # exists; restarted with the same arguments, it continues from the store's latest checkpoint.
    overrides = [
        "--set", "checkpoint.interval_steps=2", "--set", "optim.epochs=50",
        "--set", "data.batch_size=2", "--set", f"data.train={json.dumps(str(shapes['train']))}",
    ]  # fmt: skip
    command = [
        sys.executable, "-m", "services.trainer", "pretrain", "--recipe", "tiny_pretrain",
        "--output", str(tmp_path / "killed"), "--set", "runtime.progress=false", *overrides,
    ]  # fmt: skip
    env = {**os.environ, "H2A_STORE_ROOT": str(local_store.transport.root), "PYTHONPATH": str(REPO)}
    process = subprocess.Popen(command, cwd=REPO, env=env, stderr=subprocess.PIPE, text=True)
    pointer = "checkpoints/killed/latest.json"
    deadline = time.monotonic() + 200
    while not local_store.exists(pointer) and process.poll() is None:
        assert time.monotonic() < deadline, "no checkpoint appeared"
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.communicate(timeout=30)
    assert process.returncode == -signal.SIGKILL
    saved = local_store.get_json(pointer)["step"]

    config = _config(shapes, tmp_path / "killed", "optim.epochs=50", "runtime.max_steps=12")
    resumed = run("pretrain", config, local_store)
    reference = run(
        "pretrain",
        _config(shapes, tmp_path / "ref", "optim.epochs=50", "runtime.max_steps=12"),
        local_store,
    )
    assert resumed.steps == reference.steps == 12 and saved < 12
    expected, got = _losses(tmp_path / "ref"), _losses(tmp_path / "killed")
    for step in range(saved + 1, 13):
        assert got[step] == pytest.approx(expected[step], rel=1e-5, abs=1e-7), step
