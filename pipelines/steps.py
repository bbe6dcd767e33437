"""What each pipeline step does, as plain functions the components call.

The components (``pipelines/components.py``) are lightweight KFP functions whose bodies import
this module: kfp runs a component body with ``_KFP_RUNTIME=true``, where ``kfp.dsl`` has no
``component`` decorator, so the logic cannot live in the module that declares the components.
Kept here it is importable and testable without KFP, and a component body stays a few lines.

The store is given to each step as one description, ``StoreSettings.to_description()``: its
settings but the credentials, which arrive as ``H2A_STORE_ACCESS_KEY``/``H2A_STORE_SECRET_KEY``
from a Kubernetes secret the pipeline attaches, so they never appear in the run's parameters.
"""

from __future__ import annotations

import base64
import csv
import itertools
import json
import random
import re
import tempfile
from collections import Counter
from hashlib import sha256
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

from pipelines.deployment import SERVICES_IMAGE
from pipelines.launcher import (
    KubernetesLauncher,
    LocalLauncher,
    Placement,
    PyTorchJobRenderer,
    TrainingJobSpec,
    TrainJobRenderer,
)
from services.common.config import StoreSettings
from services.common.dataset import LIST_FOLDER, Dataset, Snapshot, training_lists
from services.common.errors import InvalidSource, ObjectNotFound, error_from_reason
from services.common.records import STAGES, Rejection
from services.common.scratch import scratch_dir
from services.common.store import ClipStore, LocalTransport
from services.ingestion.sources import expand_source
from services.trainer.recipes import RECIPES

# Imported where used: curation loads the detectors and training loads torch, which the light
# steps (planning, report, summary) and the IR compiler should not pay for.
if TYPE_CHECKING:
    from kfp.dsl import Artifact, Markdown, Metrics, Model

    from services.curation.curate import CurateSummary

__all__ = [
    "IMAGE",
    "PAPER_RESULTS",
    "PRETRAIN_RECIPES",
    "STAGE_SERVICES",
    "STUDY_FOLDER",
    "Cluster",
    "benchmark_lists",
    "curate_one_shard",
    "curves_png",
    "evaluate_checkpoint",
    "finetune_recipe",
    "history_summary",
    "job_name",
    "keep_checkpoint",
    "model_overrides",
    "open_store",
    "plan_baselines",
    "plan_subsets",
    "publish",
    "record_training",
    "report_markdown",
    "shard_counts",
    "split_sources",
    "store_env",
    "study_markdown",
    "study_plot_png",
    "study_prefix",
    "study_summary",
    "summary_markdown",
    "train",
    "training_history",
    "write_study_report",
]

IMAGE = SERVICES_IMAGE
"""The project image (the Helm chart's ``image.repository`` at the chart's appVersion)."""

STAGE_SERVICES = {name: f"hashtag2action-{name}:50051" for name in STAGES}
"""In-cluster addresses of the four services for a Helm release named ``hashtag2action``."""

PRETRAIN_RECIPES = {
    "tiny": "tiny_pretrain",
    "base": "vit_b_pretrain_800e",
    "giant": "vit_g_pretrain_1200e",
}

# Top-1 of the seed paper's TikTok rows (pre-trained on 0.28M TikTok clips; its results table).
PAPER_RESULTS = {
    "base": {"k400": 81.1, "ssv2": 69.2, "ucf101": 97.5, "hmdb51": 83.9},
    "giant": {"k400": 85.51, "ssv2": 74.27, "ucf101": 99.05, "hmdb51": 86.08},
}

# The synthetic benchmark (services.trainer.synthetic) matches the tiny recipes' 8 frames at
# stride 2 on 64x64 frames.
_SYNTHETIC = {"num_frames": 16, "size": 64, "seed": 0}
_BENCHMARK_SPLITS = ("train", "val", "test", "labels")
_INLINED_PREVIEWS = 24


def open_store(description: dict[str, Any]) -> ClipStore:
    """The clip store a step uses; credentials come from the environment."""
    return ClipStore.from_settings(StoreSettings.from_description(description))


