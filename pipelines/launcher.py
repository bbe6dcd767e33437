"""Launch the trainer as a distributed job: a PyTorchJob in the cluster, torchrun on a laptop.

Rendering and launching are separate. A ``JobRenderer`` turns one ``TrainingJobSpec`` into a
custom resource (``PyTorchJobRenderer``, the default, for the Kubeflow Training Operator v1;
``TrainJobRenderer`` for Kubeflow Trainer v2) and knows how that resource reports completion.
``KubernetesLauncher`` creates the resource with the official ``kubernetes`` client, waits on its
conditions within a total timeout, fetches the master's logs, and deletes the job when the wait
ends without success (cancelled, timed out). ``LocalLauncher`` runs the same entry point under
``torchrun`` as a subprocess.

The renderers are the one definition of a training pod: the trainer image, hardened like every
pod of the project (``pipelines.deployment``: non-root, read-only root filesystem with emptyDir
scratch, cache and ``/dev/shm`` volumes, no capabilities, bounded resources) on the GPU node
pool. The hand-launched templates in ``manifests/training/`` are rendered from them too
(``pipelines.training_templates``).
"""

from __future__ import annotations

import contextlib
import copy
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal, Protocol

from pipelines.deployment import (
    CONTAINER_SECURITY_CONTEXT,
    GPU_NODE_LABEL,
    GPU_PRODUCT,
    GPU_RESOURCE,
    GPU_TOLERATION,
    POD_SECURITY_CONTEXT,
    STORE_SECRET,
    STORE_SECRET_ENV,
    TRAINER_IMAGE,
)
from services.common.errors import H2AError

__all__ = [
    "ElasticPolicy",
    "JobCancelled",
    "JobDeleted",
    "JobFailed",
    "JobRenderer",
    "JobResult",
    "JobTimeout",
    "KubernetesLauncher",
    "Launcher",
    "LocalLauncher",
    "Placement",
    "PyTorchJobRenderer",
    "TrainJobRenderer",
    "TrainingJobSpec",
]

_logger = logging.getLogger(__name__)

_TRAINER_MODULE = "services.trainer"
_CONTAINER = "pytorch"  # the container name the Training Operator expects in a PyTorchJob


class JobFailed(H2AError):
    """The training job ended Failed; ``context`` holds ``job_reason`` and ``log_tail``."""

    reason = "TRAINING_JOB_FAILED"
    grpc_status = "INTERNAL"


class JobTimeout(H2AError):
    reason = "TRAINING_JOB_TIMEOUT"
    grpc_status = "DEADLINE_EXCEEDED"


class JobDeleted(H2AError):
    """The job vanished (404) while being watched: someone deleted it."""

    reason = "TRAINING_JOB_DELETED"
    grpc_status = "ABORTED"


class JobCancelled(H2AError):
    """SIGTERM reached the launcher (a cancelled pipeline run); the job was deleted."""

    reason = "TRAINING_JOB_CANCELLED"
    grpc_status = "CANCELLED"


@dataclass(frozen=True, kw_only=True)
class Placement:
    """Where training pods run and what each gets: a node pool of tainted GPU nodes."""

    node_selector_label: str = GPU_NODE_LABEL
    node_selector_value: str = GPU_PRODUCT
    gpus_per_pod: int = 8
    requests: Mapping[str, str] = field(default_factory=lambda: {"cpu": "32", "memory": "256Gi"})
    """CPU and memory a pod requests besides its GPUs: decoding and augmenting for 8 GPUs."""
    limits: Mapping[str, str] = field(default_factory=lambda: {"cpu": "64", "memory": "512Gi"})
    """The memory limit includes ``/dev/shm``, a memory volume."""
    shm_size: str = "64Gi"
    """Size of the ``/dev/shm`` memory volume; data-loader workers share batches through it."""
    scratch_size: str = "200Gi"
    """Size of ``/tmp``: the trainer's local checkpoints before they are uploaded."""
    cache_size: str = "20Gi"
    """Size of the cache volume: torch.compile, Triton and Hugging Face caches."""

    def resources(self) -> dict[str, Any]:
        gpus = str(self.gpus_per_pod)
        return {
            "requests": {**self.requests, GPU_RESOURCE: gpus},
            "limits": {**self.limits, GPU_RESOURCE: gpus},
        }


