"""``evaluate``: BM25 vs zero-shot vs trained (+ reranked) vs the saved query pipelines on the evaluation split,
paired tests, report files.

The work is :func:`syntriever_haystack.flow.evaluation.run_evaluation` (imported when the step runs: it needs the
evaluation stack).
"""

from __future__ import annotations

from typing import Any

from syntriever_haystack.flow.context import FlowContext
from syntriever_haystack.flow.step import Step, as_dict


def run_evaluate(ctx: FlowContext, resume: bool) -> dict[str, Any]:
    """Evaluate the recipe's systems on the evaluation split; write report/evaluation/* and report/results.png."""
    from syntriever_haystack.flow.evaluation import run_evaluation

    return run_evaluation(ctx)


EVALUATE = Step(
    "evaluate",
    "evaluate against BM25 and the base model",
    run_evaluate,
    config=lambda r: {
        "evaluate": as_dict(r.evaluate),
        "precision": r.export.precision,
        "seed": r.seed,
        "include_title": r.dataset.include_title,
        "max_length": r.train.reranker.max_length,
        # which saved pipeline is served, and whether its store holds the evaluation corpus
        "serve": {"reranker": r.serve.reranker, "index_corpus": r.serve.index_corpus},
    },
    outputs=lambda lay: [lay.evaluation / "results.json"],
    deps=("data", "base-model", "export-retriever", "export-reranker", "pipelines", "index"),
    clean=lambda lay: [lay.evaluation, lay.report / "results.png"],
)
