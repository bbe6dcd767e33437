"""The data-scaling study (the VideoMAE V2 paper's Fig. 4: subsets of 1,000 to 6,000 videos,
3 repeats, UCF101 fine-tuning): its plan, its summary and verdict, its IR, and one local run on
the tiny model and the synthetic benchmark."""

from __future__ import annotations

import itertools
import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner

from pipelines.commands import study
from pipelines.steps import (
    plan_baselines,
    plan_subsets,
    study_markdown,
    study_plot_png,
    study_summary,
)
from services.common.config import StoreSettings
from services.common.dataset import Dataset
from services.common.records import ClipRecord
from services.common.store import ClipStore
from services.trainer.synthetic import CLASSES, write_moving_shapes

PNG = b"\x89PNG\r\n\x1a\n"


def _curated(store: ClipStore, folder: Path, name: str = "study") -> list[str]:
    """A published dataset of 8 moving-squares clips; returns its pretrain lines."""
    files = write_moving_shapes(folder, 2, 16, 32, seed=7)
    records = []
    for index, line in enumerate(files["train"].read_text().splitlines()):
        path, label = line.rsplit(" ", 1)
        source_id = f"{index:064x}"
        ref = store.put_file(store.clip_key(source_id, 0, 16), Path(path))
        records.append(ClipRecord(ref, source_id, path, CLASSES[int(label)], 0, 16, 25.0, 16))
    dataset = Dataset(store, name)
    dataset.add(records)
    return dataset.publish().pretrain_lines()


def test_subsets_are_independent_seeded_draws(local_store: ClipStore, tmp_path: Path) -> None:
    clips = _curated(local_store, tmp_path / "shapes")
    subsets = plan_subsets(local_store, "study", [4, 2], 3, 0, "job1", ["a=1"], ["b=2"])
    assert [(s["size"], s["repeat"]) for s in subsets] == [
        (2, 0),
        (2, 1),
        (2, 2),
        (4, 0),
        (4, 1),
        (4, 2),
    ]
    drawn = {}
    for subset in subsets:
        lines = local_store.get_lines(local_store.key_from_uri(subset["folder"]) + "pretrain.csv")
        assert len(lines) == len(set(lines)) == subset["size"] and set(lines) <= set(clips)
        drawn[subset["tag"]] = lines
        assert subset["run_id"] == f"{subset['tag']}-job1"
        assert subset["finetune_overrides"] == ["b=2", f"runtime.seed={subset['repeat']}"]
    assert len({tuple(lines) for lines in drawn.values()}) == 6, "repeats draw other clips"
    again = plan_subsets(local_store, "study", [2, 4], 3, 0, "job2", [], [])
    assert all(
        local_store.get_lines(local_store.key_from_uri(s["folder"]) + "pretrain.csv")
        == drawn[s["tag"]]
        for s in again
    ), "the same seed draws the same subsets"
    with pytest.raises(ValueError, match=r"\[1, 8\]"):
        plan_subsets(local_store, "study", [9], 1, 0, "job3", [], [])
    with pytest.raises(ValueError, match="repeats"):
        plan_subsets(local_store, "study", [2], 0, 0, "job3", [], [])
    assert [b["run_id"] for b in plan_baselines(2, 5, "job1", [])] == [
        "scratch-r0-job1",
        "scratch-r1-job1",
    ]


def _fabricated(top1: dict[int, list[float]], scratch: list[float]) -> dict[str, Any]:
    subsets = [
        {"tag": f"n{size}-r{r}", "size": size, "repeat": r, "run_id": f"n{size}-r{r}"}
        for size, values in top1.items()
        for r in range(len(values))
    ]
    results = [
        {"run": f"n{size}-r{r}", "top1": value, "top5": 1.0}
        for size, values in top1.items()
        for r, value in enumerate(values)
    ]
    baselines = [{"tag": f"scratch-r{r}", "run_id": f"scratch-r{r}"} for r in range(len(scratch))]
    scratch_results = [
        {"run": f"scratch-r{r}", "top1": v, "top5": 0.9} for r, v in enumerate(scratch)
    ]
    return study_summary(subsets, baselines, results, scratch_results)


def test_summary_spread_and_verdict() -> None:
    rising = _fabricated({1000: [0.5, 0.6, 0.7], 2000: [0.7, 0.7, 0.7]}, [0.3, 0.5])
    first = rising["sizes"][0]
    assert first["size"] == 1000 and first["repeats"] == 3
    assert first["top1"]["mean"] == pytest.approx(60.0) and first["top1"]["std"] == pytest.approx(
        10.0
    )
    assert (first["top1"]["min"], first["top1"]["max"]) == pytest.approx((50.0, 70.0))
    assert rising["scratch"]["top1"]["mean"] == pytest.approx(40.0) and rising["monotone"]
    falling = _fabricated({1000: [0.6], 2000: [0.8], 3000: [0.7]}, [0.1])
    assert not falling["monotone"]
    text = study_markdown(falling, "ucf101", PNG)
    assert "| 2000 | 1 | 80.00 ± 0.00 |" in text and "| from scratch | 1 | 10.00" in text
    assert "does not rise monotonically" in text
    assert study_plot_png(rising, "ucf101").startswith(PNG)
    with pytest.raises(ValueError, match="no evaluation"):
        study_summary([{"tag": "n1-r0", "size": 1, "run_id": "x"}], [], [], [])


