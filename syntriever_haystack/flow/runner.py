"""Run a recipe's steps in order; skip what is up to date; resume what stopped half-way.

Each step has a *fingerprint*: a hash of its recipe settings, the completion tokens of its upstream steps and the
size/modification time of its input files. When a step finishes, ``<out>/.flow/<step>.json`` records the
fingerprint, a fresh completion token, the step's result and its wall time. On the next run:

- same fingerprint, outputs present → **skipped** (its recorded result is reused downstream);
- a setting changed (or an upstream step ran again, which gave it a new token) → its outputs are cleaned and it
  **runs** from scratch, and so does everything downstream (their fingerprints include its new token);
- the stamp says *running* with the same fingerprint (a crash, a kill, Ctrl-C) → it **resumes**: generation
  continues from the records already written (LLM answers come from the cache), training from its last checkpoint.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import time
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from syntriever_haystack.flow.context import FlowContext, FlowError, GeneratorFactory, remove, write_json
from syntriever_haystack.flow.recipe import Recipe, dump_recipe
from syntriever_haystack.flow.step import Step
from syntriever_haystack.flow.steps import STEP_NAMES, STEPS
from syntriever_haystack.flow.summary import RunSummary, StepRecord

__all__ = ["FlowRunner"]


def _stat(path: Path) -> list[Any]:
    try:
        st = path.stat()
    except OSError:
        return [str(path.resolve()), None]
    return [str(path.resolve()), st.st_size, st.st_mtime_ns]


class FlowRunner:
    """Run ``recipe`` into ``out``.

    :param recipe: A validated recipe.
    :param out: Output folder (created).
    :param progress: Show progress bars.
    :param generator_factory: Builds the chat generator (tests plug a scripted LLM in).
    :param quiet: Print nothing (the summary is still returned and written).

    Usage example:

    .. code-block:: python

        from syntriever_haystack.flow import FlowRunner, load_recipe

        summary = FlowRunner(load_recipe("recipes/quickstart.yaml"), "runs/quickstart").run()
        print(summary.results["evaluate"]["rows"])
    """

    def __init__(
        self,
        recipe: Recipe,
        out: str | Path,
        *,
        progress: bool = True,
        generator_factory: GeneratorFactory | None = None,
        quiet: bool = False,
    ) -> None:
        recipe.validate()
        self.recipe = recipe
        self.out = Path(out)
        self.quiet = quiet
        self.context = FlowContext(
            recipe, self.out, progress=progress and not quiet, generator_factory=generator_factory
        )
        if quiet:
            self.context.echo = lambda text: None
        self.steps: tuple[Step, ...] = STEPS
        self._current, self._started = STEPS[0].name, time.perf_counter()

    # ------------------------------------------------------------------------------------------ stamps
    def _stamp_path(self, name: str) -> Path:
        return self.context.layout.stamps / f"{name}.json"

    def _read_stamp(self, name: str) -> dict[str, Any] | None:
        path = self._stamp_path(name)
        if not path.is_file():
            return None
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError):
            return None
        return data if isinstance(data, dict) else None

    def fingerprint(self, step: Step, tokens: dict[str, str]) -> str:
        """The fingerprint of ``step`` given its upstream steps' completion tokens."""
        payload = {
            "step": step.name,
            "version": step.version,
            "config": step.config(self.recipe),
            "upstream": {dep: tokens.get(dep, "disabled") for dep in step.deps},
            "inputs": [_stat(p) for p in step.inputs(self.context)],
        }
        return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:20]

    # --------------------------------------------------------------------------------------------- run
    def run(self, *, force_steps: Sequence[str] = (), until: str | None = None) -> RunSummary:
        """Run the steps in order (see the module docstring for what is skipped, rerun or resumed).

        :param force_steps: Steps to rerun even if up to date (everything downstream reruns too).
        :param until: Stop after this step.
        :raises FlowError: For an unknown step name; any step error propagates after the summary is written.
        """
        for name in [*force_steps, *([until] if until else [])]:
            if name not in STEP_NAMES:
                raise FlowError(f"unknown step {name!r}; steps: {', '.join(STEP_NAMES)}")
        ctx = self.context
        created = not self.out.exists()  # a run that fails on a bad input before any step finished leaves nothing
        self.out.mkdir(parents=True, exist_ok=True)
        ctx.layout.stamps.mkdir(parents=True, exist_ok=True)
        ctx.layout.recipe_yaml.write_text(
            dump_recipe(self.recipe, header="# the resolved recipe of this run (syntriever run recipe.yaml)"),
            encoding="utf-8",
        )
        summary = RunSummary(self.out, results=ctx.results, warnings=ctx.warnings)
        started = time.perf_counter()
        tokens: dict[str, str] = {}
        enabled = [s for s in self.steps if s.enabled(self.recipe)]
        try:
            for step in self.steps:
                if not step.enabled(self.recipe):
                    summary.steps.append(StepRecord(step.name, "disabled", reason="off in the recipe"))
                else:
                    position = enabled.index(step) + 1
                    force = step.name in force_steps
                    summary.steps.append(self._run_step(step, tokens, force=force, index=position, total=len(enabled)))
                if step.name == until:
                    break
            summary.complete = until is None or until == self.steps[-1].name
        except BaseException as exc:
            finished = any(r.status in ("ran", "resumed", "skipped") for r in summary.steps)
            if created and not finished and isinstance(exc, Exception):
                shutil.rmtree(self.out, ignore_errors=True)  # no stamps / flow.json of a run that never started
                raise
            summary.steps.append(
                StepRecord(self._current, "failed", time.perf_counter() - self._started, reason=str(exc))
            )
            summary.seconds = time.perf_counter() - started
            self._finish(summary)
            raise
        summary.seconds = time.perf_counter() - started
        self._finish(summary)
        return summary

    def _run_step(self, step: Step, tokens: dict[str, str], *, force: bool, index: int, total: int) -> StepRecord:
        ctx = self.context
        self._current, self._started = step.name, time.perf_counter()
        fingerprint = self.fingerprint(step, tokens)
        stamp = self._read_stamp(step.name)
        outputs = step.outputs(ctx.layout)
        label = f"[{index:2d}/{total}] {step.name}"
        done = stamp is not None and stamp.get("status") == "done" and stamp.get("fingerprint") == fingerprint
        if done and not force and all(p.exists() for p in outputs):
            assert stamp is not None
            tokens[step.name] = str(stamp["token"])
            ctx.results[step.name] = stamp.get("result") or {}
            ctx.echo(f"{label}: up to date, skipped ({stamp.get('seconds', 0):.0f} s when it ran)")
            ran = float(stamp.get("seconds", 0))
            return StepRecord(step.name, "skipped", 0.0, fingerprint, f"up to date (ran in {ran:.0f} s)", ran)
        resume = (
            not force
            and stamp is not None
            and stamp.get("status") == "running"
            and stamp.get("fingerprint") == fingerprint
        )
        if force:
            reason = "forced"
        elif resume:
            reason = "resuming an interrupted run"
        elif stamp is None:
            reason = "first run"
        elif stamp.get("fingerprint") != fingerprint:
            reason = "settings or upstream changed"
        else:
            reason = "outputs missing"
        if not resume:
            remove(*step.clean(ctx.layout))
        ctx.echo(f"{label}: {step.description} — {reason}")
        started_wall = time.strftime("%Y-%m-%dT%H:%M:%S")
        write_json(
            self._stamp_path(step.name), {"status": "running", "fingerprint": fingerprint, "started": started_wall}
        )
        result = step.run(ctx, resume)
        seconds = time.perf_counter() - self._started
        token = uuid.uuid4().hex
        write_json(
            self._stamp_path(step.name),
            {
                "status": "done",
                "fingerprint": fingerprint,
                "token": token,
                "started": started_wall,
                "finished": time.strftime("%Y-%m-%dT%H:%M:%S"),
                "seconds": round(seconds, 2),
                "result": result,
            },
        )
        tokens[step.name] = token
        ctx.results[step.name] = result
        ctx.echo(f"        done in {seconds:.1f} s")
        return StepRecord(step.name, "resumed" if resume else "ran", seconds, fingerprint, reason)

    # ------------------------------------------------------------------------------------------ finish
    def _finish(self, summary: RunSummary) -> None:
        from syntriever_haystack.flow.report import print_summary, write_reports

        flow = {
            "recipe": self.recipe.name,
            "out": str(self.out),
            "finished": time.strftime("%Y-%m-%dT%H:%M:%S"),
            "complete": summary.complete,
            "seconds": round(summary.seconds, 1),
            "steps": [
                {
                    "step": r.name,
                    "status": r.status,
                    "seconds": round(r.seconds, 1),
                    "reason": r.reason,
                    **({"ran_seconds": round(r.ran_seconds, 1)} if r.ran_seconds is not None else {}),
                }
                for r in summary.steps
            ],
            "warnings": summary.warnings,
        }
        write_json(self.context.layout.flow_json, flow)
        write_reports(self.context, summary)
        if not self.quiet:
            print_summary(self.context, summary)
