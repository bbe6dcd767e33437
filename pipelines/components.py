"""The KFP components of the curate-and-train pipeline and of the data-scaling study.

Every component is a lightweight ``@dsl.component`` on the services image whose body imports
``pipelines.steps`` and calls one step, then fills its artifacts: kfp's ``SubprocessRunner``
runs only lightweight Python components, and a component body travels as source, so the bodies
import rather than define. A component that uses the store takes it as ``store``, one
description (``StoreSettings.to_description()``, no credentials: those are the secret's env).
"""

from kfp import dsl
from kfp.dsl import (
    Artifact,
    ClassificationMetrics,
    Dataset,
    Input,
    Markdown,
    Metrics,
    Model,
    Output,
)

from pipelines.deployment import SERVICES_IMAGE

__all__ = [
    "curate_shard",
    "dataset_report",
    "evaluate",
    "finetune",
    "no_pretraining",
    "plan_shards",
    "plan_study_baselines",
    "plan_study_subsets",
    "pretrain",
    "screen_benchmarks",
    "study_report",
    "subset_manifest",
    "summarize",
    "training_shards",
]


@dsl.component(base_image=SERVICES_IMAGE)
def plan_shards(
    source: str,
    hashtags: str,
    shards: int,
    store: dict,
    sources: Output[Dataset],
) -> list:
    """Expand the source into videos and split them into shard manifests in the store."""
    from pipelines.steps import open_store, split_sources

    clip_store = open_store(store)
    keys = split_sources(source, hashtags, shards, clip_store)
    rows = [line for key in keys for line in clip_store.get_lines(key)]
    with open(sources.path, "w") as handle:
        handle.writelines(f"{row}\n" for row in rows)
    sources.metadata.update(videos=len(rows), shards=len(keys), source=source)
    return keys


@dsl.component(base_image=SERVICES_IMAGE)
def curate_shard(
    shard: str,
    dataset: str,
    launcher: str,
    stage_services: dict,
    workers: int,
    store: dict,
    clips: Output[Dataset],
) -> str:
    """Ingest -> scenes -> persons -> clip for one shard, committed to the dataset; returns
    the dataset's name.

    In the cluster the stages are the four gRPC services; with ``launcher="local"`` they run
    in this process.
    """
    from pipelines.steps import curate_one_shard, open_store, shard_counts
    from services.common.records import ClipRecord

    clip_store = open_store(store)
    services = None if launcher == "local" else stage_services
    summary = curate_one_shard(shard, dataset, services, clip_store, workers)
    lines = [r.to_json() for r in summary.results if isinstance(r, ClipRecord)]
    with open(clips.path, "w") as handle:
        handle.writelines(f"{line}\n" for line in lines)
    clips.metadata.update(dataset=summary.dataset, **shard_counts(summary))
    return summary.dataset


@dsl.component(base_image=SERVICES_IMAGE)
def dataset_report(
    dataset: str,
    shards: list,
    store: dict,
    manifest: Output[Dataset],
    report: Output[Markdown],
    counts: Output[Metrics],
) -> None:
    """Publish the dataset the shards committed to: the report, its counts and the manifest.

    ``shards`` (the shards' dataset names) orders this step after all of them. The manifest's
    ``folder`` metadata is the dataset's store URI, the trainer's ``--manifest``.
    """
    from pathlib import Path

    from pipelines.steps import open_store, publish, report_markdown
    from services.common.dataset import VIEW_NAMES, Dataset

    clip_store = open_store(store)
    snapshot = publish(dataset, clip_store)
    with open(report.path, "w") as handle:
        handle.write(report_markdown(clip_store, dataset))
    for name, value in snapshot.counts().items():
        if isinstance(value, int):
            counts.log_metric(name, value)
    target = Dataset(clip_store, dataset)
    clip_store.download(target.view_key("pretrain.csv"), Path(manifest.path))
    manifests = {name: target.view_uri(name) for name in VIEW_NAMES}
    folder = target.folder_uri()
    manifest.metadata.update(
        clips=len(snapshot.clips), folder=folder, manifests=manifests, version=snapshot.version
    )


@dsl.component(base_image=SERVICES_IMAGE)
def screen_benchmarks(
    dataset: str, shards: list, benchmarks: dict, store: dict, screens: Output[Markdown]
) -> str:
    """Flag clips that match a benchmark's evaluation videos before the dataset is published
    for pre-training (``benchmarks``: name -> list file or folder; empty: nothing to screen).

    ``shards`` (the shards' dataset names) orders this step after all of them.
    """
    from pipelines.steps import open_store
    from pipelines.steps import screen_benchmarks as screen

    with open(screens.path, "w") as handle:
        handle.write(screen(dataset, benchmarks, open_store(store)))
    return dataset


