"""What a step of the flow is: :class:`Step`, and the recipe predicates and helpers step declarations share."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from syntriever_haystack.flow.context import FlowContext, Layout
from syntriever_haystack.flow.recipe import Recipe

__all__ = ["Step", "StepFunction", "as_dict", "reranker_enabled", "stage2_enabled"]

StepFunction = Callable[[FlowContext, bool], dict[str, Any]]


@dataclass(frozen=True)
class Step:
    """One step of the flow.

    :param name: Step name (``--force-step`` / ``--until`` use it).
    :param description: One line for the progress output.
    :param run: ``run(context, resume) -> result``.
    :param config: The recipe settings its output depends on (part of its fingerprint).
    :param outputs: Files/folders that must exist for the step to count as done.
    :param deps: Upstream steps (their completion tokens are part of the fingerprint).
    :param enabled: Whether the recipe runs this step.
    :param inputs: Files outside the run whose size and modification time are part of the fingerprint.
    :param clean: What to delete before running from scratch (anything not listed is kept: LLM caches).
    :param version: Bump when the step's code changes what it produces.
    """

    name: str
    description: str
    run: StepFunction
    config: Callable[[Recipe], Any]
    outputs: Callable[[Layout], list[Path]]
    deps: tuple[str, ...] = ()
    enabled: Callable[[Recipe], bool] = lambda recipe: True
    inputs: Callable[[FlowContext], list[Path]] = lambda ctx: []
    clean: Callable[[Layout], list[Path]] = lambda layout: []
    version: int = 1


def as_dict(value: Any) -> Any:
    """A recipe section as a dict (for a step's ``config``); anything else unchanged."""
    return dataclasses.asdict(value) if dataclasses.is_dataclass(value) and not isinstance(value, type) else value


def reranker_enabled(recipe: Recipe) -> bool:
    """Whether the recipe trains (and serves) the LCE reranker."""
    return recipe.train.reranker.enabled


def stage2_enabled(recipe: Recipe) -> bool:
    """Whether the recipe runs stage 2 (preferences + alignment)."""
    return recipe.train.stage2.enabled
