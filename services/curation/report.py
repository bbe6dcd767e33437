"""The dataset report a researcher reads: Markdown with PNG plots, as in the paper's appendix C.

Plots: clips per hashtag (sorted bars; past ``LISTED_HASHTAGS`` hashtags, as at the paper's 386,
a histogram with the top and bottom 20 as tables and every count in an appendix), hashtags per
count range 200-400 / 400-600 / 600-800 / 800+ (pie; small datasets add a "<200" slice so the
pie is never empty), the duration of the source videos in Table C1's bins 3.5-5 s / 5-10 s /
10+ s, and rejection reasons. Then a contact sheet per hashtag under ``previews/``: frames of a
few of its clips with every face blurred (``services.curation.previews``), kept in the store
and named by what they show, so a publish makes only the sheets whose clips changed. The
duplicates removed and the clips left out by benchmark contamination checks, per hashtag and
with sample pairs, close it.
"""

from __future__ import annotations

import logging
import shutil
import statistics
from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

# Figures without pyplot: no global state (reports are written from worker threads and servers)
# and no display backend needed.
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from services.common.dataset import Contaminated, Dataset, Duplicate, Snapshot
from services.common.errors import ConfigError, H2AError
from services.common.records import ClipRecord, FailedAttempt, ObjectRef, Rejection
from services.common.scratch import scratch_dir
from services.common.store import ClipStore
from services.curation.previews import PreviewSettings, contact_sheet, sheet_clips, sheet_name

__all__ = [
    "COUNT_RANGES",
    "DURATION_BINS",
    "LISTED_HASHTAGS",
    "PREVIEWS_FOLDER",
    "REPORT_NAME",
    "build_report",
    "write_report",
]

_logger = logging.getLogger(__name__)

REPORT_NAME = "report.md"
"""The report's name among the dataset's views; its plots sit beside it under ``plots/``."""
PREVIEWS_FOLDER = "previews"
"""Beside the report: the face-blurred contact sheets (JPEG), one per hashtag."""
LISTED_HASHTAGS = 40
"""Up to this many hashtags, each has a bar and a table line; more get a histogram and the top
and bottom ``_EXTREMES`` in tables (a bar per hashtag stops being readable)."""
_EXTREMES = 20
_SAMPLE_PAIRS = 10

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


def _bars(counts: dict[str, int], title: str, label: str, path: Path) -> None:
    """Horizontal bars in the order of ``counts``, top to bottom: labels stay level and whole."""
    figure = Figure(figsize=(6.5, 1.3 + 0.3 * len(counts)))
    axis = figure.subplots()
    bars = axis.barh(list(counts), list(counts.values()), color="#4c72b0")
    axis.bar_label(bars, padding=3)
    axis.invert_yaxis()
    axis.set_title(title)
    axis.set_ylabel(label)
    axis.set_xlabel("count")
    axis.xaxis.set_major_locator(MaxNLocator(integer=True))
    axis.margins(x=0.12)
    _save(figure, path)


def _histogram(per_hashtag: dict[str, int], path: Path) -> None:
    """Hashtags by clip count, with the count-range bounds marked."""
    counts = list(per_hashtag.values())
    figure = Figure(figsize=(7.0, 4.0))
    axis = figure.subplots()
    axis.hist(counts, bins=min(40, len(set(counts))), color="#4c72b0")
    for _, low, _ in COUNT_RANGES[1:]:
        axis.axvline(low, color="#999999", linestyle=":", linewidth=1)
    median = statistics.median(counts)
    axis.axvline(median, color="#c44e52", linewidth=1.5, label=f"median {median:g}")
    axis.legend()
    axis.set_title(f"clips per hashtag ({len(counts)} hashtags)")
    axis.set_xlabel("clips of a hashtag")
    axis.set_ylabel("hashtags")
    axis.yaxis.set_major_locator(MaxNLocator(integer=True))
    _save(figure, path)


def _table(header: tuple[str, str], rows: dict[str, int]) -> list[str]:
    lines = [f"| {header[0]} | {header[1]} |", "|---|---:|"]
    lines += [f"| {key} | {value} |" for key, value in rows.items()]
    return lines


