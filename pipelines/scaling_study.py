"""The data-scaling study (the VideoMAE V2 paper's Fig. 4, Wang et al., CVPR 2023): how
pre-training on more curated videos moves the fine-tuned accuracy.

plan subsets (random subsets of a published dataset, ``sizes`` x ``repeats``, written as list
files in the store) -> ParallelFor(subset, at most ``parallelism`` at once): pre-training ->
fine-tuning -> evaluation; ParallelFor(repeat): fine-tuning from random weights -> evaluation
(the from-scratch baseline, the same fine-tuning budget) -> the report: a table and a PNG plot
of top-1/top-5 against subset size with the spread over repeats, the baseline, and whether the
mean top-1 rises monotonically; as Markdown, an image and Metrics in the KFP UI and under
``studies/{dataset}/{run id}/`` in the store.

The paper draws 1,000 to 6,000 videos three times and fine-tunes each model on UCF101 for 100
epochs, the defaults here. The steps are the curate-and-train pipeline's components; each
run's checkpoints and metrics.jsonl go to the store under ``checkpoints/{run}/``, and each
training step shows its loss/lr curves as a plot beside its Metrics.
"""

from pathlib import Path
from typing import Any, NamedTuple

from kfp import compiler, dsl
from kfp.dsl import Artifact, Input, Markdown, Model

from pipelines import components as c
from pipelines.deployment import GPU_NODE_SELECTOR, STORE_SECRET, TRAINER_IMAGE
from pipelines.placement import CLUSTER_STORE, on_gpu_node, with_store_secret

__all__ = [
    "DEFAULT_PARALLELISM",
    "STUDY_PIPELINE_NAME",
    "StudyOutputs",
    "compile_study",
    "make_scaling_study",
    "scaling_study",
]

STUDY_PIPELINE_NAME = "hashtag2action-scaling-study"

DEFAULT_PARALLELISM = 2
"""Subsets trained at once: each pre-training takes the GPU nodes of ``num_nodes``."""


class StudyOutputs(NamedTuple):
    """What a study run hands back: the report (table, verdict, plot) and the plot alone."""

    report: Markdown
    plot: Artifact


