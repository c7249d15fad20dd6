"""torchrun plumbing shared by the bundles' multi_gpu_train configs: one process group (NCCL on GPUs, gloo on
CPUs, so the same config trains with several CPU processes in the tests), one device per rank, the network
wrapped in DistributedDataParallel, and which rank writes files."""

from __future__ import annotations

import os
from collections.abc import Sequence

import torch


def init_process_group() -> None:
    """Join torchrun's process group once (NCCL with CUDA, gloo otherwise) and bind this rank's GPU."""
    if not torch.distributed.is_initialized():
        torch.distributed.init_process_group(backend="nccl" if torch.cuda.is_available() else "gloo")
    if torch.cuda.is_available():
        torch.cuda.set_device(rank_device())


def rank_device() -> torch.device:
    """This rank's GPU (torchrun's LOCAL_RANK: the rank within this node), or the CPU."""
    if not torch.cuda.is_available():
        return torch.device("cpu")
    return torch.device(f"cuda:{int(os.environ.get('LOCAL_RANK', torch.distributed.get_rank()))}")


def ddp(network: torch.nn.Module, device: torch.device) -> torch.nn.Module:
    """`network` on `device`, wrapped for data-parallel training (device_ids only for a GPU)."""
    ids = [device] if device.type == "cuda" else None
    return torch.nn.parallel.DistributedDataParallel(network.to(device), device_ids=ids)


def is_rank0() -> bool:
    """True outside torchrun and on rank 0: the one process that logs, checkpoints and exports."""
    return not (torch.distributed.is_available() and torch.distributed.is_initialized()) or (
        torch.distributed.get_rank() == 0
    )


def destroy_process_group() -> None:
    """Leave the process group together: every rank waits at a barrier first, so no rank tears its gloo/NCCL
    connections down while another (rank 0, still writing its final checkpoint) holds them open; a rank that left
    alone was seen to abort at exit (SIGABRT, "terminate called without an active exception") on a 2-core CI run."""
    if torch.distributed.is_initialized():
        torch.distributed.barrier()
        torch.distributed.destroy_process_group()


def rank_handlers(handlers: Sequence) -> list:
    """The training handlers this rank attaches: all of them on rank 0; elsewhere those that must act in step on
    every rank (LR schedule, validation, checkpoint loading, time limit), without the ones that log or write
    files (checkpoint savers, stats and TensorBoard writers, metric savers). `None` entries (disabled) are dropped."""
    from monai.handlers import CheckpointSaver, MetricsSaver, StatsHandler, TensorBoardStatsHandler

    writers = (CheckpointSaver, StatsHandler, TensorBoardStatsHandler, MetricsSaver)
    kept = [h for h in handlers if h is not None]
    return kept if is_rank0() else [h for h in kept if not isinstance(h, writers)]