def store_env(description: dict[str, Any]) -> dict[str, str]:
    """The same store as the environment a training process (torchrun, PyTorchJob) reads it
    from; the credentials reach a PyTorchJob's pods from the secret, beside this."""
    return StoreSettings.from_description(description).to_env()


# --- curation ----------------------------------------------------------------------------


def split_sources(source: str, hashtags: str, shards: int, store: ClipStore) -> list[str]:
    """Expand ``source`` into videos and store them as up to ``shards`` source manifests.

    Args:
        source: anything ``expand_source`` accepts (file, folder, URL, s3:// prefix, manifest).
        hashtags: comma-separated hashtags to keep; empty keeps every video.
        shards: how many manifests to split the videos into (round robin).
        store: where the manifests go (``state/shards/{sha256}.jsonl``, content-addressed so a
            retried step writes the same keys).

    Returns:
        The store keys of the shard manifests.
    """

    if shards < 1:
        raise ValueError(f"shards={shards} must be at least 1")
    items = expand_source(source)
    keep = {tag.strip().lstrip("#") for tag in hashtags.split(",") if tag.strip()}
    if keep:
        items = [item for item in items if item.hashtag in keep]
    if not items:
        raise InvalidSource(f"no videos in {source!r} for hashtags {sorted(keep) or 'any'}")
    count = min(shards, len(items))
    keys = []
    for index in range(count):
        rows = [
            json.dumps({**item.metadata, "url": item.location, "hashtag": item.hashtag})
            for item in items[index::count]
        ]
        text = "\n".join(rows) + "\n"
        key = ClipStore.state_key(f"shards/{sha256(text.encode()).hexdigest()[:32]}.jsonl")
        store.put_text(key, text)
        keys.append(key)
    return keys


def curate_one_shard(
    shard_key: str,
    dataset: str,
    services: dict[str, str] | None,
    store: ClipStore,
    workers: int = 2,
    deadline_s: float = 600.0,
) -> CurateSummary:
    """Curate one shard manifest through the four stages into the dataset.

    Shards commit into the one dataset concurrently (each commit is a new part, see
    ``services.common.dataset``) and do not publish: ``publish`` does, once, after all shards.

    Args:
        services: stage name -> ``host:port`` of the gRPC services; None runs them in-process.

    Raises:
        H2AError: the retryable error of sources that broke off (their outcomes are not
            recorded): the step fails after committing the rest, and KFP's retry redoes them.
    """
    from services.curation.curate import CurateSettings, build_stages, curate

    settings = CurateSettings(dataset=dataset, workers=workers)
    stages = build_stages(settings, store, services or None, deadline_s)
    with scratch_dir("shard") as folder:
        manifest = store.download(shard_key, Path(folder) / "shard.jsonl")
        summary = curate(
            str(manifest), stages, store, dataset, workers=workers, progress=False, publish=False
        )
    if summary.failed:
        first = summary.failed[0]
        raise error_from_reason(
            first.reason,
            f"{len(summary.failed)} sources of shard {shard_key} left for a retry; first: "
            f"{first.source}: {first.detail}",
        )
    return summary


def shard_counts(summary: CurateSummary) -> dict[str, Any]:
    """What a shard's curation did, stage by stage: videos that passed each stage."""
    failed = Counter(r.stage for r in summary.results if isinstance(r, Rejection))
    counts: dict[str, Any] = {
        "videos": summary.videos,
        "clips": summary.clips,
        "review": summary.review,
        "rejected": summary.rejected,
        "reasons": summary.reasons,
    }
    passed = summary.videos
    for stage in STAGES:
        passed -= failed.get(stage, 0)
        counts[f"passed_{stage}"] = passed
    return counts


def publish(dataset: str, store: ClipStore) -> Snapshot:
    """Publish the dataset's lists and report from everything the shards committed."""
    from services.curation.curate import publish_dataset

    return publish_dataset(store, dataset)


