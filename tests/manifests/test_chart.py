"""The Helm chart, rendered by the real Helm 4 CLI under the value sets people install with."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click
import pytest
import yaml

from services.cli import main
from services.ingestion.sources import IngestSettings
from services.persons.server import DetectorPoolSettings

SERVICES = ("ingestion", "scenes", "persons", "clips")

EXTERNAL_STORE = {
    "minio": {"enabled": False},
    "store": {
        "endpoint": "s3.research.example.org:443",
        "secure": True,
        "region": "eu-west-1",
        "existingSecret": "research-minio",
    },
}
PERSONS_DISABLED = {"services": {"persons": {"enabled": False}}}
PROD_FIXED = {
    "services": {name: {"replicas": 3, "autoscaling": {"enabled": False}} for name in SERVICES},
    "grpc": {"maxWorkers": 8},
    "logLevel": "WARNING",
}
PROD_AUTOSCALED = {
    **EXTERNAL_STORE,
    "services": {name: {"autoscaling": {"minReplicas": 2, "maxReplicas": 10}} for name in SERVICES},
    "image": {"tag": "1.2.3"},
    "pipeline": {"upload": False},
}
VALUE_SETS = {
    "defaults": {},
    "external-store": EXTERNAL_STORE,
    "persons-disabled": PERSONS_DISABLED,
    "prod-fixed-replicas": PROD_FIXED,
    "prod-autoscaled": PROD_AUTOSCALED,
}


def _env(container: dict[str, Any]) -> dict[str, str]:
    return {item["name"]: item["value"] for item in container.get("env", []) if "value" in item}


def _component(obj: dict[str, Any]) -> str:
    return obj["metadata"]["labels"]["app.kubernetes.io/component"]


def _server(deployment: dict[str, Any]) -> dict[str, Any]:
    return deployment["spec"]["template"]["spec"]["containers"][0]


@pytest.mark.parametrize("values", [{}, EXTERNAL_STORE], ids=["defaults", "external-store"])
def test_lint_strict(helm, chart_path, tmp_path, values) -> None:
    values_file = tmp_path / "values.yaml"
    values_file.write_text(yaml.safe_dump(values))
    result = helm("lint", "--strict", chart_path, "-f", values_file)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("values", VALUE_SETS.values(), ids=VALUE_SETS.keys())
def test_every_rendered_object_validates_and_every_pod_is_hardened(
    render_chart, checks, values
) -> None:
    objects = render_chart(values)
    for obj in objects:
        checks.validate_object(obj)
    pods = list(checks.pod_specs(objects))
    assert pods
    for where, pod in pods:
        checks.assert_hardened(where, pod)


def test_defaults_deploy_four_services_with_bundled_minio(render_chart, checks) -> None:
    objects = render_chart()
    deployments = checks.by_kind(objects, "Deployment")
    assert set(deployments) == {f"hashtag2action-{name}" for name in (*SERVICES, "minio")}
    for kind in ("Service", "ServiceAccount", "PodDisruptionBudget", "NetworkPolicy"):
        components = {_component(obj) for obj in checks.by_kind(objects, kind).values()}
        assert set(SERVICES) <= components, kind
    autoscalers = checks.by_kind(objects, "HorizontalPodAutoscaler")
    assert {hpa["spec"]["scaleTargetRef"]["name"] for hpa in autoscalers.values()} == {
        f"hashtag2action-{name}" for name in SERVICES
    }
    config = checks.by_kind(objects, "ConfigMap")["hashtag2action-config"]["data"]
    assert config["H2A_STORE_ENDPOINT"] == "hashtag2action-minio:9000"
    assert "H2A_STORE_REGION" not in config
    minio_secret = checks.by_kind(objects, "Secret")["hashtag2action-store"]
    assert set(minio_secret["data"]) == {"accesskey", "secretkey"}
    for name in SERVICES:
        pod = deployments[f"hashtag2action-{name}"]["spec"]["template"]["spec"]
        secrets = [vol["secret"]["secretName"] for vol in pod["volumes"] if "secret" in vol]
        assert secrets == ["hashtag2action-store"]
        # With an autoscaler the Deployment leaves the replica count to it.
        assert "replicas" not in deployments[f"hashtag2action-{name}"]["spec"]
    persons = _env(_server(deployments["hashtag2action-persons"]))
    assert persons["H2A_PERSONS_STORE_WEIGHTS"] == "person-detector.pt"
    assert "H2A_PERSONS_WEIGHTS" not in persons
    assert _env(_server(deployments["hashtag2action-scenes"]))["H2A_SCENES_DETECTOR"] == (
        "adaptive"
    )


def test_external_store_uses_the_existing_secret_and_no_minio(render_chart, checks) -> None:
    objects = render_chart(EXTERNAL_STORE)
    assert not [obj for obj in objects if _component(obj) == "minio"]
    assert "Secret" not in {obj["kind"] for obj in objects}
    config = checks.by_kind(objects, "ConfigMap")["hashtag2action-config"]["data"]
    assert config["H2A_STORE_ENDPOINT"] == "s3.research.example.org:443"
    assert (config["H2A_STORE_SECURE"], config["H2A_STORE_REGION"]) == ("true", "eu-west-1")
    for deployment in checks.by_kind(objects, "Deployment").values():
        volumes = deployment["spec"]["template"]["spec"]["volumes"]
        assert [vol["secret"]["secretName"] for vol in volumes if "secret" in vol] == [
            "research-minio"
        ]


def test_a_disabled_service_renders_nothing(render_chart, checks) -> None:
    objects = render_chart(PERSONS_DISABLED)
    assert not [obj for obj in objects if _component(obj) == "persons"]
    assert {_component(d) for d in checks.by_kind(objects, "Deployment").values()} == {
        "ingestion",
        "scenes",
        "clips",
        "minio",
    }


def test_prod_values_set_replicas_autoscaling_and_settings(render_chart, checks) -> None:
    fixed = render_chart(PROD_FIXED)
    assert not checks.by_kind(fixed, "HorizontalPodAutoscaler")
    for name in SERVICES:
        assert (
            checks.by_kind(fixed, "Deployment")[f"hashtag2action-{name}"]["spec"]["replicas"] == 3
        )
    config = checks.by_kind(fixed, "ConfigMap")["hashtag2action-config"]["data"]
    assert (config["H2A_GRPC_MAX_WORKERS"], config["H2A_LOG_LEVEL"]) == ("8", "WARNING")

    scaled = render_chart(PROD_AUTOSCALED)
    bounds = {
        (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"])
        for hpa in checks.by_kind(scaled, "HorizontalPodAutoscaler").values()
    }
    assert bounds == {(2, 10)}
    images = {_server(d)["image"] for d in checks.by_kind(scaled, "Deployment").values()}
    assert images == {"ghcr.io/hashtag2action/hashtag2action:1.2.3"}
    assert "Job" not in {obj["kind"] for obj in scaled}


def _settings_from(
    monkeypatch: pytest.MonkeyPatch, env: dict[str, str], settings_type: type
) -> Any:
    """``settings_type`` as a pod reads it from the variables of its own prefix in ``env``."""
    prefix = settings_type.model_config["env_prefix"]
    for name, value in env.items():
        if name.startswith(prefix):
            monkeypatch.setenv(name, value)
    return settings_type()


def test_ingestion_and_persons_pool_settings_render_as_the_code_defaults(
    render_chart, checks, monkeypatch
) -> None:
    deployments = checks.by_kind(render_chart(), "Deployment")
    ingestion = _env(_server(deployments["hashtag2action-ingestion"]))
    persons = _env(_server(deployments["hashtag2action-persons"]))
    assert ingestion["H2A_INGEST_MAX_PIXELS"] == "33177600"
    assert ingestion["H2A_INGEST_ALLOWED_ROOTS"] == "[]"
    assert persons["H2A_PERSONS_POOL_SIZE"] == "0"
    read = _settings_from(monkeypatch, ingestion, IngestSettings)
    assert read.max_pixels == IngestSettings.model_fields["max_pixels"].default
    assert read.allowed_roots == []
    pool = _settings_from(monkeypatch, persons, DetectorPoolSettings)
    assert pool.size == DetectorPoolSettings.model_fields["size"].default


def test_ingestion_and_persons_pool_settings_reach_the_services(
    render_chart, checks, monkeypatch
) -> None:
    values = {
        "services": {
            "ingestion": {
                "config": {"maxPixels": 3840 * 2160, "allowedRoots": ["/videos", "/mnt/b"]},
                "videoVolumes": VIDEO_VOLUMES,
            },
            "persons": {"config": {"poolSize": 2}},
        }
    }
    deployments = checks.by_kind(render_chart(values), "Deployment")
    ingestion = _env(_server(deployments["hashtag2action-ingestion"]))
    read = _settings_from(monkeypatch, ingestion, IngestSettings)
    assert (read.max_pixels, read.allowed_roots) == (8294400, [Path("/videos"), Path("/mnt/b")])
    persons = _env(_server(deployments["hashtag2action-persons"]))
    assert _settings_from(monkeypatch, persons, DetectorPoolSettings).size == 2
    # Each service gets only its own settings.
    assert "H2A_PERSONS_POOL_SIZE" not in ingestion
    assert not [name for name in persons if name.startswith("H2A_INGEST_")]


VIDEO_VOLUMES = [
    {
        "name": "videos",
        "mountPath": "/videos",
        "source": {"persistentVolumeClaim": {"claimName": "research-videos", "readOnly": True}},
    },
    {"name": "nfs", "mountPath": "/mnt/b/", "source": {"nfs": {"server": "nas", "path": "/b"}}},
]


def test_allowed_roots_come_with_their_video_volumes(render_chart, checks) -> None:
    """The folders a caller may name are mounted read-only into the ingestion pods only."""
    values = {
        "services": {
            "ingestion": {
                "config": {"allowedRoots": ["/videos", "/mnt/b/2026"]},
                "videoVolumes": VIDEO_VOLUMES,
            }
        }
    }
    deployments = checks.by_kind(render_chart(values), "Deployment")
    ingestion = deployments["hashtag2action-ingestion"]
    pod = ingestion["spec"]["template"]["spec"]
    mounts = {mount["name"]: mount for mount in _server(ingestion)["volumeMounts"]}
    assert mounts["videos"] == {"name": "videos", "mountPath": "/videos", "readOnly": True}
    assert mounts["nfs"]["mountPath"] == "/mnt/b/" and mounts["nfs"]["readOnly"]
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes["videos"]["persistentVolumeClaim"]["claimName"] == "research-videos"
    assert volumes["nfs"]["nfs"] == {"server": "nas", "path": "/b"}
    scenes = deployments["hashtag2action-scenes"]["spec"]["template"]["spec"]
    assert {v["name"] for v in scenes["volumes"]} == {"tmp", "store-credentials"}


def test_an_allowed_root_on_no_volume_fails_the_render(helm_template) -> None:
    values = {
        "services": {
            "ingestion": {
                "config": {"allowedRoots": ["/videos", "/mnt/bb"]},
                "videoVolumes": VIDEO_VOLUMES,
            }
        }
    }
    result = helm_template(values)
    assert result.returncode != 0
    assert "allowedRoots: /mnt/bb lies on none of services.ingestion.videoVolumes" in (
        result.stderr
    )


PERSONS_SIZED = {
    "defaults": {},
    "pool-6-with-memory-per-the-values-comment": {
        "services": {
            "persons": {"config": {"poolSize": 6}, "resources": {"limits": {"memory": "5500Mi"}}}
        }
    },
}


@pytest.mark.parametrize("values", PERSONS_SIZED.values(), ids=PERSONS_SIZED.keys())
def test_the_persons_memory_limit_holds_its_detector_pool(render_chart, checks, values) -> None:
    checks.assert_persons_memory_fits(render_chart(values))


def test_weights_from_the_image(render_chart, checks) -> None:
    weights = {"source": "image", "path": "/opt/weights/yolo11n-pose.pt"}
    objects = render_chart({"services": {"persons": {"config": {"weights": weights}}}})
    persons = _env(_server(checks.by_kind(objects, "Deployment")["hashtag2action-persons"]))
    assert persons["H2A_PERSONS_WEIGHTS"] == "/opt/weights/yolo11n-pose.pt"
    assert "H2A_PERSONS_STORE_WEIGHTS" not in persons


def test_pipeline_upload_hook_job(render_chart, checks) -> None:
    objects = render_chart({"pipeline": {"kfpHost": "http://kfp.example:8888", "name": "h2a-v2"}})
    job = checks.by_kind(objects, "Job")["hashtag2action-pipeline-upload"]
    hooks = job["metadata"]["annotations"]["helm.sh/hook"]
    assert set(hooks.split(",")) == {"post-install", "post-upgrade"}
    container = job["spec"]["template"]["spec"]["containers"][0]
    assert container["command"] == [
        "h2a",
        "pipeline",
        "upload",
        "--host",
        "http://kfp.example:8888",
        "--name",
        "h2a-v2",
    ]
    assert job["spec"]["template"]["spec"]["restartPolicy"] == "Never"


def test_pipeline_upload_hook_command_parses_with_the_real_cli(render_chart, checks) -> None:
    job = checks.by_kind(render_chart(), "Job")["hashtag2action-pipeline-upload"]
    program, group, command, *args = job["spec"]["template"]["spec"]["containers"][0]["command"]
    assert program == "h2a"
    context = click.Context(main)
    upload = main.get_command(context, group).get_command(context, command)
    # Parsing only: a flag the CLI does not know would fail here, not in the cluster's hook Job.
    parsed = upload.make_context(command, args).params
    assert parsed["host"] == "http://ml-pipeline.kubeflow.svc.cluster.local:8888"
    assert parsed["name"] == "hashtag2action"


def test_rbac_lets_the_runner_launch_and_watch_training(render_chart, checks) -> None:
    objects = render_chart()
    role = checks.by_kind(objects, "Role")["hashtag2action-training-launcher"]
    granted = {
        (group, resource, verb)
        for rule in role["rules"]
        for group in rule["apiGroups"]
        for resource in rule["resources"]
        for verb in rule["verbs"]
    }
    for group, resource in (("kubeflow.org", "pytorchjobs"), ("trainer.kubeflow.org", "trainjobs")):
        for verb in ("create", "get", "list", "watch", "delete"):
            assert (group, resource, verb) in granted
    assert ("", "pods/log", "get") in granted
    assert not [verb for *_, verb in granted if verb in ("*", "update", "patch")]
    binding = checks.by_kind(objects, "RoleBinding")["hashtag2action-training-launcher"]
    assert binding["subjects"] == [
        {
            "kind": "ServiceAccount",
            "name": "hashtag2action-pipeline-runner",
            "namespace": "research",
        }
    ]
    assert not [obj for obj in render_chart({"rbac": {"create": False}}) if obj["kind"] == "Role"]
    extra = render_chart({"rbac": {"extraServiceAccounts": ["default-editor"]}})
    subjects = checks.by_kind(extra, "RoleBinding")["hashtag2action-training-launcher"]["subjects"]
    assert [subject["name"] for subject in subjects] == [
        "hashtag2action-pipeline-runner",
        "default-editor",
    ]


INVALID_VALUES = {
    "wrong-type": ({"services": {"scenes": {"replicas": "two"}}}, "/services/scenes/replicas"),
    "unknown-key": ({"services": {"scenes": {"replica": 2}}}, "'replica' not allowed"),
    "unknown-top-level-key": ({"minoi": {"enabled": False}}, "'minoi' not allowed"),
    "bad-enum": (
        {"services": {"scenes": {"config": {"detector": "histogram"}}}},
        "/services/scenes/config/detector",
    ),
    "bad-log-level": ({"logLevel": "verbose"}, "/logLevel"),
    "bad-quantity": (
        {"services": {"clips": {"resources": {"limits": {"memory": "lots"}}}}},
        "/services/clips/resources/limits/memory",
    ),
    "external-store-without-secret": (
        {"minio": {"enabled": False}, "store": {"endpoint": "s3:9000"}},
        "/store/existingSecret",
    ),
    "relative-allowed-root": (
        {"services": {"ingestion": {"config": {"allowedRoots": ["videos"]}}}},
        "/services/ingestion/config/allowedRoots/0",
    ),
    "video-volume-shadowing-tmp": (
        {
            "services": {
                "ingestion": {
                    "videoVolumes": [{"name": "tmp", "mountPath": "/v", "source": {"emptyDir": {}}}]
                }
            }
        },
        "/services/ingestion/videoVolumes/0/name",
    ),
    "no-pixel-ceiling": (
        {"services": {"ingestion": {"config": {"maxPixels": 0}}}},
        "/services/ingestion/config/maxPixels",
    ),
    "persons-pool-over-the-settings-bound": (
        {"services": {"persons": {"config": {"poolSize": 65}}}},
        "/services/persons/config/poolSize",
    ),
    "image-weights-without-path": (
        {"services": {"persons": {"config": {"weights": {"source": "image"}}}}},
        "/services/persons/config/weights/path",
    ),
}


@pytest.mark.parametrize(("values", "where"), INVALID_VALUES.values(), ids=INVALID_VALUES.keys())
def test_invalid_values_are_rejected_by_the_schema(helm_template, values, where) -> None:
    result = helm_template(values)
    assert result.returncode != 0
    assert "values don't meet the specifications of the schema" in result.stderr
    assert where in result.stderr


def test_install_notes_list_the_enabled_services(helm, chart_path) -> None:
    result = helm(
        "install",
        "hashtag2action",
        chart_path,
        *("--dry-run=client", "--namespace", "research", "--set", "services.persons.enabled=false"),
    )
    assert result.returncode == 0, result.stderr
    notes = result.stdout.split("NOTES:", 1)[1]
    for service in ("ingestion", "scenes", "clips"):
        assert f"{service}: hashtag2action-{service}.research.svc:50051" in notes
    assert "persons:" not in notes
    assert "secret hashtag2action-store" in notes


def test_clusters_older_than_the_floor_are_refused(helm, chart_path) -> None:
    result = helm("template", "hashtag2action", chart_path, "--kube-version", "1.29.0")
    assert result.returncode != 0
    assert "chart requires kubeVersion" in result.stderr
