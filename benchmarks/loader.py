"""Training-loader throughput per worker core, beside a loader shaped like the reference's.

Inputs (built once, cached): clips the engine writes (``encode_clip`` with the default
``ClipSettings``: 320 short side, keyframes every 32 frames, unreferenced B-frames) from a
TikTok-shaped 1080x1920 video of the sample footage, committed as a published dataset and
written as WebDataset shards, on the embedded store and on S3 (moto's server on loopback).
``--list PATH`` (a VideoMAE pre-training list, ``path 0 -1``) or ``--shards URL`` (an
``index.json``) measure other clips instead.

Per path it decodes every clip once in this process on one thread and prints samples/s and
decoded videos/s per CPU-second (process time: the worker core a DataLoader worker would
spend), for the ViT-B pre-training input (16 frames at stride 4, multi-scale crop to 224,
``--num-sample`` 4, tube + running-cell masks) with the augmentation in the worker (cpu) or
left to the accelerator (device: the worker decodes, draws and masks), and for fine-tuning's
input (16x224, RandAugment m7-n4, erasing 0.25, num_sample 2). The baseline decodes with
decord and multi-scale crops each frame as a PIL image, ``num_sample`` times, as the VideoMAE
V2 reference's pre-training dataset does. ``--workers N`` also times a real DataLoader with N
workers (wall clock; shared machines make it noisy).

The encoding table shows why the clips are written as they are: bytes against the CPU cost of
a random 16x4 window (frames decoded, and CPU ms with PyAV and with decord), for x264's
default keyframe interval and shorter ones, with and without B-frames.

Last, the GPU side: what ViT-B pre-training consumes (``benchmarks/train_throughput.py``'s
step on this machine's GPU, else an A100's bf16 peak through the analytic FLOPs at an assumed
``--mfu``) and how many loader cores one GPU needs.

    .venv/bin/python benchmarks/loader.py [--clips 24] [--workers 2] [--num-sample 4]
"""

from __future__ import annotations

import argparse
import hashlib
import logging
import random
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import replace
from functools import partial
from pathlib import Path
from typing import Any

import av
import decord
import numpy as np
import torch
from moto.server import ThreadedMotoServer
from PIL import Image

sys.path.insert(0, str(Path(__file__).parent))
from data_engine import tiktok_video

from services.clips.encode import ClipSettings, encode_clip
from services.common.config import StoreSettings
from services.common.dataset import Dataset
from services.common.records import ClipRecord, Segment
from services.common.shards import ShardIndex, ShardStream, write_shards
from services.common.store import ClipStore
from services.common.video import VideoReader, probe, write_clip
from services.trainer import videomae
from services.trainer.data import (
    ShardVideoDataset,
    VideoDataset,
    VideoEntry,
    build_loader,
    read_clip_records,
    read_entries,
    train_window,
    with_clip_records,
)
from services.trainer.flops import forward_macs
from services.trainer.transforms import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    MultiScaleCrop,
    PretrainAugment,
    finetune_transform,
    pretrain_transform,
)

