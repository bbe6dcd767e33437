"""The dataset report a researcher reads: Markdown with PNG plots, as in the paper's appendix C.

Plots: clips per hashtag (bars), hashtags per count range 200-400 / 400-600 / 600-800 / 800+
(pie; small datasets add a "<200" slice so the pie is never empty), the duration of the source
videos in Table C1's bins 3.5-5 s / 5-10 s / 10+ s, and rejection reasons.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from pathlib import Path

# Figures without pyplot: no global state (reports are written from worker threads and servers)
# and no display backend needed.
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from services.common.dataset import Dataset, Snapshot
from services.common.records import ClipRecord, FailedAttempt, ObjectRef, Rejection
from services.common.scratch import scratch_dir
from services.common.store import ClipStore

__all__ = ["COUNT_RANGES", "DURATION_BINS", "REPORT_NAME", "build_report", "write_report"]

REPORT_NAME = "report.md"
"""The report's name among the dataset's views; its plots sit beside it under ``plots/``."""

# (label, low inclusive, high exclusive)
COUNT_RANGES = (
    ("<200", 0, 200),
    ("200-400", 200, 400),
    ("400-600", 400, 600),
    ("600-800", 600, 800),
    ("800+", 800, float("inf")),
)
DURATION_BINS = (
    ("<3.5 s", 0.0, 3.5),
    ("3.5-5 s", 3.5, 5.0),
    ("5-10 s", 5.0, 10.0),
    ("10+ s", 10.0, float("inf")),
)


def _bin(value: float, bins: tuple[tuple[str, float, float], ...]) -> str:
    return next(label for label, low, high in bins if low <= value < high)


def _save(figure: Figure, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.tight_layout()
    figure.savefig(path, dpi=100)


def _bars(counts: dict[str, int], title: str, xlabel: str, path: Path) -> None:
    figure = Figure(figsize=(max(4.0, 0.5 * len(counts) + 2), 3.5))
    axis = figure.subplots()
    axis.bar(list(counts), list(counts.values()), color="#4c72b0")
    axis.set_title(title)
    axis.set_xlabel(xlabel)
    axis.set_ylabel("count")
    axis.yaxis.set_major_locator(MaxNLocator(integer=True))
    axis.tick_params(axis="x", labelrotation=45 if len(counts) > 6 else 0)
    _save(figure, path)


def _table(header: tuple[str, str], rows: dict[str, int]) -> list[str]:
    lines = [f"| {header[0]} | {header[1]} |", "|---|---:|"]
    lines += [f"| {key} | {value} |" for key, value in rows.items()]
    return lines


def build_report(
    dataset: str,
    clips: list[ClipRecord],
    review: list[Rejection],
    rejections: list[Rejection],
    folder: Path,
    pending: Sequence[FailedAttempt] = (),
) -> Path:
    """Write ``report.md`` and ``plots/*.png`` into ``folder``; return the report's path.

    ``pending`` are sources without an outcome yet whose last attempt failed (retried later).
    """
    folder = Path(folder)
    per_hashtag = dict(sorted(Counter(c.hashtag for c in clips).items()))
    ranges = Counter(_bin(n, COUNT_RANGES) for n in per_hashtag.values())
    ranges = {label: ranges[label] for label, _, _ in COUNT_RANGES if ranges[label]}
    durations = Counter(
        _bin(float(c.metadata.get("source_duration_s", c.duration_s)), DURATION_BINS) for c in clips
    )
    durations = {label: durations[label] for label, _, _ in DURATION_BINS}
    reasons = dict(Counter(r.reason for r in [*review, *rejections]).most_common())

    _bars(
        per_hashtag or {"(none)": 0},
        "clips per hashtag",
        "hashtag",
        folder / "plots" / "clips_per_hashtag.png",
    )
    figure = Figure(figsize=(4.5, 4.5))
    axis = figure.subplots()
    if ranges:
        axis.pie(list(ranges.values()), labels=list(ranges), autopct="%1.0f%%")
    axis.set_title("hashtags per clip-count range")
    _save(figure, folder / "plots" / "count_ranges.png")
    _bars(
        durations,
        "source video duration (Table C1 bins)",
        "duration",
        folder / "plots" / "durations.png",
    )
    _bars(
        reasons or {"(none)": 0},
        "rejections by reason",
        "reason",
        folder / "plots" / "rejections.png",
    )

    seconds = sum(c.duration_s for c in clips)
    lines = [
        f"# Dataset `{dataset}`",
        "",
        f"{len(clips)} clips ({seconds:.1f} s) over {len(per_hashtag)} hashtags; "
        f"{len(review)} videos in the person review list, {len(rejections)} other rejections"
        + (
            f", {len(pending)} waiting for a retry (their last attempt failed on an unavailable "
            "store, service or download)."
            if pending
            else "."
        ),
        "",
        "## Clips per hashtag",
        "",
        "![clips per hashtag](plots/clips_per_hashtag.png)",
        "",
        *_table(("hashtag", "clips"), per_hashtag),
        "",
        "## Hashtags per clip-count range",
        "",
        "![count ranges](plots/count_ranges.png)",
        "",
        *_table(("clips per hashtag", "hashtags"), ranges),
        "",
        "## Duration of the source videos",
        "",
        "![durations](plots/durations.png)",
        "",
        *_table(("duration", "videos"), durations),
        "",
        "## Rejections",
        "",
        "![rejections](plots/rejections.png)",
        "",
        *_table(("reason", "videos"), reasons),
        "",
    ]
    report = folder / REPORT_NAME
    report.write_text("\n".join(lines), encoding="utf-8")
    return report


def write_report(store: ClipStore, snapshot: Snapshot, out: Path | None = None) -> ObjectRef:
    """Build the report of a dataset snapshot and store it among the dataset's views.

    Args:
        store: the clip store holding the dataset.
        snapshot: the state to report (``Dataset.snapshot()``).
        out: also keep the report and plots in this local folder.

    Returns:
        The stored report.
    """
    dataset = Dataset(store, snapshot.dataset)
    with scratch_dir("report") as temp:
        folder = Path(out) if out is not None else Path(temp)
        report = build_report(
            snapshot.dataset,
            list(snapshot.clips),
            list(snapshot.review),
            list(snapshot.rejections),
            folder,
            list(snapshot.pending),
        )
        for plot in sorted((folder / "plots").glob("*.png")):
            store.put_file(dataset.view_key(f"plots/{plot.name}"), plot)
        return store.put_file(dataset.view_key(REPORT_NAME), report)
