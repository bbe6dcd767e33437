"""Clip signatures: what one costs, how fast the index answers, and where the threshold lies.

1. Cost per clip: ``clip_signature`` on an engine-shaped clip (320x568, 30 fps, 8 s, x264 at
   the clips' crf and preset; made from bikes.mp4 scaled and cropped to portrait), CPU ms
   (all threads) and wall ms, median of ``--repeat``; and the hashing alone on decoded frames.
2. Lookup: ``SignatureIndex`` over 1k / 100k / 1M synthetic signatures (random frame hashes):
   build time, and per query the median and 95th percentile wall ms and the candidates measured,
   for queries that are stored signatures with 6 of 64 bits flipped per frame (found) and for
   fresh random ones (not found).
3. Threshold: distances between the distinct clips of the sample footage (the scenes of
   bikes.mp4, each cut into a left and a right half; carphone; the four quadrants of
   bigbuckbunny) and between each clip and transformed copies of itself, all written as mp4 and
   signed from the files: re-encoded at crf 35, resized to 0.6x, letterboxed, pillarboxed,
   centre-cropped by 8%, mirrored, 1.25x speed by dropped frames, and mirror + letterbox +
   crf 30 together. Precision and recall per threshold over those pairs (negatives also pair a
   clip with every copy of another clip), recall per transformation at ``MATCH_DISTANCE``, and
   for transformations the signature is not meant to survive (16% crop, the first 20% trimmed,
   a crop and a mirror together), how far they land.
4. Index recall: the sample clips stored among 100k synthetic signatures; every copy searched
   through the index and exhaustively (every stored signature measured): the matches must agree.

    .venv/bin/python benchmarks/signatures.py [--repeat 10] [--sizes 1000,100000,1000000]
"""

from __future__ import annotations

import argparse
import itertools
import statistics
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
from PIL import Image

from services.clips.encode import ClipSettings
from services.common.samples import sample_video
from services.common.signatures import (
    FRAMES,
    MATCH_DISTANCE,
    Signature,
    SignatureIndex,
    clip_signature,
    distance,
    signature_from_frames,
)
from services.common.video import VideoReader, read_frames, write_frames

_THRESHOLDS = (2, 4, 6, 8, 10, 12, 14, 16, 20, 24)
_QUERIES = 200
_FLIPPED_BITS = 6


def _frames(name: str) -> np.ndarray:
    with VideoReader(sample_video(name)) as video:
        width, height = video.size
        return np.stack([image for _, image in video.arrays(width, height, format="rgb24")])


