"""Where pipeline tasks run and what they carry, shared by the curate-and-train pipeline and the
data-scaling study: the default store, the store secret as environment, the GPU node pool.

The values come from ``pipelines.deployment``; this module attaches them to a task.
"""

from kfp import dsl, kubernetes

from pipelines.deployment import GPU_RESOURCE, GPU_TOLERATION, STORE_SECRET_ENV
from services.common.config import StoreSettings

__all__ = ["CLUSTER_STORE", "on_gpu_node", "with_store_secret"]

CLUSTER_STORE = StoreSettings.model_construct(backend="s3").to_description()
"""The default store: the release's MinIO, from the settings' defaults rather than this
machine's ``H2A_STORE_*`` environment, so the pipelines compile the same anywhere."""


def with_store_secret(task: dsl.PipelineTask, secret_name: str) -> dsl.PipelineTask:
    """The store's credentials from the Kubernetes secret, as the task's environment."""
    return kubernetes.use_secret_as_env(task, secret_name, STORE_SECRET_ENV)


def on_gpu_node(task: dsl.PipelineTask, node_selector: dict) -> dsl.PipelineTask:
    """The task on one GPU of the node pool ``node_selector`` names, with a RAM /dev/shm for
    the loader workers."""
    kubernetes.add_node_selector_json(task, node_selector)
    kubernetes.add_toleration(task, **GPU_TOLERATION)
    kubernetes.empty_dir_mount(task, "dshm", "/dev/shm", medium="Memory", size_limit="16Gi")
    return task.set_accelerator_type(GPU_RESOURCE).set_accelerator_limit(1)
