"""The kustomize tree: base, overlays and the PyTorchJob templates, built by real kubectl."""

from __future__ import annotations

import copy
from typing import Any

import click
import jsonschema
import pytest

from pipelines.deployment import (
    GPU_NODE_SELECTOR,
    GPU_TOLERATION,
    STORE_SECRET,
    STORE_SECRET_ENV,
    TRAINER_IMAGE,
)
from pipelines.schemas import InvalidResource
from services.trainer.commands import train
from services.trainer.recipes import RECIPES

SERVICES = ("ingestion", "scenes", "persons", "clips")
TREES = ("base", "overlays/dev", "overlays/prod", "training")


def _pod(obj: dict[str, Any]) -> dict[str, Any]:
    return obj["spec"]["template"]["spec"]


@pytest.mark.parametrize("tree", TREES)
def test_every_built_object_validates_and_every_pod_is_hardened(kustomize, checks, tree) -> None:
    objects = kustomize(tree)
    for obj in objects:
        checks.validate_object(obj)
    pods = list(checks.pod_specs(objects))
    assert pods
    for where, pod in pods:
        checks.assert_hardened(where, pod)


def test_validation_catches_a_misspelt_field(kustomize, checks) -> None:
    base = kustomize("base")
    deployment = copy.deepcopy(checks.by_kind(base, "Deployment")["hashtag2action-scenes"])
    _pod(deployment)["containers"][0]["readinesProbe"] = _pod(deployment)["containers"][0].pop(
        "readinessProbe"
    )
    with pytest.raises(jsonschema.ValidationError, match="readinesProbe"):
        checks.validate_object(deployment)

    job = copy.deepcopy(
        checks.by_kind(kustomize("training"), "PyTorchJob")["hashtag2action-pretrain"]
    )
    job["spec"]["nprocPerNodes"] = job["spec"].pop("nprocPerNode")
    with pytest.raises(InvalidResource, match="nprocPerNodes"):
        checks.validate_object(job)


def test_base_serves_each_service_over_grpc(kustomize, checks) -> None:
    objects = kustomize("base")
    deployments = checks.by_kind(objects, "Deployment")
    services = checks.by_kind(objects, "Service")
    assert set(deployments) == {f"hashtag2action-{name}" for name in SERVICES}
    for service in SERVICES:
        name = f"hashtag2action-{service}"
        container = _pod(deployments[name])["containers"][0]
        assert container["command"] == ["python", "-m", f"services.{service}"]
        assert container["ports"] == [{"name": "grpc", "containerPort": 50051}]
        for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
            assert container[probe]["grpc"] == {"port": 50051}, (name, probe)
        assert services[name]["spec"]["ports"][0]["name"] == "grpc"
        for kind in ("PodDisruptionBudget", "HorizontalPodAutoscaler", "NetworkPolicy"):
            assert name in checks.by_kind(objects, kind), (name, kind)
    assert {obj["metadata"]["namespace"] for obj in objects} == {"hashtag2action"}


@pytest.mark.parametrize("tree", ("base", "overlays/dev", "overlays/prod"))
def test_the_persons_memory_limit_holds_its_detector_pool(kustomize, checks, tree) -> None:
    checks.assert_persons_memory_fits(kustomize(tree))


def test_dev_overlay_runs_a_single_node_minio(kustomize, checks) -> None:
    objects = kustomize("overlays/dev")
    assert {obj["metadata"]["namespace"] for obj in objects} == {"h2a-dev"}
    minio = checks.by_kind(objects, "Deployment")["minio"]
    assert minio["spec"]["replicas"] == 1
    assert minio["spec"]["strategy"]["type"] == "Recreate"
    claim = _pod(minio)["volumes"][0]["persistentVolumeClaim"]["claimName"]
    assert claim in checks.by_kind(objects, "PersistentVolumeClaim")
    assert set(checks.by_kind(objects, "Secret")["hashtag2action-store"]["stringData"]) == {
        "accesskey",
        "secretkey",
    }
    config = checks.by_kind(objects, "ConfigMap")["hashtag2action-config"]["data"]
    port = checks.by_kind(objects, "Service")["minio"]["spec"]["ports"][0]["port"]
    assert config["H2A_STORE_ENDPOINT"] == f"minio:{port}"
    for service in SERVICES:
        deployment = checks.by_kind(objects, "Deployment")[f"hashtag2action-{service}"]
        resources = _pod(deployment)["containers"][0]["resources"]
        assert resources["requests"] == {"cpu": "100m", "memory": "512Mi"}
    binding = checks.by_kind(objects, "RoleBinding")["hashtag2action-training-launcher"]
    assert binding["subjects"][0]["namespace"] == "h2a-dev"


