"""``h2a curate`` and ``h2a dataset``: the command-line faces of ``services.curation.curate`` and
``services.common.dataset`` (the logic lives there)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

import click

from services.common.config import LoggingSettings, StoreSettings
from services.common.errors import ServiceUnavailable
from services.common.logs import configure_logging
from services.common.records import STAGES

# Imported where used, so `h2a --help` stays free of the store and detector imports.
if TYPE_CHECKING:
    from services.common.dataset import Dataset

__all__ = ["EXIT_RETRY", "curate", "dataset", "parse_services"]

EXIT_RETRY = 75
"""Exit status of a run that left sources for a retry (sysexits' EX_TEMPFAIL)."""


def parse_services(text: str) -> dict[str, str]:
    """``ingestion=HOST:PORT,scenes=...`` -> ``{"ingestion": "HOST:PORT", ...}`` (all four)."""
    addresses = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        name, sep, address = part.partition("=")
        if not sep or name not in STAGES or ":" not in address:
            raise click.BadParameter(f"expected NAME=HOST:PORT with NAME in {STAGES}: {part}")
        addresses[name] = address
    missing = set(STAGES) - set(addresses)
    if missing:
        raise click.BadParameter(f"missing service addresses: {', '.join(sorted(missing))}")
    return addresses


@click.command()
@click.argument("source")
@click.option("--dataset", default=None, help="Dataset name (manifests/{dataset}/ in the store).")
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("runs/curate"),
    show_default=True,
    help="Local folder that receives a copy of the published lists and the report.",
)
@click.option("--workers", type=int, default=None, help="Videos processed concurrently.")
@click.option("--hashtag", default=None, help="Hashtag of videos that are not manifest rows.")
@click.option(
    "--services",
    "services_text",
    default=None,
    help="Run against services: ingestion=HOST:PORT,scenes=...,persons=...,clips=...",
)
@click.option(
    "--deadline",
    type=float,
    default=600.0,
    show_default=True,
    help="Per-call deadline in seconds with --services.",
)
@click.option(
    "--publish/--no-publish",
    default=True,
    show_default=True,
    help="Rebuild the dataset's lists and report after committing (reads the whole dataset); "
    "--no-publish only commits this run's records (`h2a dataset publish` later).",
)
@click.option("--progress/--no-progress", default=True, show_default=True)
def curate(
    source: str,
    dataset: str | None,
    out: Path,
    workers: int | None,
    hashtag: str | None,
    services_text: str | None,
    deadline: float,
    publish: bool,
    progress: bool,
) -> None:
    """Curate SOURCE (file, folder, URL, s3://bucket/prefix or manifest) into clips.

    Exits with status 75 when sources broke off on a retryable failure (a store or service
    that was unavailable, a deadline, a failed download): their outcome is not recorded and
    the next run over SOURCE tries them again.
    """
    from services.common.dataset import Dataset
    from services.common.store import ClipStore
    from services.curation import curate as engine

    logging_settings = LoggingSettings()
    configure_logging("curate", logging_settings.level, json_lines=False)
    services = parse_services(services_text) if services_text else None
    updates = {k: v for k, v in {"dataset": dataset, "workers": workers}.items() if v is not None}
    settings = engine.CurateSettings().model_copy(update=updates)
    store = ClipStore.from_settings(settings.store)
    try:
        stages = engine.build_stages(settings, store, services, deadline)
    except ServiceUnavailable as error:
        click.echo(f"not started: {error}", err=True)
        raise SystemExit(EXIT_RETRY) from None
    summary = engine.curate(
        source,
        stages,
        store,
        dataset=settings.dataset,
        workers=settings.workers,
        progress=progress,
        clip_settings=settings.clips,
        hashtag=hashtag,
        publish=publish,
        commit_every=settings.commit_every,
        max_attempts=settings.max_attempts,
    )
    mode = "services" if services else "embedded"
    totals = (
        f"{summary.clips_added} new clips ({summary.clips_total} in dataset {summary.dataset!r})"
        if summary.clips_total is not None
        else f"{summary.clips} clips committed to dataset {summary.dataset!r}"
    )
    click.echo(
        f"curated {summary.videos} videos ({mode}) in {summary.elapsed_s:.1f} s: {totals}, "
        f"{summary.review} to review, {summary.rejected} rejected, "
        f"{len(summary.failed)} to retry"
    )
    for reason, count in sorted(summary.reasons.items()):
        click.echo(f"  {reason}: {count}")
    for key in summary.repaired:
        click.echo(f"repaired:  {key} (failed verification: rewritten, or set aside in quarantine)")
    click.echo(f"store:     {store.describe()}")
    if publish:
        local = engine.export_dataset(store, settings.dataset, out)
        click.echo(f"manifests: {Dataset(store, settings.dataset).folder_uri()}")
        click.echo(f"report:    {summary.report}")
        click.echo(f"local:     {local}/report.md")
    if summary.failed:
        click.echo(f"{len(summary.failed)} sources left for a retry (run again to retry them):")
        for attempt in summary.failed:
            click.echo(f"  {attempt.source}: {attempt.stage} {attempt.reason}: {attempt.detail}")
        raise SystemExit(EXIT_RETRY)


