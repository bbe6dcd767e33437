"""Job rendering against the pinned CRDs, and the Kubernetes wait loop against a loopback API."""

from __future__ import annotations

import copy
import json
import os
import re
import signal
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlparse

import pytest
from kubernetes import client

from pipelines.deployment import TRAINER_IMAGE
from pipelines.launcher import (
    ElasticPolicy,
    JobCancelled,
    JobDeleted,
    JobFailed,
    JobTimeout,
    KubernetesLauncher,
    LocalLauncher,
    Placement,
    PyTorchJobRenderer,
    TrainingJobSpec,
    TrainJobRenderer,
)
from pipelines.schemas import InvalidResource, crd_dir, validate_custom_resource
from services.common.errors import ConfigError

NAMESPACE = "research"


def _spec(**changes: Any) -> TrainingJobSpec:
    values: dict[str, Any] = {
        "name": "pretrain-abc",
        "args": ("pretrain", "--recipe", "vit_b_pretrain", "--output", "runs/abc"),
        "num_nodes": 2,
        "nproc_per_node": 8,
        "active_deadline_s": 3600,
        "secret_name": "minio-creds",
        "env": {"H2A_STORE_BACKEND": "s3", "H2A_STORE_ENDPOINT": "minio:9000"},
        "placement": Placement(node_selector_label="pool", node_selector_value="a100"),
    }
    values.update(changes)
    return TrainingJobSpec(**values)


@pytest.mark.parametrize("elastic", [None, ElasticPolicy(min_replicas=1, max_replicas=4)])
def test_pytorchjob_validates_and_places_on_gpus(elastic: ElasticPolicy | None) -> None:
    job = PyTorchJobRenderer().render(_spec(elastic=elastic), NAMESPACE)
    validate_custom_resource(job, crd_dir() / PyTorchJobRenderer.crd_file)

    replicas = job["spec"]["pytorchReplicaSpecs"]
    assert (replicas["Master"]["replicas"], replicas["Worker"]["replicas"]) == (1, 1)
    assert job["spec"]["nprocPerNode"] == "8"
    assert job["spec"]["runPolicy"]["backoffLimit"] == 3
    assert job["spec"]["runPolicy"]["activeDeadlineSeconds"] == 3600
    assert ("elasticPolicy" in job["spec"]) == (elastic is not None)
    pod = replicas["Worker"]["template"]["spec"]
    assert pod["nodeSelector"] == {"pool": "a100"}
    assert pod["tolerations"][0]["key"] == "nvidia.com/gpu"
    volumes = {volume["name"]: volume for volume in pod["volumes"]}
    assert volumes["dshm"]["emptyDir"]["medium"] == "Memory"
    container = pod["containers"][0]
    assert container["image"] == TRAINER_IMAGE
    assert container["resources"]["limits"]["nvidia.com/gpu"] == "8"
    assert {"name": "dshm", "mountPath": "/dev/shm"} in container["volumeMounts"]
    assert "envFrom" not in container, "the pipeline passes the store as env"
    secret_refs = {
        e["name"]: e["valueFrom"]["secretKeyRef"] for e in container["env"] if "valueFrom" in e
    }
    assert secret_refs["H2A_STORE_ACCESS_KEY"] == {"name": "minio-creds", "key": "accesskey"}
    assert secret_refs["H2A_STORE_SECRET_KEY"]["name"] == "minio-creds"
    assert container["command"][:3] == ["torchrun", "-m", "services.trainer"]


def test_single_node_pytorchjob_has_no_workers() -> None:
    job = PyTorchJobRenderer().render(_spec(num_nodes=1), NAMESPACE)
    validate_custom_resource(job, crd_dir() / PyTorchJobRenderer.crd_file)
    assert set(job["spec"]["pytorchReplicaSpecs"]) == {"Master"}


def test_trainjob_validates_from_the_same_inputs() -> None:
    job = TrainJobRenderer().render(_spec(), NAMESPACE)
    validate_custom_resource(job, crd_dir() / TrainJobRenderer.crd_file)
    trainer = job["spec"]["trainer"]
    assert (trainer["numNodes"], trainer["numProcPerNode"]) == (2, 8)
    assert trainer["image"] == TRAINER_IMAGE
    assert trainer["resourcesPerNode"]["limits"]["nvidia.com/gpu"] == "8"
    patch = job["spec"]["runtimePatches"][0]["trainingRuntimeSpec"]["template"]["spec"]
    pod = patch["replicatedJobs"][0]["template"]["spec"]["template"]["spec"]
    assert pod["nodeSelector"] == {"pool": "a100"}


