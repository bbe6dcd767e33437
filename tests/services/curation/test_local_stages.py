"""In-process stages share one verified local copy of a video per run, and let it go; a clip
that is a whole scene comes from the detector's pass."""

from __future__ import annotations

from pathlib import Path

import pytest

from services.clips.encode import ClipDraft, ClipSettings, encode_clip
from services.common.config import StoreSettings
from services.common.records import ClipRecord, Rejection, Segment
from services.common.store import ClipStore
from services.common.video import VideoReader, probe
from services.curation import fused
from services.curation.curate import CurateSettings, LocalStages, curate_one
from services.ingestion.sources import SourceItem
from services.persons.detect import PersonSettings, detect_persons


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


class _Passes:
    """Frames each VideoReader decoded, per reader, as it closes."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.decoded: list[int] = []
        close = VideoReader.close

        def counting(reader: VideoReader) -> None:
            self.decoded.append(reader.decoded)
            close(reader)

        monkeypatch.setattr(VideoReader, "close", counting)

    def full(self, frames: int) -> int:
        """Passes that decoded at least ``frames`` frames."""
        return sum(count >= frames for count in self.decoded)


def test_a_whole_scene_clip_is_decoded_once_for_the_detector_and_the_encoder(
    local_store: ClipStore, carphone: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    """carphone is one 4 s scene: the clip is the whole scene, whatever the detector says."""
    passes = _Passes(monkeypatch)
    stages = LocalStages(local_store, CurateSettings())
    record = curate_one(SourceItem(str(carphone), "talking"), stages, ClipSettings())
    assert isinstance(record, ClipRecord)
    assert (record.start_frame, record.end_frame) == (0, 120)
    # The scene pass and one pass for detector and clip.
    assert passes.full(100) == 2
    assert stages._copies == {}
    engine = len(passes.decoded)

    # The same scores and the very same clip bytes as the stages run apart.
    apart = ClipStore.from_settings(StoreSettings(backend="local", root=tmp_path / "apart"))
    segment = Segment(record.start_frame, record.end_frame, record.fps)
    assert detect_persons(carphone, segment, PersonSettings()).scores == record.person_scores
    info = probe(carphone)
    encoded = encode_clip(carphone, record.source_id, segment, apart, ClipSettings(), info)
    assert encoded.clip.sha256 == record.clip.sha256
    assert encoded.media == record.media
    # Apart, the sampler's pass decodes frames the clip's pass decodes again.
    assert sum(passes.decoded[engine:]) > 120


def test_a_scene_sent_to_review_stores_no_clip_and_leaves_no_draft(
    local_store: ClipStore, bigbuckbunny: Path, monkeypatch: pytest.MonkeyPatch
):
    """The cartoon's one 5.3 s scene is encoded on the detector's pass, then thrown away."""
    drafts: list[ClipDraft] = []

    class Recorded(ClipDraft):
        def __init__(self, *args, **kwargs) -> None:
            super().__init__(*args, **kwargs)
            drafts.append(self)

    monkeypatch.setattr(fused, "ClipDraft", Recorded)
    stages = LocalStages(local_store, CurateSettings())
    review = curate_one(SourceItem(str(bigbuckbunny), "cartoon"), stages, ClipSettings())
    assert isinstance(review, Rejection) and review.reason == "TOO_FEW_PERSON_FRAMES"
    assert len(drafts) == 1 and not drafts[0]._writer.dest.exists()
    assert list(local_store.list("clips/")) == []
    assert stages._copies == {}


def test_a_stored_clip_is_reused_without_encoding_it_again(
    local_store: ClipStore, carphone: Path, monkeypatch: pytest.MonkeyPatch
):
    stages = LocalStages(local_store, CurateSettings())
    first = curate_one(SourceItem(str(carphone), "talking"), stages, ClipSettings())
    passes = _Passes(monkeypatch)
    again = curate_one(SourceItem(str(carphone), "talking"), stages, ClipSettings())
    assert isinstance(again, ClipRecord) and again.clip == first.clip
    # The scene pass, and the sampler's sparse pass: no draft is encoded for a stored clip.
    assert passes.full(100) == 1
