"""Training throughput of the VideoMAE V2 step: clips/s, step time, peak memory and MFU.

Runs the real step (``services.trainer.engine.train_one_epoch``) on in-memory random clips, so
it measures the model, optimiser and autocast, not the loader. FLOPs are analytic:
``flops.forward_macs`` per clip x 2 (FLOPs per MAC) x 3 (forward + backward ~ 3 forwards).
MFU = achieved FLOP/s / peak FLOP/s; the peak defaults to an H100's dense bf16 989 TFLOP/s on
CUDA and to a measured fp32 matmul rate on CPU.

    python benchmarks/train_throughput.py                       # tiny model on CPU
    python benchmarks/train_throughput.py --size vit_base_patch16_224 --frames 16 --img 224 \
        --batch 32 --precision bf16                               # ViT-B 16x224 on a GPU
"""

from __future__ import annotations

import argparse
import resource
import time

import torch

from services.trainer import videomae
from services.trainer.data import Batch
from services.trainer.engine import classify_step_loss, pretrain_step_loss, train_one_epoch
from services.trainer.flops import forward_macs
from services.trainer.optim import build_optimizer
from services.trainer.parallelize import DistInfo, parallelize

H100_BF16_DENSE_TFLOPS = 989.0
_TINY = dict(patch_size=8, embed_dim=64, depth=2, num_heads=4)
_TINY_DECODER = dict(decoder_embed_dim=32, decoder_num_heads=2, decoder_depth=1)


def measured_matmul_tflops(device: torch.device, dtype: torch.dtype, size: int = 2048) -> float:
    """The rate of a large square matmul: the practical peak of this device and dtype."""
    a = torch.randn(size, size, device=device, dtype=dtype)
    b = torch.randn(size, size, device=device, dtype=dtype)
    a @ b
    best = float("inf")
    # Best of several trials: on a shared machine the slowest trials measure the neighbours.
    for _ in range(5):
        _sync(device)
        start = time.perf_counter()
        for _ in range(5):
            a @ b
        _sync(device)
        best = min(best, (time.perf_counter() - start) / 5)
    return 2 * size**3 / best / 1e12


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def _model(mode: str, args: argparse.Namespace) -> torch.nn.Module:
    sizes = dict(num_frames=args.frames, img_size=args.img, use_checkpoint=args.checkpointing)
    if args.size == "tiny":
        name, sizes = "vit_small_patch16_224", {**sizes, **_TINY}
        if mode == "pretrain":
            sizes.update(_TINY_DECODER)
    else:
        name = args.size
    if mode == "pretrain":
        return videomae.create_pretrain_model(name, **sizes)
    return videomae.create_classifier(name, 400, **sizes)


def bench(mode: str, args: argparse.Namespace, info: DistInfo, peak_tflops: float) -> dict:
    """Time ``args.steps`` steps after ``args.warmup`` untimed ones."""
    torch.manual_seed(0)
    model = parallelize(
        _model(mode, args), info, activation_checkpointing=args.checkpointing, compile=args.compile
    )
    plain = getattr(model, "_orig_mod", model)
    grid = plain.grid_size
    clips = torch.randn(args.batch, 3, args.frames, args.img, args.img)
    if mode == "pretrain":
        gen = torch.Generator().manual_seed(0)
        tube = videomae.TubeMasking(grid, 0.9)
        cell = videomae.RunningCellMasking(grid, 0.5)
        masks = torch.stack([torch.stack([tube(gen), cell(gen)]) for _ in range(args.batch)])
        batch = Batch((clips, None, masks, None), [])
        loss_fn = pretrain_step_loss
        macs = forward_macs(plain, args.frames, args.img, 0.9, 0.5)
    else:
        labels = torch.randint(0, 400, (args.batch,))
        batch = Batch((clips, labels, None, None), [])
        loss_fn = classify_step_loss(None, 0.1)
        macs = forward_macs(plain, args.frames, args.img)
    amp = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": None}[args.precision]
    optimizer = build_optimizer(plain, 1e-4, 0.05, (0.9, 0.95))
    scaler = torch.amp.GradScaler(info.device.type, enabled=amp == torch.float16)
    times: list[float] = []

    def after_step(step: int, metrics: dict[str, float], batches: int) -> bool:
        _sync(info.device)  # the loss .item() already waits; this keeps the timing honest
        times.append(time.perf_counter())
        return True

    if info.device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    train_one_epoch(
        model, [batch] * (args.warmup + args.steps), optimizer, scaler, lambda s: 1e-4, loss_fn,
        step=0, info=info, amp_dtype=amp, clip_grad=1.0, after_step=after_step,
        on_rejections=lambda r: None,
    )  # fmt: skip
    durations = [end - begin for begin, end in zip([start, *times], times, strict=False)]
    timed = durations[args.warmup :]
    step_s = sum(timed) / len(timed)
    flops = 6 * macs * args.batch / step_s
    if info.device.type == "cuda":
        memory = torch.cuda.max_memory_allocated() / 2**30
    else:
        memory = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB -> GiB
    return {
        "mode": mode,
        "model": args.size,
        "clips/s": args.batch / step_s,
        "step ms": step_s * 1e3,
        "GMAC/clip": macs / 1e9,
        "TFLOP/s": flops / 1e12,
        "MFU %": 100 * flops / 1e12 / peak_tflops,
        "peak GiB": memory,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size", default="tiny", help="tiny or a videomae MODEL_NAMES entry")
    parser.add_argument("--mode", choices=("pretrain", "finetune", "both"), default="both")
    parser.add_argument("--frames", type=int, default=8)
    parser.add_argument("--img", type=int, default=32)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--precision", choices=("bf16", "fp16", "fp32"), default=None,
                        help="default: bf16 on CUDA, fp32 on CPU")  # fmt: skip
    parser.add_argument("--peak-tflops", type=float, default=None,
                        help="default: 989 (H100 bf16 dense) on CUDA; CPU: measured")  # fmt: skip
    parser.add_argument("--checkpointing", action="store_true")
    parser.add_argument("--compile", action="store_true")
    args = parser.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    args.precision = args.precision or ("bf16" if device.type == "cuda" else "fp32")
    info = DistInfo(rank=0, world=1, local_rank=0, device=device)
    peak = args.peak_tflops
    if peak is None:
        peak = (
            H100_BF16_DENSE_TFLOPS
            if device.type == "cuda"
            else measured_matmul_tflops(device, torch.float32)
        )
    modes = ("pretrain", "finetune") if args.mode == "both" else (args.mode,)
    rows = [bench(mode, args, info, peak) for mode in modes]
    name = torch.cuda.get_device_name() if device.type == "cuda" else "CPU"
    print(f"device {name}, {args.precision}, {args.frames}x{args.img}x{args.img}, "
          f"batch {args.batch}, peak {peak:.3f} TFLOP/s")  # fmt: skip
    header = list(rows[0])
    print(" | ".join(f"{h:>10}" for h in header))
    for row in rows:
        print(
            " | ".join(f"{v:>10.3f}" if isinstance(v, float) else f"{v:>10}" for v in row.values())
        )


if __name__ == "__main__":
    main()