def make_scaling_study(
    parallelism: int = DEFAULT_PARALLELISM,
) -> dsl.graph_component.GraphComponent:
    """The study pipeline with at most ``parallelism`` subsets (and baselines) at once.

    KFP fixes a ParallelFor's parallelism when the pipeline compiles, so it is an argument of
    this factory rather than a pipeline parameter.
    """
    if parallelism < 1:
        raise ValueError(f"parallelism={parallelism} must be at least 1")

    @dsl.pipeline(name=STUDY_PIPELINE_NAME)
    def scaling_study(
        dataset: str,
        sizes: list = [1000, 2000, 3000, 4000, 5000, 6000],  # noqa: B006 - a KFP default
        repeats: int = 3,
        seed: int = 0,
        benchmark: str = "ucf101",
        model_size: str = "base",
        epochs: int = 200,
        finetune_epochs: int = 100,
        pretrain_overrides: list = [],  # noqa: B006
        finetune_overrides: list = [],  # noqa: B006
        benchmark_root: str = "benchmarks",
        synthetic_per_class: int = 8,
        store: dict = CLUSTER_STORE,
        secret_name: str = STORE_SECRET,
        gpu_node_selector: dict = GPU_NODE_SELECTOR,
        gpus_per_node: int = 8,
        num_nodes: int = 1,
        job_timeout_s: float = 30 * 24 * 3600.0,
        job_kind: str = "PyTorchJob",
        trainer_image: str = TRAINER_IMAGE,
        launcher: str = "kubernetes",
    ) -> StudyOutputs:
        """Pre-train on random subsets of a curated dataset, fine-tune and evaluate each.

        Args:
            dataset: a published dataset of the store (``h2a dataset publish``).
            sizes: subset sizes in videos (the paper: 1,000 to 6,000).
            repeats: independent subsets per size (the paper: 3), and baseline runs.
            seed: seeds the draws (with size and repeat) and, plus the repeat, the training.
            benchmark: the fine-tuning benchmark (the paper: ``ucf101``), or ``synthetic``.
            epochs: pre-training loader epochs (200 x num_sample 4 = the "800e" recipe);
                ``finetune_epochs``: fine-tuning epochs (the paper: 100), the baseline's too.
            pretrain_overrides, finetune_overrides: ``section.field=value`` strings.

        The other parameters are the curate-and-train pipeline's.
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
        benchmark_data = dict(
            benchmark=benchmark,
            model_size=model_size,
            synthetic_per_class=synthetic_per_class,
            benchmark_root=benchmark_root,
            store=store,
        )

        def fine_tune_and_evaluate(
            pretrained: Input[Model], planned: Any
        ) -> tuple[dsl.PipelineTask, dsl.PipelineTask]:
            """Fine-tune and test one planned run (a subset's, or a baseline's)."""
            tuned = c.finetune(
                pretrained=pretrained,
                run_id=planned.run_id,
                epochs=finetune_epochs,
                overrides=planned.finetune_overrides,
                **benchmark_data,
                **cluster,
            )
            evaluated = c.evaluate(
                finetuned=tuned.outputs["checkpoint"],
                run_id=planned.run_id,
                overrides=planned.finetune_overrides,
                **benchmark_data,
            )
            on_gpu_node(evaluated, gpu_node_selector)
            return tuned, evaluated

        run_id = dsl.PIPELINE_JOB_ID_PLACEHOLDER
        plan = c.plan_study_subsets(
            dataset=dataset,
            sizes=sizes,
            repeats=repeats,
            seed=seed,
            run_id=run_id,
            pretrain_overrides=pretrain_overrides,
            finetune_overrides=finetune_overrides,
            store=store,
        )
        baselines = c.plan_study_baselines(
            repeats=repeats, seed=seed, run_id=run_id, finetune_overrides=finetune_overrides
        )
        with dsl.ParallelFor(plan.output, parallelism=parallelism, name="subset") as subset:
            manifest = c.subset_manifest(subset=subset)
            pretrained = c.pretrain(
                manifest=manifest.outputs["manifest"],
                run_id=subset.run_id,
                model_size=model_size,
                epochs=epochs,
                overrides=subset.pretrain_overrides,
                **cluster,
                store=store,
            )
            tuned, evaluated = fine_tune_and_evaluate(pretrained.outputs["checkpoint"], subset)
        scratch = c.no_pretraining()
        with dsl.ParallelFor(
            baselines.output, parallelism=parallelism, name="baseline"
        ) as baseline:
            scratch_tuned, scratch_evaluated = fine_tune_and_evaluate(
                scratch.outputs["model"], baseline
            )
        report = c.study_report(
            dataset=dataset,
            run_id=run_id,
            benchmark=benchmark,
            subsets=plan.output,
            baselines=baselines.output,
            results=dsl.Collected(evaluated.outputs["Output"]),
            baseline_results=dsl.Collected(scratch_evaluated.outputs["Output"]),
            store=store,
        )
        for task in (plan, pretrained, tuned, evaluated, scratch_tuned, scratch_evaluated, report):
            with_store_secret(task, secret_name)
        return StudyOutputs(report.outputs["report"], report.outputs["plot"])

    return scaling_study


scaling_study = make_scaling_study()


def compile_study(package_path: Path, parallelism: int = DEFAULT_PARALLELISM) -> Path:
    """Write the study's IR YAML to ``package_path``."""
    package_path = Path(package_path)
    package_path.parent.mkdir(parents=True, exist_ok=True)
    compiler.Compiler().compile(make_scaling_study(parallelism), str(package_path))
    return package_path


if __name__ == "__main__":
    compile_study(Path(f"{STUDY_PIPELINE_NAME}.yaml"))