def screen_benchmarks(dataset: str, benchmarks: dict[str, str], store: ClipStore) -> str:
    """Flag the dataset's clips that match a benchmark's evaluation videos (``benchmarks``:
    name -> a VideoMAE list or a folder of videos, local or in the store); the checks are
    dataset records, so the next publish leaves flagged clips out. Returns a Markdown table."""
    from services.curation.contamination import check_contamination

    if not benchmarks:
        return "No benchmark to screen against (the `benchmark_screens` parameter is empty).\n"
    rows = ["| benchmark | videos | clips flagged |", "|---|---:|---:|"]
    for check in check_contamination(store, dataset, benchmarks):
        rows.append(f"| {check.benchmark} | {check.videos} | {len(check.matches)} |")
    return "\n".join(rows) + "\n"


def training_shards(dataset: str, store: ClipStore) -> str:
    """The published dataset as WebDataset shards; returns the index's URI (``data.train``)."""
    from services.common.shards import INDEX_NAME, write_shards

    write_shards(store, dataset)
    return store.uri(f"{store.shard_prefix(dataset)}{INDEX_NAME}")


def report_markdown(store: ClipStore, dataset: str) -> str:
    """The dataset report with its plots and first preview sheets inlined, so the KFP UI shows
    it without the store; further sheets (386 hashtags would weigh tens of MB) are named by
    their store URI."""
    from services.curation.report import REPORT_NAME

    target = Dataset(store, dataset)
    text = store.get_text(target.view_key(REPORT_NAME))
    previews = 0

    def inline(match: re.Match[str]) -> str:
        nonlocal previews
        name = match.group(2)
        if name.startswith("previews/"):
            previews += 1
            if previews > _INLINED_PREVIEWS:
                return f"(preview sheet `{target.view_uri(name)}`)"
        data = base64.b64encode(store.get_bytes(target.view_key(name))).decode()
        mime = "image/jpeg" if name.endswith(".jpg") else "image/png"
        return f"![{match.group(1)}](data:{mime};base64,{data})"

    return re.sub(r"!\[([^\]]*)\]\(((?:plots|previews)/[^)]+\.(?:png|jpg))\)", inline, text)


# --- training ----------------------------------------------------------------------------


def job_name(*parts: str) -> str:
    """A Kubernetes object name (DNS-1123 label) from ``parts``."""
    name = re.sub(r"[^a-z0-9-]+", "-", "-".join(parts).lower()).strip("-")
    return name[:63].rstrip("-")


def finetune_recipe(model_size: str, benchmark: str) -> str:
    """The fine-tuning recipe of a benchmark for a model size (ViT-g has its own recipes)."""
    recipe = {"tiny": "tiny_finetune", "giant": f"vit_g_{benchmark}_finetune"}.get(
        model_size, f"{benchmark}_finetune"
    )
    if recipe not in RECIPES:
        raise ValueError(f"no fine-tuning recipe for model_size={model_size!r} on {benchmark!r}")
    return recipe


def model_overrides(model_size: str) -> list[str]:
    if model_size not in PRETRAIN_RECIPES:
        raise ValueError(f"model_size {model_size!r} is not one of {sorted(PRETRAIN_RECIPES)}")
    return ["model.name=vit_giant_patch14_224"] if model_size == "giant" else []


def benchmark_lists(benchmark: str, root: str, store: ClipStore, per_class: int) -> dict[str, str]:
    """Store URIs of a benchmark's ``train``/``val``/``test`` lists and ``labels``.

    ``synthetic`` is generated (``services.trainer.synthetic``) and uploaded under
    ``{root}/synthetic-{per_class}/``; any other benchmark must already be in the store as a
    folder of VideoMAE lists ``{root}/{benchmark}/`` (``LIST_FOLDER`` names: ``train.csv``,
    ``val.csv``, ``test.csv`` with ``path label`` lines, and ``classInd.txt`` or
    ``labels.json``).
    """

    if benchmark == "synthetic":
        return _upload_synthetic(f"{root}/synthetic-{per_class}", store, per_class)
    folder = f"{root}/{benchmark}/"
    lists = training_lists(folder, "finetune", store)
    missing = [split for split in _BENCHMARK_SPLITS if split not in lists]
    if missing:
        raise ObjectNotFound(
            f"benchmark {benchmark!r} has no {', '.join(missing)} list in {folder} of the store",
            key=folder,
        )
    return lists