@pytest.mark.parametrize(
    "unsupported",
    [{"elastic": ElasticPolicy(min_replicas=1, max_replicas=2)}, {"config_map": "settings"}],
    ids=["elastic", "config_map"],
)
def test_trainjob_refuses_what_it_cannot_express(unsupported: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match=next(iter(unsupported))):
        TrainJobRenderer().render(_spec(**unsupported), NAMESPACE)


@pytest.mark.parametrize(
    ("renderer", "misspell"),
    [
        (PyTorchJobRenderer(), lambda job: job["spec"].update(nprocPerNodes="8")),
        (
            PyTorchJobRenderer(),
            lambda job: job["spec"]["runPolicy"].update(backofLimit=2),
        ),
        (
            PyTorchJobRenderer(),
            lambda job: job["spec"]["pytorchReplicaSpecs"]["Master"]["template"]["spec"].update(
                nodeSelectors={"pool": "a100"}
            ),
        ),
        (TrainJobRenderer(), lambda job: job["spec"]["trainer"].update(numProcsPerNode=8)),
        (PyTorchJobRenderer(), lambda job: job["spec"]["runPolicy"].update(backoffLimit="3")),
    ],
)
def test_misspelt_or_mistyped_field_fails(renderer: Any, misspell: Any) -> None:
    job = copy.deepcopy(renderer.render(_spec(), NAMESPACE))
    misspell(job)
    with pytest.raises(InvalidResource, match=r"invalid at \$\.spec"):
        validate_custom_resource(job, crd_dir() / renderer.crd_file)


class FakeKubeApi:
    """The few Kubernetes API calls the launcher makes, answered in the API's own format.

    ``script`` is the list of condition lists successive GETs of the job return (the last one
    repeats); ``vanish_after`` makes the job disappear (404) after that many GETs.
    """

    def __init__(
        self, script: list[list[dict[str, str]]], log: str = "", vanish_after: int | None = None
    ):
        self.script = script
        self.log = log
        self.vanish_after = vanish_after
        self.jobs: dict[str, dict[str, Any]] = {}
        self.calls: list[tuple[str, str]] = []
        self.bodies: list[tuple[str, Any]] = []
        self.gets = 0

    def handle(self, method: str, path: str, query: dict[str, list[str]], body: Any) -> Any:
        self.calls.append((method, path))
        self.bodies.append((method, copy.deepcopy(body)))
        jobs = re.fullmatch(
            rf"/apis/kubeflow\.org/v1/namespaces/{NAMESPACE}/pytorchjobs(/.+)?",
            path,
        )
        if jobs:
            name = (jobs.group(1) or "/")[1:]
            if method == "POST":
                body["metadata"].update(uid="1234", creationTimestamp="2026-01-01T00:00:00Z")
                self.jobs[body["metadata"]["name"]] = body
                return 201, body
            if name not in self.jobs:
                return 404, _status(404, "NotFound", f'pytorchjobs "{name}" not found')
            if method == "DELETE":
                del self.jobs[name]
                return 200, _status(200, None, None, status="Success")
            self.gets += 1
            if self.vanish_after is not None and self.gets > self.vanish_after:
                del self.jobs[name]
                return 404, _status(404, "NotFound", f'pytorchjobs "{name}" not found')
            conditions = self.script[min(self.gets, len(self.script)) - 1]
            return 200, {**self.jobs[name], "status": {"conditions": conditions}}
        if path == f"/api/v1/namespaces/{NAMESPACE}/pods":
            selector = query["labelSelector"][0]
            name = re.search(r"job-name=([^,]+)", selector).group(1)
            pod = {"metadata": {"name": f"{name}-master-0", "namespace": NAMESPACE}}
            return 200, {"apiVersion": "v1", "kind": "PodList", "metadata": {}, "items": [pod]}
        if path.endswith("/log"):
            if query.get("timestamps", [""])[0].lower() != "true":
                return 200, self.log
            # while running, two more lines appear with every status read
            lines = self.log.splitlines()[: 2 * self.gets]
            return 200, "".join(f"2026-01-01T00:00:{i:02d}.000Z {x}\n" for i, x in enumerate(lines))
        return 404, _status(404, "NotFound", path)


def _status(code: int, reason: str | None, message: str | None, status: str = "Failure") -> dict:
    return {
        "apiVersion": "v1",
        "kind": "Status",
        "metadata": {},
        "status": status,
        "message": message,
        "reason": reason,
        "code": code,
    }


def _condition(kind: str, reason: str = "", message: str = "") -> dict[str, str]:
    return {"type": kind, "status": "True", "reason": reason, "message": message}


