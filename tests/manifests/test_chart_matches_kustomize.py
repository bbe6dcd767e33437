"""The chart and the kustomize base describe the same services: nothing checks two hand-kept
trees agree unless a test does, so the fields that decide how a pod runs are compared here."""

from __future__ import annotations

from typing import Any

import pytest

SERVICES = ("ingestion", "scenes", "persons", "clips")


def _essentials(deployment: dict[str, Any]) -> dict[str, Any]:
    """What must match between the trees (labels differ: the chart adds release labels)."""
    pod = deployment["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    return {
        "pod_security": pod["securityContext"],
        "grace": pod["terminationGracePeriodSeconds"],
        "service_account": pod["serviceAccountName"],
        "volumes": pod["volumes"],
        "name": container["name"],
        "image": container["image"],
        "command": container["command"],
        "ports": container["ports"],
        "probes": {key: container[key] for key in container if key.endswith("Probe")},
        "security": container["securityContext"],
        "resources": container["resources"],
        "mounts": container["volumeMounts"],
        "env_from": container["envFrom"],
        "env": container["env"],
    }


@pytest.fixture(scope="module")
def trees(render_chart, kustomize, checks) -> tuple[list[dict], list[dict]]:
    return render_chart(), kustomize("base")


@pytest.mark.parametrize("service", SERVICES)
def test_deployment_essentials_match(trees, checks, service) -> None:
    chart, base = trees
    name = f"hashtag2action-{service}"
    from_chart = _essentials(checks.by_kind(chart, "Deployment")[name])
    from_base = _essentials(checks.by_kind(base, "Deployment")[name])
    assert from_chart == from_base


def test_settings_match(trees, checks) -> None:
    chart, base = trees
    from_chart = checks.by_kind(chart, "ConfigMap")["hashtag2action-config"]["data"]
    from_base = checks.by_kind(base, "ConfigMap")["hashtag2action-config"]["data"]
    # The endpoint names the bundled MinIO, whose Service name carries the release.
    from_chart.pop("H2A_STORE_ENDPOINT")
    from_base.pop("H2A_STORE_ENDPOINT")
    assert from_chart == from_base


def test_policies_and_rbac_match(trees, checks) -> None:
    chart, base = trees
    for kind, field in (
        ("HorizontalPodAutoscaler", "metrics"),
        ("PodDisruptionBudget", "maxUnavailable"),
        ("NetworkPolicy", "ingress"),
        ("Service", "ports"),
    ):
        for service in SERVICES:
            name = f"hashtag2action-{service}"
            from_chart = checks.by_kind(chart, kind)[name]["spec"][field]
            assert from_chart == checks.by_kind(base, kind)[name]["spec"][field], kind
    from_chart = checks.by_kind(chart, "Role")["hashtag2action-training-launcher"]["rules"]
    assert from_chart == checks.by_kind(base, "Role")["hashtag2action-training-launcher"]["rules"]
