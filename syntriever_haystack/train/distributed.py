"""Multi-device training with ``torchrun`` (or ``accelerate launch``, which sets the same environment).

Each process trains on its share of the batches (``batches[rank::world_size]``); gradients are averaged over
processes before every optimiser step, so the replicas stay identical. With ``gather_across_devices`` the
contrastive losses also see every other device's candidates as in-batch negatives: the candidate embeddings
are all-gathered *with* their autograd graph (``torch.distributed.nn.functional.all_gather``), which makes the
effective contrastive batch ``world_size`` times larger.

.. code-block:: bash

    torchrun --nproc-per-node 4 -m syntriever_haystack train retriever --stage 1 --data runs/gen/retriever.jsonl \\
        --gather-across-devices --out models/stage1
"""

from __future__ import annotations

import os

import torch
from torch import Tensor

__all__ = ["all_reduce_gradients", "gather_with_grad", "init_from_environment", "is_main_process", "rank_world"]


def init_from_environment() -> None:
    """Initialise the default process group when launched by torchrun (``WORLD_SIZE`` > 1); idempotent."""
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and not torch.distributed.is_initialized():
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        torch.distributed.init_process_group(backend=backend)
        if torch.cuda.is_available():
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))


def rank_world() -> tuple[int, int]:
    """``(rank, world_size)``; ``(0, 1)`` without a process group."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


def is_main_process() -> bool:
    return rank_world()[0] == 0


def gather_with_grad(tensor: Tensor) -> Tensor:
    """Concatenate ``tensor`` from every process (rank order), keeping the gradient path to the local part."""
    _rank, world = rank_world()
    if world == 1:
        return tensor
    import torch.distributed.nn.functional as dist_fn

    return torch.cat(dist_fn.all_gather(tensor.contiguous()), dim=0)


def all_reduce_gradients(model: torch.nn.Module) -> None:
    """Average every parameter gradient over the processes (no-op on one process)."""
    _, world = rank_world()
    if world == 1:
        return
    for param in model.parameters():
        if param.grad is not None:
            torch.distributed.all_reduce(param.grad, op=torch.distributed.ReduceOp.SUM)
            param.grad /= world