def _even(frames: np.ndarray) -> np.ndarray:
    height, width = frames.shape[1:3]
    return frames[:, : height // 2 * 2, : width // 2 * 2]


def _resize(frames: np.ndarray, width: int, height: int) -> np.ndarray:
    return np.stack(
        [
            np.asarray(Image.fromarray(f).resize((width, height), Image.Resampling.BILINEAR))
            for f in frames
        ]
    )


def _pad(frames: np.ndarray, top: int, left: int) -> np.ndarray:
    count, height, width, _ = frames.shape
    out = np.zeros((count, height + 2 * top, width + 2 * left, 3), np.uint8)
    out[:, top : top + height, left : left + width] = frames
    return out


def _crop(frames: np.ndarray, share: float) -> np.ndarray:
    height, width = frames.shape[1:3]
    dy, dx = int(height * share / 2), int(width * share / 2)
    return _even(frames[:, dy : height - dy, dx : width - dx])


def _distinct_clips() -> dict[str, np.ndarray]:
    bikes = _frames("bikes.mp4")
    clips = {}
    for number, (start, end) in enumerate([(0, 30), (30, 76), (76, 137), (137, 187), (187, 242)]):
        clips[f"bikes-{number}-left"] = bikes[start:end, :, :320]
        clips[f"bikes-{number}-right"] = bikes[start:end, :, 320:]
    clips["carphone"] = _frames("carphone_pristine.mp4")
    bunny = _frames("bigbuckbunny.mp4")
    for number, (y, x) in enumerate([(0, 0), (0, 640), (360, 0), (360, 640)]):
        clips[f"bunny-{number}"] = bunny[:, y : y + 360, x : x + 640]
    return {name: _even(frames) for name, frames in clips.items()}


def _copies(frames: np.ndarray) -> Iterator[tuple[str, np.ndarray, int, bool]]:
    """(name, frames, crf, meant to match) for each transformation."""
    count, height, width, _ = frames.shape
    bar, side = height // 8 * 2, width // 6 * 2
    yield "re-encoded crf 35", frames, 35, True
    yield "resized 0.6x", _even(_resize(frames, int(width * 0.6), int(height * 0.6))), 23, True
    yield "letterboxed", _pad(frames, bar, 0), 23, True
    yield "pillarboxed", _pad(frames, 0, side), 23, True
    yield "cropped 8%", _crop(frames, 0.08), 23, True
    yield "mirrored", frames[:, :, ::-1], 23, True
    yield "1.25x speed", frames[[i for i in range(count) if i % 5 != 4]], 23, True
    yield "mirror+letterbox+crf 30", _pad(frames[:, :, ::-1], bar, 0), 30, True
    yield "cropped 16%", _crop(frames, 0.16), 23, False
    yield "first 20% trimmed", frames[count // 5 :], 23, False
    yield "cropped 8% + mirrored", _crop(frames, 0.08)[:, :, ::-1], 23, False


def _median_ms(call: Callable[[], object], repeat: int, clock: Callable[[], float]) -> float:
    times = []
    for _ in range(repeat):
        start = clock()
        call()
        times.append(clock() - start)
    return 1000 * statistics.median(times)


def _cost(folder: Path, repeat: int) -> None:
    bikes = _frames("bikes.mp4")[:240]
    tall = _resize(bikes, round(640 * 568 / 272), 568)  # 1336 x 568
    left = (tall.shape[2] - 320) // 2
    path = folder / "engine-clip.mp4"
    settings = ClipSettings()
    write_frames(
        path, tall[:, :, left : left + 320], fps=30.0, crf=settings.crf, preset=settings.preset
    )
    sample = read_frames(path, [int((i + 0.5) * 240 / FRAMES) for i in range(FRAMES)])
    print("\n## Cost per clip (320x568, 30 fps, 8 s, 240 frames)\n")
    print("| step | CPU ms | wall ms |")
    print("|---|---:|---:|")
    for step, call in (
        ("clip_signature (decode 8 frames + hash)", lambda: clip_signature(path)),
        ("signature_from_frames (hash 8 decoded frames)", lambda: signature_from_frames(sample)),
    ):
        cpu = _median_ms(call, repeat, time.process_time)
        wall = _median_ms(call, repeat, time.perf_counter)
        print(f"| {step} | {cpu:.1f} | {wall:.1f} |")


def _random(rng: np.random.Generator, count: int) -> np.ndarray:
    return rng.integers(0, 2**64, size=(count, FRAMES), dtype=np.uint64)


def _flip(rng: np.random.Generator, hashes: np.ndarray, bits: int) -> np.ndarray:
    """``hashes`` with ``bits`` random bits of each frame hash flipped."""
    masks = [sum(1 << int(b) for b in rng.choice(64, size=bits, replace=False)) for _ in hashes]
    return hashes ^ np.array(masks, np.uint64)


def _lookup(sizes: list[int]) -> None:
    rng = np.random.default_rng(0)
    print("\n## Lookup (synthetic signatures, wall ms per query)\n")
    print(
        "| signatures | build s | found: median | p95 | candidates | "
        "not found: median | p95 | candidates |"
    )
    print("|---:|---:|---:|---:|---:|---:|---:|---:|")
    for size in sizes:
        stored = _random(rng, size)
        index = SignatureIndex()
        index.add((str(n), Signature(row)) for n, row in enumerate(stored))
        start = time.perf_counter()
        index.search(Signature(stored[0]))  # sorts the tables
        build = time.perf_counter() - start
        cells = []
        for queries in (
            [_flip(rng, stored[n], _FLIPPED_BITS) for n in rng.integers(0, size, _QUERIES)],
            list(_random(rng, _QUERIES)),
        ):
            times, candidates = [], []
            for query in queries:
                signature = Signature(query)
                start = time.perf_counter()
                index.search(signature)
                times.append(1000 * (time.perf_counter() - start))
                candidates.append(len(index.candidates(signature)))
            cells += [
                f"{statistics.median(times):.2f}",
                f"{np.percentile(times, 95):.2f}",
                f"{statistics.median(candidates):.0f}",
            ]
        print(f"| {size:,} | {build:.1f} | " + " | ".join(cells) + " |")


def _threshold(folder: Path) -> dict[str, Signature]:
    clips = _distinct_clips()
    originals: dict[str, Signature] = {}
    copies: dict[tuple[str, str], Signature] = {}
    meant: dict[str, bool] = {}
    for name, frames in clips.items():
        path = folder / f"{name}.mp4"
        write_frames(path, frames, crf=18)
        originals[name] = clip_signature(path)
        for copy, copied, crf, match in _copies(frames):
            path = folder / f"{name}-{len(copies)}.mp4"
            write_frames(path, copied, crf=crf)
            copies[(name, copy)] = clip_signature(path)
            meant[copy] = match
    positives = [
        distance(originals[name], signature)
        for (name, copy), signature in copies.items()
        if meant[copy]
    ]
    negatives = [distance(originals[a], originals[b]) for a, b in itertools.combinations(clips, 2)]
    negatives += [
        distance(originals[other], signature)
        for (name, _), signature in copies.items()
        for other in clips
        if other != name
    ]
    print(
        f"\n## Threshold ({len(clips)} distinct clips, {len(positives)} copies meant to match, "
        f"{len(negatives)} pairs of different clips)\n"
    )
    print(
        f"copies: distance {min(positives):g}-{max(positives):g} (median "
        f"{statistics.median(positives):g}); different clips: {min(negatives):g}-"
        f"{max(negatives):g} (median {statistics.median(negatives):g})\n"
    )
    print("| threshold | precision | recall | false matches |")
    print("|---:|---:|---:|---:|")
    for threshold in _THRESHOLDS:
        found = sum(d <= threshold for d in positives)
        wrong = sum(d <= threshold for d in negatives)
        precision = found / (found + wrong) if found + wrong else 1.0
        chosen = " (MATCH_DISTANCE)" if threshold == MATCH_DISTANCE else ""
        print(f"| {threshold}{chosen} | {precision:.3f} | {found / len(positives):.3f} | {wrong} |")
    print(f"\n| transformation | meant to match | distance range | recall at {MATCH_DISTANCE:g} |")
    print("|---|---|---:|---:|")
    for copy, match in meant.items():
        found = [distance(originals[name], copies[(name, copy)]) for name in clips]
        recall = sum(d <= MATCH_DISTANCE for d in found) / len(found)
        meant_text = "yes" if match else "no"
        print(f"| {copy} | {meant_text} | {min(found):g}-{max(found):g} | {recall:.2f} |")
    return {**originals, **{f"{name} / {copy}": s for (name, copy), s in copies.items()}}


def _index_recall(signatures: dict[str, Signature]) -> None:
    rng = np.random.default_rng(1)
    stored = {name: s for name, s in signatures.items() if " / " not in name}
    index = SignatureIndex()
    index.add((str(n), Signature(row)) for n, row in enumerate(_random(rng, 100_000)))
    index.add(stored.items())
    agree = total = 0
    for name, signature in signatures.items():
        if " / " not in name:
            continue
        exhaustive = {
            key for key, other in stored.items() if distance(signature, other) <= MATCH_DISTANCE
        }
        through_index = {key for key, _ in index.search(signature)}
        total += 1
        agree += exhaustive == through_index
    print(
        f"\n## Index recall: {agree} of {total} copies get the same matches through the index as "
        "by measuring every stored clip (100k synthetic + the sample clips)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=10)
    parser.add_argument("--sizes", default="1000,100000,1000000")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="h2a-bench-signatures-") as folder:
        _cost(Path(folder), args.repeat)
        _lookup([int(size) for size in args.sizes.split(",")])
        signatures = _threshold(Path(folder))
    _index_recall(signatures)


if __name__ == "__main__":
    main()