def _upload_synthetic(prefix: str, store: ClipStore, per_class: int) -> dict[str, str]:
    from services.trainer.synthetic import write_moving_shapes

    # Seeded, so the same every time: generated once per store (the lists go last, after the
    # videos they name, so finding them all means a complete upload).
    uploaded = training_lists(f"{prefix}/", "finetune", store)
    if all(split in uploaded for split in _BENCHMARK_SPLITS):
        return uploaded
    with scratch_dir("synthetic") as folder:
        files = write_moving_shapes(Path(folder), per_class=per_class, **_SYNTHETIC)
        uris = {
            str(path): store.put_file(f"{prefix}/videos/{path.name}", path).uri
            for path in sorted(Path(files["videos"]).glob("*.mp4"))
        }
        for split in ("train", "val", "test"):
            lines = []
            for line in files[split].read_text().splitlines():
                path, label = line.rsplit(" ", 1)
                lines.append(f"{uris[path]} {label}")
            store.put_lines(f"{prefix}/{LIST_FOLDER[split][0]}", lines)
        # classInd.txt: the class names by 1-based index, as UCF101 ships them.
        store.put_file(f"{prefix}/{LIST_FOLDER['labels'][1]}", files["classes"])
    return training_lists(f"{prefix}/", "finetune", store)


def _run_folder(run: str) -> str:
    """The trainer's local output folder; what matters of it is also written to the store."""
    return str(Path(tempfile.gettempdir()) / "h2a-runs" / run)


class Cluster(NamedTuple):
    """What a Kubernetes launch needs beyond the trainer's arguments."""

    image: str
    secret_name: str
    node_selector: dict[str, str]
    gpus_per_node: int
    num_nodes: int
    timeout_s: float
    job_kind: str = "PyTorchJob"
    """``PyTorchJob`` (Training Operator v1) or ``TrainJob`` (Kubeflow Trainer v2)."""


_RENDERERS = {"PyTorchJob": PyTorchJobRenderer, "TrainJob": TrainJobRenderer}


def train(
    mode: str,
    recipe: str,
    run: str,
    manifest: str,
    overrides: list[str],
    launcher: str,
    store: ClipStore,
    env: dict[str, str],
    cluster: Cluster,
) -> str:
    """Run the trainer as a PyTorchJob (``launcher="kubernetes"``) or under local torchrun.

    Args:
        mode: the trainer's mode (``pretrain``, ``finetune``).
        recipe: a name of ``services.trainer.recipes.RECIPES``.
        run: run name: the store's ``checkpoints/{run}/``; a retried step resumes from there.
        manifest: the trainer's ``--manifest`` (a list, or a folder URI ending in ``/``).
        overrides: ``section.field=value`` strings.
        launcher: ``kubernetes`` or ``local``.
        store: the store the run writes its checkpoints to.
        env: the store as environment of the training processes.
        cluster: image, secret and placement of a Kubernetes launch.

    Returns:
        The store URI of the run's final checkpoint.
    """
    from services.trainer.checkpoint import CheckpointManager

    args = [mode, "--recipe", recipe, "--manifest", manifest, "--output", _run_folder(run)]
    for item in overrides:
        args += ["--set", item]
    if launcher == "local":
        spec = TrainingJobSpec(name=job_name(run), args=tuple(args), nproc_per_node=1, env=env)
        LocalLauncher().run(spec)
    elif launcher == "kubernetes":
        if len(cluster.node_selector) != 1:
            raise ValueError(f"gpu_node_selector {cluster.node_selector} must hold one label")
        ((label, value),) = cluster.node_selector.items()
        spec = TrainingJobSpec(
            name=job_name(run),
            args=tuple(args),
            image=cluster.image,
            num_nodes=cluster.num_nodes,
            nproc_per_node=cluster.gpus_per_node,
            secret_name=cluster.secret_name,
            env=env,
            placement=Placement(
                node_selector_label=label,
                node_selector_value=value,
                gpus_per_pod=cluster.gpus_per_node,
            ),
        )
        if cluster.job_kind not in _RENDERERS:
            raise ValueError(f"job_kind {cluster.job_kind!r} is not one of {sorted(_RENDERERS)}")
        KubernetesLauncher(
            _RENDERERS[cluster.job_kind](),
            namespace=_own_namespace(),
            timeout_s=cluster.timeout_s,
        ).run(spec)
    else:
        raise ValueError(f"launcher {launcher!r} is not 'kubernetes' or 'local'")
    latest = CheckpointManager(store, run, interval=1, keep_latest_k=1).latest()
    if latest is None:
        raise ObjectNotFound(f"run {run} finished without a checkpoint under checkpoints/{run}/")
    return latest.uri


