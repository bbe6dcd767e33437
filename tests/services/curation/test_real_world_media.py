"""Phone video as it arrives: stored sideways, at a variable frame rate, with frames that do not
decode. Each case is built from the real sample footage (176x144, a few seconds) and curated in
process beside the untouched original, whose clip must not change."""

from __future__ import annotations

import shutil
from pathlib import Path

import av
import numpy as np
import pytest

from services.clips.encode import ClipSettings
from services.common.config import StoreSettings
from services.common.records import ClipRecord, Outcome, Rejection, Segment
from services.common.store import ClipStore
from services.common.video import VideoReader, probe, write_frames
from services.curation.curate import CurateSettings, LocalStages, curate_one
from services.ingestion.sources import expand_source
from services.persons.detect import PersonSettings, detect_persons

SIZE = (176, 144)


def _footage(path: Path) -> list[np.ndarray]:
    with VideoReader(path) as video:
        return [image for _, image in video.arrays(*SIZE, "rgb24")]


def _remux(
    source: Path, dest: Path, damaged: range = range(0), rotate_tag: str | None = None
) -> None:
    """Copy ``source``'s packets into ``dest`` (format by suffix), garbling the frames at the
    display indices ``damaged`` and writing a legacy ``rotate`` tag."""
    rng = np.random.default_rng(0)
    with av.open(str(source)) as original, av.open(str(dest), "w") as copy:
        stream = original.streams.video[0]
        target = copy.add_stream_from_template(stream)
        if rotate_tag is not None:
            target.metadata["rotate"] = rotate_tag
        packets = [packet for packet in original.demux(stream) if packet.size]
        rank = {pts: index for index, pts in enumerate(sorted(p.pts for p in packets))}
        for packet in packets:
            if rank[packet.pts] in damaged:
                garbled = av.Packet(rng.integers(0, 256, packet.size, dtype=np.uint8).tobytes())
                garbled.pts, garbled.dts, garbled.duration = packet.pts, packet.dts, packet.duration
                garbled.time_base, garbled.is_keyframe = packet.time_base, packet.is_keyframe
                packet = garbled
            packet.stream = target
            copy.mux(packet)


@pytest.fixture(scope="module")
def curated(
    tmp_path_factory: pytest.TempPathFactory, carphone: Path, bigbuckbunny: Path
) -> tuple[ClipStore, dict[str, Outcome]]:
    folder = tmp_path_factory.mktemp("phone") / "talking"
    folder.mkdir()
    man, cartoon = _footage(carphone), _footage(bigbuckbunny)
    shutil.copy(carphone, folder / "original.mp4")
    # Portrait phone video: stored turned clockwise, a display matrix turns it back.
    write_frames(folder / "sideways.mp4", [np.rot90(f, -1) for f in man], 29.97, rotation=90)
    # An older file: stored turned counter-clockwise, and a legacy "rotate: 90" (clockwise) tag.
    write_frames(folder / "turned.mp4", [np.rot90(f, 1) for f in man], 29.97)
    _remux(folder / "turned.mp4", folder / "legacy.mkv", rotate_tag="90")
    (folder / "turned.mp4").unlink()
    # 120 cartoon frames at 60 fps (2.0 s), then a cut to 90 frames of the man at 20 fps (4.5 s).
    times = [i / 60 for i in range(120)] + [2.0 + i / 20 for i in range(90)]
    write_frames(folder / "vfr.mp4", cartoon[:120] + man[:90], 32, times_s=times)
    # The cartoon (60 frames), a cut, then 6 s of the man (forth and back) with a damaged stretch.
    shots = cartoon[:60] + man + man[::-1][:60]
    write_frames(folder / "intact.mp4", shots, 30)
    _remux(folder / "intact.mp4", folder / "damaged_late.mp4", damaged=range(205, 215))
    _remux(folder / "intact.mp4", folder / "damaged_middle.mp4", damaged=range(150, 160))
    (folder / "intact.mp4").unlink()
    store = ClipStore.from_settings(
        StoreSettings(backend="local", root=tmp_path_factory.mktemp("store"))
    )
    stages = LocalStages(store, CurateSettings())
    outcomes = {
        Path(item.location).stem: curate_one(item, stages, ClipSettings())
        for item in expand_source(str(folder))
    }
    return store, outcomes


def _clip(curated: tuple[ClipStore, dict[str, Outcome]], name: str) -> tuple[ClipRecord, Path]:
    store, outcomes = curated
    record = outcomes[name]
    assert isinstance(record, ClipRecord), record
    return record, store.transport.local_path(record.clip.key)


def test_the_original_is_unaffected(curated):
    record, path = _clip(curated, "original")
    assert (record.start_frame, record.end_frame, record.person_frames) == (0, 120, 10)
    clip = probe(path)
    assert (clip.width, clip.height, clip.frame_count) == (392, 320, 120)
    assert clip.duration_s == pytest.approx(120 / 29.97, abs=1e-3)


@pytest.mark.parametrize("name", ["sideways", "legacy"])
def test_rotated_video_is_detected_and_clipped_upright(curated, name: str):
    original, original_path = _clip(curated, "original")
    record, path = _clip(curated, name)
    assert record.person_frames == original.person_frames == 10
    # The detector saw the upright man: the original's scores, up to re-encoding noise.
    assert np.mean(record.person_scores) == pytest.approx(np.mean(original.person_scores), abs=0.03)
    clip = probe(path)
    assert (clip.width, clip.height, clip.rotation) == (392, 320, 0)
    with VideoReader(path) as turned, VideoReader(original_path) as upright:
        got, want = turned.sample([60], 392)[60], upright.sample([60], 392)[60]
    assert np.abs(got.astype(int) - want).mean() < 6


def test_sideways_frames_without_rotation_score_lower(curated, tmp_path: Path, carphone: Path):
    """What the detector saw before rotation was applied: the man lying on his side."""
    original, _ = _clip(curated, "original")
    write_frames(tmp_path / "s.mp4", [np.rot90(f, -1) for f in _footage(carphone)], 29.97)
    sideways = detect_persons(tmp_path / "s.mp4", Segment(0, 120, 29.97), PersonSettings())
    assert np.mean(sideways.scores) < np.mean(original.person_scores) - 0.05


def test_variable_frame_rate_is_timed_by_timestamps(curated):
    """By frame count the cartoon shot is longest; in source time the man's 4.5 s are."""
    record, path = _clip(curated, "vfr")
    assert (record.start_frame, record.end_frame) == (120, 210)
    assert record.fps == pytest.approx(20.0) and record.duration_s == pytest.approx(4.5)
    clip = probe(path)
    assert clip.frame_count == 90
    assert clip.duration_s == pytest.approx(4.5, abs=1e-3)  # plays the source time it covers


def test_undecodable_frames_rechoose_the_clip(curated):
    """Frames 205-214 do not decode: the scene is cut before them, and its 4.8 s still fit."""
    record, path = _clip(curated, "damaged_late")
    assert record.start_frame == 60 and record.end_frame <= 205
    clip = probe(path)
    assert clip.frame_count == record.end_frame - record.start_frame
    assert clip.duration_s >= 3.5


def test_undecodable_frames_reject_what_cannot_fit(curated):
    """Frames 150-159 split the man's 6 s into 3 s and under 3 s: no clip, TOO_SHORT."""
    _, outcomes = curated
    rejection = outcomes["damaged_middle"]
    assert isinstance(rejection, Rejection)
    assert (rejection.stage, rejection.reason) == ("clips", "TOO_SHORT")
    assert rejection.context["duration_s"] < 3.5
