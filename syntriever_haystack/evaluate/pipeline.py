"""The ``pipeline:QUERY_YAML`` first stage: a saved Haystack query pipeline, searched query by query.

The evaluation library does not load pipelines itself (it sits below the components and ``serve/``): the caller
passes a :class:`PipelineRunner`, which the edges implement with ``serve.pipelines.load_pipeline`` and
``run_query`` (``syntriever_haystack.flow.evaluation.saved_pipeline_runner``, used by ``syntriever evaluate`` and
the flow). A run of a pipeline is, for each query, the returned documents' ids in the pipeline's order.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Protocol

from syntriever_haystack.evaluate.metrics import Run
from syntriever_haystack.evaluate.search import ranked_scores
from syntriever_haystack.evaluate.texts import SplitTexts, progress
from syntriever_haystack.specs import StageSpec, SystemSpecError

__all__ = ["PipelineRunner", "PipelineSearch", "missing_runner_error", "pipeline_run"]

PipelineSearch = Callable[[str], Sequence[tuple[str, float | None]]]
"""One loaded pipeline: query text → ``(document id, score)`` best first, in the pipeline's order."""


class PipelineRunner(Protocol):
    """Loads the saved query pipeline ``path`` and returns its search function.

    :param path: The pipeline's YAML file (the ``pipeline:`` target).
    :param top_k: Documents the pipeline's last component returns instead of its saved ``top_k`` (``None``: as
        saved). It must not change the order: the first documents are the saved pipeline's answer.
    """

    def __call__(self, path: str, *, top_k: int | None = None) -> PipelineSearch: ...


def missing_runner_error(spec: str) -> SystemSpecError:
    """The error for a ``pipeline:`` system evaluated without a runner, naming the fix."""
    return SystemSpecError(
        f"system {spec!r} runs a saved Haystack pipeline, which the evaluation library does not load itself: pass "
        "pipeline_runner=syntriever_haystack.flow.evaluation.saved_pipeline_runner to evaluate_systems / "
        "SystemRunner (or any PipelineRunner), or use `syntriever evaluate --system pipeline:PATH`"
    )


def pipeline_run(
    stage: StageSpec, texts: SplitTexts, runner: PipelineRunner | None, depth: int, *, show_progress: bool
) -> Run:
    """Every query of ``texts`` through the pipeline of ``stage``; the best ``depth`` documents of each.

    :raises SystemSpecError: No ``runner``.
    """
    if runner is None:
        raise missing_runner_error(str(stage))
    search = runner(stage.target, top_k=stage.int_option("top_k"))
    run: Run = {}
    for query_id, query in progress(texts.queries(), "Pipeline", enabled=show_progress):
        run[query_id] = ranked_scores(list(search(query))[:depth])
    return run
