"""Distribution, activation checkpointing and compilation, applied to a built model.

The model files never mention these. The order is torchtitan's: activation checkpointing, then
``torch.compile``, then the data-parallel wrapper. The process group comes from the variables
torchrun and the PyTorchJob operator set (MASTER_ADDR, MASTER_PORT, WORLD_SIZE, RANK,
LOCAL_RANK): NCCL on GPUs, gloo on CPU.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

__all__ = ["DistInfo", "all_gather_objects", "init_distributed", "parallelize", "unwrap"]

_logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class DistInfo:
    rank: int
    world: int
    local_rank: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world > 1


def init_distributed(device: str = "auto") -> DistInfo:
    """Join the process group when WORLD_SIZE > 1; pick this process's device."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    use_cuda = device == "cuda" or (device == "auto" and torch.cuda.is_available())
    target = torch.device("cuda", local_rank) if use_cuda else torch.device("cpu")
    if use_cuda:
        torch.cuda.set_device(target)
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if use_cuda else "gloo", rank=rank, world_size=world)
        _logger.info("joined process group: rank %d of %d on %s", rank, world, target)
    return DistInfo(rank=rank, world=world, local_rank=local_rank, device=target)


def parallelize(
    model: nn.Module, info: DistInfo, *, activation_checkpointing: bool, compile: bool
) -> nn.Module:
    """Move to the device, then checkpointing -> compile -> DDP."""
    model.to(info.device)
    if activation_checkpointing:
        model.set_grad_checkpointing(True)
    if compile:
        model = torch.compile(model)
    if info.distributed:
        ids = [info.local_rank] if info.device.type == "cuda" else None
        model = DistributedDataParallel(model, device_ids=ids)
    return model


def unwrap(model: nn.Module) -> nn.Module:
    """The plain model inside DDP and ``torch.compile`` wrappers (for state dicts, loss)."""
    if isinstance(model, DistributedDataParallel):
        model = model.module
    return getattr(model, "_orig_mod", model)


def all_gather_objects(value: object, info: DistInfo) -> list[object]:
    """Every rank's ``value`` (a list of one when not distributed)."""
    if not info.distributed:
        return [value]
    gathered: list[object] = [None] * info.world
    dist.all_gather_object(gathered, value)
    return gathered
