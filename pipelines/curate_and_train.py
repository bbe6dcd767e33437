"""The Hashtag2Action pipeline: hashtag videos in, benchmark results out.

plan shards -> ParallelFor(shard): curate (ingest -> scenes -> persons -> clip) -> Collected ->
benchmark screens -> dataset report -> training shards -> pre-training (PyTorchJob) ->
ParallelFor(benchmark): fine-tuning (PyTorchJob) -> evaluation -> Collected -> summary against
the paper's table.

Kubernetes specifics are attached here (``pipelines.placement``), not in the components: the
store secret as environment on every step that opens the store; the GPU node pool,
``nvidia.com/gpu`` toleration, GPU limit and ``/dev/shm`` on evaluation, which runs in its own
pod. Pre-training and fine-tuning pods only
launch PyTorchJobs, so they ask for no GPU; they receive the trainer image, the secret name and
the node-pool parameters to render the jobs' pods with the same placement. The defaults of those
parameters are ``pipelines.deployment``'s.
"""

from pathlib import Path
from typing import NamedTuple

from kfp import compiler, dsl
from kfp.dsl import Markdown

from pipelines import components as c
from pipelines.deployment import GPU_NODE_SELECTOR, STORE_SECRET, TRAINER_IMAGE
from pipelines.placement import CLUSTER_STORE, on_gpu_node, with_store_secret
from pipelines.steps import STAGE_SERVICES

__all__ = [
    "PIPELINE_NAME",
    "PipelineOutputs",
    "compile_pipeline",
    "curate_and_train",
]

PIPELINE_NAME = "hashtag2action-curate-and-train"


class PipelineOutputs(NamedTuple):
    """What a run hands back: the dataset report and the benchmark summary."""

    report: Markdown
    summary: Markdown


