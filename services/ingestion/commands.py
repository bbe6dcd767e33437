"""``h2a curate``: the command-line face of ``services.ingestion.curate`` (logic lives there)."""

from __future__ import annotations

from pathlib import Path

import click

from services.common.config import LoggingSettings
from services.common.logs import configure_logging

__all__ = ["curate", "parse_services"]

_STAGE_NAMES = ("ingestion", "scenes", "persons", "clips")


def parse_services(text: str) -> dict[str, str]:
    """``ingestion=HOST:PORT,scenes=...`` -> ``{"ingestion": "HOST:PORT", ...}`` (all four)."""
    addresses = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        name, sep, address = part.partition("=")
        if not sep or name not in _STAGE_NAMES or ":" not in address:
            raise click.BadParameter(f"expected NAME=HOST:PORT with NAME in {_STAGE_NAMES}: {part}")
        addresses[name] = address
    missing = set(_STAGE_NAMES) - set(addresses)
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
    help="Local folder that receives a copy of the manifests and the report.",
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
@click.option("--progress/--no-progress", default=True, show_default=True)
def curate(
    source: str,
    dataset: str | None,
    out: Path,
    workers: int | None,
    hashtag: str | None,
    services_text: str | None,
    deadline: float,
    progress: bool,
) -> None:
    """Curate SOURCE (file, folder, URL, s3://bucket/prefix or manifest) into clips."""
    from services.common.store import ClipStore
    from services.ingestion import curate as engine

    logging_settings = LoggingSettings()
    configure_logging("curate", logging_settings.level, json_lines=False)
    services = parse_services(services_text) if services_text else None
    updates = {k: v for k, v in {"dataset": dataset, "workers": workers}.items() if v is not None}
    settings = engine.CurateSettings().model_copy(update=updates)
    store = ClipStore.from_settings(settings.store)
    stages = engine.build_stages(settings, store, services, deadline)
    summary = engine.curate(
        source,
        stages,
        store,
        dataset=settings.dataset,
        workers=settings.workers,
        progress=progress,
        clip_settings=settings.clips,
        hashtag=hashtag,
    )
    local = engine.export_dataset(store, settings.dataset, out)
    mode = "services" if services else "embedded"
    click.echo(
        f"curated {summary.videos} videos ({mode}) in {summary.elapsed_s:.1f} s: "
        f"{summary.clips_added} new clips ({summary.clips_total} in dataset "
        f"{summary.dataset!r}), {summary.review} to review, {summary.rejected} rejected"
    )
    for reason, count in sorted(summary.reasons.items()):
        click.echo(f"  {reason}: {count}")
    click.echo(f"store:     {store.describe()}")
    click.echo(f"manifests: {summary.manifests['clips.jsonl'].rsplit('/', 1)[0]}/")
    click.echo(f"report:    {summary.report}")
    click.echo(f"local:     {local}/report.md")