@dataclass(frozen=True, kw_only=True)
class ElasticPolicy:
    """torchrun elastic rendezvous: the job may run on min..max nodes and restart."""

    min_replicas: int
    max_replicas: int
    max_restarts: int = 3

    def __post_init__(self) -> None:
        if not 1 <= self.min_replicas <= self.max_replicas:
            raise ValueError(
                f"elastic min_replicas={self.min_replicas} must be in 1..max_replicas"
                f"={self.max_replicas}"
            )


@dataclass(frozen=True, kw_only=True)
class TrainingJobSpec:
    """Everything a renderer or launcher needs to run one trainer invocation.

    ``args`` are the trainer's own arguments, its mode first (``pretrain --recipe ...
    --manifest ...``); the launcher wraps them in ``torchrun -m services.trainer``.
    """

    name: str
    args: tuple[str, ...]
    image: str = TRAINER_IMAGE
    num_nodes: int = 1
    """Pods: one Master plus ``num_nodes - 1`` Workers."""
    nproc_per_node: int = 8
    elastic: ElasticPolicy | None = None
    backoff_limit: int = 3
    active_deadline_s: int | None = None
    ttl_s: int = 24 * 3600
    clean_pod_policy: Literal["None", "Running", "All"] = "Running"
    """``Running`` frees the GPUs of pods still running after the job ends, keeps logs of others."""
    secret_name: str = STORE_SECRET
    """The secret holding the store credentials (``pipelines.deployment.STORE_SECRET_ENV``)."""
    env: Mapping[str, str] = field(default_factory=dict)
    """Plain environment (store endpoint, bucket, ...); credentials come from the secret."""
    config_map: str | None = None
    """A ConfigMap whose entries become environment too (``envFrom``): how a hand-launched
    template gets the store; the pipeline passes it in ``env``. PyTorchJob only."""
    placement: Placement = field(default_factory=Placement)

    def __post_init__(self) -> None:
        if not self.args:
            raise ValueError("args must start with the trainer's mode")
        if self.num_nodes < 1:
            raise ValueError(f"num_nodes={self.num_nodes} must be at least 1")
        if self.nproc_per_node < 1:
            raise ValueError(f"nproc_per_node={self.nproc_per_node} must be at least 1")

    @property
    def command(self) -> list[str]:
        return ["torchrun", "-m", _TRAINER_MODULE, *self.args]

    @property
    def labels(self) -> dict[str, str]:
        """Labels of the job and its pods: the application, and the trainer mode as component."""
        return {
            "app.kubernetes.io/name": "hashtag2action",
            "app.kubernetes.io/component": self.args[0],
        }

    def env_list(self) -> list[dict[str, Any]]:
        """Container env: where caches go, ``env``, then the store credentials from the secret."""
        plain = {**_SCRATCH_ENV, **self.env}
        env: list[dict[str, Any]] = [{"name": k, "value": str(v)} for k, v in plain.items()]
        for key, variable in STORE_SECRET_ENV.items():
            env.append(
                {
                    "name": variable,
                    "valueFrom": {"secretKeyRef": {"name": self.secret_name, "key": key}},
                }
            )
        return env


# The root filesystem is read-only: a pod writes only to these emptyDir volumes.
_CACHE_DIR = "/var/cache/hashtag2action"
_SCRATCH_MOUNTS = {"tmp": "/tmp", "cache": _CACHE_DIR, "dshm": "/dev/shm"}
_SCRATCH_ENV = {
    # Whatever else writes under $HOME (matplotlib's config, for one) gets the /tmp volume.
    "HOME": "/tmp",
    "XDG_CACHE_HOME": _CACHE_DIR,
    "TRITON_CACHE_DIR": f"{_CACHE_DIR}/triton",
    "TORCHINDUCTOR_CACHE_DIR": f"{_CACHE_DIR}/inductor",
}