def _own_namespace() -> str:
    """The namespace this pod runs in: training jobs go beside it, where the RBAC allows."""
    path = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")
    return path.read_text().strip() if path.is_file() else "kubeflow"


def keep_checkpoint(uri: str, store: ClipStore, artifact: Model) -> None:
    """Fill a Model artifact: the checkpoint itself on an embedded store; on S3, where the
    checkpoint already sits in the object store KFP uses and can weigh gigabytes, a pointer."""
    artifact.metadata["uri"] = uri
    if isinstance(store.transport, LocalTransport):
        store.download(store.key_from_uri(uri), Path(artifact.path))
    else:
        Path(artifact.path).write_text(json.dumps({"uri": uri}) + "\n")


def evaluate_checkpoint(
    benchmark: str,
    lists: dict[str, str],
    checkpoint_uri: str,
    recipe: str,
    overrides: list[str],
    run: str,
    store: ClipStore,
) -> dict[str, Any]:
    """Multi-view test of a fine-tuned checkpoint, in this process (its pod holds the GPU).

    Returns:
        The trainer's evaluation (``top1``, ``top5``, ``videos``, ...) plus ``benchmark``,
        ``classes`` and ``confusion_matrix`` (rows: label, columns: prediction).
    """
    from services.trainer.main import resolve_config
    from services.trainer.main import run as run_trainer

    config = resolve_config(
        "evaluate",
        recipe,
        output=_run_folder(run),
        overrides=(
            f"data.test={lists['test']}",
            f"data.labels={lists['labels']}",
            f"model.init_checkpoint={checkpoint_uri}",
            *overrides,
        ),
        store=store,
    )
    evaluation = run_trainer("evaluate", config, store).evaluation
    files = {name: Path(entry["path"]) for name, entry in evaluation["files"].items()}
    with files["per_class.csv"].open(newline="") as handle:
        classes = [row["class"] for row in csv.DictReader(handle)]
    index = {name: i for i, name in enumerate(classes)}
    matrix = [[0] * len(classes) for _ in classes]
    with files["predictions.csv"].open(newline="") as handle:
        for row in csv.DictReader(handle):
            matrix[index[row["label"]]][index[row["predicted"]]] += 1
    return {
        **evaluation,
        "benchmark": benchmark,
        "classes": classes,
        "confusion_matrix": matrix,
    }


def summary_markdown(results: list[dict[str, Any]], model_size: str) -> str:
    """Our top-1/top-5 per benchmark beside the seed paper's and VideoMAE V2's table."""
    paper = PAPER_RESULTS.get(model_size, {})
    lines = [
        f"# Benchmark results (model size `{model_size}`)",
        "",
        "| benchmark | top-1 (%) | top-5 (%) | seed paper top-1 (%) | difference |",
        "|---|---:|---:|---:|---:|",
    ]
    for result in sorted(results, key=lambda r: r["benchmark"]):
        top1, top5 = 100 * float(result["top1"]), 100 * float(result["top5"])
        reference = paper.get(result["benchmark"])
        cells = (
            ("-", "-") if reference is None else (f"{reference:.2f}", f"{top1 - reference:+.2f}")
        )
        lines.append(
            f"| {result['benchmark']} | {top1:.2f} | {top5:.2f} | {cells[0]} | {cells[1]} |"
        )
    lines += [
        "",
        "Seed-paper rows: pre-trained on TikTok 0.28M clips (ViT-B 800 epochs, ViT-g 1200 epochs);",
        "our recipes count epochs as the reference does (800e = 200 loader epochs x 4 augmented",
        "clips); whether the seed paper's 800 epochs count the same way is unverified.",
        "VideoMAE V2 on UnlabeledHybrid 1.35M reaches 81.5 (K400) and 71.2 (SSv2) with ViT-B.",
        "Benchmarks or model sizes outside the paper's table have no reference.",
    ]
    return "\n".join(lines) + "\n"


