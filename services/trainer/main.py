"""The trainer's one entry point: pre-training, fine-tuning, weak-label training, evaluation.

``run(mode, config)`` is the whole job: build -> resume -> epochs (train, validate, checkpoint)
-> final checkpoint -> multi-view test. The same function runs in-process (kfp components,
tests), under ``torchrun`` (CPU, gloo) and in a PyTorchJob container (NCCL); the process group
comes from the environment those set. ``python -m services.trainer`` and ``h2a train`` are its
command line (``services.trainer.commands``).
"""

from __future__ import annotations

import contextlib
import csv
import json
import logging
import random
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import Subset
from tqdm import tqdm

from services.common.dataset import training_lists
from services.common.errors import ConfigError
from services.common.logs import RankFilter
from services.common.records import Rejection
from services.common.store import ClipStore
from services.trainer import videomae
from services.trainer.checkpoint import CheckpointManager, capture_rng, restore_rng
from services.trainer.data import (
    MultiViewDataset,
    ResumableSampler,
    VideoDataset,
    VideoEntry,
    build_loader,
    read_class_names,
    read_entries,
)
from services.trainer.engine import (
    EvalResult,
    classify_step_loss,
    evaluate,
    pretrain_step_loss,
    train_one_epoch,
)
from services.trainer.optim import build_optimizer, cosine_lr, effective_lr
from services.trainer.parallelize import (
    DistInfo,
    all_gather_objects,
    init_distributed,
    parallelize,
    unwrap,
)
from services.trainer.recipes import TrainConfig, apply_overrides, get_recipe, load_config_file
from services.trainer.transforms import (
    build_mixup,
    eval_views,
    finetune_transform,
    pretrain_transform,
)

__all__ = ["MODES", "RunResult", "build_model", "resolve_config", "run", "write_evaluation"]

_logger = logging.getLogger(__name__)

MODES = ("pretrain", "finetune", "evaluate", "weak-label")


@dataclass(frozen=True, slots=True)
class RunResult:
    """Where a run's outputs are."""

    mode: str
    output: Path
    """Local folder: config.json, metrics.jsonl, tensorboard/, evaluation files."""
    checkpoint: str
    """Store URI of the final checkpoint ("" for evaluate)."""
    metrics: Path
    steps: int
    rejected: int
    """Unreadable videos skipped (each reported in rejections.jsonl)."""
    evaluation: dict[str, Any] = field(default_factory=dict)
    """top1, top5, mean_class_accuracy, videos, and the files' local paths and store URIs."""


def _manifest_fields(mode: str, manifest: str, store: ClipStore) -> list[str]:
    """Overrides naming a run's lists: a list file, or a folder of lists (a published dataset,
    a benchmark's lists; local, a store key or URI ending in ``/``) read through the dataset
    owner's ``training_lists``."""
    if not manifest.endswith("/") and not Path(manifest).is_dir():
        return [f"data.train={manifest}"]
    lists = training_lists(manifest, mode, store)
    return [f"data.{split}={location}" for split, location in lists.items()]


def resolve_config(
    mode: str,
    recipe: str,
    *,
    config_file: Path | None = None,
    manifest: str | None = None,
    output: str | None = None,
    overrides: tuple[str, ...] = (),
    store: ClipStore | None = None,
) -> TrainConfig:
    """Recipe (or a saved config file), then ``--manifest``/``--output``, then ``--set``.

    ``output`` names the run: the local folder and the store's ``checkpoints/{name}/``.
    """
    config = load_config_file(config_file) if config_file else get_recipe(recipe)
    extra: list[str] = []
    if manifest:
        extra += _manifest_fields(mode, manifest, store or ClipStore.from_settings())
    if output:
        extra += [f"runtime.output={output}", f"checkpoint.run={Path(output).name}"]
    # JSON-quote values so paths and names are never parsed as numbers.
    quoted = [f"{k}={json.dumps(v)}" for k, _, v in (item.partition("=") for item in extra)]
    return apply_overrides(config, [*quoted, *overrides])


