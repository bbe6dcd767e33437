"""``h2a hashtags``, ``h2a collect`` and ``h2a store``: the command-line face of this package.

The logic lives in ``planning``, ``research_api`` and ``retention``; these commands parse flags,
build the settings and print tables. The store comes from ``H2A_STORE_*``; the research API
from ``H2A_RESEARCH_*`` (credentials only there or in a mounted secret, never as flags).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Literal

import click
from rich.console import Console
from rich.table import Table

from services.common.config import LoggingSettings, StoreSettings
from services.common.errors import H2AError, QuotaExceeded
from services.common.logs import configure_logging

if TYPE_CHECKING:
    from services.collection.retention import PurgeReport

__all__ = ["collect", "hashtags", "store"]

_SEED_CHOICES = ("ucf101", "hmdb51", "k400", "none")


def _setup() -> Console:
    settings = LoggingSettings()
    configure_logging("collection", settings.level, json_lines=False)
    # No markup: hashtags, queries ("IN [piano]") and paths are printed as they are.
    return Console(soft_wrap=False, markup=False, highlight=False)


def _read_list(path: Path | None) -> list[str]:
    """Non-empty lines of a text file, ``#`` comments dropped (a hashtag line keeps its tag)."""
    if path is None:
        return []
    entries = []
    for line in path.read_text(encoding="utf-8").splitlines():
        text = line.strip()
        if text and not (text.startswith("#") and " " in text):
            entries.append(text)
    return entries


@click.group()
def hashtags() -> None:
    """Plan which hashtags to collect (seed paper section 3.2)."""


@hashtags.command("plan")
@click.option(
    "--seeds",
    type=click.Choice(_SEED_CHOICES),
    multiple=True,
    help="Built-in class lists to start from (repeatable; default all three; 'none' for none).",
)
@click.option(
    "--actions",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Your own seed actions, one per line.",
)
@click.option(
    "--social",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Social/cultural hashtags (trends, challenges) to add, one per line.",
)
@click.option(
    "--views",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Known view counts: CSV rows hashtag,views ('44.4B' and '29.4 Million' are fine).",
)
@click.option(
    "--measure-views",
    is_flag=True,
    help="Measure views of tags without a known count through the research API.",
)
@click.option("--view-floor", type=int, default=5_000_000, show_default=True)
@click.option("--target", "target_videos", type=int, default=900, show_default=True)
@click.option(
    "--out",
    type=click.Path(dir_okay=False, path_type=Path),
    default=Path("hashtag-plan.yaml"),
    show_default=True,
)
def plan(
    seeds: tuple[str, ...],
    actions: Path | None,
    social: Path | None,
    views: Path | None,
    measure_views: bool,
    view_floor: int,
    target_videos: int,
    out: Path,
) -> None:
    """Turn benchmark actions into a reviewable hashtag plan (YAML) and print it."""
    from services.collection import planning
    from services.collection.actions import seed_actions

    console = _setup()
    lists = [name for name in (seeds or ("ucf101", "hmdb51", "k400")) if name != "none"]
    pairs = [(name, action) for name in lists for action in seed_actions(name)]
    pairs += [("user", action) for action in _read_list(actions)]
    known = planning.read_views_csv(views) if views else {}
    social_tags = _read_list(social)
    try:
        if measure_views:
            from services.collection.research_api import ResearchClient, ResearchSettings
            from services.collection.research_api import measure_views as measure

            draft = planning.build_plan(pairs, social_tags, known, view_floor, target_videos)
            unknown = [tag.tag for tag in draft.tags if tag.views is None]
            known |= measure(ResearchClient(ResearchSettings()), unknown)
        result = planning.build_plan(pairs, social_tags, known, view_floor, target_videos)
    except H2AError as error:
        raise click.ClickException(str(error)) from error
    planning.save_plan(result, out)
    table = Table(title=f"hashtag plan ({len(result.kept())} kept of {len(result.tags)})")
    table.add_column("hashtag", overflow="fold", max_width=24)
    table.add_column("category", no_wrap=True)
    table.add_column("views", justify="right", no_wrap=True)
    table.add_column("target", justify="right")
    table.add_column("rules")
    table.add_column("seeds")
    table.add_column("status")
    for tag in sorted(result.tags, key=lambda t: (not t.keep, t.category, t.tag)):
        table.add_row(
            f"#{tag.tag}",
            tag.category,
            "?" if tag.views is None else f"{tag.views:,}",
            str(tag.target_videos),
            tag.rule,
            tag.seeds[0] + (f" +{len(tag.seeds) - 1}" if len(tag.seeds) > 1 else ""),
            "keep" if tag.keep else f"drop: {tag.reason}",
        )
    console.print(table)
    console.print(f"plan written to {out}: review it, then run h2a collect --plan {out}")