@click.group()
def dataset() -> None:
    """Inspect, publish and compact curated datasets."""


def _open(name: str) -> Dataset:
    from services.common.dataset import Dataset
    from services.common.store import ClipStore

    configure_logging("dataset", LoggingSettings().level, json_lines=False)
    return Dataset(ClipStore.from_settings(StoreSettings()), name)


@dataset.command("publish")
@click.argument("name")
def publish(name: str) -> None:
    """Rebuild the lists and report of dataset NAME from its committed records."""
    from services.curation.curate import publish_dataset

    target = _open(name)
    snapshot = publish_dataset(target.store, name)
    click.echo(json.dumps(snapshot.counts(), sort_keys=True))


@dataset.command("show")
@click.argument("name")
def show(name: str) -> None:
    """Counts of dataset NAME's current state (clips, review, rejections, pending retries)."""
    click.echo(json.dumps(_open(name).snapshot().counts(), sort_keys=True))


@dataset.command("compact")
@click.argument("name")
def compact(name: str) -> None:
    """Fold dataset NAME's parts into one (readers stay fast after many runs)."""
    result = _open(name).compact()
    click.echo(f"compacted {len(result.replaced)} parts into {result.part}")


@dataset.command("contamination")
@click.argument("name")
@click.option(
    "--benchmark",
    "benchmarks",
    multiple=True,
    required=True,
    help="NAME=LOCATION: a VideoMAE list file or a folder of videos, local or in the store "
    "(repeat for more benchmarks).",
)
@click.option(
    "--keep", is_flag=True, help="Only report: leave flagged clips in the pre-training lists."
)
def contamination(name: str, benchmarks: tuple[str, ...], keep: bool) -> None:
    """Flag clips of dataset NAME that match a benchmark's evaluation videos; by default they
    leave the pre-training lists (recorded in contamination.jsonl and the report)."""
    from services.curation.contamination import check_contamination, parse_benchmarks
    from services.curation.curate import publish_dataset

    try:
        locations = parse_benchmarks(benchmarks)
    except ValueError as error:
        raise click.BadParameter(str(error), param_hint="--benchmark") from None
    target = _open(name)
    for check in check_contamination(target.store, name, locations, keep=keep):
        click.echo(
            f"{check.benchmark}: {len(check.matches)} clips match {check.videos} videos "
            f"({check.location})"
            + (f", {len(check.unreadable)} unreadable" if check.unreadable else "")
        )
        for hashtag, count in check.per_hashtag.items():
            click.echo(f"  #{hashtag}: {count}")
        for match in check.matches[:10]:
            click.echo(f"  {match['clip']} ~ {match['video']} (distance {match['distance']:g})")
    if keep:
        click.echo("--keep: nothing recorded, the lists are unchanged")
    else:
        snapshot = publish_dataset(target.store, name)
        click.echo(
            f"{len(snapshot.contaminated)} clips left out: {target.view_uri('contamination.jsonl')}"
        )


@dataset.command("shards")
@click.argument("name")
@click.option(
    "--max-bytes",
    type=click.IntRange(min=1),
    default=1 << 30,
    show_default=True,
    help="Target size of a shard in bytes.",
)
@click.option(
    "--repair",
    is_flag=True,
    help="Rebuild every shard even if the index says nothing changed; rewrites corrupted ones.",
)
@click.option("--progress/--no-progress", default=True, show_default=True)
def shards(name: str, max_bytes: int, repair: bool, progress: bool) -> None:
    """Write dataset NAME's clips as WebDataset shards and index.json for training."""
    from services.common.shards import INDEX_NAME, write_shards
    from services.common.store import ClipStore

    target = _open(name)
    index = write_shards(target.store, name, max_bytes=max_bytes, repair=repair, progress=progress)
    for key in target.store.drain_repairs():
        click.echo(f"repaired: {key}")
    uri = target.store.uri(ClipStore.shard_key(name, INDEX_NAME))
    click.echo(f"{len(index.shards)} shards, {index.samples} samples (version {index.version})")
    click.echo(f"train with: data.train={uri}")
