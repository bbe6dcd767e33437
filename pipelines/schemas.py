"""Offline validation of custom resources against pinned CRD schemas.

There is no kube-apiserver here, so the objects we render (PyTorchJob, TrainJob) are checked the
way the apiserver's structural-schema pruning would see them: the CRD's ``openAPIV3Schema`` for
the object's version, validated with JSON Schema Draft 7, with every object schema that lists
``properties`` and does not carry ``x-kubernetes-preserve-unknown-fields`` treated as closed.
The apiserver would silently prune an unknown field; closing the schema makes a misspelt field
(``nprocPerNodes``) fail here instead of vanishing in the cluster.
"""

from __future__ import annotations

import copy
import functools
import os
from pathlib import Path
from typing import Any

import jsonschema
import yaml

from services.common.errors import ConfigError

__all__ = [
    "PYTORCHJOB_CRD",
    "TRAINJOB_CRD",
    "InvalidResource",
    "crd_dir",
    "load_crd_schema",
    "validate_custom_resource",
]

PYTORCHJOB_CRD = "kubeflow.org_pytorchjobs.yaml"
TRAINJOB_CRD = "trainer.kubeflow.org_trainjobs.yaml"

# Keys every embedded resource may carry although its schema does not list them (the apiserver
# adds them implicitly for x-kubernetes-embedded-resource).
_EMBEDDED_KEYS = {
    "apiVersion": {"type": "string"},
    "kind": {"type": "string"},
    "metadata": {"type": "object"},
}


class InvalidResource(ConfigError):
    """A rendered custom resource does not match its CRD schema."""

    reason = "INVALID_RESOURCE"


def crd_dir() -> Path:
    """The folder holding the pinned CRD files.

    ``H2A_CRD_DIR`` overrides it; the default is the repository's ``manifests/crds``, where the
    upstream CRDs are vendored (its README names their source and version).
    """
    override = os.environ.get("H2A_CRD_DIR")
    if override:
        return Path(override)
    return Path(__file__).resolve().parents[1] / "manifests" / "crds"


def _close(schema: Any) -> Any:
    """Return ``schema`` with every structural object closed (additionalProperties: false)."""
    if isinstance(schema, list):
        return [_close(item) for item in schema]
    if not isinstance(schema, dict):
        return schema
    closed = {key: _close(value) for key, value in schema.items()}
    if (
        "properties" in closed
        and "additionalProperties" not in closed
        and not closed.get("x-kubernetes-preserve-unknown-fields", False)
    ):
        if closed.get("x-kubernetes-embedded-resource", False):
            closed["properties"] = {**_EMBEDDED_KEYS, **closed["properties"]}
        closed["additionalProperties"] = False
    return closed


@functools.lru_cache(maxsize=8)
def _load_crd(crd_path: Path) -> dict[str, Any]:
    if not crd_path.is_file():
        raise ConfigError(f"no CRD file {crd_path}; H2A_CRD_DIR names the folder of pinned CRDs")
    with crd_path.open() as handle:
        documents = [doc for doc in yaml.safe_load_all(handle) if doc]
    crds = [doc for doc in documents if doc.get("kind") == "CustomResourceDefinition"]
    if len(crds) != 1:
        raise ConfigError(f"{crd_path} holds {len(crds)} CustomResourceDefinitions, expected 1")
    return crds[0]


@functools.lru_cache(maxsize=16)
def load_crd_schema(crd_path: Path, api_version: str) -> dict[str, Any]:
    """The closed ``openAPIV3Schema`` of one version of a CRD.

    Args:
        crd_path: a CustomResourceDefinition YAML file.
        api_version: ``group/version`` of the object, e.g. ``kubeflow.org/v1``.

    Returns:
        A Draft 7 JSON schema with structural objects closed.
    """
    crd = _load_crd(crd_path)
    group, _, version = api_version.rpartition("/")
    if group != crd["spec"]["group"]:
        raise InvalidResource(
            f"apiVersion {api_version!r} does not belong to CRD group {crd['spec']['group']!r}"
        )
    for entry in crd["spec"]["versions"]:
        if entry["name"] == version:
            return _close(copy.deepcopy(entry["schema"]["openAPIV3Schema"]))
    served = [entry["name"] for entry in crd["spec"]["versions"]]
    raise InvalidResource(f"version {version!r} not in CRD {crd_path.name} (has {served})")


def validate_custom_resource(obj: dict, crd_path: Path) -> None:
    """Validate a custom resource against its CRD, raising on the first mismatch.

    Args:
        obj: the resource as a plain dict (``apiVersion``, ``kind``, ``metadata``, ``spec``).
        crd_path: the CRD YAML file defining ``obj``'s kind.

    Raises:
        InvalidResource: wrong kind or version, or a field the schema rejects (unknown fields
            included); the message names the JSON path of the offending field.
    """
    crd = _load_crd(Path(crd_path))
    expected_kind = crd["spec"]["names"]["kind"]
    if obj.get("kind") != expected_kind:
        raise InvalidResource(f"kind {obj.get('kind')!r} is not {expected_kind!r}")
    schema = load_crd_schema(Path(crd_path), str(obj.get("apiVersion", "")))
    validator = jsonschema.Draft7Validator(schema)
    error = jsonschema.exceptions.best_match(validator.iter_errors(obj))
    if error is not None:
        path = "$" + "".join(
            f"[{part}]" if isinstance(part, int) else f".{part}" for part in error.absolute_path
        )
        raise InvalidResource(f"{expected_kind} invalid at {path}: {error.message}", path=path)
