"""In-process stages share one verified local copy of a video per run, and let it go."""

from __future__ import annotations

from pathlib import Path

import pytest

from services.clips.encode import ClipSettings
from services.common.records import ClipRecord, Rejection
from services.common.store import ClipStore
from services.curation.curate import CurateSettings, LocalStages, curate_one
from services.ingestion.sources import SourceItem


@pytest.fixture()
def opened(local_store: ClipStore, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The keys ``open_local`` verifies (each one hashes the whole file)."""
    keys: list[str] = []
    open_local = local_store.open_local

    def counting(ref):
        keys.append(ref.key)
        return open_local(ref)

    monkeypatch.setattr(local_store, "open_local", counting)
    return keys


def test_one_verified_copy_per_video_released_after_the_clip(
    local_store: ClipStore, opened: list[str], carphone: Path, bigbuckbunny: Path
):
    stages = LocalStages(local_store, CurateSettings())
    clip = curate_one(SourceItem(str(carphone), "talking"), stages, ClipSettings())
    review = curate_one(SourceItem(str(bigbuckbunny), "cartoon"), stages, ClipSettings())
    assert isinstance(clip, ClipRecord) and isinstance(review, Rejection)
    # Scenes, persons and clip of carphone; scenes and persons of the cartoon, sent to review.
    assert len(opened) == 2 and len(set(opened)) == 2
    assert stages._copies == {}


def test_a_run_ended_between_stages_leaves_at_most_workers_idle_copies(
    local_store: ClipStore, opened: list[str], bikes: Path, tmp_path: Path
):
    """bikes' longest scene is too short: the driver stops before the clip stage."""
    stages = LocalStages(local_store, CurateSettings(workers=1))
    sources = [tmp_path / f"bikes{i}.mp4" for i in range(3)]
    for index, source in enumerate(sources):
        source.write_bytes(bikes.read_bytes() + bytes(index))  # three distinct sources
    outcomes = [curate_one(SourceItem(str(s), "cycling"), stages, ClipSettings()) for s in sources]
    assert [o.reason for o in outcomes] == ["TOO_SHORT"] * 3
    assert len(opened) == 3
    assert len(stages._copies) == 1


def test_a_clip_over_the_stage_bound_is_a_too_long_rejection(
    local_store: ClipStore, carphone: Path
):
    """The driver chooses within its 10 s; a clip stage bounded at 3 s refuses what it encoded."""
    stages = LocalStages(
        local_store, CurateSettings(clips=ClipSettings(min_seconds=2.0, max_seconds=3.0))
    )
    outcome = curate_one(SourceItem(str(carphone), "talking"), stages, ClipSettings())
    assert isinstance(outcome, Rejection)
    assert (outcome.stage, outcome.reason) == ("clips", "TOO_LONG")
    assert outcome.context["duration_s"] > 3.0
    assert stages._copies == {}
