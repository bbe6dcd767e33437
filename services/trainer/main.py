"""The trainer's one entry point: pre-training, fine-tuning, weak-label training, evaluation.

``run(mode, config)`` is the whole job: build -> resume -> epochs (train, validate, checkpoint)
-> final checkpoint -> multi-view test. This module wires the parts: the configuration
(``resolve_config``), the model, the data, the training loop (``services.trainer.training``),
the checkpoint manager that owns the resumable state (``services.trainer.checkpoint``) and the
test's outputs (``services.trainer.evaluation``). The same function runs in-process (kfp
components, tests), under ``torchrun`` (CPU, gloo) and in a PyTorchJob container (NCCL); the
process group comes from the environment those set. ``python -m services.trainer`` and
``h2a train`` are its command line (``services.trainer.commands``).
"""

from __future__ import annotations

import argparse
import json
import logging
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from timm.utils import ModelEmaV2
from torch import nn
from torch.utils.data import DataLoader, Subset

from services.common.dataset import training_lists
from services.common.errors import ConfigError
from services.common.logs import RankFilter
from services.common.shards import INDEX_NAME, ShardIndex, ShardStream
from services.common.store import ClipStore
from services.trainer import label_maps, videomae
from services.trainer.checkpoint import CheckpointManager, RankRandomStates, Stateful
from services.trainer.data import (
    FrameFolders,
    MultiViewDataset,
    ResumableSampler,
    ShardVideoDataset,
    VideoDataset,
    VideoEntry,
    build_loader,
    read_class_names,
    read_clip_records,
    read_entries,
    with_clip_records,
)
from services.trainer.engine import (
    EvalResult,
    LossFn,
    classify_step_loss,
    evaluate,
    on_device_augment,
    pretrain_step_loss,
)
from services.trainer.evaluation import write_evaluation
from services.trainer.optim import build_optimizer
from services.trainer.parallelize import DistInfo, init_distributed, parallelize, unwrap
from services.trainer.recipes import TrainConfig, apply_overrides, get_recipe, load_config_file
from services.trainer.training import (
    METRICS_NAME,
    MetricsLog,
    RejectionLog,
    TrainProgress,
    build_schedule,
    train,
)
from services.trainer.transforms import (
    PretrainAugment,
    build_mixup,
    eval_views,
    finetune_transform,
    pretrain_transform,
)

