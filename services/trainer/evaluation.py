"""A test's outputs: predictions, per-class accuracy, the confusion matrix and a summary.

``write_evaluation`` writes them to a local folder and uploads them to the store under
``checkpoints/{run}/evaluation/``; the other functions are its parts.
"""

from __future__ import annotations

import csv
import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from services.common.store import ClipStore
from services.trainer.data import VideoEntry
from services.trainer.engine import EvalResult

__all__ = [
    "FILES",
    "confusion_matrix",
    "plot_confusion",
    "summarize",
    "write_evaluation",
    "write_per_class",
    "write_predictions",
]

_logger = logging.getLogger(__name__)

FILES = ("predictions.csv", "per_class.csv", "confusion.png", "summary.json")
"""What ``write_evaluation`` writes and uploads."""


def confusion_matrix(result: EvalResult, num_classes: int) -> np.ndarray:
    """Video counts, rows the label, columns the prediction."""
    confusion = np.zeros((num_classes, num_classes), dtype=int)
    np.add.at(confusion, (result.labels, result.predictions()), 1)
    return confusion


def write_predictions(
    path: Path, result: EvalResult, entries: Sequence[VideoEntry], names: Sequence[str]
) -> None:
    """One row per video: its path, label, prediction, the prediction's probability, top 5."""
    predicted = result.predictions()
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["video", "label", "predicted", "confidence", "top5"])
        for row, index in enumerate(result.indices):
            top5 = np.argsort(-result.probabilities[row])[:5]
            writer.writerow([
                entries[index].path, names[result.labels[row]], names[predicted[row]],
                f"{result.probabilities[row, predicted[row]]:.4f}",
                " ".join(names[k] for k in top5),
            ])  # fmt: skip


def write_per_class(path: Path, result: EvalResult, names: Sequence[str]) -> np.ndarray:
    """One row per class: its name, its videos, its accuracy (nan without videos).

    Returns:
        The accuracy of each class.
    """
    per_class = result.per_class_accuracy(len(names))
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["class", "videos", "accuracy"])
        for c, name in enumerate(names):
            writer.writerow([name, int(np.sum(result.labels == c)), f"{per_class[c]:.4f}"])
    return per_class


def plot_confusion(path: Path, confusion: np.ndarray, names: Sequence[str]) -> None:
    """The confusion matrix as a PNG; class names on the axes up to 60 classes."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    num_classes = len(names)
    side = min(20.0, 3 + 0.3 * num_classes)
    figure, axes = plt.subplots(figsize=(side, side))
    axes.imshow(confusion, cmap="Blues")
    if num_classes <= 60:
        axes.set_xticks(range(num_classes), names, rotation=90, fontsize=6)
        axes.set_yticks(range(num_classes), names, fontsize=6)
    axes.set_xlabel("predicted")
    axes.set_ylabel("label")
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)


def summarize(result: EvalResult, per_class: np.ndarray) -> dict[str, Any]:
    """Top-1, top-5, mean class accuracy, the videos tested and the videos skipped."""
    return {
        "top1": result.topk(1),
        "top5": result.topk(5),
        "mean_class_accuracy": float(np.nanmean(per_class)) if len(result.labels) else float("nan"),
        "videos": len(result.labels),
        "rejected": len(result.rejections),
        "rejected_videos": [r.source for r in result.rejections],
    }


def write_evaluation(
    result: EvalResult,
    entries: Sequence[VideoEntry],
    names: Sequence[str],
    folder: Path,
    store: ClipStore,
    run: str,
) -> dict[str, Any]:
    """Write and upload the outputs of a test.

    Args:
        result: the gathered multi-view result.
        entries: the tested videos; ``result.indices`` index them.
        names: the class names, by label.
        folder: the local folder of the files.
        store: where the files are uploaded.
        run: the run whose ``checkpoints/{run}/evaluation/`` receives them.

    Returns:
        The summary (``top1``, ``top5``, ``mean_class_accuracy``, ``videos``, ``rejected``,
        ``rejected_videos``) and ``files``: each file's local ``path`` and store ``uri``.
    """
    folder.mkdir(parents=True, exist_ok=True)
    write_predictions(folder / "predictions.csv", result, entries, names)
    per_class = write_per_class(folder / "per_class.csv", result, names)
    plot_confusion(folder / "confusion.png", confusion_matrix(result, len(names)), names)
    summary = summarize(result, per_class)
    (folder / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    files = {}
    for name in FILES:
        ref = store.put_file(store.checkpoint_key(run, f"evaluation/{name}"), folder / name)
        files[name] = {"path": str(folder / name), "uri": ref.uri}
    _logger.info(
        "evaluation: top1 %.4f top5 %.4f over %d videos",
        summary["top1"],
        summary["top5"],
        summary["videos"],
    )
    return {**summary, "files": files}
