"""Training jobs have one definition, the launcher's renderers: the checked-in templates are
their render, the pipeline's jobs equal the templates but for what a run chooses, and every
training pod is hardened like the services' pods."""

from __future__ import annotations

import copy
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from pipelines import steps
from pipelines.curate_and_train import curate_and_train
from pipelines.launcher import PyTorchJobRenderer, TrainingJobSpec, TrainJobRenderer
from pipelines.placement import CLUSTER_STORE
from pipelines.training_templates import MANIFESTS, TEMPLATES, Template, render
from services.common.store import ClipStore
from services.trainer.checkpoint import CheckpointManager

_IDS = [template.filename for template in TEMPLATES]
_STORE = CLUSTER_STORE


@pytest.mark.parametrize("template", TEMPLATES, ids=_IDS)
def test_checked_in_templates_are_a_fresh_render(template: Template) -> None:
    checked_in = (MANIFESTS / template.filename).read_text()
    assert checked_in == render(template), f"{template.filename} is stale: run `make manifests`"


@pytest.fixture()
def pipeline_job(
    monkeypatch: pytest.MonkeyPatch, local_store: ClipStore
) -> Callable[[str, int], dict[str, Any]]:
    """The job the pipeline's training step creates for a mode and node count, with every
    other cluster input at the pipeline's default."""
    created: list[dict[str, Any]] = []

    class Recorder:
        def __init__(self, renderer: Any, **options: Any) -> None:
            self.renderer = renderer

        def run(self, spec: TrainingJobSpec) -> None:
            created.append(self.renderer.render(spec, "research"))

    monkeypatch.setattr(steps, "KubernetesLauncher", Recorder)
    defaults = {name: spec.default for name, spec in curate_and_train.component_spec.inputs.items()}

    def launch(mode: str, num_nodes: int) -> dict[str, Any]:
        run = f"{mode}-r1"
        # the job is only recorded, so its checkpoint is put where the trainer would put it
        CheckpointManager(local_store, run, 1, 1).save(1, {"model": {}})
        cluster = steps.Cluster(
            defaults["trainer_image"],
            defaults["secret_name"],
            defaults["gpu_node_selector"],
            defaults["gpus_per_node"],
            num_nodes,
            defaults["job_timeout_s"],
            defaults["job_kind"],
        )
        manifest = "s3://hashtag2action/manifests/default/"
        env = steps.store_env(_STORE)
        steps.train(
            mode, "tiny_pretrain", run, manifest, [], "kubernetes", local_store, env, cluster
        )
        return created[-1]

    return launch


def _beyond_the_run(job: dict[str, Any]) -> dict[str, Any]:
    """``job`` without what each run or launch chooses: its name, namespace and labels, the
    deadline, the trainer's arguments and where the store's settings come from (the pipeline's
    parameters as env, the ConfigMap for a template)."""
    job = copy.deepcopy(job)
    del job["metadata"]
    job["spec"]["runPolicy"].pop("activeDeadlineSeconds", None)
    store_settings = set(steps.store_env(_STORE))
    for replica in job["spec"]["pytorchReplicaSpecs"].values():
        (container,) = replica["template"]["spec"]["containers"]
        container["command"] = container["command"][:3]
        container.pop("envFrom", None)
        container["env"] = [item for item in container["env"] if item["name"] not in store_settings]
    return job


@pytest.mark.parametrize("template", TEMPLATES, ids=_IDS)
def test_the_pipeline_launches_the_template(kustomize, checks, pipeline_job, template) -> None:
    built = checks.by_kind(kustomize("training"), "PyTorchJob")[template.spec.name]
    launched = pipeline_job(template.spec.args[0], template.spec.num_nodes)
    assert _beyond_the_run(launched) == _beyond_the_run(built)


@pytest.mark.parametrize(
    "renderer", [PyTorchJobRenderer(), TrainJobRenderer()], ids=["PyTorchJob", "TrainJob"]
)
def test_rendered_training_pods_are_valid_and_hardened(checks, renderer: Any) -> None:
    spec = TrainingJobSpec(
        name="pretrain-r1", args=("pretrain",), num_nodes=2, env=steps.store_env(_STORE)
    )
    job = renderer.render(spec, "research")
    checks.validate_object(job)
    pods = list(checks.pod_specs([job]))
    assert pods
    for where, pod in pods:
        checks.assert_hardened(where, pod)
        (container,) = pod["containers"]
        # Every writable path is an emptyDir, and every cache the environment names is on one.
        empty_dirs = {volume["name"]: volume["emptyDir"] for volume in pod["volumes"]}
        mounts = {mount["mountPath"]: mount["name"] for mount in container["volumeMounts"]}
        assert set(mounts.values()) <= set(empty_dirs), where
        assert empty_dirs[mounts["/dev/shm"]]["medium"] == "Memory", where
        paths = {item["name"]: item["value"] for item in container["env"] if "value" in item}
        for name in ("HOME", "XDG_CACHE_HOME", "TRITON_CACHE_DIR", "TORCHINDUCTOR_CACHE_DIR"):
            assert any(Path(paths[name]).is_relative_to(mount) for mount in mounts), name