def _pod_fields(spec: TrainingJobSpec) -> dict[str, Any]:
    """The pod-spec fields both renderers share: security, placement, scratch volumes."""
    placement = spec.placement
    return {
        "securityContext": copy.deepcopy(POD_SECURITY_CONTEXT),
        "nodeSelector": {placement.node_selector_label: placement.node_selector_value},
        "tolerations": [dict(GPU_TOLERATION)],
        "volumes": [
            {"name": "tmp", "emptyDir": {"sizeLimit": placement.scratch_size}},
            {"name": "cache", "emptyDir": {"sizeLimit": placement.cache_size}},
            # The container runtime's 64 MiB /dev/shm kills DataLoader workers passing clips.
            {"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": placement.shm_size}},
        ],
    }


def _container_fields() -> dict[str, Any]:
    """The container fields both renderers share: security and the scratch mounts."""
    return {
        "securityContext": copy.deepcopy(CONTAINER_SECURITY_CONTEXT),
        "volumeMounts": [{"name": k, "mountPath": v} for k, v in _SCRATCH_MOUNTS.items()],
    }


class JobRenderer(Protocol):
    """Turns a ``TrainingJobSpec`` into one custom resource and reads its state back."""

    group: ClassVar[str]
    version: ClassVar[str]
    plural: ClassVar[str]
    crd_file: ClassVar[str]

    def render(self, spec: TrainingJobSpec, namespace: str) -> dict[str, Any]: ...

    def master_selector(self, name: str) -> str:
        """Label selector of the pod whose logs tell the story (rank 0)."""
        ...

    def terminal_state(self, job: dict[str, Any]) -> tuple[str, str, str] | None:
        """``("Succeeded"|"Failed", reason, message)`` once the job has ended, else None."""
        ...


def _last_true(job: dict[str, Any], types: tuple[str, ...]) -> dict[str, Any] | None:
    for condition in reversed(job.get("status", {}).get("conditions") or []):
        if condition.get("type") in types and condition.get("status") == "True":
            return condition
    return None


class PyTorchJobRenderer:
    """``kubeflow.org/v1`` PyTorchJob: Master plus Workers, each running torchrun."""

    group = "kubeflow.org"
    version = "v1"
    plural = "pytorchjobs"
    crd_file = "kubeflow.org_pytorchjobs.yaml"

    def _replica(self, spec: TrainingJobSpec, replicas: int) -> dict[str, Any]:
        container: dict[str, Any] = {
            "name": _CONTAINER,
            "image": spec.image,
            "command": spec.command,
        }
        if spec.config_map is not None:
            container["envFrom"] = [{"configMapRef": {"name": spec.config_map}}]
        container |= {
            "env": spec.env_list(),
            "resources": spec.placement.resources(),
            **_container_fields(),
        }
        return {
            "replicas": replicas,
            "restartPolicy": "OnFailure",
            "template": {
                "metadata": {"labels": spec.labels},
                "spec": {**_pod_fields(spec), "containers": [container]},
            },
        }

    def render(self, spec: TrainingJobSpec, namespace: str) -> dict[str, Any]:
        replica_specs = {"Master": self._replica(spec, 1)}
        if spec.num_nodes > 1:
            replica_specs["Worker"] = self._replica(spec, spec.num_nodes - 1)
        run_policy: dict[str, Any] = {
            "backoffLimit": spec.backoff_limit,
            "ttlSecondsAfterFinished": spec.ttl_s,
            "cleanPodPolicy": spec.clean_pod_policy,
        }
        if spec.active_deadline_s is not None:
            run_policy["activeDeadlineSeconds"] = spec.active_deadline_s
        job_spec: dict[str, Any] = {
            "pytorchReplicaSpecs": replica_specs,
            # a string in v1: it also accepts "auto", "gpu", "cpu"
            "nprocPerNode": str(spec.nproc_per_node),
            "runPolicy": run_policy,
        }
        if spec.elastic is not None:
            job_spec["elasticPolicy"] = {
                "minReplicas": spec.elastic.min_replicas,
                "maxReplicas": spec.elastic.max_replicas,
                "maxRestarts": spec.elastic.max_restarts,
                "rdzvBackend": "c10d",
            }
        return {
            "apiVersion": f"{self.group}/{self.version}",
            "kind": "PyTorchJob",
            "metadata": {"name": spec.name, "namespace": namespace, "labels": spec.labels},
            "spec": job_spec,
        }

    def master_selector(self, name: str) -> str:
        return f"training.kubeflow.org/job-name={name},training.kubeflow.org/replica-type=master"

    def terminal_state(self, job: dict[str, Any]) -> tuple[str, str, str] | None:
        condition = _last_true(job, ("Succeeded", "Failed"))
        if condition is None:
            return None
        return condition["type"], condition.get("reason", ""), condition.get("message", "")