# --- training curves ---------------------------------------------------------------------


def training_history(store: ClipStore, run: str) -> list[dict[str, Any]]:
    """The rows of a run's metrics.jsonl, which the trainer keeps beside its checkpoints."""
    from services.trainer.training import METRICS_NAME

    key = store.checkpoint_key(run, METRICS_NAME)
    if not store.exists(key):
        return []
    rows: dict[tuple[int, bool], dict[str, Any]] = {}
    for line in store.get_lines(key):
        row = json.loads(line)
        # A step logged again by a resumed run: the last one wins.
        rows[(row["step"], "loss" in row)] = row
    return [rows[key] for key in sorted(rows)]


def _png_markdown(alt: str, png: bytes) -> str:
    """An image inlined, so the KFP UI shows it without access to the store."""
    return f"![{alt}](data:image/png;base64,{base64.b64encode(png).decode()})"


def _figure_png(figure: Any) -> bytes:
    import io

    import matplotlib.pyplot as plt

    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=100, bbox_inches="tight")
    plt.close(figure)
    return buffer.getvalue()


def curves_png(rows: list[dict[str, Any]], title: str) -> bytes:
    """Loss and lr per step, and validation top-1 where the run validated."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = [row for row in rows if "loss" in row]
    validations = [row for row in rows if "val_top1" in row]
    figure, axes = plt.subplots(1, 3 if validations else 2, figsize=(12, 3.2))
    for axis, name in zip(axes, ("loss", "lr"), strict=False):
        axis.plot([row["step"] for row in steps], [row[name] for row in steps])
        axis.set_xlabel("step")
        axis.set_title(name)
    if validations:
        axes[2].plot(
            [row["step"] for row in validations],
            [100 * row["val_top1"] for row in validations],
            marker="o",
        )
        axes[2].set_xlabel("step")
        axes[2].set_title("validation top-1 (%)")
    figure.suptitle(title)
    return _figure_png(figure)


def history_summary(rows: list[dict[str, Any]]) -> dict[str, float]:
    """The last step's loss and lr and the best validation top-1: a training step's Metrics."""
    steps = [row for row in rows if "loss" in row]
    summary: dict[str, float] = {}
    if steps:
        summary.update(steps=steps[-1]["step"], final_loss=steps[-1]["loss"])
        summary["final_lr"] = steps[-1]["lr"]
    validations = [row["val_top1"] for row in rows if "val_top1" in row]
    if validations:
        summary["best_val_top1"] = max(validations)
    return summary


def record_training(store: ClipStore, run: str, curves: Markdown, history: Metrics) -> None:
    """Fill a training step's curves (Markdown, the plot inlined) and history (Metrics)."""
    rows = training_history(store, run)
    text = f"# Training curves of `{run}`\n\n"
    text += _png_markdown(run, curves_png(rows, run)) if rows else "No metrics were logged.\n"
    Path(curves.path).write_text(text + "\n")
    for name, value in history_summary(rows).items():
        history.log_metric(name, value)


# --- the data-scaling study (the paper's Fig. 4) -----------------------------------------

STUDY_FOLDER = "studies"
"""Store folder of the studies: ``studies/{dataset}/{run id}/`` holds a run's subset lists,
``results.json``, ``report.md`` and ``plot.png``."""


def study_prefix(dataset: str, run_id: str) -> str:
    return f"{STUDY_FOLDER}/{dataset}/{run_id}/"


def _seeded(overrides: list[str], seed: int) -> list[str]:
    return [*overrides, f"runtime.seed={seed}"]