@click.command()
@click.option(
    "--plan",
    "plan_path",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    required=True,
)
@click.option(
    "--out",
    type=click.Path(dir_okay=False, path_type=Path),
    required=True,
    help="Ingestion manifest (JSONL) to write; feed it to h2a curate.",
)
@click.option("--run", default=None, help="Run name for resumable state (default: plan name).")
@click.option(
    "--download",
    "download_dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Also fetch each kept video into this folder (the manifest then points at the files).",
)
@click.option(
    "--downloader",
    type=click.Choice(["auto", "http", "yt-dlp"]),
    default="auto",
    show_default=True,
    help="auto: yt-dlp when installed, else plain HTTP.",
)
def collect(
    plan_path: Path,
    out: Path,
    run: str | None,
    download_dir: Path | None,
    downloader: Literal["auto", "http", "yt-dlp"],
) -> None:
    """Collect the plan's hashtags through the research API into an ingestion manifest."""
    from services.collection.downloader import select_downloader
    from services.collection.planning import load_plan
    from services.collection.research_api import ResearchClient, ResearchSettings
    from services.collection.research_api import collect as run_collection
    from services.common.store import ClipStore

    console = _setup()
    run = run or plan_path.stem
    try:
        client = ResearchClient(ResearchSettings())
        fetcher = select_downloader(downloader) if download_dir else None
        summary = run_collection(
            load_plan(plan_path),
            client,
            ClipStore.from_settings(StoreSettings()),
            out,
            run,
            downloader=fetcher,
            download_dir=download_dir,
        )
    except QuotaExceeded as error:
        raise click.ClickException(
            f"{error}. Progress is saved; run the same command again (same --run {run}) to resume."
        ) from error
    except H2AError as error:
        raise click.ClickException(str(error)) from error
    table = Table(title=f"collection {run}: {sum(summary.kept.values())} videos")
    table.add_column("hashtag")
    table.add_column("kept", justify="right")
    table.add_column("missing", justify="right")
    for tag, count in summary.kept.items():
        table.add_row(f"#{tag}", str(count), str(summary.missing.get(tag, 0)))
    console.print(table)
    skipped = ", ".join(f"{reason}: {n}" for reason, n in sorted(summary.skipped.items()))
    console.print(f"skipped: {skipped or 'none'}; requests: {summary.requests}")
    console.print(f"manifest written to {summary.manifest}")


@click.group()
def store() -> None:
    """Retention and provenance of what the clip store holds."""


@store.command()
@click.option("--source", "sources", multiple=True, required=True, help="Source id (repeatable).")
def purge(sources: tuple[str, ...]) -> None:
    """Delete sources everywhere: raw video, metadata, clips, dataset records, state lines."""
    from services.collection.retention import purge_source
    from services.common.store import ClipStore

    console = _setup()
    clip_store = ClipStore.from_settings(StoreSettings())
    try:
        reports = [purge_source(clip_store, source_id) for source_id in sources]
    except H2AError as error:
        raise click.ClickException(str(error)) from error
    _show_purges(console, reports)


