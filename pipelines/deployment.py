"""The names and settings every deployed object shares, each defined once.

The launcher renders training pods from these, the pipeline takes its parameter defaults from
them, and ``tests/manifests`` checks the Helm chart's defaults, the kustomize tree and the
Dockerfiles against them: YAML and Dockerfiles cannot import Python, so where they spell a value
again a test compares it with the definition here.
"""

from __future__ import annotations

__all__ = [
    "CONFIG_MAP",
    "CONTAINER_SECURITY_CONTEXT",
    "GPU_NODE_LABEL",
    "GPU_NODE_SELECTOR",
    "GPU_PRODUCT",
    "GPU_RESOURCE",
    "GPU_TOLERATION",
    "POD_SECURITY_CONTEXT",
    "REGISTRY",
    "SERVICES_IMAGE",
    "STORE_SECRET",
    "STORE_SECRET_ENV",
    "TRAINER_IMAGE",
    "VERSION",
]

VERSION = "0.1.0"
"""The release: the tag of both images and the Helm chart's ``appVersion``."""
REGISTRY = "ghcr.io/hashtag2action"

SERVICES_IMAGE = f"{REGISTRY}/hashtag2action:{VERSION}"
"""The data-engine image (``services/Dockerfile``): the four services and every pipeline step."""
TRAINER_IMAGE = f"{REGISTRY}/hashtag2action-trainer:{VERSION}"
"""The CUDA trainer image (``services/trainer/Dockerfile``) that training pods run."""

GPU_RESOURCE = "nvidia.com/gpu"
"""The extended resource GPUs are requested as, and the taint key of the GPU nodes."""
GPU_NODE_LABEL = "nvidia.com/gpu.product"
"""The node label naming the GPU model (GKE: ``cloud.google.com/gke-accelerator``)."""
GPU_PRODUCT = "NVIDIA-A100-SXM4-80GB"
GPU_NODE_SELECTOR = {GPU_NODE_LABEL: GPU_PRODUCT}
"""The A100 node pool training and evaluation pods are placed on."""
GPU_TOLERATION = {"key": GPU_RESOURCE, "operator": "Exists", "effect": "NoSchedule"}
"""GPU nodes are tainted so that only pods asking for GPUs land there."""

STORE_SECRET = "hashtag2action-store"
"""The secret holding the clip store's credentials (the chart's, for a release ``hashtag2action``
with the bundled MinIO)."""
STORE_SECRET_ENV = {"accesskey": "H2A_STORE_ACCESS_KEY", "secretkey": "H2A_STORE_SECRET_KEY"}
"""Key in ``STORE_SECRET`` -> the environment variable ``services.common.config`` reads it from."""
CONFIG_MAP = "hashtag2action-config"
"""The ConfigMap of ``H2A_*`` settings (``manifests/base/config.yaml``)."""

# Every pod runs as the images' user h2a (1000:1000), without privileges or capabilities, on a
# read-only root filesystem: writable paths are emptyDir volumes the pod mounts.
POD_SECURITY_CONTEXT = {
    "runAsNonRoot": True,
    "runAsUser": 1000,
    "runAsGroup": 1000,
    "fsGroup": 1000,
    "seccompProfile": {"type": "RuntimeDefault"},
}
CONTAINER_SECURITY_CONTEXT = {
    "allowPrivilegeEscalation": False,
    "privileged": False,
    "readOnlyRootFilesystem": True,
    "capabilities": {"drop": ["ALL"]},
}
