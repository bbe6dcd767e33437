"""The dataset report a researcher reads: Markdown with PNG plots, as in the paper's appendix C.

Plots: clips per hashtag (bars), hashtags per count range 200-400 / 400-600 / 600-800 / 800+
(pie; small datasets add a "<200" slice so the pie is never empty), the duration of the source
videos in Table C1's bins 3.5-5 s / 5-10 s / 10+ s, and rejection reasons.
"""

from __future__ import annotations

import tempfile
from collections import Counter
from pathlib import Path

# Figures without pyplot: no global state (reports are written from worker threads and servers)
# and no display backend needed.
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from services.common.records import ClipRecord, ObjectRef, Rejection
from services.common.store import ClipStore

__all__ = ["COUNT_RANGES", "DURATION_BINS", "build_report", "write_report"]

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
) -> Path:
    """Write ``report.md`` and ``plots/*.png`` into ``folder``; return the report's path."""
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
        f"{len(review)} videos in the person review list, {len(rejections)} other rejections.",
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
    report = folder / "report.md"
    report.write_text("\n".join(lines), encoding="utf-8")
    return report


def write_report(store: ClipStore, dataset: str, out: Path | None = None) -> ObjectRef:
    """Build the report from the dataset's manifests and store it next to them.

    Args:
        store: the clip store holding ``manifests/{dataset}/``.
        dataset: the dataset name.
        out: also keep the report and plots in this local folder.

    Returns:
        The stored ``report.md``.
    """

    def lines(name: str) -> list[str]:
        return store.get_lines(ClipStore.manifest_key(dataset, name))

    clips = [ClipRecord.from_json(line) for line in lines("clips.jsonl")]
    review = [Rejection.from_json(line) for line in lines("review.jsonl")]
    rejections = [Rejection.from_json(line) for line in lines("rejections.jsonl")]
    with tempfile.TemporaryDirectory(prefix="h2a-report-") as temp:
        folder = Path(out) if out is not None else Path(temp)
        report = build_report(dataset, clips, review, rejections, folder)
        for plot in sorted((folder / "plots").glob("*.png")):
            store.put_file(ClipStore.manifest_key(dataset, f"plots/{plot.name}"), plot)
        return store.put_file(ClipStore.manifest_key(dataset, "report.md"), report)