class TrainJobRenderer:
    """``trainer.kubeflow.org/v1alpha1`` TrainJob on the ``torch-distributed`` runtime.

    Placement goes through a runtime patch of the runtime's ``node`` replicated job, because a
    TrainJob's trainer section has no pod-level fields.
    """

    group = "trainer.kubeflow.org"
    version = "v1alpha1"
    plural = "trainjobs"
    crd_file = "trainer.kubeflow.org_trainjobs.yaml"

    def __init__(self, runtime: str = "torch-distributed") -> None:
        self.runtime = runtime

    def render(self, spec: TrainingJobSpec, namespace: str) -> dict[str, Any]:
        if spec.elastic is not None:
            raise ValueError("elastic: TrainJob v1alpha1 has no elastic policy; use PyTorchJob")
        if spec.config_map is not None:
            raise ValueError("config_map: a TrainJob's trainer has no envFrom; pass env instead")
        pod_patch = {**_pod_fields(spec), "containers": [{"name": "node", **_container_fields()}]}
        pod_template = {"metadata": {"labels": spec.labels}, "spec": pod_patch}
        job_spec: dict[str, Any] = {
            "runtimeRef": {"name": self.runtime},
            "trainer": {
                "image": spec.image,
                "command": spec.command,
                "env": spec.env_list(),
                "numNodes": spec.num_nodes,
                "numProcPerNode": spec.nproc_per_node,
                "resourcesPerNode": spec.placement.resources(),
            },
            "runtimePatches": [
                {
                    "manager": "hashtag2action.io/launcher",
                    "trainingRuntimeSpec": {
                        "template": {
                            "spec": {
                                "replicatedJobs": [
                                    {
                                        "name": "node",
                                        "template": {"spec": {"template": pod_template}},
                                    }
                                ]
                            }
                        }
                    },
                }
            ],
        }
        if spec.active_deadline_s is not None:
            job_spec["activeDeadlineSeconds"] = spec.active_deadline_s
        return {
            "apiVersion": f"{self.group}/{self.version}",
            "kind": "TrainJob",
            "metadata": {"name": spec.name, "namespace": namespace, "labels": spec.labels},
            "spec": job_spec,
        }

    def master_selector(self, name: str) -> str:
        return (
            f"jobset.sigs.k8s.io/jobset-name={name},jobset.sigs.k8s.io/replicatedjob-name=node,"
            "batch.kubernetes.io/job-completion-index=0"
        )

    def terminal_state(self, job: dict[str, Any]) -> tuple[str, str, str] | None:
        condition = _last_true(job, ("Complete", "Failed"))
        if condition is None:
            return None
        state = "Succeeded" if condition["type"] == "Complete" else "Failed"
        return state, condition.get("reason", ""), condition.get("message", "")


@dataclass(frozen=True)
class JobResult:
    name: str
    state: str
    duration_s: float
    log_tail: str


class Launcher(Protocol):
    def run(self, spec: TrainingJobSpec) -> JobResult:
        """Run the job to completion; raise ``JobFailed``/``JobTimeout``/... otherwise."""
        ...