def _amp_dtype(precision: str, device: torch.device) -> torch.dtype | None:
    if precision == "fp32" or (precision == "auto" and device.type != "cuda"):
        return None
    if precision == "fp16" or (precision == "auto" and not torch.cuda.is_bf16_supported()):
        return torch.float16
    return torch.bfloat16


@contextlib.contextmanager
def _opened(source: str, store: ClipStore) -> Iterator[Path]:
    """A readable local path for a file given as a path or a store URI or key."""
    if Path(source).is_file():
        yield Path(source)
        return
    with store.open_local(store.key_from_uri(source) if "://" in source else source) as path:
        yield path


def build_model(mode: str, config: TrainConfig, num_classes: int) -> nn.Module:
    """The pre-training model or the classifier of ``config.model``."""
    m = config.model
    common = dict(
        num_frames=m.num_frames,
        img_size=m.img_size,
        tubelet_size=m.tubelet_size,
        drop_path_rate=m.drop_path_rate,
        use_checkpoint=m.use_checkpoint,
        **m.extra,
    )
    if mode == "pretrain":
        return videomae.create_pretrain_model(m.name, decoder_depth=m.decoder_depth, **common)
    extra = {k: v for k, v in common.items() if not k.startswith("decoder_")}
    return videomae.create_classifier(m.name, num_classes, head_drop_rate=m.head_drop_rate, **extra)


