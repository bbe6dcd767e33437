"""The compiled pipeline: its DAG, fan-outs, placement and secrets, read from the IR YAML."""

from __future__ import annotations

import json
import os
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import yaml
from click.testing import CliRunner
from google.protobuf import json_format, struct_pb2

from pipelines.commands import pipeline
from pipelines.curate_and_train import curate_and_train
from pipelines.deployment import GPU_NODE_SELECTOR, SERVICES_IMAGE, STORE_SECRET, TRAINER_IMAGE
from pipelines.steps import (
    PAPER_RESULTS,
    keep_checkpoint,
    open_store,
    split_sources,
    store_env,
    summary_markdown,
)
from services.common.config import StoreSettings
from services.common.samples import SAMPLE_HASHTAGS, sample_videos
from services.common.store import ClipStore

# What the store travelled as before it was one description: no component may take these.
_STORE_STRINGS = {"store_backend", "store_root", "store_endpoint", "store_bucket"}
_SECRET_KEY = "from-the-kubernetes-secret"


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
        "screen-benchmarks",
        "dataset-report",
        "training-shards",
        "pretrain",
        "benchmark",
        "summarize",
    }
    assert _deps(tasks["shard"], root) == {"plan-shards"}
    # benchmark screens before publishing; pre-training streams the published shards
    assert _deps(tasks["screen-benchmarks"], root) == {"shard"}
    assert _deps(tasks["dataset-report"], root) == {"shard", "screen-benchmarks"}
    assert _deps(tasks["training-shards"], root) == {"dataset-report"}
    assert _deps(tasks["pretrain"], root) == {"training-shards"}
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
    store = StoreSettings.from_description(defaults["store"])
    assert store.backend == "s3"
    assert (store.endpoint, store.bucket) == (StoreSettings().endpoint, StoreSettings().bucket)
    assert defaults["launcher"] == "kubernetes"
    # what the training jobs' pods run and where: pipelines.deployment's definitions
    assert defaults["trainer_image"] == TRAINER_IMAGE
    assert defaults["gpu_node_selector"] == GPU_NODE_SELECTOR
    assert defaults["secret_name"] == STORE_SECRET
    assert set(defaults["benchmarks"]) <= set(PAPER_RESULTS["base"]) | {"synthetic"}


def _component_tasks(ir: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Every task that runs a component, from the root DAG and the loops' DAGs, by name."""
    dags = [ir["spec"]["root"]["dag"]]
    dags += [c["dag"] for c in ir["spec"]["components"].values() if "dag" in c]
    components = ir["spec"]["components"]
    return {
        name: task
        for dag in dags
        for name, task in _tasks(dag).items()
        if "executorLabel" in components[task["componentRef"]["name"]]
    }


def test_every_store_step_takes_the_one_store_description(ir: dict[str, Any]) -> None:
    components = ir["spec"]["components"]
    tasks = _component_tasks(ir)
    takes_store = {
        name
        for name, task in tasks.items()
        if "store" in components[task["componentRef"]["name"]]["inputDefinitions"]["parameters"]
    }
    assert takes_store == set(tasks) - {"summarize"}, "every step but the summary uses the store"
    for name in takes_store:
        parameters = components[tasks[name]["componentRef"]["name"]]["inputDefinitions"]
        assert parameters["parameters"]["store"]["parameterType"] == "STRUCT", name
        # the pipeline's own parameter, passed through unchanged (into the loops as a channel)
        given = tasks[name]["inputs"]["parameters"]["store"]["componentInputParameter"]
        assert given in {"store", "pipelinechannel--store"}, name
    root = ir["spec"]["root"]["inputDefinitions"]["parameters"]
    assert root["store"]["parameterType"] == "STRUCT"
    for name, component in {"root": ir["spec"]["root"], **components}.items():
        parameters = component.get("inputDefinitions", {}).get("parameters", {})
        assert not {p.removeprefix("pipelinechannel--") for p in parameters} & _STORE_STRINGS, name


def _through_kfp(description: dict[str, Any]) -> dict[str, Any]:
    """A ``dict`` parameter as a step receives it: a protobuf Struct, whose numbers are
    doubles."""
    struct = struct_pb2.Struct()
    struct.update(description)
    return json_format.MessageToDict(struct)


@pytest.fixture()
def store_secret_env(monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """No ``H2A_STORE_*`` settings but the credentials, as the pipeline's secret gives a pod."""
    for name in [name for name in os.environ if name.startswith("H2A_STORE_")]:
        monkeypatch.delenv(name)
    secret = {"H2A_STORE_ACCESS_KEY": "h2a-access", "H2A_STORE_SECRET_KEY": _SECRET_KEY}
    for name, value in secret.items():
        monkeypatch.setenv(name, value)
    return secret


@pytest.mark.parametrize("backend", ["local", "s3"])
def test_store_description_round_trips_through_the_training_env(
    backend: str,
    store_secret_env: dict[str, str],
    s3_settings: StoreSettings,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.chdir(tmp_path)
    if backend == "local":
        described = {"backend": "local", "root": "relative/store"}
    else:  # the loopback S3 of s3_settings, some fields away from their defaults
        described = {**s3_settings.to_description(), "retries": 3, "cert_check": False}
    description = _through_kfp(described)
    settings = StoreSettings.from_description(description)
    assert isinstance(open_store(description), ClipStore)

    env = store_env(description)
    assert not set(env) & set(store_secret_env), "credentials come from the secret only"
    assert _SECRET_KEY not in json.dumps(description) + json.dumps(env)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    monkeypatch.chdir("/")  # a training process starts elsewhere
    in_training = StoreSettings()

    # the same settings, the relative root resolved where the step ran
    assert in_training == settings.model_copy(update={"root": tmp_path.resolve() / settings.root})
    assert in_training.secret_key is not None
    assert in_training.secret_key.get_secret_value() == _SECRET_KEY


def test_a_store_description_never_holds_credentials(s3_settings: StoreSettings) -> None:
    assert s3_settings.secret_key is not None
    secret = s3_settings.secret_key.get_secret_value()
    description = s3_settings.to_description()
    assert not {"access_key", "secret_key", "secret_dir"} & set(description)
    assert secret not in json.dumps(description)
    with pytest.raises(ValueError, match="no credentials"):
        StoreSettings.from_description({**description, "secret_key": secret})
    with pytest.raises(ValueError, match="names no backend"):
        StoreSettings.from_description({"endpoint": "s3.example.org:443"})


@pytest.mark.parametrize("backend", ["local", "s3"])
def test_checkpoint_artifact_embeds_a_local_checkpoint_and_points_at_s3(
    backend: str, local_store: ClipStore, s3_settings: StoreSettings, tmp_path: Path
) -> None:
    store = local_store if backend == "local" else ClipStore.from_settings(s3_settings)
    uri = store.put_text("checkpoints/r1/checkpoint-00000001.pth", "weights").uri
    artifact = SimpleNamespace(metadata={}, path=str(tmp_path / "checkpoint"))
    keep_checkpoint(uri, store, artifact)
    assert artifact.metadata["uri"] == uri
    kept = Path(artifact.path).read_text()
    assert kept == ("weights" if backend == "local" else json.dumps({"uri": uri}) + "\n")


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