@contextlib.contextmanager
def _sigterm_cancels() -> Iterator[None]:
    """Turn SIGTERM (how KFP and kubelet cancel a step) into ``JobCancelled``.

    Signal handlers can only be set from the main thread; elsewhere SIGTERM keeps its default.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def _raise(signum: int, frame: Any) -> None:
        raise JobCancelled("SIGTERM received")

    previous = signal.signal(signal.SIGTERM, _raise)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _tail(text: str, lines: int) -> str:
    return "\n".join(text.splitlines()[-lines:])


class KubernetesLauncher:
    """Create a training job in a cluster, wait for it, and clean up after it.

    Args:
        renderer: PyTorchJob (default) or TrainJob.
        namespace: where the job and its pods live.
        api_client: a ``kubernetes.client.ApiClient``; default: in-cluster config, else kubeconfig.
        timeout_s: total wait; the job is deleted when it runs past it.
        poll_s: seconds between status reads.
        log_tail_lines: lines of the master's log kept in results and errors.
        log_sink: where the master's log is streamed while the job runs (this step's stderr,
            which the KFP UI shows); None streams nothing.
    """

    def __init__(
        self,
        renderer: JobRenderer | None = None,
        *,
        namespace: str = "kubeflow",
        api_client: Any = None,
        timeout_s: float = 48 * 3600,
        poll_s: float = 15.0,
        log_tail_lines: int = 50,
        log_sink: Callable[[str], Any] | None = sys.stderr.write,
    ) -> None:
        from kubernetes import client, config

        if api_client is None:
            try:
                config.load_incluster_config()
            except config.ConfigException:
                # read KUBECONFIG now: the client reads it once, when first imported
                config.load_kube_config(config_file=os.environ.get("KUBECONFIG"))
            api_client = client.ApiClient()
        self.renderer = renderer or PyTorchJobRenderer()
        self.namespace = namespace
        self.timeout_s = timeout_s
        self.poll_s = poll_s
        self.log_tail_lines = log_tail_lines
        self.log_sink = log_sink
        self._custom = client.CustomObjectsApi(api_client)
        self._core = client.CoreV1Api(api_client)

    def _job_call(self, method: str, name: str | None = None, **kwargs: Any) -> Any:
        renderer = self.renderer
        args = [renderer.group, renderer.version, self.namespace, renderer.plural]
        if name is not None:
            args.append(name)
        return getattr(self._custom, method)(*args, **kwargs)

    def master_logs(self, name: str, **options: Any) -> str:
        """The rank-0 pod's log, or "" while it has none or once it is gone (TTL, clean-up).

        ``options`` go to ``read_namespaced_pod_log`` (``timestamps``, ``since_seconds``).
        """
        from kubernetes.client.exceptions import ApiException

        pods = self._core.list_namespaced_pod(
            self.namespace, label_selector=self.renderer.master_selector(name)
        )
        if not pods.items:
            return ""
        try:
            return self._core.read_namespaced_pod_log(
                pods.items[0].metadata.name, self.namespace, **options
            )
        except ApiException as error:
            # 404: the pod is gone; 400: its container has not started yet
            if error.status in (400, 404):
                return ""
            raise

    def _stream_logs(self, name: str, last: str) -> str:
        """Echo the master's log lines newer than timestamp ``last``; return the newest one.

        Each poll asks for a window slightly longer than the poll interval, with timestamps
        (RFC 3339, so they compare as strings), and echoes only lines after ``last``.
        """
        text = self.master_logs(
            name, timestamps=True, since_seconds=int(self.poll_s) + 5, tail_lines=10_000
        )
        for line in text.splitlines():
            stamp, _, message = line.partition(" ")
            if stamp > last:
                self.log_sink(message + "\n")
                last = stamp
        return last

    def delete(self, name: str) -> None:
        """Delete the job and, in the foreground, its pods; a job already gone is fine."""
        from kubernetes.client.exceptions import ApiException

        try:
            self._job_call("delete_namespaced_custom_object", name, propagation_policy="Foreground")
        except ApiException as error:
            if error.status != 404:
                raise

    def run(self, spec: TrainingJobSpec) -> JobResult:
        job = self.renderer.render(spec, self.namespace)
        started = time.monotonic()
        self._job_call("create_namespaced_custom_object", body=job)
        _logger.info("created %s %s/%s", job["kind"], self.namespace, spec.name)
        finished = False
        try:
            with _sigterm_cancels():
                state, reason, message = self._wait(spec.name, started)
            finished = True
        finally:
            if not finished:
                # Cancelled, timed out or lost the API: never leave GPUs busy behind us.
                _logger.warning("deleting %s %s/%s", job["kind"], self.namespace, spec.name)
                self.delete(spec.name)
        log_tail = _tail(self.master_logs(spec.name), self.log_tail_lines)
        if state == "Failed":
            raise JobFailed(
                f"{job['kind']} {spec.name} failed: {reason}: {message}\n{log_tail}",
                job_reason=reason,
                log_tail=log_tail,
            )
        return JobResult(spec.name, state, time.monotonic() - started, log_tail)

    def _wait(self, name: str, started: float) -> tuple[str, str, str]:
        from kubernetes.client.exceptions import ApiException

        last_log = ""
        while True:
            try:
                job = self._job_call("get_namespaced_custom_object", name)
            except ApiException as error:
                if error.status == 404:
                    raise JobDeleted(f"{name} was deleted while running") from error
                raise
            if self.log_sink is not None:
                last_log = self._stream_logs(name, last_log)
            terminal = self.renderer.terminal_state(job)
            if terminal is not None:
                return terminal
            remaining = self.timeout_s - (time.monotonic() - started)
            if remaining <= 0:
                raise JobTimeout(f"{name} did not finish within {self.timeout_s:.0f} s")
            time.sleep(min(self.poll_s, remaining))


class LocalLauncher:
    """Run the trainer under ``torchrun --standalone`` in a subprocess (CPU, laptops, demo).

    Placement and secrets do not apply; the subprocess inherits this environment plus
    ``spec.env``. Output streams to ``log_path`` (and this process's stderr when ``echo``).
    """

    def __init__(self, *, timeout_s: float = 3600, log_tail_lines: int = 50, echo: bool = True):
        self.timeout_s = timeout_s
        self.log_tail_lines = log_tail_lines
        self.echo = echo

    def command(self, spec: TrainingJobSpec) -> list[str]:
        # The venv's own interpreter runs torch.distributed.run, so no PATH lookup of torchrun.
        return [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            f"--nproc-per-node={spec.nproc_per_node}",
            "-m",
            _TRAINER_MODULE,
            *spec.args,
        ]

    def run(self, spec: TrainingJobSpec, log_path: Path | None = None) -> JobResult:
        env = {**os.environ, **spec.env}
        started = time.monotonic()
        lines: list[str] = []
        timed_out = threading.Event()
        log = log_path.open("w") if log_path else contextlib.nullcontext()
        # A session of its own: torchrun's workers are killed with it, never orphaned.
        with (
            log as log_file,
            subprocess.Popen(
                self.command(spec),
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
                start_new_session=True,
            ) as process,
        ):

            def expire() -> None:
                timed_out.set()
                _kill_group(process)

            timer = threading.Timer(self.timeout_s, expire)
            timer.start()
            try:
                with _sigterm_cancels():
                    for line in process.stdout or ():
                        lines.append(line)
                        if log_file is not None:
                            log_file.write(line)
                        if self.echo:
                            sys.stderr.write(line)
                    returncode = process.wait()
            finally:
                timer.cancel()
                _kill_group(process)
        log_tail = _tail("".join(lines), self.log_tail_lines)
        if timed_out.is_set():
            raise JobTimeout(f"{spec.name} did not finish within {self.timeout_s:.0f} s")
        if returncode != 0:
            raise JobFailed(
                f"{spec.name} exited with {returncode}\n{log_tail}",
                job_reason=f"ExitCode{returncode}",
                log_tail=log_tail,
            )
        return JobResult(spec.name, "Succeeded", time.monotonic() - started, log_tail)


def _kill_group(process: subprocess.Popen) -> None:
    """SIGKILL the process group a launched torchrun leads, if any of it still runs."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