def test_prod_overlay_uses_the_external_store(kustomize, checks) -> None:
    objects = kustomize("overlays/prod")
    assert "minio" not in checks.by_kind(objects, "Deployment")
    assert not checks.by_kind(objects, "Secret")
    config = checks.by_kind(objects, "ConfigMap")["hashtag2action-config"]["data"]
    assert config["H2A_STORE_SECURE"] == "true"
    assert config["H2A_STORE_ENDPOINT"] != "minio:9000"
    for service in SERVICES:
        name = f"hashtag2action-{service}"
        deployment = checks.by_kind(objects, "Deployment")[name]
        assert deployment["spec"]["replicas"] == 2
        volumes = _pod(deployment)["volumes"]
        assert [vol["secret"]["secretName"] for vol in volumes if "secret" in vol] == [
            "minio-credentials"
        ]
        hpa = checks.by_kind(objects, "HorizontalPodAutoscaler")[name]
        assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (2, 8)


@pytest.mark.parametrize(
    ("job", "stage"),
    [("hashtag2action-pretrain", "pretrain"), ("hashtag2action-finetune", "finetune")],
)
def test_training_jobs_are_placed_on_a100_with_store_credentials(
    kustomize, checks, job, stage
) -> None:
    pytorchjob = checks.by_kind(kustomize("training"), "PyTorchJob")[job]
    replicas = pytorchjob["spec"]["pytorchReplicaSpecs"]
    assert "Master" in replicas
    for replica in replicas.values():
        pod = replica["template"]["spec"]
        assert pod["nodeSelector"] == GPU_NODE_SELECTOR
        assert GPU_TOLERATION in pod["tolerations"]
        (container,) = pod["containers"]
        # The training operator configures the container named "pytorch" only.
        assert container["name"] == "pytorch"
        assert container["image"] == TRAINER_IMAGE
        assert container["command"][:4] == ["torchrun", "-m", "services.trainer", stage]
        gpus = container["resources"]["limits"]["nvidia.com/gpu"]
        assert gpus == pytorchjob["spec"]["nprocPerNode"]
        shm = {vol["name"]: vol for vol in pod["volumes"]}["dshm"]
        assert shm["emptyDir"]["medium"] == "Memory"
        assert {"name": "dshm", "mountPath": "/dev/shm"} in container["volumeMounts"]
        secret_env = {
            item["name"]: item["valueFrom"]["secretKeyRef"]
            for item in container["env"]
            if "valueFrom" in item
        }
        assert secret_env == {
            variable: {"name": STORE_SECRET, "key": key}
            for key, variable in STORE_SECRET_ENV.items()
        }
    assert ("Worker" in replicas) == (stage == "pretrain")


@pytest.mark.parametrize("job", ["hashtag2action-pretrain", "hashtag2action-finetune"])
def test_training_command_parses_with_the_real_trainer_cli(kustomize, checks, job) -> None:
    pytorchjob = checks.by_kind(kustomize("training"), "PyTorchJob")[job]
    container = pytorchjob["spec"]["pytorchReplicaSpecs"]["Master"]["template"]["spec"][
        "containers"
    ][0]
    launcher, flag, module, mode, *args = container["command"]
    assert (launcher, flag, module) == ("torchrun", "-m", "services.trainer")
    # Parsing only: an unknown flag or mode fails here rather than in a GPU pod.
    command = train.get_command(click.Context(train), mode)
    parsed = command.make_context(mode, args).params
    assert parsed["recipe"] in RECIPES
    # A store folder: the trainer then picks the dataset's train/val/test lists.
    assert parsed["manifest"].startswith("s3://hashtag2action/manifests/")
    assert parsed["manifest"].endswith("/")
    assert parsed["output"].startswith("/tmp/")
