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
    from syntriever_haystack.flow.context import write_json
    from syntriever_haystack.flow.evaluation import run_evaluation

    if ctx.eval_split() is None:
        result: dict[str, Any] = {
            "skipped": "no evaluation split: the dataset has no judgments (dataset.eval_split), so there is nothing "
            "to evaluate against; report/gate.md shows the label-free checks",
            "rows": [],
        }
        write_json(ctx.layout.evaluation / "results.json", result)
        ctx.echo(f"        {result['skipped']}")
        return result
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
        "serve": {
            "reranker": r.serve.reranker,
            "index_corpus": r.serve.index_corpus,
            "rerank_first_stage_weight": r.serve.rerank_first_stage_weight,
        },
    },
    outputs=lambda lay: [lay.evaluation / "results.json"],
    deps=("data", "base-model", "export-retriever", "export-reranker", "gate", "pipelines", "index"),
    clean=lambda lay: [lay.evaluation, lay.report / "results.png"],
)
