"""The compiled pipeline: its DAG, fan-outs, placement and secrets, read from the IR YAML."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner

from pipelines.commands import pipeline
from pipelines.curate_and_train import curate_and_train
from pipelines.deployment import GPU_NODE_SELECTOR, SERVICES_IMAGE, STORE_SECRET, TRAINER_IMAGE
from pipelines.steps import PAPER_RESULTS, split_sources, summary_markdown
from services.common.config import StoreSettings
from services.common.samples import SAMPLE_HASHTAGS, sample_videos


@pytest.fixture(scope="module")
def ir(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The IR compiled through the CLI: pipeline spec plus the Kubernetes platform spec."""
    path = tmp_path_factory.mktemp("ir") / "pipeline.yaml"
    result = CliRunner().invoke(pipeline, ["compile", "--output", str(path)])
    assert result.exit_code == 0, result.output
    spec, platform = yaml.safe_load_all(path.read_text())
    return {"spec": spec, "k8s": platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"]}


def _tasks(dag: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {task["taskInfo"]["name"]: task for task in dag["tasks"].values()}


def _deps(task: dict[str, Any], dag: dict[str, Any]) -> set[str]:
    return {dag["tasks"][name]["taskInfo"]["name"] for name in task.get("dependentTasks", [])}


def test_dag_reads_source_to_summary(ir: dict[str, Any]) -> None:
    root = ir["spec"]["root"]["dag"]
    tasks = _tasks(root)
    assert set(tasks) == {
        "plan-shards",
        "shard",
        "dataset-report",
        "pretrain",
        "benchmark",
        "summarize",
    }
    assert _deps(tasks["shard"], root) == {"plan-shards"}
    assert _deps(tasks["dataset-report"], root) == {"shard"}
    assert _deps(tasks["pretrain"], root) == {"dataset-report"}
    assert _deps(tasks["benchmark"], root) == {"pretrain"}
    assert _deps(tasks["summarize"], root) == {"benchmark"}
    assert tasks["plan-shards"]["cachingOptions"] == {}, "a source is listed afresh every run"
    assert tasks["pretrain"]["cachingOptions"] == {"enableCache": True}

    components = ir["spec"]["components"]
    shard_dag = components[tasks["shard"]["componentRef"]["name"]]["dag"]
    assert set(_tasks(shard_dag)) == {"curate-shard"}
    assert _tasks(shard_dag)["curate-shard"]["retryPolicy"]["maxRetryCount"] == 2
    bench_dag = components[tasks["benchmark"]["componentRef"]["name"]]["dag"]
    bench = _tasks(bench_dag)
    assert set(bench) == {"finetune", "evaluate"}
    assert _deps(bench["evaluate"], bench_dag) == {"finetune"}
    # the pre-trained checkpoint flows into every fine-tuning
    pretrained = bench["finetune"]["inputs"]["artifacts"]["pretrained"]
    assert pretrained["componentInputArtifact"] == "pipelinechannel--pretrain-checkpoint"
    finetuned = bench["evaluate"]["inputs"]["artifacts"]["finetuned"]
    assert finetuned["taskOutputArtifact"] == {
        "outputArtifactKey": "checkpoint",
        "producerTask": "finetune",
    }


def test_fan_outs_iterate_shards_and_benchmarks(ir: dict[str, Any]) -> None:
    tasks = _tasks(ir["spec"]["root"]["dag"])
    shards = tasks["shard"]["parameterIterator"]
    assert shards["items"]["inputParameter"] == "pipelinechannel--plan-shards-Output"
    benchmarks = tasks["benchmark"]["parameterIterator"]
    assert benchmarks["items"]["inputParameter"] == "pipelinechannel--benchmarks"
    # Collected: the report reads every shard's dataset, the summary every evaluation
    collected = tasks["dataset-report"]["inputs"]["parameters"]["shards"]
    assert collected["taskOutputParameter"]["producerTask"] == "for-loop-1"
    collected = tasks["summarize"]["inputs"]["parameters"]["results"]
    assert collected["taskOutputParameter"]["producerTask"] == "for-loop-2"


def test_evaluation_runs_on_the_gpu_pool(ir: dict[str, Any]) -> None:
    evaluate = ir["k8s"]["exec-evaluate"]
    assert evaluate["nodeSelector"]["nodeSelectorJson"]["componentInputParameter"] == (
        "pipelinechannel--gpu_node_selector"
    )
    assert evaluate["tolerations"] == [
        {"effect": "NoSchedule", "key": "nvidia.com/gpu", "operator": "Exists"}
    ]
    assert evaluate["emptyDirMounts"][0]["mountPath"] == "/dev/shm"
    assert evaluate["emptyDirMounts"][0]["medium"] == "Memory"
    executors = ir["spec"]["deploymentSpec"]["executors"]
    accelerator = executors["exec-evaluate"]["container"]["resources"]["accelerator"]
    assert (accelerator["resourceType"], accelerator["resourceCount"]) == ("nvidia.com/gpu", "1")


def test_training_steps_get_secret_and_placement_for_their_jobs(ir: dict[str, Any]) -> None:
    for executor in ("exec-pretrain", "exec-finetune", "exec-evaluate", "exec-curate-shard"):
        (secret,) = ir["k8s"][executor]["secretAsEnv"]
        assert secret["secretNameParameter"]["componentInputParameter"].endswith("secret_name")
        assert {m["envVar"] for m in secret["keyToEnv"]} == {
            "H2A_STORE_ACCESS_KEY",
            "H2A_STORE_SECRET_KEY",
        }
    components = ir["spec"]["components"]
    for name in ("comp-pretrain", "comp-finetune"):
        inputs = components[name]["inputDefinitions"]["parameters"]
        assert {"secret_name", "gpu_node_selector", "gpus_per_node", "num_nodes", "image"} <= set(
            inputs
        )
    # launching pods ask for no GPU: the PyTorchJob's pods do
    executors = ir["spec"]["deploymentSpec"]["executors"]
    assert "resources" not in executors["exec-pretrain"]["container"]
    assert {e["container"]["image"] for e in executors.values()} == {SERVICES_IMAGE}


def test_parameter_defaults_match_settings() -> None:
    defaults = {
        name: spec.default
        for name, spec in curate_and_train.component_spec.inputs.items()
        if spec.default is not None
    }
    store = StoreSettings()
    assert defaults["store_endpoint"] == store.endpoint
    assert defaults["store_bucket"] == store.bucket
    assert defaults["launcher"] == "kubernetes"
    # what the training jobs' pods run and where: pipelines.deployment's definitions
    assert defaults["trainer_image"] == TRAINER_IMAGE
    assert defaults["gpu_node_selector"] == GPU_NODE_SELECTOR
    assert defaults["secret_name"] == STORE_SECRET
    assert set(defaults["benchmarks"]) <= set(PAPER_RESULTS["base"]) | {"synthetic"}


def test_split_sources_filters_hashtags_and_shards(local_store: Any, tmp_path: Path) -> None:
    source = tmp_path / "sources.jsonl"
    source.write_text(
        "".join(
            json.dumps({"url": str(path), "hashtag": SAMPLE_HASHTAGS[name], "view_count": 7}) + "\n"
            for name, path in sample_videos().items()
        )
    )
    keys = split_sources(str(source), "#cycling, talking", 4, local_store)
    assert len(keys) == 2, "two videos kept, so two shards"
    rows = [json.loads(line) for key in keys for line in local_store.get_lines(key)]
    assert sorted(row["hashtag"] for row in rows) == ["cycling", "talking"]
    assert all(row["view_count"] == 7 for row in rows)
    assert split_sources(str(source), "#cycling, talking", 4, local_store) == keys


def test_summary_compares_with_the_paper() -> None:
    text = summary_markdown(
        [
            {"benchmark": "ucf101", "top1": 0.9, "top5": 0.99},
            {"benchmark": "synthetic", "top1": 0.5, "top5": 1.0},
        ],
        "base",
    )
    assert "| ucf101 | 90.00 | 99.00 | 97.50 | -7.50 |" in text
    assert "| synthetic | 50.00 | 100.00 | - | - |" in text
