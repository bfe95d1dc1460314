"""Evaluation: IR metrics over every judged query, paired significance, system SPECs, reports.

.. code-block:: python

    from syntriever_haystack.data import load_beir
    from syntriever_haystack.evaluate import evaluate_systems, to_markdown

    dataset = load_beir("datasets/scifact", "test")
    report = evaluate_systems(dataset, ["bm25", "dense:models/minilm-onnx", "hybrid:models/minilm-onnx"])
    print(to_markdown(report))
"""

from syntriever_haystack.evaluate.metrics import DEFAULT_METRICS, RunScores, parse_metrics, score_run
from syntriever_haystack.evaluate.pipeline import PipelineRunner, PipelineSearch
from syntriever_haystack.evaluate.report import to_json, to_markdown, write_chart, write_outputs, write_trec_run
from syntriever_haystack.evaluate.runner import EvaluationReport, SystemResult, evaluate_systems
from syntriever_haystack.evaluate.significance import PairedTest, holm_adjust, paired_test
from syntriever_haystack.evaluate.systems import (
    EmbeddingCache,
    SystemRunner,
    SystemSpec,
    default_cache_dir,
    parse_system,
    reciprocal_rank_fusion,
    top_k_search,
)

__all__ = [
    "DEFAULT_METRICS",
    "EmbeddingCache",
    "EvaluationReport",
    "PairedTest",
    "PipelineRunner",
    "PipelineSearch",
    "RunScores",
    "SystemResult",
    "SystemRunner",
    "SystemSpec",
    "default_cache_dir",
    "evaluate_systems",
    "holm_adjust",
    "paired_test",
    "parse_metrics",
    "parse_system",
    "reciprocal_rank_fusion",
    "score_run",
    "to_json",
    "to_markdown",
    "top_k_search",
    "write_chart",
    "write_outputs",
    "write_trec_run",
]
