"""Scene detection on real media: bikes' five hard cuts, carphone's single shot."""

from __future__ import annotations

from pathlib import Path

import pytest

from services.common.errors import UnreadableVideo
from services.common.video import probe
from services.scenes.detect import SceneResult, SceneSettings, detect_scenes

BIKES_CUTS = [0, 30, 76, 137, 187, 242, 250]


@pytest.mark.parametrize("detector", ["adaptive", "content"])
def test_bikes_cuts_and_longest_scene(bikes: Path, detector: str):
    result = detect_scenes(bikes, probe(bikes), SceneSettings(detector=detector))
    bounds = [s.start_frame for s in result.scenes] + [result.scenes[-1].end_frame]
    assert bounds == BIKES_CUTS
    assert (result.longest.start_frame, result.longest.end_frame) == (76, 137)
    assert result.longest.fps == pytest.approx(25.0)


def test_a_video_without_cut_is_one_scene(carphone: Path):
    result = detect_scenes(carphone, probe(carphone), SceneSettings())
    assert [(s.start_frame, s.end_frame) for s in result.scenes] == [(0, 120)]


def test_threshold_is_honoured(bikes: Path):
    # A content threshold above any frame difference finds no cut at all.
    result = detect_scenes(
        bikes, probe(bikes), SceneSettings(detector="content", content_threshold=255)
    )
    assert len(result.scenes) == 1 and result.longest.num_frames == 250


def test_undecodable_video_is_typed(bikes: Path, tmp_path: Path):
    info = probe(bikes)
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(b"garbage" * 100)
    with pytest.raises(UnreadableVideo):
        detect_scenes(broken, info, SceneSettings())


def test_scene_result_validates():
    with pytest.raises(ValueError):
        SceneResult(scenes=(), longest_index=0)
