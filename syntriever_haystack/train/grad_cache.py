"""Gradient caching (Gao et al. 2021, "Scaling Deep Contrastive Learning Batch Size under Memory Limited Setup").

A contrastive loss needs every embedding of the batch at once, but the encoder's activations for a large batch
do not fit a small machine. Gradient caching splits the work in three passes:

1. embed every text in mini-batches **without** a graph (and remember each mini-batch's RNG state, so dropout
   is replayed identically);
2. compute the loss on the detached embeddings and back-propagate to the embeddings only (cheap);
3. re-embed each mini-batch **with** a graph and back-propagate the cached embedding gradients through it.

The parameter gradients equal those of the full-batch computation (exactly, up to floating point), at the
memory cost of one mini-batch. With ``mini_batch_size=None`` a single ordinary forward/backward is done.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor

__all__ = ["RandContext", "cached_backward"]


class RandContext:
    """Capture the CPU (and CUDA) RNG state now; ``with ctx:`` replays it (dropout masks come out identical)."""

    def __init__(self) -> None:
        self.cpu_state = torch.get_rng_state()
        self.cuda_states = torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None

    def __enter__(self) -> None:
        self._fork = torch.random.fork_rng(devices=list(range(torch.cuda.device_count())))
        self._fork.__enter__()
        torch.set_rng_state(self.cpu_state)
        if self.cuda_states is not None:
            torch.cuda.set_rng_state_all(self.cuda_states)

    def __exit__(self, *exc: Any) -> None:
        self._fork.__exit__(*exc)


def cached_backward(
    groups: Sequence[Sequence[str]],
    embed: Callable[[list[str], int], Tensor],
    loss_fn: Callable[[list[Tensor]], Tensor],
    *,
    mini_batch_size: int | None,
) -> float:
    """Embed each group of texts, compute ``loss_fn(embeddings)`` and back-propagate into the encoder.

    :param groups: Texts per input of the loss (e.g. ``[queries, candidates]``).
    :param embed: ``(texts, group index)`` → embeddings ``[n, d]`` (with a graph when grad is enabled).
    :param loss_fn: One embeddings tensor per group → scalar loss.
    :param mini_batch_size: Texts per encoder call with gradient caching, or ``None`` for one plain pass.
    :returns: The loss value.
    """
    if mini_batch_size is None:
        loss = loss_fn([embed(list(texts), g).float() for g, texts in enumerate(groups)])
        loss.backward()
        return float(loss.detach())
    chunks: list[list[tuple[list[str], RandContext]]] = []
    detached: list[Tensor] = []
    with torch.no_grad():
        for g, texts in enumerate(groups):
            parts, outs = [], []
            for start in range(0, len(texts), mini_batch_size):
                part = list(texts[start : start + mini_batch_size])
                state = RandContext()
                parts.append((part, state))
                outs.append(embed(part, g))
            chunks.append(parts)
            detached.append(torch.cat(outs).float().requires_grad_(True))
    loss = loss_fn(detached)
    loss.backward()
    for g, (parts, reps) in enumerate(zip(chunks, detached, strict=True)):
        assert reps.grad is not None
        offset = 0
        for part, state in parts:
            with state:
                out = embed(part, g).float()
            grad = reps.grad[offset : offset + len(part)]
            offset += len(part)
            # d(loss)/d(params) = sum over embeddings of cached grad · d(embedding)/d(params)
            torch.autograd.backward(out, grad)
    return float(loss.detach())
