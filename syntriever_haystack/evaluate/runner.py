"""Evaluate several systems on one dataset split in one go, with paired significance against a baseline."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from syntriever_haystack.data.beir import BeirDataset
from syntriever_haystack.errors import SyntrieverError
from syntriever_haystack.evaluate.metrics import Run, RunScores, evaluable_queries, parse_metrics, score_run
from syntriever_haystack.evaluate.pipeline import PipelineRunner, missing_runner_error
from syntriever_haystack.evaluate.significance import PairedTest, holm_adjust, paired_test
from syntriever_haystack.evaluate.systems import (
    EmbeddingCache,
    StageTiming,
    SystemRunner,
    SystemSpec,
    check_system,
    parse_system,
)


@dataclass
class SystemResult:
    """One system's run, scores and timings."""

    spec: str
    run: Run
    scores: RunScores
    timings: list[StageTiming]
    significance: dict[str, PairedTest] = field(default_factory=dict)  # metric → test against the baseline
    adjusted_p: dict[str, float] = field(default_factory=dict)  # metric → Holm-adjusted p-value

    @property
    def means(self) -> dict[str, float]:
        """Mean of each metric."""
        return self.scores.means

    @property
    def seconds(self) -> float:
        """Total wall time of the system's stages (shared stages count for every system that uses them)."""
        return sum(t.seconds for t in self.timings)


@dataclass
class EvaluationReport:
    """Everything an evaluation produced; see :mod:`syntriever_haystack.evaluate.report` for the outputs."""

    dataset: str
    split: str
    metrics: list[str]
    query_ids: list[str]
    excluded_queries: list[str]
    systems: list[SystemResult]
    baseline: str | None
    test: str
    alpha: float
    depth: int
    warnings: list[str]
    started: str
    seconds: float
    settings: dict[str, Any] = field(default_factory=dict)

    def summary(self) -> dict[str, dict[str, float]]:
        """``{spec: {metric: mean}}`` — the stable ``--json`` format."""
        return {s.spec: {m: round(v, 6) for m, v in s.means.items()} for s in self.systems}

    def system(self, spec: str) -> SystemResult:
        """The result of ``spec``."""
        for result in self.systems:
            if result.spec == spec:
                return result
        raise KeyError(spec)


def default_depth(metrics: Sequence[str]) -> int:
    """Documents retrieved per query by default: the largest metric cut-off, at least 100."""
    return max([100, *_cutoffs(parse_metrics(metrics))])


def _cutoffs(names: Sequence[str]) -> list[int]:
    return [int(n.rsplit("@", 1)[1]) for n in names if "@" in n and n.rsplit("@", 1)[1].isdigit()]


