"""Two processes under torchrun (CPU, gloo) train exactly as one process at the same batch."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from services.common.config import StoreSettings
from services.common.store import ClipStore
from services.trainer.main import resolve_config, run
from services.trainer.synthetic import write_moving_shapes

REPO = Path(__file__).resolve().parents[3]


@pytest.fixture(scope="module")
def shapes(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return write_moving_shapes(tmp_path_factory.mktemp("shapes"), 2, 16, 32, seed=4)


def _losses(output: Path) -> list[float]:
    lines = (output / "metrics.jsonl").read_text().splitlines()
    return [row["loss"] for row in map(json.loads, lines) if "loss" in row]


def _args(per_process_batch: int) -> list[str]:
    # Two epochs of 8 videos at a global batch of 4: four steps. Fine-tuning: its loss is a plain
    # per-clip mean, so the mean over ranks of equal shares equals the one-process mean.
    return [
        "--set", f"data.batch_size={per_process_batch}",
        "--set", "optim.epochs=2",
        "--set", "runtime.log_interval=1",
        "--set", "optim.warmup_epochs=0.5",
        "--set", "runtime.progress=false",
    ]  # fmt: skip


@pytest.mark.timeout(300)
def test_torchrun_two_processes_match_one(shapes: dict[str, Path], tmp_path: Path) -> None:
    store_root = tmp_path / "store"
    env = {
        **os.environ,
        "H2A_STORE_ROOT": str(store_root),
        "H2A_LOG_JSON_LINES": "false",
        "OMP_NUM_THREADS": "1",
        "PYTHONPATH": str(REPO),
    }
    two = tmp_path / "two"
    command = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
        "-m", "services.trainer", "finetune", "--recipe", "tiny_finetune",
        "--manifest", str(shapes["train"]), "--output", str(two), *_args(2),
    ]  # fmt: skip
    done = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stderr[-3000:]

    one = tmp_path / "one"
    store = ClipStore.from_settings(StoreSettings(backend="local", root=store_root))
    config = resolve_config(
        "finetune", "tiny_finetune", manifest=str(shapes["train"]), output=str(one),
        overrides=tuple(_args(4)[1::2]), store=store,
    )  # fmt: skip
    result = run("finetune", config, store)

    assert result.steps == 4
    assert len(_losses(two)) == 4 and len(set(_losses(two))) == 4
    assert _losses(two) == pytest.approx(_losses(one), rel=1e-4)
    # Only rank 0 wrote metrics and checkpoints; both runs saved their final step.
    assert store.exists("checkpoints/two/checkpoint-00000004.pth")
    assert json.loads((two / "config.json").read_text())["data"]["batch_size"] == 2