# Clips cached per clip settings: a run after a change of the encoding measures new clips.
MEDIA = (
    Path(tempfile.gettempdir())
    / "h2a-bench-loader"
    / hashlib.sha256(ClipSettings().model_dump_json().encode()).hexdigest()[:12]
)
FRAMES, STRIDE, SIZE = 16, 4, 224
SCALES = (1.0, 0.875, 0.75, 0.66)
CLIP_SECONDS = 8
A100_BF16_TFLOPS = 312.0
GRID = (FRAMES // 2, SIZE // 16, SIZE // 16)


def _masks() -> Callable[[torch.Generator], tuple[torch.Tensor, torch.Tensor]]:
    """V2's masks: 90% tube masking, 50% running-cell decoder masking."""
    tube = videomae.TubeMasking(GRID, 0.9)
    cell = videomae.RunningCellMasking(GRID, 0.5)

    def masks(generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        encoder = tube(generator)
        return encoder, cell(generator, encoder)

    return masks


# --- inputs ------------------------------------------------------------------------------


def _engine_clips(store: ClipStore, count: int) -> list[ClipRecord]:
    """``count`` 8 s clips the clip stage cuts from the 60 s TikTok-shaped video."""
    source = tiktok_video(60)
    info = probe(source)
    source_id = hashlib.sha256(source.read_bytes()).hexdigest()
    span = CLIP_SECONDS * 30
    starts = [(n * 67) % (info.frame_count - span) for n in range(count)]
    records = []
    for start in starts:
        segment = Segment(start, start + span, info.fps)
        encoded = encode_clip(source, source_id, segment, store, ClipSettings(), info)
        # Clips of one looped footage are near-duplicates: unsigned, the dataset keeps them all.
        media = replace(encoded.media, signature="")
        records.append(
            ClipRecord(encoded.clip, source_id, str(source), f"tag{start % 5}", start,
                       start + span, info.fps, 10, media=media)
        )  # fmt: skip
    return records


def _publish(store: ClipStore, records: list[ClipRecord]) -> tuple[str, str, str]:
    """The clips as dataset ``loader``: its pre-training list, clips.jsonl and shard index."""
    dataset = Dataset(store, "loader")
    dataset.add(records)
    dataset.publish()
    write_shards(store, "loader")
    index = store.uri(f"{store.shard_prefix('loader')}index.json")
    return dataset.view_uri("pretrain.csv"), dataset.view_uri("clips.jsonl"), index


def _copy_to(target: ClipStore, source: ClipStore, records: list[ClipRecord]) -> list[ClipRecord]:
    copied = []
    for record in records:
        with source.open_local(record.clip) as path:
            ref = target.put_file(record.clip.key, path)
        copied.append(replace(record, clip=ref))
    return copied


# --- the paths measured ------------------------------------------------------------------


def _pretrain_dataset(
    entries: list[VideoEntry], store: ClipStore | None, num_sample: int, on_device: bool
) -> VideoDataset:
    return VideoDataset(
        entries,
        pretrain_transform(SIZE, SCALES, flip=False),
        FRAMES,
        STRIDE,
        num_sample,
        masks=_masks(),
        store=store,
        deferred=PretrainAugment(SIZE, SCALES, flip=False) if on_device else None,
    )


def _finetune_dataset(entries: list[VideoEntry], store: ClipStore | None) -> VideoDataset:
    transform = finetune_transform(SIZE, True, "rand-m7-n4-mstd0.5-inc1", 0.25)
    return VideoDataset(entries, transform, FRAMES, STRIDE, 2, store=store)


def _list_items(dataset: VideoDataset) -> Iterator[Any]:
    return (dataset[(0, index)] for index in range(len(dataset)))


def _shard_items(index: ShardIndex, store: ClipStore, videos: VideoDataset) -> Iterator[Any]:
    stream = ShardStream(index, batch_size=1, store=store, shuffle_buffer=1)
    shards = ShardVideoDataset(stream, videos)
    shards.set_epoch(0)
    return iter(shards)


class _ReferenceMultiScaleCrop:
    """The reference's ``GroupMultiScaleCrop`` on a list of PIL frames: the same crop drawn
    once (as ours draws it), then cut and resized frame by frame (bilinear)."""

    def __init__(self, size: int, scales: tuple[float, ...]) -> None:
        self.size, self.draw = size, MultiScaleCrop(size, scales).draw

    def __call__(self, images: list[Image.Image]) -> list[Image.Image]:
        width, height = images[0].size
        top, left, crop_h, crop_w = self.draw(height, width)
        box = (left, top, left + crop_w, top + crop_h)
        return [im.crop(box).resize((self.size, self.size), Image.BILINEAR) for im in images]


def _baseline_items(paths: list[Path], num_sample: int) -> Iterator[Any]:
    """The reference's shape: decord opens the file (counting frames), ``get_batch`` decodes
    the window, then ``num_sample`` times: per-frame PIL multi-scale crop, stack, to a float
    tensor, normalise; and the masks."""
    crop, masks = _ReferenceMultiScaleCrop(SIZE, SCALES), _masks()
    mean = torch.tensor(IMAGENET_MEAN).view(3, 1, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(3, 1, 1, 1)
    rng = random.Random(0)
    for path in paths:
        reader = decord.VideoReader(str(path), num_threads=1, ctx=decord.cpu(0))
        indices = train_window(len(reader), FRAMES, STRIDE, rng)
        images = [Image.fromarray(frame) for frame in reader.get_batch(indices).asnumpy()]
        generator = torch.Generator().manual_seed(0)
        clips = []
        for _ in range(num_sample):
            stacked = np.stack([np.asarray(im) for im in crop(images)])  # T H W C
            clip = torch.from_numpy(stacked).permute(3, 0, 1, 2).float() / 255.0
            clips.append(((clip - mean) / std, masks(generator)))
        yield clips


def _measure(items: Callable[[], Iterator[Any]], videos: int, num_sample: int) -> dict[str, float]:
    """One pass over ``items()``: CPU-seconds per video and per sample on this thread."""
    start_cpu, start_wall = time.process_time(), time.perf_counter()
    count = sum(1 for _ in items())
    cpu, wall = time.process_time() - start_cpu, time.perf_counter() - start_wall
    if count != videos:
        raise RuntimeError(f"{count} items for {videos} videos")
    return {
        "videos/s/core": videos / cpu,
        "samples/s/core": videos * num_sample / cpu,
        "wall s": wall,
    }


def _loader_rate(dataset: Any, workers: int, batch: int = 4) -> float:
    """Samples/s of a real DataLoader with ``workers`` workers (wall clock, one pass)."""
    loader = build_loader(dataset, batch, workers, None, drop_last=False)
    start, samples = time.perf_counter(), 0
    for got in loader:
        if got.items is not None:
            samples += len(got.items[1])
    return samples / (time.perf_counter() - start)


# --- encoding ----------------------------------------------------------------------------


ENCODINGS = ((0, -1), (32, -1), (32, 3), (64, 7), (32, 7), (16, 7), (32, 0))
"""(keyframe interval, B-frames) rows of the encoding table: 0 is x264's default interval,
-1 x264's own B-frame choice (superfast: up to 3, frame by frame), n >= 0 exactly n."""


def _encoding_table(store_root: Path, windows: int) -> None:
    source = tiktok_video(60)
    info = probe(source)
    rng = random.Random(1)
    print(
        f"\nclip encoding vs one random {FRAMES}x{STRIDE} window "
        f"({CLIP_SECONDS} s clips, 320 short side, crf 23)"
    )
    print(
        f"{'keyframes every':>16} {'B-frames':>9} {'KB/clip':>8} {'PSNR dB':>8} {'decoded':>8} "
        f"{'PyAV ms':>8} {'decord ms':>10}"
    )
    starts = [90 + 200 * n for n in range(8)]
    for interval, bframes in ENCODINGS:
        clips = []
        for n, start in enumerate(starts):
            path = store_root / f"enc-g{interval}-b{bframes}-{n}.mp4"
            if not path.is_file():
                write_clip(source, path, start, start + CLIP_SECONDS * 30, info=info,
                           keyframe_interval=interval, bframes=bframes)  # fmt: skip
            clips.append(path)
        plans = [
            (clip, train_window(CLIP_SECONDS * 30, FRAMES, STRIDE, rng))
            for clip in clips
            for _ in range(windows)
        ]
        start = time.process_time()
        decoded = sum(_pyav_window(clip, indices) for clip, indices in plans)
        pyav_ms = 1000 * (time.process_time() - start) / len(plans)
        start = time.process_time()
        for clip, indices in plans:
            decord.VideoReader(str(clip), num_threads=1).get_batch(indices)
        decord_ms = 1000 * (time.process_time() - start) / len(plans)
        size = np.mean([clip.stat().st_size for clip in clips]) / 1024
        quality = np.mean([_psnr(c, source, first) for c, first in zip(clips, starts, strict=True)])
        label = "x264 (250)" if interval == 0 else str(interval)
        kind = "x264's" if bframes < 0 else str(bframes)
        print(
            f"{label:>16} {kind:>9} {size:>8.0f} {quality:>8.2f} {decoded / len(plans):>8.1f} "
            f"{pyav_ms:>8.1f} {decord_ms:>10.1f}"
        )
    print(
        "PSNR: luma of every clip frame against the source's frame scaled to the clip size; "
        "decoded: frames a window's read decodes"
    )


def _psnr(clip: Path, source: Path, start: int) -> float:
    """Mean luma PSNR of the clip against the source frames it was cut from, at clip size."""
    with VideoReader(clip) as encoded:
        width, height = encoded.size
        got = [frame.to_ndarray()[:height] for _, frame in encoded.frames()]
    scaler = av.video.reformatter.VideoReformatter()
    end = start + len(got)
    with VideoReader(source) as original:
        scaled = (
            scaler.reformat(frame, width=width, height=height, format="yuv420p")
            for _, frame in original.window(start, end)
        )
        wanted = [frame.to_ndarray()[:height] for frame in scaled]
    errors = [np.mean((a.astype(float) - b) ** 2) for a, b in zip(got, wanted, strict=True)]
    return float(np.mean([10 * np.log10(255**2 / max(e, 1e-9)) for e in errors]))


def _pyav_window(path: Path, indices: list[int]) -> int:
    """Read one window as the loader does; the frames it took decoding (timings on a shared
    machine vary by +-20%, this count does not)."""
    with VideoReader(path, threads=False) as video:
        video.rgb(indices)
        return video.decoded


# --- the GPU side -------------------------------------------------------------------------


def _gpu_clips_per_s(mfu: float) -> tuple[float, str]:
    """ViT-B 16x224 pre-training clips/s of one GPU: measured on this machine's GPU, else
    an A100's bf16 peak at ``mfu``."""
    macs = forward_macs("vit_base_patch16_224", FRAMES, SIZE, 0.9, 0.5)
    flops_per_clip = 2 * 3 * macs  # forward + backward ~ 3 forwards
    if torch.cuda.is_available():
        from train_throughput import bench  # the real step on this GPU

        args = argparse.Namespace(size="vit_base_patch16_224", frames=FRAMES, img=SIZE, batch=32,
                                  steps=10, warmup=3, precision="bf16", checkpointing=False,
                                  compile=False)  # fmt: skip
        row = bench("pretrain", args, _cuda_info(), 989.0)
        return row["clips/s"], f"measured on {torch.cuda.get_device_name()}"
    rate = A100_BF16_TFLOPS * 1e12 * mfu / flops_per_clip
    return (
        rate,
        f"A100 bf16 peak {A100_BF16_TFLOPS:.0f} TFLOP/s at {mfu:.0%} MFU, "
        f"{macs / 1e9:.1f} GMAC/clip",
    )


def _cuda_info() -> Any:
    from services.trainer.parallelize import DistInfo

    return DistInfo(rank=0, world=1, local_rank=0, device=torch.device("cuda"))


# --- main --------------------------------------------------------------------------------


def _s3_store(endpoint: str) -> ClipStore:
    return ClipStore.from_settings(
        StoreSettings(backend="s3", endpoint=endpoint, bucket=f"loader-{uuid.uuid4().hex[:8]}",
                      region="us-east-1", access_key="bench", secret_key="bench-secret")
    )  # fmt: skip


Rows = dict[str, dict[str, float]]
BASELINE = "baseline (decord + PIL)"


def _pretrain_rows(
    rows: Rows, label: str, entries: list[VideoEntry], store: ClipStore, k: int
) -> None:
    """The list path, pre-training input, augmentation in the worker and on the device."""
    for aug, on_device in (("device", True), ("cpu", False)):
        rows[f"pretrain, list {label}, {aug} aug"] = _measure(
            partial(_list_items, _pretrain_dataset(entries, store, k, on_device)), len(entries), k
        )


def _shard_rows(rows: Rows, label: str, index: ShardIndex, store: ClipStore, k: int) -> None:
    for aug, on_device in (("device", True), ("cpu", False)):
        rows[f"pretrain, shards {label}, {aug} aug"] = _measure(
            partial(_shard_items, index, store, _pretrain_dataset([], store, k, on_device)),
            index.samples,
            k,
        )


def _given_rows(args: argparse.Namespace, store: ClipStore) -> Rows:
    """The paths on the user's clips: ``--list`` (with the baseline) or ``--shards``."""
    rows: Rows = {}
    k = args.num_sample
    if args.shards:
        _shard_rows(rows, "given", ShardIndex.load(args.shards, store), store, k)
        return rows
    entries = read_entries(args.list, "list", "", "train", store, labelled=False)
    _pretrain_rows(rows, "given", entries, store, k)
    rows["finetune, list given"] = _measure(
        lambda: _list_items(_finetune_dataset(entries, store)), len(entries), 2
    )
    paths = [Path(entry.path.removeprefix("file://")) for entry in entries]
    rows[BASELINE] = _measure(lambda: _baseline_items(paths, k), len(paths), k)
    return rows


def _own_rows(args: argparse.Namespace, local: ClipStore, s3: ClipStore) -> Rows:
    """The paths on engine clips, on the embedded store and on S3, and the baseline."""
    k = args.num_sample
    print(f"making {args.clips} engine clips (cached under {MEDIA}) ...", flush=True)
    records = _engine_clips(local, args.clips)
    rows: Rows = {}
    for label, store, stored in (
        ("local", local, records),
        ("S3", s3, _copy_to(s3, local, records)),
    ):
        pretrain_list, clips_jsonl, index_uri = _publish(store, stored)
        entries = read_entries(pretrain_list, "list", "", "train", store, labelled=False)
        entries = with_clip_records(entries, read_clip_records(clips_jsonl, store))
        _shard_rows(rows, label, ShardIndex.load(index_uri, store), store, k)
        _pretrain_rows(rows, label, entries, store, k)
        if label == "local":
            rows["finetune, list local"] = _measure(
                partial(_list_items, _finetune_dataset(entries, store)), len(entries), 2
            )
            if args.workers:
                dataset = _Keyed(_pretrain_dataset(entries, local, k, True))
                rate = _loader_rate(dataset, args.workers)
                print(
                    f"DataLoader, {args.workers} workers, list local, device aug: "
                    f"{rate:.1f} samples/s wall ({rate / args.workers:.1f} per worker)"
                )
    paths = [Path(local.transport.local_path(record.clip.key)) for record in records]
    rows[BASELINE] = _measure(lambda: _baseline_items(paths, k), len(paths), k)
    return rows


def _print_rows(rows: Rows, k: int) -> None:
    baseline = rows.get(BASELINE)
    print(f"\n{FRAMES} frames at stride {STRIDE}, {SIZE} crops, pre-training num_sample {k}")
    print(f"{'path':<34} {'samples/s/core':>15} {'videos/s/core':>14} {'x baseline':>11}")
    for name, row in rows.items():
        ratio = row["samples/s/core"] / baseline["samples/s/core"] if baseline else float("nan")
        print(
            f"{name:<34} {row['samples/s/core']:>15.1f} {row['videos/s/core']:>14.2f} "
            f"{ratio:>11.2f}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--list", help="a VideoMAE pre-training list (path 0 -1) to measure")
    parser.add_argument("--shards", help="a shard index.json (local or a store URI)")
    parser.add_argument("--clips", type=int, default=24, help="engine clips to make")
    parser.add_argument("--num-sample", type=int, default=4)
    parser.add_argument("--workers", type=int, default=0, help="also time a DataLoader")
    parser.add_argument("--windows", type=int, default=20, help="windows per clip (encoding)")
    parser.add_argument("--mfu", type=float, default=0.4, help="assumed MFU without a GPU")
    args = parser.parse_args()
    torch.set_num_threads(1)  # one worker, one core
    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # moto's access log
    local = ClipStore.from_settings(StoreSettings(backend="local", root=MEDIA / "store"))
    if args.list or args.shards:
        rows = _given_rows(args, local)
    else:
        server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
        server.start()
        try:
            host, port = server.get_host_and_port()
            rows = _own_rows(args, local, _s3_store(f"{host}:{port}"))
        finally:
            server.stop()
    _print_rows(rows, args.num_sample)
    device_rows = {name: row for name, row in rows.items() if "device aug" in name}
    if "pretrain, shards S3, device aug" in rows:
        s3 = rows["pretrain, shards S3, device aug"]["samples/s/core"]
        local_rate = rows["pretrain, shards local, device aug"]["samples/s/core"]
        print(f"shards from S3 / from local disk: {s3 / local_rate:.2f}")
        _encoding_table(MEDIA, args.windows)
    gpu, how = _gpu_clips_per_s(args.mfu)
    best = max(row["samples/s/core"] for row in device_rows.values())
    print(f"\nGPU: {gpu:.0f} ViT-B pre-training clips/s ({how})")
    print(f"loader cores one GPU needs at the best path: {gpu / best:.1f}")
    baseline = rows.get(BASELINE)
    if baseline:
        name = (
            next(n for n in ("pretrain, shards local, device aug",) if n in rows)
            if ("pretrain, shards local, device aug" in rows)
            else next(iter(device_rows))
        )
        ours, theirs = rows[name]["samples/s/core"], baseline["samples/s/core"]
        print(
            f"pretrain samples/s per core: {ours:.1f} (baseline {theirs:.1f}, "
            f"ratio {ours / theirs:.2f})"
        )


class _Keyed(torch.utils.data.Dataset):
    """A ``VideoDataset`` by plain index (epoch 0), for a loader without the resumable
    sampler."""

    def __init__(self, dataset: VideoDataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> Any:
        return self.dataset[(0, index)]


if __name__ == "__main__":
    main()