@dsl.component(base_image=SERVICES_IMAGE)
def training_shards(
    dataset: str, manifest: Input[Dataset], store: dict, shards: Output[Dataset]
) -> None:
    """The published dataset as WebDataset shards, what pre-training streams; ``shards``
    carries the index's URI as ``folder``, the trainer's ``--manifest``."""
    from pipelines.steps import open_store
    from pipelines.steps import training_shards as write

    index = write(dataset, open_store(store))
    shards.metadata.update(folder=index, version=manifest.metadata["version"])


@dsl.component(base_image=SERVICES_IMAGE)
def pretrain(
    manifest: Input[Dataset],
    run_id: str,
    model_size: str,
    epochs: int,
    overrides: list,
    launcher: str,
    image: str,
    secret_name: str,
    gpu_node_selector: dict,
    gpus_per_node: int,
    num_nodes: int,
    timeout_s: float,
    job_kind: str,
    store: dict,
    checkpoint: Output[Model],
    curves: Output[Markdown],
    history: Output[Metrics],
) -> None:
    """Dual-masking pre-training on the curated clips; the checkpoint's URI is in metadata,
    the loss and lr per step in ``curves`` (a plot) and ``history``."""
    from pipelines.steps import (
        PRETRAIN_RECIPES,
        Cluster,
        job_name,
        keep_checkpoint,
        model_overrides,
        open_store,
        record_training,
        store_env,
        train,
    )

    clip_store = open_store(store)
    run = job_name("pretrain", run_id)
    uri = train(
        "pretrain",
        PRETRAIN_RECIPES[model_size],
        run,
        manifest.metadata["folder"],
        [*model_overrides(model_size), f"optim.epochs={epochs}", *overrides],
        launcher,
        clip_store,
        store_env(store),
        Cluster(
            image, secret_name, gpu_node_selector, gpus_per_node, num_nodes, timeout_s, job_kind
        ),
    )
    keep_checkpoint(uri, clip_store, checkpoint)
    checkpoint.metadata.update(model_size=model_size, epochs=epochs)
    record_training(clip_store, run, curves, history)


@dsl.component(base_image=SERVICES_IMAGE)
def finetune(
    benchmark: str,
    pretrained: Input[Model],
    run_id: str,
    model_size: str,
    epochs: int,
    overrides: list,
    synthetic_per_class: int,
    benchmark_root: str,
    launcher: str,
    image: str,
    secret_name: str,
    gpu_node_selector: dict,
    gpus_per_node: int,
    num_nodes: int,
    timeout_s: float,
    job_kind: str,
    store: dict,
    checkpoint: Output[Model],
    curves: Output[Markdown],
    history: Output[Metrics],
) -> None:
    """Fine-tune the pre-trained encoder on one benchmark (from random weights when the
    ``pretrained`` model's uri is empty); the checkpoint's URI is in metadata, the loss, lr and
    validation top-1 in ``curves`` (a plot) and ``history``."""
    from pipelines.steps import (
        Cluster,
        benchmark_lists,
        finetune_recipe,
        job_name,
        keep_checkpoint,
        model_overrides,
        open_store,
        record_training,
        store_env,
        train,
    )

    clip_store = open_store(store)
    lists = benchmark_lists(benchmark, benchmark_root, clip_store, synthetic_per_class)
    run = job_name("finetune", benchmark, run_id)
    uri = train(
        "finetune",
        finetune_recipe(model_size, benchmark),
        run,
        lists["train"],
        [
            *model_overrides(model_size),
            f"data.val={lists['val']}",
            f"data.labels={lists['labels']}",
            f"model.init_checkpoint={pretrained.metadata['uri']}",
            f"optim.epochs={epochs}",
            *overrides,
        ],
        launcher,
        clip_store,
        store_env(store),
        Cluster(
            image, secret_name, gpu_node_selector, gpus_per_node, num_nodes, timeout_s, job_kind
        ),
    )
    keep_checkpoint(uri, clip_store, checkpoint)
    checkpoint.metadata.update(benchmark=benchmark, model_size=model_size, epochs=epochs)
    record_training(clip_store, run, curves, history)