def _mask_fn(
    model: nn.Module, config: TrainConfig
) -> Callable[[torch.Generator], tuple[torch.Tensor, torch.Tensor]]:
    tube = videomae.TubeMasking(model.grid_size, config.model.mask_ratio)
    cell = videomae.RunningCellMasking(model.grid_size, config.model.decoder_mask_ratio)

    def masks(generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        encoder = tube(generator)
        return encoder, cell(generator, encoder)

    return masks


class _Metrics:
    """metrics.jsonl and TensorBoard on rank 0; nothing on the other ranks."""

    def __init__(self, folder: Path, enabled: bool) -> None:
        self.path = folder / "metrics.jsonl"
        self.enabled = enabled
        self.writer = None
        if enabled:
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(str(folder / "tensorboard"))

    def log(self, step: int, values: dict[str, Any]) -> None:
        if not self.enabled:
            return
        with open(self.path, "a") as handle:
            handle.write(json.dumps({"step": step, **values}) + "\n")
        for name, value in values.items():
            if isinstance(value, int | float) and self.writer is not None:
                self.writer.add_scalar(name, value, step)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


def run(mode: str, config: TrainConfig, store: ClipStore | None = None) -> RunResult:
    """Run one training or evaluation job; see the module docstring.

    Args:
        mode: ``pretrain``, ``finetune``, ``weak-label`` or ``evaluate``.
        config: the resolved configuration (a recipe plus overrides).
        store: the clip store (default: from ``H2A_STORE_*``).

    Returns:
        The run's outputs: final checkpoint URI, metrics file, evaluation results and files.
    """
    if mode not in MODES:
        raise ValueError(f"mode {mode!r} is not one of {', '.join(MODES)}")
    info = init_distributed(config.runtime.device)
    if info.rank:
        for handler in logging.getLogger().handlers:
            handler.addFilter(RankFilter(info.rank))
    store = store or ClipStore.from_settings()
    output = Path(config.runtime.output)
    output.mkdir(parents=True, exist_ok=True)
    try:
        return _Job(mode, config, store, info, output).run()
    finally:
        if info.distributed and dist.is_initialized():
            dist.barrier()
            dist.destroy_process_group()


class _Job:
    def __init__(
        self, mode: str, config: TrainConfig, store: ClipStore, info: DistInfo, output: Path
    ) -> None:
        self.mode = mode
        self.config = config
        self.store = store
        self.info = info
        self.output = output
        self.amp = _amp_dtype(config.runtime.precision, info.device)
        self.rejections: list[Rejection] = []
        self.manager = CheckpointManager(
            store,
            config.checkpoint.run,
            config.checkpoint.interval_steps,
            config.checkpoint.keep_latest_k,
        )
        seed = config.runtime.seed + info.rank
        random.seed(seed)
        np.random.seed(seed)
        torch.manual_seed(seed)

    def _entries(self, source: str, subset: str) -> list[VideoEntry]:
        d = self.config.data
        return read_entries(source, d.format, d.root, subset, self.store) if source else []

    def _class_names(self, entries: list[VideoEntry]) -> list[str]:
        if self.config.data.labels:
            with _opened(self.config.data.labels, self.store) as path:
                return read_class_names(path)
        return [str(c) for c in range(max((e.label for e in entries), default=0) + 1)]

    def run(self) -> RunResult:
        c, info = self.config, self.info
        train = self._entries(c.data.train, "train")
        test = self._entries(c.data.test or c.data.val, "test")
        names = self._class_names(train or test) if self.mode != "pretrain" else []
        model = build_model(self.mode, c, len(names))
        if c.model.init_checkpoint:
            self._initialise(model)
        if info.is_main:
            (self.output / "config.json").write_text(json.dumps(c.to_dict(), indent=2) + "\n")
            self.store.put_json(
                self.store.checkpoint_key(c.checkpoint.run, "config.json"), c.to_dict()
            )
        model = parallelize(
            model, info, activation_checkpointing=c.model.use_checkpoint, compile=c.runtime.compile
        )
        steps, checkpoint = 0, ""
        if self.mode != "evaluate":
            steps, checkpoint = self._train(model, train, names)
        elif not c.model.init_checkpoint:
            state = self.manager.load()
            if state is None:
                raise ConfigError(
                    f"evaluate needs model.init_checkpoint or a checkpoint of run "
                    f"{c.checkpoint.run!r} in the store"
                )
            unwrap(model).load_state_dict(state["model"])
        evaluation = self._test(model, test, names) if test and self.mode != "pretrain" else {}
        rejected = len({r.source for r in self.rejections})
        return RunResult(
            self.mode,
            self.output,
            checkpoint,
            self.output / "metrics.jsonl",
            steps,
            rejected,
            evaluation,
        )

    def _initialise(self, model: nn.Module) -> None:
        """Load ``model.init_checkpoint``; only a fresh head may stay unfilled.

        A classifier fine-tuned from pre-training or from another label set gets a new ``head``
        and ``fc_norm``; anything else missing means the wrong checkpoint, which must not train
        or evaluate quietly from random weights.
        """
        source = self.config.model.init_checkpoint
        fresh = ("head.", "fc_norm.") if self.mode in ("finetune", "weak-label") else ()
        with _opened(source, self.store) as path:
            report = videomae.load_checkpoint(model, str(path))
        missing = [k for k in report.missing_keys if not (fresh and k.startswith(fresh))]
        if missing:
            raise videomae.IncompatibleCheckpoint(f"{source} leaves {missing} unfilled")
        _logger.info("initialised from %s (dropped %s)", source, sorted(report.dropped))

    def _train(
        self, model: nn.Module, entries: list[VideoEntry], names: list[str]
    ) -> tuple[int, str]:
        c, info = self.config, self.info
        d, o = c.data, c.optim
        plain = unwrap(model)
        pretrain = self.mode == "pretrain"
        if pretrain:
            transform = pretrain_transform(c.model.img_size, d.train_scales, d.flip)
        else:
            transform = finetune_transform(
                c.model.img_size, d.flip, d.rand_augment, d.reprob, d.crop_scale
            )
        dataset = VideoDataset(
            entries,
            transform,
            c.model.num_frames,
            d.sampling_rate,
            d.num_sample,
            masks=_mask_fn(plain, c) if pretrain else None,
            store=self.store,
            seed=c.runtime.seed,
        )
        sampler = ResumableSampler(len(dataset), info.rank, info.world, c.runtime.seed)
        loader = build_loader(dataset, d.batch_size, d.num_workers, sampler, d.prefetch_factor)
        steps_per_epoch = len(sampler) // d.batch_size
        if steps_per_epoch == 0:
            raise ValueError(
                f"data.batch_size {d.batch_size} exceeds the {len(sampler)} videos per rank"
            )
        clips_per_step = d.batch_size * d.num_sample * info.world
        # The reference scales all three lrs by the batch, not only the peak.
        peak = effective_lr(o.base_lr, clips_per_step)
        warmup_lr = effective_lr(o.warmup_lr, clips_per_step)
        min_lr = effective_lr(o.min_lr, clips_per_step)
        total, warmup = o.epochs * steps_per_epoch, round(o.warmup_epochs * steps_per_epoch)
        _logger.info("%d clips per step, effective lr %.3g, %d steps", clips_per_step, peak, total)
        optimizer = build_optimizer(plain, peak, o.weight_decay, o.betas, o.eps, o.layer_decay)
        scaler = torch.amp.GradScaler(info.device.type, enabled=self.amp == torch.float16)
        mixer = (
            None
            if pretrain
            else build_mixup(d.mixup, d.cutmix, d.mixup_switch_prob, d.smoothing, len(names))
        )
        loss_fn = pretrain_step_loss if pretrain else classify_step_loss(mixer, d.smoothing)
        step, epoch, done = 0, 0, 0
        state = self.manager.load() if c.checkpoint.resume else None
        if state is not None:
            plain.load_state_dict(state["model"])
            optimizer.load_state_dict(state["optimizer"])
            scaler.load_state_dict(state["scaler"])
            step, epoch, done = state["step"], state["data"]["epoch"], state["data"]["batches"]
            restore_rng(state["rng"][info.rank])
            _logger.info(
                "resumed %s at step %d (epoch %d, batch %d)", c.checkpoint.run, step, epoch, done
            )
        metrics = _Metrics(self.output, info.is_main)
        last_ref, saved_at = "", -1
        position = {"epoch": epoch, "batches": done}

        def save(at: int) -> str:
            nonlocal saved_at
            saved_at = at
            rngs = all_gather_objects(capture_rng(), info)
            if not info.is_main:
                return ""
            ref = self.manager.save(
                at,
                {
                    "model": plain.state_dict(),
                    "optimizer": optimizer.state_dict(),
                    "epoch": position["epoch"],
                    "scaler": scaler.state_dict(),
                    "args": c.to_dict(),
                    "step": at,
                    "scheduler": {"step": at, "total": total, "warmup": warmup, "peak": peak},
                    "data": dict(position),
                    "rng": rngs,
                    "mode": self.mode,
                    "classes": names,
                },
            )
            return ref.uri

        def after_step(at: int, values: dict[str, float]) -> bool:
            nonlocal last_ref
            position["batches"] += 1
            if at % c.runtime.log_interval == 0 or at == total:
                metrics.log(at, {"epoch": position["epoch"], **values, "time": time.time()})
            if self.manager.due(at):
                last_ref = save(at)
            return at < total and not (c.runtime.max_steps and at >= c.runtime.max_steps)

        try:
            while epoch < o.epochs and step < total:
                position.update(epoch=epoch, batches=done)
                sampler.set_epoch(epoch, done * d.batch_size)
                batches: Iterator = iter(loader)
                if info.is_main and c.runtime.progress:
                    batches = tqdm(
                        batches, total=steps_per_epoch - done, desc=f"epoch {epoch}", leave=False
                    )
                step = train_one_epoch(
                    model,
                    batches,
                    optimizer,
                    scaler,
                    lambda s: cosine_lr(s, total, warmup, peak, warmup_lr, min_lr),
                    loss_fn,
                    step=step,
                    info=info,
                    amp_dtype=self.amp,
                    clip_grad=o.clip_grad,
                    after_step=after_step,
                    on_rejections=self._reject,
                )
                if c.runtime.max_steps and step >= c.runtime.max_steps:
                    break
                epoch, done = epoch + 1, 0
                position.update(epoch=epoch, batches=0)
                if not pretrain and d.val and epoch % c.runtime.eval_every_epochs == 0:
                    result = self._evaluate(model, self._entries(d.val, "test"), 1, 1, False)
                    metrics.log(
                        step,
                        {"epoch": epoch, "val_top1": result.topk(1), "val_top5": result.topk(5)},
                    )
            if saved_at != step:
                last_ref = save(step)
        finally:
            metrics.close()
        return step, last_ref

    def _reject(self, rejections: list[Rejection]) -> None:
        self.rejections.extend(rejections)
        if self.info.is_main:
            with open(self.output / "rejections.jsonl", "a") as handle:
                handle.writelines(r.to_json() + "\n" for r in rejections)

    def _evaluate(
        self, model: nn.Module, entries: list[VideoEntry], segments: int, crops: int, tsn: bool
    ) -> EvalResult:
        c, info = self.config, self.info
        size = c.model.img_size
        dataset = MultiViewDataset(
            entries,
            lambda frames: eval_views(frames, size, crops),
            c.model.num_frames,
            c.data.sampling_rate,
            segments,
            tsn,
            self.store,
        )
        # Uneven shards are fine here: results are gathered once, not reduced per batch.
        indices = list(range(info.rank, len(dataset), info.world))
        loader = build_loader(
            Subset(dataset, indices),
            max(1, c.data.batch_size // (segments * crops)),
            c.data.num_workers,
            None,
            c.data.prefetch_factor,
            drop_last=False,
        )
        return evaluate(model, loader, info, self.amp)

    def _test(
        self, model: nn.Module, entries: list[VideoEntry], names: list[str]
    ) -> dict[str, Any]:
        d = self.config.data
        result = self._evaluate(model, entries, d.test_segments, d.test_crops, d.tsn_segments)
        if result.rejections:
            self._reject(result.rejections)
        if not self.info.is_main:
            return {}
        return write_evaluation(
            result,
            entries,
            names,
            self.output / "evaluation",
            self.store,
            self.config.checkpoint.run,
        )


def write_evaluation(
    result: EvalResult,
    entries: list[VideoEntry],
    names: list[str],
    folder: Path,
    store: ClipStore,
    run: str,
) -> dict[str, Any]:
    """Top-1/top-5, per-class accuracy, predictions CSV and confusion-matrix PNG.

    Written to ``folder`` and to the store under ``checkpoints/{run}/evaluation/``.
    """
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    folder.mkdir(parents=True, exist_ok=True)
    num_classes = len(names)
    predicted = result.probabilities.argmax(axis=1) if len(result.labels) else np.zeros(0, int)
    with open(folder / "predictions.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["video", "label", "predicted", "confidence", "top5"])
        for row, index in enumerate(result.indices):
            top5 = np.argsort(-result.probabilities[row])[:5]
            writer.writerow([
                entries[index].path, names[result.labels[row]], names[predicted[row]],
                f"{result.probabilities[row, predicted[row]]:.4f}",
                " ".join(names[k] for k in top5),
            ])  # fmt: skip
    per_class = result.per_class_accuracy(num_classes)
    with open(folder / "per_class.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["class", "videos", "accuracy"])
        for c, name in enumerate(names):
            writer.writerow([name, int(np.sum(result.labels == c)), f"{per_class[c]:.4f}"])
    confusion = np.zeros((num_classes, num_classes), dtype=int)
    np.add.at(confusion, (result.labels, predicted), 1)
    side = min(20.0, 3 + 0.3 * num_classes)
    figure, axes = plt.subplots(figsize=(side, side))
    axes.imshow(confusion, cmap="Blues")
    if num_classes <= 60:
        axes.set_xticks(range(num_classes), names, rotation=90, fontsize=6)
        axes.set_yticks(range(num_classes), names, fontsize=6)
    axes.set_xlabel("predicted")
    axes.set_ylabel("label")
    figure.tight_layout()
    figure.savefig(folder / "confusion.png", dpi=100)
    plt.close(figure)
    summary = {
        "top1": result.topk(1),
        "top5": result.topk(5),
        "mean_class_accuracy": float(np.nanmean(per_class)) if len(result.labels) else float("nan"),
        "videos": len(result.labels),
        "rejected": len(result.rejections),
        "rejected_videos": [r.source for r in result.rejections],
    }
    (folder / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    files = {}
    for name in ("predictions.csv", "per_class.csv", "confusion.png", "summary.json"):
        ref = store.put_file(store.checkpoint_key(run, f"evaluation/{name}"), folder / name)
        files[name] = {"path": str(folder / name), "uri": ref.uri}
    _logger.info(
        "evaluation: top1 %.4f top5 %.4f over %d videos",
        summary["top1"],
        summary["top5"],
        summary["videos"],
    )
    return {**summary, "files": files}