def _clips_per_hashtag(per_hashtag: dict[str, int], folder: Path) -> list[str]:
    """The section's plot, and its tables as Markdown lines."""
    plot = folder / "plots" / "clips_per_hashtag.png"
    ranked = dict(sorted(per_hashtag.items(), key=lambda item: (-item[1], item[0])))
    if len(ranked) <= LISTED_HASHTAGS:
        _bars(ranked or {"(none)": 0}, "clips per hashtag", "hashtag", plot)
        return _table(("hashtag", "clips"), ranked)
    _histogram(per_hashtag, plot)
    counts = list(ranked.values())
    top = dict(list(ranked.items())[:_EXTREMES])
    bottom = dict(sorted(ranked.items(), key=lambda item: (item[1], item[0]))[:_EXTREMES])
    return [
        f"{len(counts)} hashtags with {min(counts)} to {max(counts)} clips each: median "
        f"{statistics.median(counts):g}, mean {statistics.mean(counts):.1f}. Every count is in "
        "[All hashtags](#all-hashtags).",
        "",
        f"The {_EXTREMES} with most clips:",
        "",
        *_table(("hashtag", "clips"), top),
        "",
        f"The {_EXTREMES} with fewest clips:",
        "",
        *_table(("hashtag", "clips"), bottom),
    ]


def _sheets(
    dataset: str,
    clips: list[ClipRecord],
    folder: Path,
    store: ClipStore | None,
    settings: PreviewSettings,
) -> list[str]:
    """The previews section: each hashtag's contact sheet (reused from the store when it already
    holds one of the same name, else made into ``folder/previews``) as Markdown lines."""
    if store is None:
        return ["No previews: the report was built without the clip store."]
    chosen = sheet_clips(clips, settings.clips_per_sheet)
    if not chosen:
        return ["No clips to preview."]
    per_hashtag = Counter(record.hashtag for record in clips)
    target = Dataset(store, dataset)
    lines = [
        f"Every face is blurred. Each sheet shows {settings.frames_per_clip} frames of the "
        f"first {settings.clips_per_sheet} clips of a hashtag, one row per clip (its key is "
        "listed under the sheet: `h2a store preview KEY` makes a short face-blurred clip).",
    ]
    for hashtag, shown in chosen.items():
        name = sheet_name(hashtag, shown, settings)
        local = folder / PREVIEWS_FOLDER / name
        clip_count = f"{per_hashtag[hashtag]} clip{'s' if per_hashtag[hashtag] != 1 else ''}"
        lines += ["", f"### #{hashtag} ({clip_count})", ""]
        stored = target.view_key(f"{PREVIEWS_FOLDER}/{name}")
        try:
            if store.exists(stored):
                store.download(stored, local)
            else:
                contact_sheet(store, shown, local, settings)
        except ConfigError as error:
            # A missing face detector fails every sheet alike: say it once.
            _logger.warning("no previews", extra={"dataset": dataset, "error": str(error)})
            return [f"No previews: {error}"]
        except H2AError as error:
            # One unreadable or vanished clip must not cost the report; the next publish tries
            # the sheet again (nothing is stored under its name).
            _logger.warning(
                "contact sheet not made",
                extra={"dataset": dataset, "hashtag": hashtag, "error": str(error)},
            )
            lines.append(f"No sheet: {error}")
            continue
        alt = f"#{hashtag}".replace("]", "")
        lines += [
            f"![{alt}]({PREVIEWS_FOLDER}/{name})",
            "",
            "Rows: " + ", ".join(f"`{record.clip.key}`" for record in shown),
        ]
    return lines


def _most(counts: Counter[str]) -> dict[str, int]:
    """The ``_EXTREMES`` largest counts, largest first (ties by name)."""
    return dict(sorted(counts.items(), key=lambda item: (-item[1], item[0]))[:_EXTREMES])


def _duplicates(duplicates: Sequence[Duplicate]) -> list[str]:
    if not duplicates:
        return ["No near-duplicates among the signed clips."]
    per_hashtag = Counter(d.clip.hashtag for d in duplicates)
    lines = [
        f"{len(duplicates)} duplicates removed over {len(per_hashtag)} hashtags: each is within "
        "the signature threshold of a clip kept instead (more views, then earlier, then the "
        "smaller source id); all are in `duplicates.jsonl`.",
        "",
        *_table(("hashtag", "duplicates removed"), _most(per_hashtag)),
        "",
        "| removed | kept | distance |",
        "|---|---|---:|",
    ]
    lines += [
        f"| `{d.clip.clip.key}` | `{d.kept}` | {d.distance:g} |" for d in duplicates[:_SAMPLE_PAIRS]
    ]
    return lines


def _contamination(
    contaminated: Sequence[Contaminated], checks: Mapping[str, Mapping[str, Any]]
) -> list[str]:
    if not checks:
        return ["No benchmark was checked (`h2a dataset contamination NAME --benchmark ...`)."]
    flagged = Counter(c.benchmark for c in contaminated)
    lines = ["| benchmark | videos checked | clips left out | checked |", "|---|---:|---:|---|"]
    lines += [
        f"| {name} | {check.get('videos', 0)} | {flagged[name]} | {check.get('created_at', '')} |"
        for name, check in checks.items()
    ]
    if contaminated:
        per_hashtag = Counter(c.clip.hashtag for c in contaminated)
        lines += ["", *_table(("hashtag", "clips left out"), _most(per_hashtag)), ""]
        lines += ["| clip | benchmark | benchmark video | distance |", "|---|---|---|---:|"]
        lines += [
            f"| `{c.clip.clip.key}` | {c.benchmark} | `{c.video}` | {c.distance:g} |"
            for c in contaminated[:_SAMPLE_PAIRS]
        ]
    return lines