@dsl.pipeline(name=PIPELINE_NAME)
def curate_and_train(
    source: str,
    hashtags: str = "",
    dataset: str = "default",
    shards: int = 4,
    curate_workers: int = 4,
    store: dict = CLUSTER_STORE,
    secret_name: str = STORE_SECRET,
    stage_services: dict = STAGE_SERVICES,
    model_size: str = "base",
    epochs: int = 200,
    finetune_epochs: int = 50,
    pretrain_overrides: list = [],  # noqa: B006 - a KFP default, never mutated
    finetune_overrides: list = [],  # noqa: B006
    benchmarks: list = ["ucf101", "hmdb51"],  # noqa: B006
    benchmark_screens: dict = {},  # noqa: B006
    benchmark_root: str = "benchmarks",
    synthetic_per_class: int = 8,
    gpu_node_selector: dict = GPU_NODE_SELECTOR,
    gpus_per_node: int = 8,
    num_nodes: int = 1,
    job_timeout_s: float = 30 * 24 * 3600.0,
    job_kind: str = "PyTorchJob",
    trainer_image: str = TRAINER_IMAGE,
    launcher: str = "kubernetes",
) -> PipelineOutputs:
    """Curate hashtag videos into action clips, pre-train VideoMAE V2, fine-tune and evaluate.

    Args:
        source: videos: a file, folder, URL, ``s3://`` prefix or a .jsonl/.csv manifest.
        hashtags: comma-separated hashtags to keep (empty keeps every video).
        shards: curation fan-out: the videos are split into this many parallel steps.
        store: the clip store, ``StoreSettings`` fields without credentials: ``backend``
            ``s3`` (``endpoint``, ``bucket``, ``secure``, ...) or ``local`` (a folder,
            ``root``; local runs). ``backend`` is required; fields left out take their defaults.
        secret_name: Kubernetes secret with ``accesskey``/``secretkey`` of the store.
        stage_services: in-cluster ``host:port`` of the ingestion/scenes/persons/clips services.
        model_size: ``tiny``, ``base`` (ViT-B) or ``giant`` (ViT-g).
        epochs: pre-training loader epochs (200 x num_sample 4 is the model zoo's "800e");
            ``finetune_epochs``: fine-tuning epochs per benchmark.
        pretrain_overrides: ``section.field=value`` strings for pre-training;
            ``finetune_overrides`` for fine-tuning and evaluation.
        benchmarks: ``synthetic`` or benchmarks stored under ``benchmark_root/{name}/``.
        benchmark_screens: name -> evaluation videos (a VideoMAE list or a folder, in the
            store) that no pre-training clip may match; matching clips are left out.
        gpu_node_selector: one node label selecting the A100 node pool.
        job_kind: ``PyTorchJob`` (Training Operator v1) or ``TrainJob`` (Kubeflow Trainer v2).
        trainer_image: the CUDA image the training jobs' pods run (services/trainer/Dockerfile).
        launcher: ``kubernetes`` (PyTorchJobs, gRPC services) or ``local`` (torchrun,
            in-process stages).
    """
    cluster = dict(
        launcher=launcher,
        image=trainer_image,
        secret_name=secret_name,
        gpu_node_selector=gpu_node_selector,
        gpus_per_node=gpus_per_node,
        num_nodes=num_nodes,
        timeout_s=job_timeout_s,
        job_kind=job_kind,
    )
    run_id = dsl.PIPELINE_JOB_ID_PLACEHOLDER

    plan = c.plan_shards(source=source, hashtags=hashtags, shards=shards, store=store)
    # the same source (an s3:// prefix, a folder) may hold new videos on the next run
    plan.set_caching_options(False)
    with dsl.ParallelFor(plan.outputs["Output"], name="shard") as shard:
        curated = c.curate_shard(
            shard=shard,
            dataset=dataset,
            launcher=launcher,
            stage_services=stage_services,
            workers=curate_workers,
            store=store,
        )
        # idempotent (content-addressed objects, merged manifests): a retry only redoes work
        curated.set_retry(2, backoff_duration="60s")
    screened = c.screen_benchmarks(
        dataset=dataset,
        shards=dsl.Collected(curated.outputs["Output"]),
        benchmarks=benchmark_screens,
        store=store,
    )
    report = c.dataset_report(
        dataset=dataset, shards=dsl.Collected(curated.outputs["Output"]), store=store
    ).after(screened)
    sharded = c.training_shards(dataset=dataset, manifest=report.outputs["manifest"], store=store)
    pretrained = c.pretrain(
        manifest=sharded.outputs["shards"],
        run_id=run_id,
        model_size=model_size,
        epochs=epochs,
        overrides=pretrain_overrides,
        **cluster,
        store=store,
    )
    with dsl.ParallelFor(benchmarks, name="benchmark") as benchmark:
        tuned = c.finetune(
            benchmark=benchmark,
            pretrained=pretrained.outputs["checkpoint"],
            run_id=run_id,
            model_size=model_size,
            epochs=finetune_epochs,
            overrides=finetune_overrides,
            synthetic_per_class=synthetic_per_class,
            benchmark_root=benchmark_root,
            **cluster,
            store=store,
        )
        evaluated = c.evaluate(
            benchmark=benchmark,
            finetuned=tuned.outputs["checkpoint"],
            run_id=run_id,
            model_size=model_size,
            overrides=finetune_overrides,
            synthetic_per_class=synthetic_per_class,
            benchmark_root=benchmark_root,
            store=store,
        )
        on_gpu_node(evaluated, gpu_node_selector)
    summary = c.summarize(results=dsl.Collected(evaluated.outputs["Output"]), model_size=model_size)

    for task in (plan, curated, screened, report, sharded, pretrained, tuned, evaluated):
        with_store_secret(task, secret_name)
    return PipelineOutputs(report.outputs["report"], summary.outputs["summary"])


def compile_pipeline(package_path: Path) -> Path:
    """Write the pipeline's IR YAML to ``package_path``."""
    package_path = Path(package_path)
    package_path.parent.mkdir(parents=True, exist_ok=True)
    compiler.Compiler().compile(curate_and_train, str(package_path))
    return package_path


if __name__ == "__main__":
    compile_pipeline(Path(f"{PIPELINE_NAME}.yaml"))
