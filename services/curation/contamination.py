"""Benchmark contamination: curated clips that are (near-)copies of a benchmark's evaluation videos.

A benchmark is given as a VideoMAE list file (``path label`` lines, read by the trainer's
``read_entries``) or a folder of video files, each local or in the store. Its videos get the same
perceptual signature as clips (``services.common.signatures``), cached in the store under the
dataset's state by the video's sha256, so a second check only hashes the files. Every clip of the
dataset (duplicates and clips already flagged included: a kept clip's duplicate must not take
its place) within ``MATCH_DISTANCE`` of a benchmark video is flagged, with its nearest video.
Committed as the benchmark's check (``Dataset.add_contamination_check``), the flagged clips leave
the pre-training lists on the next publish and are listed in ``contamination.jsonl``.
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from services.common.dataset import Dataset
from services.common.errors import H2AError
from services.common.signatures import MATCH_DISTANCE, Signature, SignatureIndex, clip_signature
from services.common.store import ClipStore, file_sha256
from services.trainer.data import VIDEO_SUFFIXES, read_entries

__all__ = ["BenchmarkCheck", "benchmark_videos", "check_contamination", "parse_benchmarks"]

_logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class BenchmarkCheck:
    """What checking a dataset against one benchmark found."""

    benchmark: str
    location: str
    videos: int
    """Benchmark videos signed."""
    matches: list[dict[str, str | float]]
    """``{"clip", "video", "distance"}`` per flagged clip (its nearest benchmark video)."""
    unreadable: list[str] = field(default_factory=list)
    """Benchmark videos that could not be read (left out of the check, logged)."""
    per_hashtag: dict[str, int] = field(default_factory=dict)


def parse_benchmarks(items: list[str] | tuple[str, ...]) -> dict[str, str]:
    """``["ucf101=PATH", ...]`` -> ``{"ucf101": "PATH"}``; ValueError naming a bad item."""
    parsed = {}
    for item in items:
        name, sep, location = item.partition("=")
        if not sep or not name.strip() or not location.strip():
            raise ValueError(f"expected NAME=PATH_OR_URI, got {item!r}")
        parsed[name.strip()] = location.strip()
    return parsed


def _is_video(name: str) -> bool:
    return PurePosixPath(name).suffix.lower() in VIDEO_SUFFIXES


def benchmark_videos(location: str, store: ClipStore) -> list[str]:
    """The videos of a benchmark: local paths, store URIs or store keys.

    Args:
        location: a list file or a folder of videos, a local path, a store key or a store URI
            (a store folder ends in ``/``).
        store: the store that keys and URIs belong to.
    """
    if Path(location).is_dir():
        return sorted(
            str(p) for p in Path(location).rglob("*") if p.is_file() and _is_video(p.name)
        )
    local = Path(location).is_file()
    if not local and location.endswith("/"):
        prefix = store.key_from_uri(location) if "://" in location else location
        return [store.uri(key) for key in sorted(store.list(prefix)) if _is_video(key)]
    if local:
        root = str(Path(location).parent)
    else:
        # Relative lines name store keys beside the list (a URI root would lose its "//").
        key = store.key_from_uri(location) if "://" in location else location
        root = str(PurePosixPath(key).parent)
    entries = read_entries(location, "list", root, "test", None if local else store)
    return [entry.path for entry in entries]


def _signature(video: str, dataset: str, store: ClipStore) -> Signature:
    """The video's signature, from the dataset's cache when it has the same bytes signed."""
    with store.open_location(video) as path:
        cache = ClipStore.state_key(f"{dataset}/signatures/{file_sha256(path)}")
        if store.exists(cache):
            return Signature.from_hex(store.get_text(cache).strip())
        signature = clip_signature(path)
    store.put_text(cache, signature.to_hex() + "\n")
    return signature


def check_contamination(
    store: ClipStore, dataset: str, benchmarks: dict[str, str], keep: bool = False
) -> list[BenchmarkCheck]:
    """Check every clip of ``dataset`` against each benchmark's videos.

    Args:
        store: the clip store.
        dataset: the dataset's name.
        benchmarks: name -> location (see ``benchmark_videos``).
        keep: only report; without it each benchmark's check is committed, which leaves the
            flagged clips out of the lists from the next publish on.

    Returns:
        One result per benchmark, in the order given.
    """
    target = Dataset(store, dataset)
    records = {
        r.clip.key: r for r in target.snapshot().all_clips() if r.media and r.media.signature
    }
    index = SignatureIndex()
    index.add((key, Signature.from_hex(r.media.signature)) for key, r in records.items())
    results = []
    for name, location in benchmarks.items():
        videos = benchmark_videos(location, store)
        nearest: dict[str, tuple[float, str]] = {}
        unreadable = []
        for video in videos:
            try:
                signature = _signature(video, dataset, store)
            except H2AError as error:
                _logger.warning(
                    "benchmark video not checked",
                    extra={"benchmark": name, "video": video, "error": str(error)},
                )
                unreadable.append(video)
                continue
            for key, distance in index.search(signature, MATCH_DISTANCE):
                nearest[key] = min(nearest.get(key, (distance, video)), (distance, video))
        matches = [
            {"clip": key, "video": video, "distance": distance}
            for key, (distance, video) in sorted(nearest.items())
        ]
        per_hashtag = Counter(records[key].hashtag for key in nearest)
        if not keep:
            target.add_contamination_check(name, location, len(videos) - len(unreadable), matches)
        results.append(
            BenchmarkCheck(
                name,
                location,
                len(videos) - len(unreadable),
                matches,
                unreadable,
                dict(per_hashtag.most_common()),
            )
        )
    return results