def plan_subsets(
    store: ClipStore,
    dataset: str,
    sizes: list[int],
    repeats: int,
    seed: int,
    run_id: str,
    pretrain_overrides: list[str],
    finetune_overrides: list[str],
) -> list[dict[str, Any]]:
    """Draw ``repeats`` independent random subsets of each size and store them as lists.

    Subset ``(size, repeat)`` holds ``size`` clips of the dataset's published snapshot, drawn
    without replacement by a generator seeded with ``(seed, size, repeat)``, so a rerun draws
    the same ones. Each is a folder with a ``pretrain.csv`` (the trainer's ``--manifest``).

    Returns:
        One dict per subset: ``tag``, ``size``, ``repeat``, ``run_id`` (unique per subset and
        pipeline run), ``folder`` (store URI) and the pre-training and fine-tuning overrides,
        seeded by the repeat so repeats differ in more than their clips.

    Raises:
        ValueError: no sizes, a size below 1 or above the dataset's clips, or repeats below 1.
    """
    clips = Dataset(store, dataset).snapshot().pretrain_lines()
    sizes = [int(size) for size in sizes]
    if not sizes or min(sizes) < 1 or max(sizes) > len(clips):
        raise ValueError(f"sizes {sizes} must lie in [1, {len(clips)}], the clips of {dataset!r}")
    if repeats < 1:
        raise ValueError(f"repeats={repeats} must be at least 1")
    subsets = []
    for size in sorted(set(sizes)):
        for repeat in range(repeats):
            tag = f"n{size}-r{repeat}"
            prefix = f"{study_prefix(dataset, run_id)}{tag}/"
            lines = random.Random(f"{seed}:{size}:{repeat}").sample(clips, size)
            store.put_lines(f"{prefix}{LIST_FOLDER['pretrain'][0]}", lines)
            subsets.append(
                {
                    "tag": tag,
                    "size": size,
                    "repeat": repeat,
                    "run_id": f"{tag}-{run_id}",
                    "folder": store.prefix_uri(prefix),
                    "pretrain_overrides": _seeded(pretrain_overrides, seed + repeat),
                    "finetune_overrides": _seeded(finetune_overrides, seed + repeat),
                }
            )
    return subsets


def plan_baselines(
    repeats: int, seed: int, run_id: str, finetune_overrides: list[str]
) -> list[dict[str, Any]]:
    """The from-scratch runs: the same fine-tuning, no pre-training, one per repeat."""
    return [
        {
            "tag": f"scratch-r{repeat}",
            "repeat": repeat,
            "run_id": f"scratch-r{repeat}-{run_id}",
            "finetune_overrides": _seeded(finetune_overrides, seed + repeat),
        }
        for repeat in range(repeats)
    ]


def _spread(values: list[float]) -> dict[str, float]:
    mean = sum(values) / len(values)
    variance = sum((v - mean) ** 2 for v in values) / max(1, len(values) - 1)
    return {"mean": mean, "std": variance**0.5, "min": min(values), "max": max(values)}


def study_summary(
    subsets: list[dict[str, Any]],
    baselines: list[dict[str, Any]],
    results: list[dict[str, Any]],
    baseline_results: list[dict[str, Any]],
) -> dict[str, Any]:
    """Top-1/top-5 per subset size over the repeats, the from-scratch baseline, the verdict.

    ``results`` are the evaluate steps' outputs (each names its ``run``). ``monotone`` is
    whether the mean top-1 never falls as the subset grows.

    Raises:
        ValueError: a planned run without a result.
    """
    by_run = {result["run"]: result for result in [*results, *baseline_results]}
    missing = [run["run_id"] for run in [*subsets, *baselines] if run["run_id"] not in by_run]
    if missing:
        raise ValueError(f"no evaluation for runs {missing}")

    def metrics(runs: list[dict[str, Any]]) -> dict[str, Any]:
        evaluated = [by_run[run["run_id"]] for run in runs]
        return {
            "repeats": len(evaluated),
            "top1": _spread([100 * float(r["top1"]) for r in evaluated]),
            "top5": _spread([100 * float(r["top5"]) for r in evaluated]),
            "runs": {run["tag"]: by_run[run["run_id"]] for run in runs},
        }

    sizes = sorted({int(subset["size"]) for subset in subsets})
    rows = [
        metrics([s for s in subsets if int(s["size"]) == size]) | {"size": size} for size in sizes
    ]
    means = [row["top1"]["mean"] for row in rows]
    return {
        "sizes": rows,
        "scratch": metrics(baselines),
        "monotone": all(b >= a for a, b in itertools.pairwise(means)),
    }