def build_report(
    dataset: str,
    clips: list[ClipRecord],
    review: list[Rejection],
    rejections: list[Rejection],
    folder: Path,
    pending: Sequence[FailedAttempt] = (),
    store: ClipStore | None = None,
    previews: PreviewSettings | None = None,
    duplicates: Sequence[Duplicate] = (),
    contaminated: Sequence[Contaminated] = (),
    checks: Mapping[str, Mapping[str, Any]] | None = None,
) -> Path:
    """Write ``report.md``, ``plots/*.png`` and ``previews/*.jpg`` into ``folder``.

    Args:
        dataset: the dataset's name.
        clips: its clips, in commit order (contact sheets show each hashtag's first ones).
        review: sources in the person review list.
        rejections: the other rejected sources.
        folder: where to write.
        pending: sources without an outcome yet whose last attempt failed (retried later).
        store: the clip store holding the clips; without it the report has no contact sheets.
        previews: how sheets are made (default: ``PreviewSettings()``, env ``H2A_PREVIEWS_*``).
        duplicates: clips left out as near-duplicates of kept ones.
        contaminated: clips left out by contamination checks.
        checks: the contamination check of each benchmark (``Snapshot.checks``).

    Returns:
        The report's path.
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

    clips_per_hashtag = _clips_per_hashtag(per_hashtag, folder)
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
    sheets = _sheets(dataset, clips, folder, store, previews or PreviewSettings())

    seconds = sum(c.duration_s for c in clips)
    lines = [
        f"# Dataset `{dataset}`",
        "",
        f"{len(clips)} clips ({seconds:.1f} s) over {len(per_hashtag)} hashtags; "
        f"{len(review)} videos in the person review list, {len(rejections)} other rejections, "
        f"{len(duplicates)} duplicates removed, {len(contaminated)} clips left out as benchmark "
        "contamination"
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
        *clips_per_hashtag,
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
        "## Previews",
        "",
        *sheets,
        "",
        "## Duplicates removed",
        "",
        *_duplicates(duplicates),
        "",
        "## Benchmark contamination",
        "",
        *_contamination(contaminated, checks or {}),
        "",
    ]
    if len(per_hashtag) > LISTED_HASHTAGS:
        lines += ["## All hashtags", "", *_table(("hashtag", "clips"), per_hashtag), ""]
    report = folder / REPORT_NAME
    report.write_text("\n".join(lines), encoding="utf-8")
    return report


def write_report(
    store: ClipStore,
    snapshot: Snapshot,
    out: Path | None = None,
    previews: PreviewSettings | None = None,
) -> ObjectRef:
    """Build the report of a dataset snapshot and store it among the dataset's views.

    Contact sheets no longer in the report (their hashtag's first clips changed, or left the
    dataset with a purge) are deleted from the store: a preview must not outlive its clips.

    Args:
        store: the clip store holding the dataset.
        snapshot: the state to report (``Dataset.snapshot()``).
        out: also keep the report, plots and sheets in this local folder.
        previews: how sheets are made (default: ``PreviewSettings()``).

    Returns:
        The stored report.
    """
    dataset = Dataset(store, snapshot.dataset)
    with scratch_dir("report") as folder:
        # Built in an empty folder, not in ``out``: a sheet left there by an earlier report
        # would be stored again.
        report = build_report(
            snapshot.dataset,
            list(snapshot.clips),
            list(snapshot.review),
            list(snapshot.rejections),
            folder,
            list(snapshot.pending),
            store,
            previews,
            snapshot.duplicates,
            snapshot.contaminated,
            snapshot.checks,
        )
        for plot in sorted((folder / "plots").glob("*.png")):
            store.put_file(dataset.view_key(f"plots/{plot.name}"), plot)
        sheets = {
            store.put_file(dataset.view_key(f"{PREVIEWS_FOLDER}/{sheet.name}"), sheet).key
            for sheet in sorted((folder / PREVIEWS_FOLDER).glob("*.jpg"))
        }
        stored = store.put_file(dataset.view_key(REPORT_NAME), report)
        for key in store.list(f"{dataset.view_key(PREVIEWS_FOLDER)}/"):
            if key not in sheets:
                store.delete(key)
        if out is not None:
            shutil.copytree(folder, out, dirs_exist_ok=True)
        return stored
