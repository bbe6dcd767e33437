"""Perceptual clip signatures: near-duplicate detection across sources, runs and benchmarks.

A signature is one 64-bit DCT hash per frame of ``FRAMES`` frames spread evenly over the clip.
Each frame is cropped to its content (black letterbox and pillarbox bars, found over all sampled
frames at once so a dark scene is not mistaken for a bar), turned to luma, resized to 32x32
(which forgets the size and aspect ratio) and transformed with a 2-D DCT-II; a bit is the sign of
one of the 64 lowest-frequency AC coefficients. Coding the sign against zero (pHash thresholds at
the median) makes mirroring exact: a horizontal flip negates the coefficients of odd horizontal
frequency, so the hash of a mirrored frame is the hash XOR ``MIRROR_MASK`` and a stored signature
is compared in both orientations without keeping a second copy.

Frames at fixed fractions of a clip's duration survive a speed change (1.25x by dropped frames
shows the same content at the same fractions), and the distance tolerates a frame of
misalignment (a trimmed repost): each frame is compared with the frame at its position in the
other clip and its two neighbours, and the clip distance is the median of those per-frame
minima, so one frame with an overlay or a cut does not decide.

``SignatureIndex`` finds the clips within a distance by multi-index hashing: the 64 bits are cut
into three chunks of 21-22 bits (about log2 of the frame hashes of a few hundred thousand clips,
so a bucket holds about one random entry) and a stored frame hash is a candidate when one of its
chunks equals a probe: the query's chunk or one bit from it, in either orientation. That finds
every frame pair within 5 bits for sure (three chunks with 2 or more differing bits each make 6),
and pairs further apart whenever a chunk kept within a bit; a near-duplicate has eight frame pairs
to be found by. Candidates are then measured exactly; ``benchmarks/signatures.py`` checks that the
index returns what measuring every entry returns.

The threshold ``MATCH_DISTANCE`` was chosen with ``benchmarks/signatures.py``: see its numbers
there.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from services.common.errors import UnreadableVideo
from services.common.video import VideoReader

__all__ = [
    "FRAMES",
    "MATCH_DISTANCE",
    "MIRROR_MASK",
    "Signature",
    "SignatureIndex",
    "clip_signature",
    "distance",
    "sample_indices",
    "signature_from_frames",
]

FRAMES = 8
"""Frames hashed per clip, at the centres of ``FRAMES`` equal spans of its duration."""

MATCH_DISTANCE = 12.0
"""Clips at this distance or closer are near-duplicates (0-64: the median differing bits of
aligned frame hashes).

