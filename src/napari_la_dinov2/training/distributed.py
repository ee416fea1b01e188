"""Data-parallel training under ``torchrun`` (PyTorch DDP): NCCL on GPUs, gloo on CPUs.

``torchrun --nproc_per_node N -m napari_la_dinov2.cli train ...`` sets RANK/WORLD_SIZE; each
process then draws a disjoint share of every step's slices, gradients are averaged by DDP, and
only rank 0 writes files. Without torchrun everything here is a no-op.
"""

from __future__ import annotations

import os

import torch
import torch.distributed as dist


def init_from_env() -> bool:
    """Join the process group torchrun describes; True when running distributed."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return False
    if not dist.is_initialized():
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        if backend == "nccl":
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        dist.init_process_group(backend=backend)
    return True


def rank_and_world() -> tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def local_device(device: str) -> str:
    """Under torchrun on GPUs each process takes the GPU of its LOCAL_RANK."""
    if device in ("auto", "cuda") and torch.cuda.is_available() and "LOCAL_RANK" in os.environ:
        return f"cuda:{os.environ['LOCAL_RANK']}"
    return device


def wrap(model: torch.nn.Module, device: torch.device) -> torch.nn.Module:
    if rank_and_world()[1] <= 1:
        return model
    from torch.nn.parallel import DistributedDataParallel

    ids = [device.index] if device.type == "cuda" else None
    return DistributedDataParallel(model, device_ids=ids)


def barrier() -> None:
    if rank_and_world()[1] > 1:
        dist.barrier()


def broadcast_buffers(model: torch.nn.Module) -> None:
    """Copy rank 0's buffers (BatchNorm running statistics) to every rank. DDP syncs them at
    the start of each forward, but each rank then updates them on its own batch: without this
    the ranks would validate, and decide early stopping, with slightly different models."""
    if rank_and_world()[1] <= 1:
        return
    for buffer in model.buffers():
        dist.broadcast(buffer.data, src=0)
