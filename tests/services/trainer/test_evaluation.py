"""A test's outputs: the CSVs, the confusion matrix, the summary, and their copies in the store."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import numpy as np

from services.common.records import Rejection
from services.common.store import ClipStore
from services.trainer.data import VideoEntry
from services.trainer.engine import EvalResult
from services.trainer.evaluation import FILES, confusion_matrix, write_evaluation

NAMES = ["run", "jump", "swim"]  # "swim" has no video


def _result() -> EvalResult:
    # Four videos, given in the order the ranks gathered them: entries 3, 0, 2, 1.
    probabilities = np.array(
        [
            [0.7, 0.2, 0.1],  # run, right
            [0.1, 0.6, 0.3],  # run, taken for jump
            [0.2, 0.5, 0.3],  # jump, right
            [0.3, 0.3, 0.4],  # jump, taken for swim
        ]
    )
    broken = Rejection(source="broken.mp4", stage="eval", reason="UNREADABLE_VIDEO", detail="x")
    return EvalResult(probabilities, np.array([0, 0, 1, 1]), np.array([3, 0, 2, 1]), [broken])


def _entries() -> list[VideoEntry]:
    return [VideoEntry(path=f"v{i}.mp4", label=0) for i in range(4)]


def _rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def test_confusion_matrix_counts_label_by_prediction() -> None:
    assert confusion_matrix(_result(), 3).tolist() == [[1, 1, 0], [0, 1, 1], [0, 0, 0]]


def test_write_evaluation_writes_and_uploads_every_file(
    local_store: ClipStore, tmp_path: Path
) -> None:
    report = write_evaluation(_result(), _entries(), NAMES, tmp_path / "eval", local_store, "r1")

    assert report["top1"] == 0.5 and report["top5"] == 1.0 and report["videos"] == 4
    assert report["mean_class_accuracy"] == 0.5  # (1/2 + 1/2) / 2: "swim" has no video
    assert report["rejected"] == 1 and report["rejected_videos"] == ["broken.mp4"]

    files = {name: Path(entry["path"]) for name, entry in report["files"].items()}
    assert tuple(files) == FILES
    predictions = _rows(files["predictions.csv"])
    assert [(r["video"], r["label"], r["predicted"]) for r in predictions] == [
        ("v3.mp4", "run", "run"),
        ("v0.mp4", "run", "jump"),
        ("v2.mp4", "jump", "jump"),
        ("v1.mp4", "jump", "swim"),
    ]
    assert predictions[0]["confidence"] == "0.7000" and predictions[0]["top5"] == "run jump swim"
    per_class = _rows(files["per_class.csv"])
    assert [(r["class"], r["videos"]) for r in per_class] == [
        ("run", "2"),
        ("jump", "2"),
        ("swim", "0"),
    ]
    assert float(per_class[0]["accuracy"]) == 0.5 and math.isnan(float(per_class[2]["accuracy"]))
    assert files["confusion.png"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    summary = json.loads(files["summary.json"].read_text())
    assert summary == {k: v for k, v in report.items() if k != "files"}

    for name, entry in report["files"].items():
        key = local_store.key_from_uri(entry["uri"])
        assert key == f"checkpoints/r1/evaluation/{name}"
        copy = local_store.download(key, tmp_path / "copies" / name)
        assert copy.read_bytes() == files[name].read_bytes()


def test_a_test_without_readable_videos_writes_empty_reports(
    local_store: ClipStore, tmp_path: Path
) -> None:
    empty = EvalResult(np.zeros((0, 0)), np.zeros(0, int), np.zeros(0, int))
    report = write_evaluation(empty, [], NAMES, tmp_path / "eval", local_store, "r2")
    assert report["videos"] == 0 and math.isnan(report["top1"])
    assert math.isnan(report["mean_class_accuracy"])
    assert _rows(Path(report["files"]["predictions.csv"]["path"])) == []
    per_class = _rows(Path(report["files"]["per_class.csv"]["path"]))
    assert [(r["class"], r["videos"], r["accuracy"]) for r in per_class] == [
        (name, "0", "nan") for name in NAMES
    ]