def evaluate_systems(
    dataset: BeirDataset,
    systems: Sequence[str | SystemSpec],
    *,
    metrics: Sequence[str] | None = None,
    baseline: str | None = None,
    test: str = "t-test",
    alpha: float = 0.05,
    depth: int | None = None,
    include_title: bool = True,
    cache: EmbeddingCache | None = None,
    progress: bool = True,
    seed: int = 0,
    pipeline_runner: PipelineRunner | None = None,
) -> EvaluationReport:
    """Run every system on ``dataset`` and score it; compare each with ``baseline`` by a paired test.

    :param dataset: A loaded split (:func:`syntriever_haystack.data.load_beir`).
    :param systems: System SPECs (see :mod:`syntriever_haystack.evaluate.systems`).
    :param metrics: Metric names; default nDCG@10, R@100, RR@10, Judged@10.
    :param baseline: SPEC to test the others against (default: the first system; ``"none"`` to skip).
    :param test: ``"t-test"``, ``"permutation"`` or ``"bootstrap"``.
    :param alpha: Significance level (applied to Holm-adjusted p-values over the compared systems).
    :param depth: Documents retrieved per query; default the largest cut-off, at least 100.
    :param include_title: Index ``title + " " + text`` (BEIR convention).
    :param cache: Corpus-embedding cache.
    :param progress: Show progress bars.
    :param seed: Seed of resampling tests.
    :param pipeline_runner: Loads and searches the saved pipelines of ``pipeline:PATH`` systems (see
        :mod:`syntriever_haystack.evaluate.pipeline`); needed only when there are such systems.
    :raises SyntrieverError: For a bad SPEC, a missing model folder or pipeline file, a ``pipeline:`` system
        without ``pipeline_runner``, or an unknown baseline — before any work.
    """
    started_wall = time.strftime("%Y-%m-%dT%H:%M:%S")
    started = time.perf_counter()
    names = parse_metrics(metrics)
    specs = [s if isinstance(s, SystemSpec) else parse_system(s) for s in systems]
    if not specs:
        raise SyntrieverError("no system to evaluate: pass at least one --system SPEC (e.g. --system bm25)")
    seen: set[str] = set()
    for spec in specs:
        if spec.text in seen:
            raise SyntrieverError(f"system {spec.text!r} is listed twice")
        seen.add(spec.text)
        check_system(spec)
        if pipeline_runner is None and spec.first_stage.kind == "pipeline":
            raise missing_runner_error(spec.text)
    if baseline is None:
        baseline = specs[0].text
    elif baseline == "none":
        baseline = None
    elif baseline not in seen:
        raise SyntrieverError(f"--baseline {baseline!r} is not one of the evaluated systems: {', '.join(seen)}")
    cutoffs = _cutoffs(names)
    if depth is not None and cutoffs and depth < max(cutoffs):
        raise SyntrieverError(
            f"--depth {depth} is below the largest metric cut-off ({max(cutoffs)}): those metrics would be computed "
            f"on truncated runs. Use --depth {max(cutoffs)} or more."
        )
    depth = depth or max([100, *cutoffs])

    query_ids, excluded = evaluable_queries(dataset.qrels)
    warnings = list(dataset.warnings)
    if excluded:
        warnings.append(
            f"{len(excluded)} of {len(dataset.qrels)} queries have no relevant judgment (every document judged 0) "
            "and are not scored (nDCG/recall are undefined for them)"
        )
    runner = SystemRunner(
        dataset,
        depth=depth,
        include_title=include_title,
        cache=cache,
        progress=progress,
        pipeline_runner=pipeline_runner,
    )
    results: list[SystemResult] = []
    for spec in specs:
        run, timings = runner.run(spec)
        results.append(SystemResult(spec.text, run, score_run(run, dataset.qrels, names, query_ids=query_ids), timings))
        empty = len(results[-1].scores.missing)
        if empty:
            warnings.append(f"{spec.text}: {empty} queries got no results (they score 0)")
        if spec.first_stage.kind == "pipeline":
            foreign = {d for docs in run.values() for d in docs if d not in dataset.corpus}
            if foreign:
                warnings.append(
                    f"{spec.text}: {len(foreign)} returned document ids are not in the evaluated corpus (e.g. "
                    f"{sorted(foreign)[0]!r}): the pipeline searches another corpus, or other ids than the dataset's"
                )

    if baseline is not None:
        base = next(r for r in results if r.spec == baseline)
        others = [r for r in results if r.spec != baseline]
        for metric in names:
            for other in others:
                other.significance[metric] = paired_test(
                    base.scores.per_query[metric], other.scores.per_query[metric], test=test, seed=seed
                )
            adjusted = holm_adjust([o.significance[metric].p_value for o in others])
            for other, p in zip(others, adjusted, strict=True):
                other.adjusted_p[metric] = p

    return EvaluationReport(
        dataset=dataset.name,
        split=dataset.split,
        metrics=names,
        query_ids=query_ids,
        excluded_queries=excluded,
        systems=results,
        baseline=baseline,
        test=test,
        alpha=alpha,
        depth=depth,
        warnings=warnings,
        started=started_wall,
        seconds=time.perf_counter() - started,
        settings={"include_title": include_title, "documents": len(dataset.corpus), "seed": seed},
    )