Measured by ``benchmarks/signatures.py`` on 15 distinct clips of the sample footage (the shots of
bikes.mp4 as left and right halves, carphone, bigbuckbunny's quadrants) and 8 copies of each
written as mp4 (re-encoded at crf 35, resized 0.6x, letterboxed, pillarboxed, cropped by 8%,
mirrored, 1.25x speed, mirrored + letterboxed + crf 30): copies lie at 0-9.5 (median 1, the 8%
crops the farthest), the 2,415 pairs of different clips at 17-34.5 (median 29). Precision and
recall are both 1.0 from 10 to 16; at 8 recall drops to 0.96 (crops), at 20 precision to 0.88
(halves of one shot). 12 sits in the gap, nearer the copies: at 300,000 clips a false match
costs a clip. A 16% crop (0.2 recall) and a trim of the first 20% (0.87) are beyond what it is
meant to catch."""

_SCHEME = "p1"
# Decoded frames are scaled to this long side before cropping and hashing: bars are found as
# well as at full size, and scaling in the decoder is cheaper than in numpy.
_DECODE_LONG_SIDE = 256
_HASH_SIDE = 32
# A row or column is a bar when it is this dark (luma, 0-255) in every sampled frame: x264 keeps
# black bars under about 20 even at high crf.
_BAR_LUMA = 32.0
# Content narrower than this fraction is not cropped to: a portrait video pillarboxed in a
# landscape frame keeps 32% of the width, an almost black clip would keep nothing.
_MIN_CONTENT = 0.25


def _dct_rows(size: int, count: int) -> np.ndarray:
    """The first ``count`` rows of the orthonormal DCT-II matrix of ``size`` points."""
    k = np.arange(count)[:, None]
    n = np.arange(size)[None, :]
    rows = np.cos(np.pi * (2 * n + 1) * k / (2 * size)) * np.sqrt(2.0 / size)
    rows[0] /= np.sqrt(2.0)
    return rows


def _lowest_ac(count: int) -> tuple[np.ndarray, np.ndarray]:
    """(vertical, horizontal) frequencies of the ``count`` lowest AC coefficients, by
    ``u + v`` then ``u`` (zigzag order)."""
    span = int(np.ceil(np.sqrt(2 * count))) + 2
    pairs = sorted(
        ((u, v) for u in range(span) for v in range(span) if u + v),
        key=lambda p: (p[0] + p[1], p[0]),
    )[:count]
    return np.array([u for u, _ in pairs]), np.array([v for _, v in pairs])


_U, _V = _lowest_ac(64)
_DCT = _dct_rows(_HASH_SIDE, int(max(_U.max(), _V.max())) + 1)
_BIT_WEIGHTS = np.uint64(1) << np.arange(63, -1, -1, dtype=np.uint64)
MIRROR_MASK = int(np.sum(_BIT_WEIGHTS[_V % 2 == 1]))
"""XOR a frame hash with this to get the hash of the mirrored frame (odd horizontal
frequencies change sign under a horizontal flip)."""
_MIRROR = np.uint64(MIRROR_MASK)


@dataclass(frozen=True, slots=True, eq=False)
class Signature:
    """A clip's frame hashes in time order: ``hashes`` uint64 ``(FRAMES,)``."""

    hashes: np.ndarray

    def __post_init__(self) -> None:
        if self.hashes.dtype != np.uint64 or self.hashes.shape != (FRAMES,):
            raise ValueError(f"a signature is {FRAMES} uint64 frame hashes, got {self.hashes!r}")

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Signature) and np.array_equal(self.hashes, other.hashes)

    def __hash__(self) -> int:
        return hash(self.hashes.tobytes())

    def mirrored(self) -> Signature:
        """The signature of the horizontally flipped clip."""
        return Signature(self.hashes ^ _MIRROR)

    def to_hex(self) -> str:
        """``p1:`` and 16 hex digits per frame hash: the form records store."""
        return f"{_SCHEME}:{self.hashes.astype('>u8').tobytes().hex()}"

    @classmethod
    def from_hex(cls, text: str) -> Signature:
        """Parse ``to_hex``.

        Raises:
            ValueError: another scheme, or not ``FRAMES`` hashes of hex digits.
        """
        scheme, _, digits = text.partition(":")
        try:
            if scheme != _SCHEME or len(digits) != 16 * FRAMES:
                raise ValueError
            data = bytes.fromhex(digits)
        except ValueError:
            raise ValueError(f"not a {_SCHEME} signature: {text[:40]!r}") from None
        return cls(np.frombuffer(data, ">u8").astype(np.uint64))


def _content_box(luma: np.ndarray) -> tuple[slice, slice]:
    """Rows and columns inside the black bars of ``luma`` ``(T, H, W)``."""

    def inside(profile: np.ndarray) -> slice:
        lit = np.flatnonzero(profile > _BAR_LUMA)
        if not len(lit) or (lit[-1] + 1 - lit[0]) < _MIN_CONTENT * len(profile):
            return slice(None)
        return slice(int(lit[0]), int(lit[-1]) + 1)

    # The 95th percentile along a line of the brightest frame: a logo or a caption in a bar
    # does not make it content.
    brightest = luma.max(axis=0)  # H, W
    return (
        inside(np.percentile(brightest, 95, axis=1)),
        inside(np.percentile(brightest, 95, axis=0)),
    )


def sample_indices(frame_count: int) -> list[int]:
    """Indices of the ``FRAMES`` frames a signature hashes: the centres of equal spans of the
    clip (repeated for clips shorter than ``FRAMES`` frames)."""
    if frame_count < 1:
        raise ValueError(f"a clip has frames, got {frame_count}")
    return [int((i + 0.5) * frame_count / FRAMES) for i in range(FRAMES)]


