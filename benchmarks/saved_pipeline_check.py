"""Score a saved query pipeline by hand, as a user would load it, to check the report's "served" row.

Loads the YAML with plain ``Pipeline.loads`` (set ``SYNTRIEVER_PIPELINE_DIR`` to the YAML's folder, or run from it),
runs every query of the dataset's ``test`` split through it and prints nDCG@10 / RR@10 next to the report's figures.

    SYNTRIEVER_PIPELINE_DIR=runs/quickstart/pipelines \\
        python benchmarks/saved_pipeline_check.py runs/quickstart ../shared/datasets/scifact [--top-k 100]

``--top-k`` raises the joiner's (or ranker's) ``top_k`` at run time, as the report does for R@100; without it the
pipeline returns what it serves.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from haystack import Pipeline

from syntriever_haystack.data.beir import load_beir
from syntriever_haystack.evaluate.metrics import score_run
from syntriever_haystack.serve.pipelines import query_inputs

METRICS = ["nDCG@10", "RR@10"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("run", type=Path, help="run folder (pipelines/query.yaml, report/summary.json)")
    parser.add_argument("dataset", type=Path, help="the BEIR folder the run evaluated")
    parser.add_argument("--split", default="test")
    parser.add_argument("--top-k", type=int, default=None, help="run-time top_k of the last component")
    args = parser.parse_args()

    started = time.perf_counter()
    pipeline = Pipeline.loads((args.run / "pipelines" / "query.yaml").read_text(encoding="utf-8"))
    print(f"loaded in {time.perf_counter() - started:.1f} s")
    last = "ranker" if "ranker" in dict(pipeline.walk()) else "joiner"
    dataset = load_beir(args.dataset, args.split)
    run: dict[str, dict[str, float]] = {}
    started = time.perf_counter()
    for query_id, text in dataset.queries.items():
        inputs = query_inputs(pipeline, text)
        if args.top_k is not None:
            inputs.setdefault(last, {})["top_k"] = args.top_k
        documents = pipeline.run(inputs)[last]["documents"]
        run[query_id] = {d.id: float(len(documents) - rank) for rank, d in enumerate(documents)}  # keeps the order
    print(f"{len(run)} queries in {time.perf_counter() - started:.1f} s")
    by_hand = score_run(run, dataset.qrels, METRICS).means
    summary = json.loads((args.run / "report" / "summary.json").read_text(encoding="utf-8"))
    served = summary.get("served")
    reported = summary.get("results", {}).get(served, {}) if served else {}
    for metric in METRICS:
        print(f"{metric}: by hand {by_hand[metric]:.4f}   report ({served}) {reported.get(metric, float('nan')):.4f}")


if __name__ == "__main__":
    main()
