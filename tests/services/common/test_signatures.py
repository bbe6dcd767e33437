"""Perceptual clip signatures: transformed copies of the sample footage match, distinct videos do
not, the index finds what measuring every entry finds, and the hex form round-trips."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from services.common.errors import UnreadableVideo
from services.common.signatures import (
    FRAMES,
    MATCH_DISTANCE,
    Signature,
    SignatureIndex,
    clip_signature,
    distance,
    sample_indices,
    signature_from_frames,
)
from services.common.video import read_frames, write_frames


def _resize(frames: np.ndarray, width: int, height: int) -> np.ndarray:
    return np.stack([np.asarray(Image.fromarray(f).resize((width, height))) for f in frames])


def _pad(frames: np.ndarray, top: int, left: int) -> np.ndarray:
    count, height, width, _ = frames.shape
    out = np.zeros((count, height + 2 * top, width + 2 * left, 3), np.uint8)
    out[:, top : top + height, left : left + width] = frames
    return out


@pytest.fixture(scope="module")
def scene(bikes: Path) -> np.ndarray:
    """bikes.mp4's third shot (frames 76-137), 320x136."""
    return _resize(read_frames(bikes, range(76, 137)), 320, 136)


@pytest.fixture(scope="module")
def original(scene: np.ndarray, tmp_path_factory: pytest.TempPathFactory) -> Signature:
    path = tmp_path_factory.mktemp("signatures") / "original.mp4"
    write_frames(path, scene, crf=18)
    return clip_signature(path)


COPIES = {
    "re-encoded at crf 35": lambda f: (f, 35),
    "resized to 0.6x": lambda f: (_resize(f, 192, 82), 23),
    "letterboxed": lambda f: (_pad(f, 60, 0), 23),
    "pillarboxed": lambda f: (_pad(f, 0, 100), 23),
    "cropped by 8%": lambda f: (f[:, 6:-6, 12:-12], 23),
    "mirrored": lambda f: (f[:, :, ::-1], 23),
    "1.25x speed (every 5th frame dropped)": lambda f: (f[[i % 5 != 4 for i in range(len(f))]], 23),
}


@pytest.mark.parametrize("transform", list(COPIES))
def test_transformed_copies_are_near_duplicates(
    transform: str, scene: np.ndarray, original: Signature, tmp_path: Path
):
    frames, crf = COPIES[transform](scene)
    path = tmp_path / "copy.mp4"
    write_frames(path, np.ascontiguousarray(frames), crf=crf)
    copy = clip_signature(path)
    assert distance(original, copy) <= MATCH_DISTANCE
    assert distance(copy, original) == distance(original, copy)
    index = SignatureIndex()
    index.add([("original", original)])
    assert [key for key, _ in index.search(copy)] == ["original"]


def test_distinct_sample_videos_are_not(bikes: Path, carphone: Path, bigbuckbunny: Path):
    signatures = [clip_signature(path) for path in (bikes, carphone, bigbuckbunny)]
    for number, first in enumerate(signatures):
        for second in signatures[number + 1 :]:
            assert distance(first, second) > 2 * MATCH_DISTANCE
    # Shots of one video are distinct clips too.
    shots = [read_frames(bikes, range(start, start + 30)) for start in (0, 30, 76, 137, 187)]
    shot_signatures = [signature_from_frames(frames) for frames in shots]
    index = SignatureIndex()
    index.add((str(n), s) for n, s in enumerate(shot_signatures))
    for number, signature in enumerate(shot_signatures):
        assert [key for key, _ in index.search(signature)] == [str(number)]


def test_a_mirrored_clip_is_the_mirrored_signature(scene: np.ndarray):
    # The sign of the DCT coefficients is what a flip changes: exactly, not approximately.
    assert (
        signature_from_frames(scene[:, :, ::-1].copy()) == signature_from_frames(scene).mirrored()
    )


def test_black_bars_are_cropped_before_hashing(scene: np.ndarray):
    assert signature_from_frames(_pad(scene, 40, 30)) == signature_from_frames(scene)


def test_hex_round_trip_and_refusals(original: Signature):
    text = original.to_hex()
    assert text.startswith("p1:") and len(text) == 3 + 16 * FRAMES
    assert Signature.from_hex(text) == original
    for bad in ("", "p1:", "p2:" + text[3:], text[:-1], text[:-1] + "g"):
        with pytest.raises(ValueError):
            Signature.from_hex(bad)


def test_sample_indices_spread_over_the_clip():
    assert sample_indices(240) == [15, 45, 75, 105, 135, 165, 195, 225]
    assert sample_indices(3) == [0, 0, 0, 1, 1, 2, 2, 2]  # a short clip repeats frames


def test_index_agrees_with_measuring_every_entry(original: Signature):
    rng = np.random.default_rng(0)
    index = SignatureIndex()
    assert index.search(original) == []
    randoms = [Signature(rng.integers(0, 2**64, FRAMES, dtype=np.uint64)) for _ in range(2000)]
    index.add((f"random-{n}", s) for n, s in enumerate(randoms))
    near = Signature(original.hashes ^ np.uint64(0b1011_0001))  # 4 bits off in every frame
    index.add([("b", near), ("a", original.mirrored())])  # a later batch
    assert len(index) == 2002
    assert index.search(original) == [("a", 0.0), ("b", 4.0)]
    assert index.search(original, max_distance=2) == [("a", 0.0)]


def test_an_unreadable_file_is_a_typed_error(tmp_path: Path):
    path = tmp_path / "broken.mp4"
    path.write_bytes(b"not a video")
    with pytest.raises(UnreadableVideo):
        clip_signature(path)
