"""What the chart, the kustomize trees and the Dockerfiles spell again equals its one definition
in ``pipelines.deployment``: YAML cannot import it, so these tests are what keeps them equal."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from pipelines.deployment import (
    CONFIG_MAP,
    CONTAINER_SECURITY_CONTEXT,
    POD_SECURITY_CONTEXT,
    SERVICES_IMAGE,
    STORE_SECRET,
    STORE_SECRET_ENV,
    TRAINER_IMAGE,
    VERSION,
)

ROOT = Path(__file__).resolve().parents[2]
SERVICES = ("ingestion", "scenes", "persons", "clips")
# The service trees whose store is the default secret (prod names an external one).
SERVICE_TREES = ("chart", "base", "overlays/dev")


@pytest.fixture(scope="module")
def build(render_chart, kustomize):
    """The objects of the chart at its defaults (``chart``) or of a kustomize tree."""
    return lambda tree: render_chart() if tree == "chart" else kustomize(tree)


def test_chart_image_defaults_are_the_services_image(chart_path: Path) -> None:
    values = yaml.safe_load((chart_path / "values.yaml").read_text())
    chart = yaml.safe_load((chart_path / "Chart.yaml").read_text())
    repository, _, tag = SERVICES_IMAGE.rpartition(":")
    assert values["image"]["repository"] == repository
    # An empty tag means the chart's appVersion.
    assert values["image"]["tag"] == ""
    assert chart["appVersion"] == tag == VERSION
    for name in SERVICES:
        assert values["services"][name]["image"] == {"repository": "", "tag": ""}, name


@pytest.mark.parametrize("tree", SERVICE_TREES)
def test_services_run_the_services_image_with_the_store_secret(build, checks, tree) -> None:
    objects = build(tree)
    deployments = checks.by_kind(objects, "Deployment")
    for name in SERVICES:
        pod = deployments[f"hashtag2action-{name}"]["spec"]["template"]["spec"]
        (container,) = pod["containers"]
        assert container["image"] == SERVICES_IMAGE, name
        assert container["envFrom"] == [{"configMapRef": {"name": CONFIG_MAP}}], name
        secrets = [
            volume["secret"]["secretName"] for volume in pod["volumes"] if "secret" in volume
        ]
        assert secrets == [STORE_SECRET], name
    assert CONFIG_MAP in checks.by_kind(objects, "ConfigMap")


@pytest.mark.parametrize("tree", ["chart", "overlays/dev"])
def test_the_bundled_store_secret_has_the_defined_keys(build, checks, tree) -> None:
    secret = checks.by_kind(build(tree), "Secret")[STORE_SECRET]
    assert set(secret.get("data") or secret["stringData"]) == set(STORE_SECRET_ENV)


def test_the_chart_uploads_the_pipeline_from_the_services_image(render_chart, checks) -> None:
    job = checks.by_kind(render_chart(), "Job")["hashtag2action-pipeline-upload"]
    (container,) = job["spec"]["template"]["spec"]["containers"]
    assert container["image"] == SERVICES_IMAGE


@pytest.mark.parametrize("tree", ["chart", "base", "overlays/dev", "overlays/prod", "training"])
def test_every_pod_has_the_defined_security_contexts(build, checks, tree) -> None:
    pods = list(checks.pod_specs(build(tree)))
    assert pods
    for where, pod in pods:
        assert pod["securityContext"] == POD_SECURITY_CONTEXT, where
        for container in pod.get("initContainers", []) + pod["containers"]:
            assert container["securityContext"] == CONTAINER_SECURITY_CONTEXT, where


def _build_tag(dockerfile: Path) -> str:
    """The tag of the ``docker build -f <this file> -t <tag> .`` line in the file's header."""
    relative = dockerfile.relative_to(ROOT)
    (tag,) = re.findall(rf"docker build -f {relative} -t (\S+) \.", dockerfile.read_text())
    return tag


def test_dockerfiles_build_and_extend_the_defined_images() -> None:
    assert _build_tag(ROOT / "services" / "Dockerfile") == SERVICES_IMAGE
    assert _build_tag(ROOT / "services" / "trainer" / "Dockerfile") == TRAINER_IMAGE
    for name in SERVICES:
        dockerfile = (ROOT / "services" / name / "Dockerfile").read_text()
        assert re.findall(r"^ARG BASE_IMAGE=(\S+)$", dockerfile, re.MULTILINE) == [SERVICES_IMAGE]