def signature_from_frames(frames: np.ndarray) -> Signature:
    """The signature of a clip from its frames.

    Args:
        frames: uint8 RGB ``(T, H, W, 3)`` in time order: the whole clip, or the frames at
            ``sample_indices`` (when ``T == FRAMES`` all are hashed).

    Returns:
        The DCT sign hashes of the ``FRAMES`` sample frames, cropped to their common content.
    """
    if frames.ndim != 4 or frames.shape[-1] != 3 or not len(frames):
        raise ValueError(f"frames must be (T, H, W, 3), got {frames.shape}")
    frames = frames[sample_indices(len(frames))]
    # ITU-R BT.601 luma, as the encoder stores it.
    luma = frames.astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32)
    rows, cols = _content_box(luma)
    small = np.stack(
        [
            np.asarray(
                Image.fromarray(frame[rows, cols]).resize(
                    (_HASH_SIDE, _HASH_SIDE), Image.Resampling.BILINEAR
                )
            )
            for frame in luma
        ]
    )  # FRAMES, 32, 32
    coefficients = _DCT @ small @ _DCT.T  # FRAMES, F, F
    bits = coefficients[:, _U, _V] > 0  # FRAMES, 64
    return Signature((bits.astype(np.uint64) * _BIT_WEIGHTS).sum(axis=1, dtype=np.uint64))


def clip_signature(path: Path) -> Signature:
    """Decode the sample frames of the video at ``path`` (upright, scaled down) and sign them.

    A sample frame that does not decode is replaced by the nearest one that does.

    Raises:
        UnreadableVideo: the video cannot be read, or none of its sample frames decodes.
    """
    with VideoReader(Path(path), fast=True) as video:
        wanted = sample_indices(video.timeline.frame_count)
        found = video.sample(wanted, _DECODE_LONG_SIDE, format="rgb24")
    if not found:
        raise UnreadableVideo(f"{Path(path).name}: no sample frame decodes")
    decoded = sorted(found)
    nearest = [min(decoded, key=lambda index: abs(index - want)) for want in wanted]
    return signature_from_frames(np.stack([found[index] for index in nearest]))


# Frame i of one clip meets frames i-1, i, i+1 of the other.
_NEAR = np.clip(np.arange(FRAMES)[:, None] + np.array([-1, 0, 1]), 0, FRAMES - 1)