@pytest.fixture()
def serve_kube() -> Iterator[Any]:
    servers: list[ThreadingHTTPServer] = []

    def start(api: FakeKubeApi) -> client.ApiClient:
        class Handler(BaseHTTPRequestHandler):
            def _answer(self) -> None:
                url = urlparse(self.path)
                length = int(self.headers.get("Content-Length") or 0)
                body = json.loads(self.rfile.read(length)) if length else None
                code, payload = api.handle(self.command, url.path, parse_qs(url.query), body)
                data = payload if isinstance(payload, str) else json.dumps(payload)
                self.send_response(code)
                kind = "text/plain" if isinstance(payload, str) else "application/json"
                self.send_header("Content-Type", kind)
                self.send_header("Content-Length", str(len(data.encode())))
                self.end_headers()
                self.wfile.write(data.encode())

            do_GET = do_POST = do_DELETE = _answer

            def log_message(self, *args: Any) -> None:
                pass

        server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        servers.append(server)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        configuration = client.Configuration(host=f"http://127.0.0.1:{server.server_port}")
        return client.ApiClient(configuration)

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


def _launcher(
    api_client: client.ApiClient, timeout_s: float = 5.0, log_sink: Any = None
) -> KubernetesLauncher:
    return KubernetesLauncher(
        namespace=NAMESPACE,
        api_client=api_client,
        timeout_s=timeout_s,
        poll_s=0.05,
        log_sink=log_sink,
    )


def test_wait_until_succeeded(serve_kube: Any) -> None:
    running = [_condition("Created"), _condition("Running")]
    api = FakeKubeApi([running, running, [*running, _condition("Succeeded")]], log="epoch 0 ok")
    result = _launcher(serve_kube(api)).run(_spec())
    assert (result.state, result.log_tail) == ("Succeeded", "epoch 0 ok")
    assert api.gets == 3
    assert "pretrain-abc" in api.jobs, "a succeeded job is left to its TTL, not deleted"
    assert ("POST", f"/apis/kubeflow.org/v1/namespaces/{NAMESPACE}/pytorchjobs") in api.calls


def test_master_log_streams_while_running(serve_kube: Any) -> None:
    log = "".join(f"epoch {i}\n" for i in range(6))
    running = [_condition("Running")]
    api = FakeKubeApi([running, running, [_condition("Succeeded")]], log=log)
    streamed: list[str] = []
    _launcher(serve_kube(api), log_sink=streamed.append).run(_spec())
    assert "".join(streamed) == log, "every line once, in order"


def test_failed_job_raises_with_reason_and_log_tail(serve_kube: Any) -> None:
    log = "\n".join(f"line {i}" for i in range(200)) + "\nRuntimeError: CUDA out of memory"
    failed = [_condition("Created"), _condition("Failed", "BackoffLimitExceeded", "gave up")]
    api = FakeKubeApi([[_condition("Running")], failed], log=log)
    with pytest.raises(JobFailed) as caught:
        _launcher(serve_kube(api)).run(_spec())
    assert caught.value.context["job_reason"] == "BackoffLimitExceeded"
    tail = caught.value.context["log_tail"]
    assert tail.endswith("CUDA out of memory") and "line 0\n" not in tail
    assert "BackoffLimitExceeded" in str(caught.value)


def test_timeout_deletes_the_job(serve_kube: Any) -> None:
    api = FakeKubeApi([[_condition("Running")]])
    with pytest.raises(JobTimeout):
        _launcher(serve_kube(api), timeout_s=0.3).run(_spec())
    assert api.jobs == {}
    assert api.calls[-1][0] == "DELETE"


def test_job_deleted_while_watched(serve_kube: Any) -> None:
    api = FakeKubeApi([[_condition("Running")]], vanish_after=2)
    with pytest.raises(JobDeleted):
        _launcher(serve_kube(api)).run(_spec())
    assert api.gets == 3


def test_local_launcher_reports_exit_code_and_tail(tmp_path: Path) -> None:
    launcher = LocalLauncher(echo=False)
    spec = _spec(nproc_per_node=1, args=("no-such-mode",))
    command = launcher.command(spec)
    assert command[:3] == [sys.executable, "-m", "torch.distributed.run"]
    assert "--nproc-per-node=1" in command
    assert command[-2:] == ["services.trainer", "no-such-mode"]
    with pytest.raises(JobFailed) as caught:
        launcher.run(spec, log_path=tmp_path / "train.log")
    assert caught.value.context["job_reason"].startswith("ExitCode")
    assert caught.value.context["log_tail"]
    assert (tmp_path / "train.log").read_text().endswith(caught.value.context["log_tail"] + "\n")


def test_sigterm_deletes_the_job(serve_kube: Any) -> None:
    api = FakeKubeApi([[_condition("Running")]])
    before = signal.getsignal(signal.SIGTERM)
    # SIGTERM is how KFP cancels a step; it arrives while the launcher waits.
    timer = threading.Timer(0.3, os.kill, (os.getpid(), signal.SIGTERM))
    timer.start()
    try:
        with pytest.raises(JobCancelled):
            _launcher(serve_kube(api), timeout_s=30).run(_spec())
    finally:
        timer.cancel()
    assert api.jobs == {}
    assert api.calls[-1][0] == "DELETE"
    assert signal.getsignal(signal.SIGTERM) is before


