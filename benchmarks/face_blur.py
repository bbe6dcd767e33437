"""Recall and cost of the face detectors that previews blur with, on the sample footage.

Frames are scaled as clips are (short side 320 px) since previews are made from clips. The
ground truth was annotated by eye on every frame: carphone_pristine.mp4 has one face in each
of its 120 frames; bikes.mp4 has a face in frames 30-44 (a cyclist in a suit, leaving at the top
right), 76-82 and 103-136 (a cyclist in a helmet; hidden by passing traffic in between), and
none elsewhere (background people a few pixels tall are not counted); ultralytics' bus.jpg has
three (one cut by the right edge) and zidane.jpg two. A face's centre was placed on key frames
and moves linearly between them; a detector finds the face when one of its boxes (before the
padding of the blur) holds that centre. Prints recall per footage and detector; how many faces
each detector still finds once the previews' blur hid what both found (CenterFace from score
0.05; the pose model's keypoints at the previews' confidences: it places a head from the body
too, so it may point at a blurred one); the share of the frame blurred; and the median ms per
frame of each detector on this machine (wall time, one frame at a time).

    .venv/bin/python benchmarks/face_blur.py
"""

from __future__ import annotations

import importlib.util
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np

from services.common.samples import sample_video
from services.common.video import probe, read_frames
from services.curation.previews import (
    PreviewSettings,
    blur_faces,
    box_holds,
    centerface_boxes,
    keypoint_boxes,
)

_SHORT_SIDE = 320
# Well under the previews' thresholds: what a blurred face must not reach even.
_RESIDUAL_SCORE = 0.05
# Face centres on key frames, in pixels of the frame at short side 320: {frame: (x, y)}, one
# dict per face track; a track covers the frames from its first key to its last.
_VIDEO_FACES = {
    "carphone_pristine.mp4": [
        {0: (197, 146), 30: (182, 153), 60: (175, 145), 90: (137, 145), 119: (167, 142)}
    ],
    "bikes.mp4": [
        {30: (339, 61), 37: (491, 57), 44: (728, 53)},
        {76: (506, 101), 79: (507, 89), 82: (506, 82)},
        {103: (492, 78), 110: (495, 57), 120: (502, 46), 128: (502, 37), 136: (504, 33)},
    ],
}
# Still images, face centres in the original pixels.
_STILL_FACES = {
    "bus.jpg": [(134, 443), (289, 450), (802, 430)],
    "zidane.jpg": [(982, 190), (610, 346)],
}

Detector = Callable[[np.ndarray], np.ndarray]


def _to_clip_scale(frame: np.ndarray) -> tuple[np.ndarray, float]:
    height, width = frame.shape[:2]
    scale = _SHORT_SIDE / min(height, width)
    size = (round(width * scale / 2) * 2, round(height * scale / 2) * 2)
    return cv2.resize(frame, size, interpolation=cv2.INTER_AREA), scale


def _centre(track: dict[int, tuple[int, int]], frame: int) -> tuple[float, float] | None:
    keys = sorted(track)
    if not keys[0] <= frame <= keys[-1]:
        return None
    after = next(key for key in keys if key >= frame)
    before = max(key for key in keys if key <= frame)
    weight = 0.0 if after == before else (frame - before) / (after - before)
    (x0, y0), (x1, y1) = track[before], track[after]
    return x0 + weight * (x1 - x0), y0 + weight * (y1 - y0)


def _footage() -> dict[str, list[tuple[np.ndarray, list[tuple[float, float]]]]]:
    """Frames at clip scale with the face centres on each, by footage name."""
    footage = {}
    for name, tracks in _VIDEO_FACES.items():
        path = sample_video(name)
        frames = read_frames(path, range(probe(path).frame_count))
        footage[name] = [
            (
                _to_clip_scale(frame)[0],
                [c for track in tracks if (c := _centre(track, index)) is not None],
            )
            for index, frame in enumerate(frames)
        ]
    spec = importlib.util.find_spec("ultralytics")
    assets = Path(next(iter(spec.submodule_search_locations))) / "assets"
    for name, centres in _STILL_FACES.items():
        image = cv2.imread(str(assets / name))[..., ::-1]
        frame, scale = _to_clip_scale(np.ascontiguousarray(image))
        footage[name] = [(frame, [(x * scale, y * scale) for x, y in centres])]
    return footage


def main() -> None:
    settings = PreviewSettings()
    detectors: dict[str, Detector] = {
        "centerface": lambda frame: centerface_boxes(frame, settings.face_threshold),
        "pose@640": lambda frame: keypoint_boxes(frame[None], settings, imgsz=640)[0],
        "pose@320": lambda frame: keypoint_boxes(frame[None], settings, imgsz=320)[0],
    }
    footage = _footage()
    for detect in detectors.values():
        detect(footage["bus.jpg"][0][0])  # load the model outside the timings
    columns = [*detectors, "centerface+pose@640", "blurred: centerface", "blurred: pose"]
    print(f"{'footage':24}{'faces':>7}" + "".join(f"{column:>22}" for column in columns))
    timings: dict[str, list[float]] = {name: [] for name in detectors}
    total = dict.fromkeys(columns, 0)
    blurred_share: list[float] = []
    for name, frames in footage.items():
        found = dict.fromkeys(columns, 0)
        for frame, centres in frames:
            boxes = {}
            for detector, detect in detectors.items():
                start = time.perf_counter()
                boxes[detector] = detect(frame)
                timings[detector].append(time.perf_counter() - start)
            union = np.concatenate([boxes["centerface"], boxes["pose@640"]])
            boxes["centerface+pose@640"] = union
            blurred = blur_faces(frame, union, settings.pad)
            boxes["blurred: centerface"] = centerface_boxes(blurred, _RESIDUAL_SCORE)
            boxes["blurred: pose"] = detectors["pose@640"](blurred)
            blurred_share.append(float(np.any(blurred != frame, axis=-1).mean()))
            for column in columns:
                found[column] += int(box_holds(boxes[column], centres).sum())
        faces = sum(len(centres) for _, centres in frames)
        for column in columns:
            total[column] += found[column]
        print(
            f"{name:24}{faces:>7}"
            + "".join(f"{f'{found[c]} ({found[c] / faces:.0%})':>22}" for c in columns)
        )
    faces = sum(len(centres) for frames in footage.values() for _, centres in frames)
    print(
        f"{'all':24}{faces:>7}"
        + "".join(f"{f'{total[c]} ({total[c] / faces:.1%})':>22}" for c in columns)
    )
    print(f"share of a frame blurred (mean): {statistics.mean(blurred_share):.1%}")
    print(
        f"{'ms per frame (median)':31}"
        + "".join(f"{statistics.median(timings[d]) * 1000:>22.0f}" for d in detectors)
    )


if __name__ == "__main__":
    main()
