"""What a run did: :class:`RunSummary` (returned by the runner, written by the report) and its :class:`StepRecord`."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["RunSummary", "StepRecord"]


@dataclass
class StepRecord:
    """What happened to one step in this run: ``ran``, ``resumed``, ``skipped``, ``disabled`` or ``failed``."""

    name: str
    status: str
    seconds: float = 0.0
    fingerprint: str | None = None
    reason: str = ""
    ran_seconds: float | None = None  # skipped steps: how long the run that produced their outputs took


@dataclass
class RunSummary:
    """The outcome of :meth:`FlowRunner.run <syntriever_haystack.flow.runner.FlowRunner.run>`."""

    out: Path
    steps: list[StepRecord] = field(default_factory=list)
    results: dict[str, dict[str, Any]] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    seconds: float = 0.0
    complete: bool = False

    def status(self, name: str) -> str:
        """The status of step ``name``."""
        return next(r.status for r in self.steps if r.name == name)