def _directed(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Median over the frames of ``a`` of the least distance to the aligned frames of ``b``;
    ``a`` and ``b`` are ``(N, FRAMES)`` (or broadcast to it)."""
    bits = np.bitwise_count(a[:, :, None] ^ b[:, _NEAR])  # N, FRAMES, 3
    return np.median(bits.min(axis=-1), axis=-1)


def _distances(query: np.ndarray, stored: np.ndarray) -> np.ndarray:
    """Distance of ``query`` ``(FRAMES,)`` to each row of ``stored`` ``(N, FRAMES)``."""
    return _pair_distances(query[None], stored)


def _pair_distances(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Distance of each row of ``a`` to the same row of ``b`` (``(N, FRAMES)``, either may
    be one row, broadcast)."""
    best = np.full(max(len(a), len(b)), np.inf)
    for oriented in (a, a ^ _MIRROR):
        both = np.maximum(_directed(oriented, b), _directed(b, oriented))
        best = np.minimum(best, both)
    return best


def distance(a: Signature, b: Signature) -> float:
    """How far apart two clips look: the median number of differing bits between each frame
    hash and the nearest of the aligned frames of the other clip, the larger of both
    directions, in the closer orientation (as is, or one clip mirrored).

    0 for the same clip; unrelated clips are around 20-32 of 64 (``MATCH_DISTANCE`` is the
    line between them).
    """
    return float(_distances(a.hashes, b.hashes[None])[0])


# Multi-index hashing: three chunks of 22, 21 and 21 bits.
_CHUNK_BITS = (22, 21, 21)
_CHUNK_SHIFTS = (42, 21, 0)


def _chunks(hashes: np.ndarray) -> list[np.ndarray]:
    return [
        (hashes >> np.uint64(shift)) & np.uint64((1 << bits) - 1)
        for shift, bits in zip(_CHUNK_SHIFTS, _CHUNK_BITS, strict=True)
    ]


def _ranges(values: np.ndarray, starts: np.ndarray, ends: np.ndarray) -> np.ndarray:
    """``values[start:end]`` for each pair, concatenated, without a Python loop."""
    lengths = ends - starts
    offsets = np.repeat(starts - np.concatenate([[0], np.cumsum(lengths)[:-1]]), lengths)
    return values[np.arange(lengths.sum()) + offsets]


class SignatureIndex:
    """Signatures by key, searched for the ones near a query among hundreds of thousands.

    ``add`` appends; the chunk tables are sorted again on the first search after an add, so
    add in batches. A key may be added more than once (each entry is searched).
    """

    def __init__(self) -> None:
        self._keys: list[str] = []
        self._pending: list[np.ndarray] = []
        self._hashes = np.zeros((0, FRAMES), np.uint64)
        # Per chunk: the chunk values of every frame hash, sorted, and each one's row.
        self._tables: list[tuple[np.ndarray, np.ndarray]] = []

    def __len__(self) -> int:
        return len(self._keys)

    def add(self, items: Iterable[tuple[str, Signature]]) -> None:
        """Add ``(key, signature)`` pairs."""
        for key, signature in items:
            self._keys.append(key)
            self._pending.append(signature.hashes)

    def _tables_now(self) -> list[tuple[np.ndarray, np.ndarray]]:
        if self._pending:
            self._hashes = np.concatenate([self._hashes, np.stack(self._pending)])
            self._pending = []
            # 32-bit values and rows: 24 bytes per frame hash over the three tables.
            rows = np.repeat(np.arange(len(self._hashes), dtype=np.int32), FRAMES)
            self._tables = []
            for chunk in _chunks(self._hashes.ravel()):
                order = np.argsort(chunk, kind="stable")
                self._tables.append((chunk[order].astype(np.uint32), rows[order]))
        return self._tables

    def candidates(self, signature: Signature) -> np.ndarray:
        """Entry rows with a frame hash that shares a chunk, to within one bit, with a frame hash of
        the query in either orientation: the entries ``search`` measures."""
        return self._candidate_pairs(signature.hashes[None])[1]

    def _candidate_pairs(self, queries: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``candidates`` of each row of ``queries`` ``(Q, FRAMES)`` at once: unique
        ``(query, entry row)`` pairs, sorted."""
        tables = self._tables_now()
        if not tables or not len(queries):
            return np.zeros(0, np.int64), np.zeros(0, np.int64)
        # Each query's frame hashes in both orientations, tagged with the query's number.
        oriented = np.concatenate([queries, queries ^ _MIRROR], axis=1)
        owner = np.repeat(np.arange(len(queries), dtype=np.int64), oriented.shape[1])
        found = []
        for (values, rows), chunk, bits in zip(
            tables, _chunks(oriented.ravel()), _CHUNK_BITS, strict=True
        ):
            # uint32 like the table: a wider probe would make searchsorted copy the table.
            flips = np.concatenate([[0], np.uint32(1) << np.arange(bits)]).astype(np.uint32)
            probes = (chunk.astype(np.uint32)[:, None] ^ flips[None, :]).ravel()
            who = np.repeat(owner, len(flips))
            start = np.searchsorted(values, probes, side="left")
            end = np.searchsorted(values, probes, side="right")
            hit = end > start
            lengths = (end - start)[hit]
            found.append(np.repeat(who[hit], lengths) * len(self._keys))
            found[-1] += _ranges(rows, start[hit], end[hit])
        pairs = np.unique(np.concatenate(found))
        return pairs // len(self._keys), pairs % len(self._keys)

    def search(
        self, signature: Signature, max_distance: float = MATCH_DISTANCE
    ) -> list[tuple[str, float]]:
        """Entries within ``max_distance`` of ``signature``.

        Returns:
            ``(key, distance)`` pairs, nearest first, ties by key.
        """
        return self.search_many([signature], max_distance)[0]

    def search_many(
        self,
        signatures: Sequence[Signature],
        max_distance: float = MATCH_DISTANCE,
        batch: int = 2048,
    ) -> list[list[tuple[str, float]]]:
        """``search`` of each signature, ``batch`` at a time: a whole dataset against itself
        without a Python step per candidate."""
        results: list[list[tuple[str, float]]] = [[] for _ in signatures]
        for first in range(0, len(signatures), batch):
            queries = np.stack([s.hashes for s in signatures[first : first + batch]])
            owners, rows = self._candidate_pairs(queries)
            measured = _pair_distances(queries[owners], self._hashes[rows])
            close = measured <= max_distance
            for owner, row, d in zip(
                owners[close].tolist(), rows[close].tolist(), measured[close].tolist(), strict=True
            ):
                results[first + owner].append((self._keys[row], d))
        return [sorted(found, key=lambda p: (p[1], p[0])) for found in results]