def study_plot_png(summary: dict[str, Any], benchmark: str) -> bytes:
    """Top-1 and top-5 against subset size: each repeat, the mean, +/- one standard deviation,
    and the from-scratch baseline as a band."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, 2, figsize=(11, 4))
    sizes = [row["size"] for row in summary["sizes"]]
    for axis, metric in zip(axes, ("top1", "top5"), strict=True):
        for row in summary["sizes"]:
            values = [100 * float(r[metric]) for r in row["runs"].values()]
            axis.scatter([row["size"]] * len(values), values, color="tab:blue", alpha=0.4, s=14)
        axis.errorbar(
            sizes,
            [row[metric]["mean"] for row in summary["sizes"]],
            yerr=[row[metric]["std"] for row in summary["sizes"]],
            marker="o",
            capsize=4,
            label="pre-trained on the subset",
        )
        scratch = summary["scratch"][metric]
        axis.axhline(scratch["mean"], color="tab:red", linestyle="--", label="from scratch")
        axis.axhspan(
            scratch["mean"] - scratch["std"],
            scratch["mean"] + scratch["std"],
            color="tab:red",
            alpha=0.1,
        )
        axis.set_xlabel("pre-training videos")
        axis.set_ylabel(f"{benchmark} {metric.replace('top', 'top-')} (%)")
        axis.legend()
    figure.suptitle(f"Data scaling on {benchmark}")
    return _figure_png(figure)


def study_markdown(summary: dict[str, Any], benchmark: str, png: bytes) -> str:
    """The study's table (mean +/- std, min-max over the repeats), its verdict and its plot."""
    lines = [
        f"# Data-scaling study on {benchmark}",
        "",
        "| pre-training videos | repeats | top-1 (%) | top-1 min-max | top-5 (%) |",
        "|---:|---:|---:|---:|---:|",
    ]
    labelled = [(str(row["size"]), row) for row in summary["sizes"]]
    for label, row in [*labelled, ("from scratch", summary["scratch"])]:
        top1, top5 = row["top1"], row["top5"]
        lines.append(
            f"| {label} | {row['repeats']} | {top1['mean']:.2f} ± {top1['std']:.2f} | "
            f"{top1['min']:.2f}-{top1['max']:.2f} | {top5['mean']:.2f} ± {top5['std']:.2f} |"
        )
    verdict = "rises monotonically" if summary["monotone"] else "does not rise monotonically"
    lines += [
        "",
        f"Mean top-1 {verdict} with the pre-training subset's size.",
        "",
        _png_markdown("top-1 and top-5 against subset size", png),
    ]
    return "\n".join(lines) + "\n"


def write_study_report(
    store: ClipStore,
    dataset: str,
    run_id: str,
    benchmark: str,
    summary: dict[str, Any],
    report: Markdown,
    plot: Artifact,
    metrics: Metrics,
) -> None:
    """The study's outputs as artifacts (report, plot, metrics) and in the store."""
    png = study_plot_png(summary, benchmark)
    text = study_markdown(summary, benchmark, png)
    Path(report.path).write_text(text)
    Path(plot.path).write_bytes(png)
    prefix = study_prefix(dataset, run_id)
    store.put_json(f"{prefix}results.json", summary)
    store.put_text(f"{prefix}report.md", text)
    store.put_bytes(f"{prefix}plot.png", png)
    report.metadata["uri"] = store.uri(f"{prefix}report.md")
    plot.metadata["uri"] = store.uri(f"{prefix}plot.png")
    for row in summary["sizes"]:
        for metric in ("top1", "top5"):
            metrics.log_metric(f"{metric}_n{row['size']}_mean", row[metric]["mean"])
            metrics.log_metric(f"{metric}_n{row['size']}_std", row[metric]["std"])
    for metric in ("top1", "top5"):
        metrics.log_metric(f"{metric}_scratch_mean", summary["scratch"][metric]["mean"])
    metrics.log_metric("monotone", float(summary["monotone"]))
