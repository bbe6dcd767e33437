"""``h2a pipeline run-local`` end to end: kfp's SubprocessRunner, real video, torchrun on CPU."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import torch
from click.testing import CliRunner

from pipelines.commands import pipeline
from services.common.config import StoreSettings
from services.common.store import ClipStore

pytestmark = pytest.mark.timeout(480)


def _task(run: Path, name: str) -> Path:
    """A task's folder; tasks inside a ParallelFor sit in ``for-loop-N-iteration-I/``."""
    (folder,) = (path.parent for path in run.rglob(f"{name}/executor_output.json"))
    return folder


def _outputs(task_folder: Path) -> dict[str, Any]:
    """A local task's executor output: artifact metadata by output name."""
    data = json.loads((task_folder / "executor_output.json").read_text())
    return {
        name: entry["artifacts"][0].get("metadata", {})
        for name, entry in data.get("artifacts", {}).items()
    }


@pytest.fixture(scope="module")
def local_run(tmp_path_factory: pytest.TempPathFactory, carphone: Path) -> dict[str, Any]:
    """One fast run: one talking-head video, the tiny ViT for one epoch, 8 synthetic clips."""
    folder = tmp_path_factory.mktemp("run-local")
    source = folder / "sources.jsonl"
    source.write_text(json.dumps({"url": str(carphone), "hashtag": "talking"}) + "\n")
    params = {
        "dataset": "demo",
        "shards": 1,
        "model_size": "tiny",
        "epochs": 1,
        "finetune_epochs": 1,
        "pretrain_overrides": ["data.batch_size=1", "runtime.progress=false"],
        "finetune_overrides": ["runtime.progress=false", "data.batch_size=8"],
        "benchmarks": ["synthetic"],
        "synthetic_per_class": 2,
    }
    args = ["run-local", "--source", str(source), "--store", str(folder / "store")]
    args += ["--pipeline-root", str(folder / "root")]
    for key, value in params.items():
        args += ["--param", f"{key}={json.dumps(value) if not isinstance(value, str) else value}"]
    result = CliRunner().invoke(pipeline, args, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    (run,) = (path for path in (folder / "root").iterdir() if path.name != "logs")
    (log,) = (folder / "root" / "logs").iterdir()
    return {"output": result.output, "run": run, "store": folder / "store", "log": log}


def test_run_prints_where_the_results_are(local_run: dict[str, Any]) -> None:
    output = local_run["output"]
    assert "dataset report artifact:" in output
    assert "| synthetic |" in output
    assert f"every step's output: {local_run['log']}" in output


def test_run_shows_task_progress_and_logs_the_rest(local_run: dict[str, Any]) -> None:
    output, log = local_run["output"], local_run["log"].read_text()
    for task in ("plan-shards", "curate-shard", "dataset-report", "pretrain", "summarize"):
        assert re.search(f"Task .*{task}.* finished with status", output), task
    assert "KFP Executor" in log and "KFP Executor" not in output, "executor chatter is logged"


def test_manifest_and_report_artifacts(local_run: dict[str, Any]) -> None:
    run, store_root = local_run["run"], local_run["store"]
    store = ClipStore.from_settings(StoreSettings(backend="local", root=store_root))
    manifest = (run / "dataset-report" / "manifest").read_text().splitlines()
    assert len(manifest) == 1 and manifest[0].endswith(" 0 -1")
    clip_uri = manifest[0].split()[0]
    assert store.exists(store.key_from_uri(clip_uri))
    report = (run / "dataset-report" / "report").read_text()
    assert "data:image/png;base64," in report, "plots are inlined for the KFP UI"
    counts = _outputs(run / "dataset-report")["counts"]
    assert counts["clips"] == 1
    assert store.get_lines(ClipStore.manifest_key("demo", "clips.jsonl"))
    shard = _outputs(_task(run, "curate-shard"))["clips"]
    assert shard["videos"] == 1 and shard["passed_persons"] == 1


def test_checkpoints_and_metrics(local_run: dict[str, Any]) -> None:
    run = local_run["run"]
    checkpoints = {
        task: torch.load(_task(run, task) / "checkpoint", map_location="cpu", weights_only=False)
        for task in ("pretrain", "finetune")
    }
    assert any(key.startswith("encoder.") for key in checkpoints["pretrain"]["model"])
    assert "head.weight" in checkpoints["finetune"]["model"]
    assert checkpoints["finetune"]["classes"] == ["left", "right", "up", "down"]
    metrics = _outputs(_task(run, "evaluate"))
    assert 0.0 <= metrics["metrics"]["top1"] <= metrics["metrics"]["top5"] <= 1.0
    matrix = metrics["confusion"]["confusionMatrix"]
    assert len(matrix["annotationSpecs"]) == 4
    assert sum(sum(row["row"]) for row in matrix["rows"]) == metrics["metrics"]["videos"]
    summary = (run / "summarize" / "summary").read_text()
    assert "| synthetic |" in summary