@store.command()
@click.option("--older-than", "days", type=float, required=True, help="Age limit in days.")
def retention(days: float) -> None:
    """Delete every source that entered the store more than DAYS ago."""
    from services.collection.retention import purge_older_than
    from services.common.store import ClipStore

    console = _setup()
    try:
        reports = purge_older_than(ClipStore.from_settings(StoreSettings()), days)
    except (H2AError, ValueError) as error:
        raise click.ClickException(str(error)) from error
    _show_purges(console, reports)


def _show_purges(console: Console, reports: list[PurgeReport]) -> None:
    if all(report.empty for report in reports):
        console.print("nothing to remove")
    for report in reports:
        if report.empty:
            console.print(f"source {report.source_id}: nothing stored")
            continue
        console.print(f"source {report.source_id}:")
        for key in report.deleted:
            console.print(f"  deleted {key}")
        for name, count in report.records.items():
            console.print(f"  removed {count} record(s) from dataset {name}")
        for key, count in report.lines.items():
            console.print(f"  removed {count} line(s) from {key}")


@store.command()
@click.argument("clip")
@click.option(
    "--out",
    type=click.Path(dir_okay=False, path_type=Path),
    required=True,
    help="The preview to write: .mp4 (H.264) or .gif.",
)
@click.option("--seconds", type=float, default=None, help="Longest preview [default: 4].")
@click.option("--fps", type=float, default=None, help="Preview frame rate [default: 8].")
def preview(clip: str, out: Path, seconds: float | None, fps: float | None) -> None:
    """Write the start of CLIP (a key or URI) with every face blurred, to show people."""
    from pydantic import ValidationError

    from services.common.store import ClipStore
    from services.curation.previews import PREVIEW_FORMATS, PreviewSettings, write_preview

    if out.suffix.lower() not in PREVIEW_FORMATS:
        raise click.BadParameter(f"must end in {' or '.join(PREVIEW_FORMATS)}", param_hint="--out")
    console = _setup()
    given = {
        name: value for name, value in {"seconds": seconds, "fps": fps}.items() if value is not None
    }
    try:
        settings = PreviewSettings(**given)
    except ValidationError as error:
        raise click.BadParameter(str(error)) from error
    clip_store = ClipStore.from_settings(StoreSettings())
    try:
        key = clip_store.key_from_uri(clip) if "://" in clip else clip
        with clip_store.open_local(key) as local:
            frames = write_preview(local, out, settings)
    except H2AError as error:
        raise click.ClickException(str(error)) from error
    # Not wrapped: the path stays one piece to copy.
    console.print(f"wrote {out} ({frames} frames, faces blurred)", soft_wrap=True)


@store.command()
@click.option("--source", "source_id", default=None, help="Show the clips of this source id.")
@click.option("--clip", "clip_key", default=None, help="Show this clip (key or URI).")
def show(source_id: str | None, clip_key: str | None) -> None:
    """Print the provenance of clips: source, hashtag, rule, query, timestamps."""
    from services.collection.retention import provenance
    from services.common.store import ClipStore

    if not source_id and not clip_key:
        raise click.UsageError("give --source or --clip")
    console = _setup()
    try:
        found = provenance(ClipStore.from_settings(StoreSettings()), source_id, clip_key)
    except H2AError as error:
        raise click.ClickException(str(error)) from error
    if not found:
        raise click.ClickException("no clip matches")
    table = Table(title=f"{len(found)} clip(s)")
    for column in (
        "dataset",
        "clip",
        "source id",
        "hashtag",
        "rule",
        "query",
        "collected",
        "clipped",
    ):
        table.add_column(column, overflow="fold")
    for dataset, record in found:
        metadata = record.metadata
        table.add_row(
            dataset,
            record.clip.key,
            record.source_id,
            f"#{record.hashtag}",
            str(metadata.get("rule", "")),
            str(metadata.get("query", "")),
            str(metadata.get("collected_at", "")),
            record.created_at,
        )
    console.print(table)
