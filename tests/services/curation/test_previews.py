"""Face blurring on real footage, checked by running the face detectors on what comes out, and
``h2a store preview`` writing face-blurred clips."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
import ultralytics
from click.testing import CliRunner
from PIL import Image, ImageSequence

from services.collection.commands import store as store_command
from services.common.config import StoreSettings
from services.common.samples import sample_video
from services.common.store import ClipStore
from services.common.video import probe, read_frames, write_clip
from services.curation.previews import (
    PreviewSettings,
    blur_faces,
    box_holds,
    centerface_boxes,
    face_boxes,
    keypoint_boxes,
    write_preview,
)

SETTINGS = PreviewSettings()
# Half the score from which faces are blurred: a blurred face must not come near it.
LOW_SCORE = 0.1


@pytest.fixture(scope="module")
def clips(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Real clips as curation writes them (short side 320): a face close-up, small faces."""
    folder = tmp_path_factory.mktemp("clips")
    made = {}
    for name, sample, start, end in (
        ("talking", "carphone_pristine.mp4", 0, 60),
        ("cycling", "bikes.mp4", 30, 137),
    ):
        made[name] = folder / f"{name}.mp4"
        write_clip(sample_video(sample), made[name], start, end)
    return made


def _assert_no_face_left(blurred: np.ndarray, faces: np.ndarray) -> None:
    """Neither detector finds, where the input had a face, one on the blurred frame."""
    centres = (faces[:, :2] + faces[:, 2:4]) / 2
    assert not box_holds(centerface_boxes(blurred, LOW_SCORE), centres).any()
    assert not box_holds(keypoint_boxes(blurred[None], SETTINGS)[0], centres).any()


def _stills() -> list[np.ndarray]:
    """ultralytics' bus.jpg (a face cut by the right edge) and zidane.jpg, at clip size."""
    assets = Path(ultralytics.__file__).parent / "assets"
    return [
        cv2.resize(cv2.imread(str(assets / name))[..., ::-1], size, interpolation=cv2.INTER_AREA)
        for name, size in (("bus.jpg", (320, 426)), ("zidane.jpg", (568, 320)))
    ]


@pytest.mark.parametrize(
    ("name", "indices"),
    [("talking", [0, 45]), ("cycling", [5, 14, 48, 80, 100]), ("stills", [])],
)
def test_blur_leaves_no_face_the_detectors_see(clips, name: str, indices: list[int]):
    frames = _stills() if name == "stills" else read_frames(clips[name], indices)
    for frame in frames:  # one at a time: the stills differ in size
        (faces,) = face_boxes(frame[None], SETTINGS)
        # The check has teeth: on the frame as it was, it finds the faces.
        centres = (faces[:, :2] + faces[:, 2:4]) / 2
        assert box_holds(centerface_boxes(frame, LOW_SCORE), centres).any(), "a face in each frame"
        _assert_no_face_left(blur_faces(frame, faces, SETTINGS.pad), faces)


def _frames_of(path: Path) -> np.ndarray:
    if path.suffix == ".gif":
        with Image.open(path) as gif:
            return np.stack([np.asarray(f.convert("RGB")) for f in ImageSequence.Iterator(gif)])
    return read_frames(path, range(probe(path).frame_count))


@pytest.mark.parametrize("suffix", [".mp4", ".gif"])
def test_clip_preview_hides_every_face(clips, tmp_path: Path, suffix: str):
    settings = PreviewSettings(seconds=1.5, fps=4)
    dest = tmp_path / f"talking{suffix}"
    written = write_preview(clips["talking"], dest, settings)
    shown = _frames_of(dest)
    # 1.5 s of a 29.97 fps clip, one frame in 7.5.
    assert written == len(shown) == 7 and shown.shape[1:] == (320, 392, 3)
    if suffix == ".mp4":
        assert probe(dest).fps == pytest.approx(4, abs=0.01)
    source = read_frames(clips["talking"], [round(i * 29.97 / 4) for i in range(7)])
    for frame, original in zip(shown, source, strict=True):
        (faces,) = face_boxes(original[None], SETTINGS)
        assert box_holds(
            centerface_boxes(original, LOW_SCORE), (faces[:, :2] + faces[:, 2:4]) / 2
        ).any()
        _assert_no_face_left(frame, faces)


def test_store_preview_command(clips, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    root = tmp_path / "store"
    store = ClipStore.from_settings(StoreSettings(backend="local", root=root))
    ref = store.put_file(ClipStore.clip_key("ab" * 32, 30, 137), clips["cycling"])
    monkeypatch.setenv("H2A_STORE_BACKEND", "local")
    monkeypatch.setenv("H2A_STORE_ROOT", str(root))
    runner = CliRunner()

    out = tmp_path / "cycling.gif"
    args = ["preview", ref.uri, "--out", str(out), "--seconds", "0.4", "--fps", "5"]
    result = runner.invoke(store_command, args)
    assert result.exit_code == 0, result.output
    assert f"wrote {out} (2 frames, faces blurred)" in result.output
    assert len(_frames_of(out)) == 2

    result = runner.invoke(store_command, ["preview", ref.key, "--out", str(tmp_path / "x.avi")])
    assert result.exit_code == 2 and "must end in .mp4 or .gif" in result.output
    result = runner.invoke(store_command, ["preview", "clips/nope.mp4", "--out", str(out)])
    assert result.exit_code == 1 and "OBJECT_NOT_FOUND" in result.output