def test_ir_fans_out_subsets_and_baselines_with_a_limit(tmp_path: Path) -> None:
    path = tmp_path / "study.yaml"
    result = CliRunner().invoke(
        study, ["scaling", "compile", "--output", str(path), "--parallelism", "3"]
    )
    assert result.exit_code == 0, result.output
    spec, _ = yaml.safe_load_all(path.read_text())
    dag = spec["root"]["dag"]["tasks"]
    tasks = {t["taskInfo"]["name"]: t for t in dag.values()}
    assert {"subset", "baseline", "study-report", "plan-study-subsets"} <= set(tasks)
    for loop in ("subset", "baseline"):
        assert tasks[loop]["iteratorPolicy"]["parallelismLimit"] == 3
    report_deps = {dag[key]["taskInfo"]["name"] for key in tasks["study-report"]["dependentTasks"]}
    assert report_deps >= {"subset", "baseline"}
    components = spec["components"]
    subset_dag = components[tasks["subset"]["componentRef"]["name"]]["dag"]["tasks"]
    assert {t["taskInfo"]["name"] for t in subset_dag.values()} == {
        "subset-manifest",
        "pretrain",
        "finetune",
        "evaluate",
    }
    pretrain = components[subset_dag["pretrain"]["componentRef"]["name"]]
    outputs = pretrain["outputDefinitions"]["artifacts"]
    assert outputs["curves"]["artifactType"]["schemaTitle"] == "system.Markdown"
    assert outputs["history"]["artifactType"]["schemaTitle"] == "system.Metrics"


def _outputs(task_folder: Path) -> dict[str, Any]:
    data = json.loads((task_folder / "executor_output.json").read_text())
    return {
        name: entry["artifacts"][0].get("metadata", {})
        for name, entry in data.get("artifacts", {}).items()
    }


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_a_local_study_plots_the_curve(tmp_path: Path) -> None:
    # 2 sizes x 1 repeat and one baseline, 1 epoch each: the whole DAG in CPU minutes (every
    # training step is a process of its own); repeats > 1 are the unit tests' above.
    store_root = tmp_path / "store"
    store = ClipStore.from_settings(StoreSettings(backend="local", root=store_root))
    _curated(store, tmp_path / "shapes")
    args = ["scaling", "run-local", "--dataset", "study", "--sizes", "2,4", "--repeats", "1"]
    args += ["--store", str(store_root), "--pipeline-root", str(tmp_path / "root")]
    params = {
        "epochs": 1,
        "finetune_epochs": 1,
        "synthetic_per_class": 2,
        "finetune_overrides": ["runtime.progress=false", "data.batch_size=8"],
    }
    for key, value in params.items():
        args += ["--param", f"{key}={json.dumps(value)}"]
    result = CliRunner().invoke(study, args, catch_exceptions=False)
    assert result.exit_code == 0, result.output

    (run,) = (path for path in (tmp_path / "root").iterdir() if path.name != "logs")
    report = (run / "study-report" / "report").read_text()
    assert (run / "study-report" / "plot").read_bytes().startswith(PNG)
    assert "data:image/png;base64," in report
    (results_key,) = [k for k in store.list("studies/study/") if k.endswith("results.json")]
    summary = store.get_json(results_key)
    assert [row["size"] for row in summary["sizes"]] == [2, 4]
    assert [len(row["runs"]) for row in summary["sizes"]] == [1, 1]
    assert summary["scratch"]["repeats"] == 1
    # The verdict follows from the measured means, whichever way they went.
    means = [row["top1"]["mean"] for row in summary["sizes"]]
    assert summary["monotone"] == all(b >= a for a, b in itertools.pairwise(means))
    verdict = "rises monotonically" if summary["monotone"] else "does not rise monotonically"
    assert f"Mean top-1 {verdict}" in report and f"Mean top-1 {verdict}" in result.output
    for name in ("n2-r0", "n4-r0"):
        assert any(
            k.startswith(f"checkpoints/pretrain-{name}-") for k in store.list("checkpoints/")
        )
    metrics_files = [k for k in store.list("checkpoints/") if k.endswith("/metrics.jsonl")]
    assert len(metrics_files) == 2 + 3, "every pre-training and fine-tuning run's history"
    # Training curves beside each training step's Metrics.
    for task in ("pretrain", "finetune"):
        for folder in (p.parent for p in run.rglob(f"{task}*/executor_output.json")):
            assert "data:image/png;base64," in (folder / "curves").read_text()
            assert _outputs(folder)["history"]["steps"] >= 1