@dsl.component(base_image=SERVICES_IMAGE)
def evaluate(
    benchmark: str,
    finetuned: Input[Model],
    run_id: str,
    model_size: str,
    overrides: list,
    synthetic_per_class: int,
    benchmark_root: str,
    store: dict,
    metrics: Output[Metrics],
    confusion: Output[ClassificationMetrics],
) -> str:
    """Multi-view test of the fine-tuned model; returns its results (and ``run``: the
    ``run_id``) as JSON for the summary."""
    import json

    from pipelines.steps import (
        benchmark_lists,
        evaluate_checkpoint,
        finetune_recipe,
        job_name,
        model_overrides,
        open_store,
    )

    clip_store = open_store(store)
    lists = benchmark_lists(benchmark, benchmark_root, clip_store, synthetic_per_class)
    result = evaluate_checkpoint(
        benchmark,
        lists,
        finetuned.metadata["uri"],
        finetune_recipe(model_size, benchmark),
        [*model_overrides(model_size), *overrides],
        job_name("evaluate", benchmark, run_id),
        clip_store,
    )
    metrics.log_metric("top1", float(result["top1"]))
    metrics.log_metric("top5", float(result["top5"]))
    metrics.log_metric("videos", int(result["videos"]))
    confusion.log_confusion_matrix(result["classes"], result["confusion_matrix"])
    keys = ("benchmark", "top1", "top5", "videos")
    return json.dumps({**{k: result[k] for k in keys}, "run": run_id})


@dsl.component(base_image=SERVICES_IMAGE)
def summarize(results: list, model_size: str, summary: Output[Markdown]) -> None:
    """Compare the benchmark results with the paper's table."""
    import json

    from pipelines.steps import summary_markdown

    with open(summary.path, "w") as handle:
        handle.write(summary_markdown([json.loads(r) for r in results], model_size))


# --- the data-scaling study --------------------------------------------------------------


@dsl.component(base_image=SERVICES_IMAGE)
def plan_study_subsets(
    dataset: str,
    sizes: list,
    repeats: int,
    seed: int,
    run_id: str,
    pretrain_overrides: list,
    finetune_overrides: list,
    store: dict,
) -> list:
    """Draw ``repeats`` random subsets of each size from the published dataset into the store;
    returns one dict per subset (``pipelines.steps.plan_subsets``)."""
    from pipelines.steps import open_store, plan_subsets

    return plan_subsets(
        open_store(store),
        dataset,
        sizes,
        repeats,
        seed,
        run_id,
        pretrain_overrides,
        finetune_overrides,
    )


@dsl.component(base_image=SERVICES_IMAGE)
def plan_study_baselines(repeats: int, seed: int, run_id: str, finetune_overrides: list) -> list:
    """The from-scratch runs, one per repeat (``pipelines.steps.plan_baselines``)."""
    from pipelines.steps import plan_baselines

    return plan_baselines(repeats, seed, run_id, finetune_overrides)


@dsl.component(base_image=SERVICES_IMAGE)
def subset_manifest(subset: dict, manifest: Output[Dataset]) -> None:
    """A subset's list folder as the manifest ``pretrain`` reads (``folder`` metadata)."""
    manifest.metadata.update(
        folder=subset["folder"], size=int(subset["size"]), repeat=int(subset["repeat"])
    )
    with open(manifest.path, "w") as handle:
        handle.write(subset["folder"] + "\n")


@dsl.component(base_image=SERVICES_IMAGE)
def no_pretraining(model: Output[Model]) -> None:
    """No checkpoint (an empty ``uri``): ``finetune`` from it starts from random weights, the
    from-scratch baseline."""
    model.metadata["uri"] = ""
    with open(model.path, "w") as handle:
        handle.write("")


@dsl.component(base_image=SERVICES_IMAGE)
def study_report(
    dataset: str,
    run_id: str,
    benchmark: str,
    subsets: list,
    baselines: list,
    results: list,
    baseline_results: list,
    store: dict,
    report: Output[Markdown],
    plot: Output[Artifact],
    summary: Output[Metrics],
) -> None:
    """The table and plot of top-1/top-5 against subset size, with the spread over repeats,
    the from-scratch baseline and the monotone-or-not verdict; also in the store."""
    import json

    from pipelines.steps import open_store, study_summary, write_study_report

    computed = study_summary(
        subsets,
        baselines,
        [json.loads(r) for r in results],
        [json.loads(r) for r in baseline_results],
    )
    write_study_report(
        open_store(store), dataset, run_id, benchmark, computed, report, plot, summary
    )