__all__ = ["MODES", "RunResult", "build_model", "resolve_config", "run"]

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
    """One run's wiring: its config, store, process and output folder, shared by the steps."""

    def __init__(
        self, mode: str, config: TrainConfig, store: ClipStore, info: DistInfo, output: Path
    ) -> None:
        self.mode = mode
        self.config = config
        self.store = store
        self.info = info
        self.output = output
        self.amp = _amp_dtype(config.runtime.precision, info.device)
        self.rejections = RejectionLog(output / "rejections.jsonl", info.is_main)
        seed = config.runtime.seed + info.rank
        random.seed(seed)
        np.random.seed(seed)
        torch.manual_seed(seed)

    def run(self) -> RunResult:
        c = self.config
        shards = None
        # A shard index, or the folder that holds one (``h2a dataset shards`` writes both).
        if PurePosixPath(c.data.train.rstrip("/")).name in (INDEX_NAME, "shards"):
            shards = ShardIndex.load(c.data.train, self.store)
        train_entries = [] if shards else self._entries(c.data.train, "train")
        test_entries = self._entries(c.data.test or c.data.val, "test")
        names = []
        if self.mode != "pretrain":
            names = self._class_names(train_entries or test_entries, shards)
        model = build_model(self.mode, c, len(names))
        if c.model.init_checkpoint:
            self._initialise(model, names)
        if self.info.is_main:
            (self.output / "config.json").write_text(json.dumps(c.to_dict(), indent=2) + "\n")
            self.store.put_json(
                self.store.checkpoint_key(c.checkpoint.run, "config.json"), c.to_dict()
            )
        model = parallelize(
            model,
            self.info,
            activation_checkpointing=c.model.use_checkpoint,
            compile=c.runtime.compile,
        )
        steps, checkpoint = 0, ""
        if self.mode != "evaluate":
            steps, checkpoint = self._train(model, train_entries, names, shards)
        elif not c.model.init_checkpoint:
            self._restore_model(model)
        evaluation = {}
        if test_entries and self.mode != "pretrain":
            evaluation = self._test(model, test_entries, names)
        return RunResult(
            self.mode,
            self.output,
            checkpoint,
            self.output / "metrics.jsonl",
            steps,
            len(self.rejections.sources),
            evaluation,
        )

    def _entries(self, source: str, subset: str) -> list[VideoEntry]:
        d = self.config.data
        if not source:
            return []
        # A pre-training list's 3-column lines are ``path start total``, a labelled one's
        # ``dir total label``.
        labelled = self.mode != "pretrain" or subset != "train"
        entries = read_entries(source, d.format, d.root, subset, self.store, labelled=labelled)
        if d.records:
            entries = with_clip_records(entries, read_clip_records(d.records, self.store))
        return entries

    def _class_list(self, given: str, read: Callable[[Path], list[str]]) -> list[str]:
        """A shipped class list by name (``label_maps.CLASS_LISTS``), else the file or store
        object ``given`` names, read with ``read``."""
        if given in label_maps.CLASS_LISTS:
            return list(label_maps.CLASS_LISTS[given])
        with self.store.open_location(given) as path:
            return read(path)

    def _frame_folders(self) -> FrameFolders:
        return FrameFolders(self.config.data.frame_template, self.config.data.frame_start)

    def _class_names(self, entries: list[VideoEntry], shards: ShardIndex | None) -> list[str]:
        labels = self.config.data.labels
        if labels:
            return self._class_list(labels, read_class_names)
        if shards is not None:  # the shards' labels are the dataset's labels.json
            return [name for name, _ in sorted(shards.labels.items(), key=lambda kv: kv[1])]
        return [str(c) for c in range(max((e.label for e in entries), default=0) + 1)]

    def _initialise(self, model: nn.Module, names: list[str]) -> None:
        """Load ``model.init_checkpoint``; only a fresh head may stay unfilled.

        A classifier fine-tuned from pre-training or from another label set gets a new ``head``
        and ``fc_norm``, unless ``model.remap_head`` keeps the checkpoint's head rows of this
        run's classes (``names``); anything else missing means the wrong checkpoint, which must
        not train or evaluate quietly from random weights.
        """
        m = self.config.model
        source = m.init_checkpoint
        fresh = ("head.", "fc_norm.") if self.mode in ("finetune", "weak-label") else ()
        with self.store.open_location(source) as path:
            if not m.remap_head:
                report = videomae.load_checkpoint(model, str(path))
            else:
                if self.mode == "pretrain":
                    raise ValueError("model.remap_head needs a classifier, not pre-training")
                fresh = ()
                with torch.serialization.safe_globals([argparse.Namespace]):
                    checkpoint = torch.load(path, map_location="cpu", weights_only=True)
                rows = label_maps.head_label_map(self._head_classes(checkpoint, source), names)
                report = videomae.load_checkpoint(model, checkpoint, head_rows=rows)
        missing = [k for k in report.missing_keys if not (fresh and k.startswith(fresh))]
        if missing:
            raise videomae.IncompatibleCheckpoint(f"{source} leaves {missing} unfilled")
        _logger.info("initialised from %s (dropped %s)", source, sorted(report.dropped))

    def _head_classes(self, checkpoint: Any, source: str) -> list[str]:
        """The class of each head row: the checkpoint's own, else ``model.head_classes`` (a
        shipped list by name, ``kinetics710`` for an official K710 file, or a file)."""
        if isinstance(checkpoint, dict) and checkpoint.get("classes"):
            return list(checkpoint["classes"])
        given = self.config.model.head_classes
        if given:
            return self._class_list(given, label_maps.read_names)
        raise ConfigError(
            f"{source} names no classes of its head: give model.head_classes (a shipped list "
            f"such as kinetics710, or a file of its row names, one per line) for "
            f"model.remap_head"
        )

    def _restore_model(self, model: nn.Module) -> None:
        """Evaluate the run's own latest checkpoint: its model, nothing else."""
        if not self._checkpoints({"model": unwrap(model)}).restore():
            raise ConfigError(
                f"evaluate needs model.init_checkpoint or a checkpoint of run "
                f"{self.config.checkpoint.run!r} in the store"
            )

    def _checkpoints(self, states: dict[str, Stateful], **parts: Any) -> CheckpointManager:
        """The run's checkpoint manager over ``states`` (``parts``: progress, metadata)."""
        k = self.config.checkpoint
        return CheckpointManager(
            self.store,
            k.run,
            k.interval_steps,
            k.keep_latest_k,
            states,
            writes=self.info.is_main,
            **parts,
        )

    def _train(
        self,
        model: nn.Module,
        entries: list[VideoEntry],
        names: list[str],
        shards: ShardIndex | None,
    ) -> tuple[int, str]:
        """Train ``model`` on ``entries`` or streamed ``shards``; returns the step reached and
        the final checkpoint."""
        c, info = self.config, self.info
        d, o = c.data, c.optim
        plain = unwrap(model)
        pretrain = self.mode == "pretrain"
        on_device = d.augment_on == "device" or (
            d.augment_on == "auto" and info.device.type == "cuda"
        )
        deferred = None
        if pretrain and on_device:
            deferred = PretrainAugment(c.model.img_size, d.train_scales, d.flip)
        videos = VideoDataset(
            entries,
            self._train_transform(),
            c.model.num_frames,
            d.sampling_rate,
            d.num_sample,
            masks=_mask_fn(plain, c) if pretrain else None,
            store=self.store,
            seed=c.runtime.seed,
            tsn=d.tsn_segments,
            strides=d.stride_by_path,
            folders=self._frame_folders(),
            deferred=deferred,
            pretrain=pretrain,
        )
        sampler: ResumableSampler | ShardVideoDataset
        if shards is None:
            sampler = ResumableSampler(len(videos), info.rank, info.world, c.runtime.seed)
            loader = build_loader(videos, d.batch_size, d.num_workers, sampler, d.prefetch_factor)
        else:
            stream = ShardStream(
                shards,
                batch_size=d.batch_size,
                store=self.store,
                rank=info.rank,
                world=info.world,
                num_workers=d.num_workers,
                seed=c.runtime.seed,
                shuffle_buffer=d.shuffle_buffer,
            )
            sampler = ShardVideoDataset(stream, videos)
            loader = build_loader(sampler, d.batch_size, d.num_workers, None, d.prefetch_factor)
        steps_per_epoch = len(sampler) // (d.batch_size * o.update_freq)
        if steps_per_epoch == 0:
            raise ValueError(
                f"data.batch_size {d.batch_size} x optim.update_freq {o.update_freq} exceeds "
                f"the {len(sampler)} videos per rank"
            )
        schedule = build_schedule(c, info.world, steps_per_epoch)
        videos_per_step = d.batch_size * info.world * o.update_freq
        _logger.info(
            "%d videos (%d clips) per step, effective lr %.3g, %d steps",
            videos_per_step,
            videos_per_step * d.num_sample,
            schedule.peak,
            schedule.total,
        )
        progress = TrainProgress(schedule)
        optimizer = build_optimizer(
            plain, progress.schedule.peak, o.weight_decay, o.betas, o.eps, o.layer_decay
        )
        scaler = torch.amp.GradScaler(info.device.type, enabled=self.amp == torch.float16)
        loss_fn = self._loss_fn(len(names))
        if deferred is not None:
            loss_fn = on_device_augment(deferred, loss_fn)
        # The reference's ModelEma: a copy of the weights on the model's device.
        ema = ModelEmaV2(plain, decay=c.model.ema_decay) if c.model.ema else None
        states: dict[str, Stateful] = {
            "model": plain,
            "optimizer": optimizer,
            "scaler": scaler,
            "rng": RankRandomStates(info),
        }
        if ema is not None:
            states["model_ema"] = ema.module
        checkpoints = self._checkpoints(
            states,
            progress=progress,
            metadata={"args": c.to_dict(), "mode": self.mode, "classes": names},
        )
        resumed = c.checkpoint.resume and checkpoints.restore()
        if resumed:
            _logger.info(
                "resumed %s at step %d (epoch %d, batch %d)",
                c.checkpoint.run,
                progress.step,
                progress.epoch,
                progress.batches,
            )
        validate = None
        if d.val and self.mode != "pretrain":
            validate = partial(self._validate, model, self._entries(d.val, "test"))
        metrics = MetricsLog(
            self.output,
            info.is_main,
            self.store,
            self.store.checkpoint_key(c.checkpoint.run, METRICS_NAME),
            resumed,
        )
        try:
            saved = train(
                model,
                loader,
                sampler,
                optimizer,
                scaler,
                loss_fn,
                progress,
                checkpoints,
                epochs=o.epochs,
                info=info,
                amp_dtype=self.amp,
                clip_grad=o.clip_grad,
                update_freq=o.update_freq,
                metrics=metrics,
                rejections=self.rejections,
                log_interval=c.runtime.log_interval,
                max_steps=c.runtime.max_steps,
                validate=validate,
                eval_every_epochs=c.runtime.eval_every_epochs,
                show_progress=info.is_main and c.runtime.progress,
                ema=ema,
            )
        finally:
            metrics.close()
        return progress.step, saved.uri if saved else ""

    def _train_transform(self) -> Callable[[np.ndarray], Any]:
        m, d = self.config.model, self.config.data
        if self.mode == "pretrain":
            return pretrain_transform(m.img_size, d.train_scales, d.flip)
        return finetune_transform(
            m.img_size, d.flip, d.rand_augment, d.reprob, d.crop_scale, d.pixels
        )

    def _loss_fn(self, num_classes: int) -> LossFn:
        if self.mode == "pretrain":
            return pretrain_step_loss
        d = self.config.data
        mixer = build_mixup(d.mixup, d.cutmix, d.mixup_switch_prob, d.smoothing, num_classes)
        return classify_step_loss(mixer, d.smoothing)

    def _validate(self, model: nn.Module, entries: list[VideoEntry]) -> EvalResult:
        """One view per video (the reference's centred validation window; for SSv2 TSN, the
        middle of each segment); the loader (and its workers) lives for this pass only."""
        loader = self._multi_view_loader(
            entries, 1, 1, self.config.data.tsn_segments, validation=True
        )
        return evaluate(model, loader, self.info, self.amp)

    def _multi_view_loader(
        self,
        entries: list[VideoEntry],
        segments: int,
        crops: int,
        tsn: bool,
        validation: bool = False,
    ) -> DataLoader:
        """This rank's share of ``entries``, each video as ``segments x crops`` views."""
        c, info = self.config, self.info
        size = c.model.img_size
        dataset = MultiViewDataset(
            entries,
            lambda frames: eval_views(frames, size, crops, c.data.pixels),
            c.model.num_frames,
            c.data.sampling_rate,
            segments,
            tsn,
            self.store,
            self._frame_folders(),
            validation,
        )
        # Uneven shards are fine here: results are gathered once, not reduced per batch.
        indices = list(range(info.rank, len(dataset), info.world))
        return build_loader(
            Subset(dataset, indices),
            max(1, c.data.batch_size // (segments * crops)),
            c.data.num_workers,
            None,
            c.data.prefetch_factor,
            drop_last=False,
        )

    def _test(
        self, model: nn.Module, entries: list[VideoEntry], names: list[str]
    ) -> dict[str, Any]:
        """The multi-view test of ``model``; its outputs written and uploaded on rank 0."""
        d = self.config.data
        loader = self._multi_view_loader(entries, d.test_segments, d.test_crops, d.tsn_segments)
        result = evaluate(model, loader, self.info, self.amp)
        self.rejections.record(result.rejections)
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