def test_local_timeout_kills_the_whole_process_group(tmp_path: Path) -> None:
    # torchrun alone needs seconds to import torch, so half a second always expires
    launcher = LocalLauncher(timeout_s=0.5, echo=False)
    spec = _spec(nproc_per_node=1, args=("pretrain", "--help"))
    started = time.monotonic()
    with pytest.raises(JobTimeout):
        launcher.run(spec, log_path=tmp_path / "train.log")
    assert time.monotonic() - started < 10


def test_training_step_launches_a_valid_job_from_pipeline_inputs(
    serve_kube: Any, local_store: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The pipeline's training step, end to end against the loopback API via a kubeconfig."""
    from pipelines.steps import Cluster, train
    from services.trainer.checkpoint import CheckpointManager

    # succeeded at the first look: the step polls every 15 s
    api = FakeKubeApi([[_condition("Running"), _condition("Succeeded")]], log="done")
    host = serve_kube(api).configuration.host
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(
        json.dumps(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "loop", "cluster": {"server": host}}],
                "users": [{"name": "me", "user": {"token": "t"}}],
                "contexts": [{"name": "loop", "context": {"cluster": "loop", "user": "me"}}],
                "current-context": "loop",
            }
        )
    )
    monkeypatch.setenv("KUBECONFIG", str(kubeconfig))
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    monkeypatch.setattr("pipelines.steps._own_namespace", lambda: NAMESPACE)
    # the job is simulated, so its checkpoint is put where the trainer would put it
    saved = CheckpointManager(local_store, "pretrain-r1", 1, 1).save(7, {"model": {}})

    uri = train(
        "pretrain",
        "tiny_pretrain",
        "pretrain-r1",
        "s3://hashtag2action/manifests/default/",
        ["optim.epochs=2"],
        "kubernetes",
        local_store,
        {"H2A_STORE_BACKEND": "s3", "H2A_STORE_BUCKET": "hashtag2action"},
        Cluster("img:1", "creds", {"pool": "a100"}, 4, 2, 60.0, "PyTorchJob"),
    )
    assert uri == saved.uri
    (job,) = (body for method, body in api.bodies if method == "POST")
    validate_custom_resource(job, crd_dir() / PyTorchJobRenderer.crd_file)
    master = job["spec"]["pytorchReplicaSpecs"]["Master"]["template"]["spec"]
    container = master["containers"][0]
    assert container["image"] == "img:1"
    assert container["command"][3:] == [
        "pretrain",
        "--recipe",
        "tiny_pretrain",
        "--manifest",
        "s3://hashtag2action/manifests/default/",
        "--output",
        container["command"][9],
        "--set",
        "optim.epochs=2",
    ]
    assert container["command"][9].endswith("/pretrain-r1")
    assert master["nodeSelector"] == {"pool": "a100"}
    assert job["spec"]["pytorchReplicaSpecs"]["Worker"]["replicas"] == 1
    assert job["spec"]["nprocPerNode"] == "4"
    env = {e["name"]: e for e in container["env"]}
    assert env["H2A_STORE_ACCESS_KEY"]["valueFrom"]["secretKeyRef"]["name"] == "creds"


def test_crds_are_vendored_in_the_repository(monkeypatch: pytest.MonkeyPatch) -> None:
    # The checkout stands alone: nothing beside it is needed to validate what we render.
    monkeypatch.delenv("H2A_CRD_DIR", raising=False)
    vendored = Path(__file__).resolve().parents[2] / "manifests" / "crds"
    assert crd_dir() == vendored
    for crd_file in (PyTorchJobRenderer.crd_file, TrainJobRenderer.crd_file):
        assert (vendored / crd_file).is_file()


def test_wrong_kind_or_version_is_rejected(monkeypatch: pytest.MonkeyPatch) -> None:
    job = PyTorchJobRenderer().render(_spec(), NAMESPACE)
    with pytest.raises(InvalidResource, match="is not 'TrainJob'"):
        validate_custom_resource(job, crd_dir() / TrainJobRenderer.crd_file)
    with pytest.raises(InvalidResource, match="version 'v2'"):
        validate_custom_resource(
            {**job, "apiVersion": "kubeflow.org/v2"}, crd_dir() / PyTorchJobRenderer.crd_file
        )
    monkeypatch.setenv("H2A_CRD_DIR", "/elsewhere/crds")
    assert crd_dir() == Path("/elsewhere/crds")
    with pytest.raises(ConfigError, match="H2A_CRD_DIR"):
        validate_custom_resource(job, crd_dir() / PyTorchJobRenderer.crd_file)
