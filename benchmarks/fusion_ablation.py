"""How to fuse BM25 and dense in the served hybrid, measured on real judgments (and on the gate's synthetic queries).

Every fusion is fed the same two ranked lists per query (BM25 and an exported bi-encoder, ``--depth`` documents
each) and scored by nDCG@10 and R@100, with a paired t-test against RRF:

- ``rrf``: Haystack's ``DocumentJoiner(join_mode="reciprocal_rank_fusion")`` (the previous served default);
- ``dbsf``: ``SyntrieverScoreFusionJoiner``'s distribution-based score fusion (``runtime/fusion.py``, the default);
- ``haystack-dbsf``: Haystack's ``DocumentJoiner(join_mode="distribution_based_rank_fusion")``, which keeps each
  document's maximum normalised score instead of the sum;
- ``linear-W``: ``cos + W · BM25 / max BM25`` (the stage-1 teacher's formula) for each ``--linear`` weight.

With ``--run`` (a ``syntriever run`` folder) the gate's held-out synthetic queries (``data/mined/gate.jsonl``) are
scored too, each with its source passage as the one relevant document: what a label-free choice would have seen.

    python benchmarks/fusion_ablation.py --dataset ../shared/datasets/scifact --model runs/quickstart/models/base-onnx \
        --run runs/quickstart --out benchmarks/results/fusion_scifact

Writes ``OUT.json`` and ``OUT.md``. Corpus embeddings come from (and go to) the evaluation's cache.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

Run = dict[str, dict[str, float]]


def first_stages(dataset: Any, model: str, depth: int, *, include_title: bool) -> tuple[Run, Run]:
    """The BM25 and dense runs (``depth`` documents each), as the evaluation computes them."""
    from syntriever_haystack.evaluate.systems import EmbeddingCache, SystemRunner, default_cache_dir
    from syntriever_haystack.specs import parse_system

    runner = SystemRunner(
        dataset,
        depth=depth,
        include_title=include_title,
        cache=EmbeddingCache(default_cache_dir() / "embeddings"),
        progress=False,
    )
    bm25, _ = runner.run(parse_system("bm25"))
    dense, _ = runner.run(parse_system(f"dense:{model}?precision=int8"))
    return bm25, dense


def fusions(bm25: Run, dense: Run, depth: int, linear: list[float]) -> dict[str, Run]:
    """Every fusion of the two runs, ``depth`` documents kept per query."""
    from haystack import Document
    from haystack.components.joiners import DocumentJoiner

    from syntriever_haystack.evaluate.metrics import rank_documents
    from syntriever_haystack.evaluate.search import ranked_scores, reciprocal_rank_fusion, score_fusion, truncate_run

    runs = [truncate_run(bm25, depth), truncate_run(dense, depth)]
    out = {"rrf": reciprocal_rank_fusion(runs, depth=2 * depth), "dbsf": score_fusion(runs, depth=2 * depth)}
    joiner = DocumentJoiner(join_mode="distribution_based_rank_fusion", top_k=2 * depth)
    haystack: Run = {}
    for query_id in dict.fromkeys(q for run in runs for q in run):
        lists = [[Document(id=d, score=s) for d, s in rank_documents(run.get(query_id, {}))] for run in runs]
        haystack[query_id] = ranked_scores((d.id, d.score) for d in joiner.run(documents=lists)["documents"])
    out["haystack-dbsf"] = haystack
    for weight in linear:
        fused: Run = {}
        for query_id in dict.fromkeys(q for run in runs for q in run):
            lexical, semantic = runs[0].get(query_id, {}), runs[1].get(query_id, {})
            top = max(lexical.values(), default=0.0) or 1.0
            floor = min(semantic.values(), default=0.0)  # a document dense did not return: its lowest score
            fused[query_id] = {
                d: semantic.get(d, floor) + weight * lexical.get(d, 0.0) / top for d in {*lexical, *semantic}
            }
        out[f"linear-{weight:g}"] = fused
    return out


def score(runs: dict[str, Run], qrels: dict[str, dict[str, int]], baseline: str = "rrf") -> dict[str, Any]:
    """nDCG@10 and R@100 of every run, with the paired t-test of nDCG@10 against ``baseline``."""
    from syntriever_haystack.evaluate.metrics import score_run
    from syntriever_haystack.evaluate.significance import paired_test

    scored = {name: score_run(run, qrels, ["nDCG@10", "R@100"]) for name, run in runs.items()}
    reference = scored[baseline].per_query["nDCG@10"]
    out: dict[str, Any] = {}
    for name, result in scored.items():
        row = {metric: round(float(value), 4) for metric, value in result.means.items()}
        if name != baseline:
            test = paired_test(reference, result.per_query["nDCG@10"])
            row.update(delta=round(float(test.delta), 4), p=round(float(test.p_value), 5))
        out[name] = row
    return out


def gate_dataset_of(run_dir: Path, dataset: Any) -> Any:
    """The gate's held-out synthetic queries of a run folder, as a dataset over ``dataset``'s corpus."""
    from syntriever_haystack.generate.label_free import SyntheticQuery, gate_dataset

    lines = (run_dir / "data" / "mined" / "gate.jsonl").read_text().splitlines()
    records = [json.loads(line) for line in lines if line.strip()]
    queries = [SyntheticQuery(r["query_id"], r["query"], r["source_doc_id"], r["query_type"]) for r in records]
    return gate_dataset(queries, dataset.corpus, name=dataset.name)


def to_markdown(results: dict[str, Any]) -> str:
    lines = [f"### Hybrid fusion · {results['dataset']} · {results['model']}", ""]
    for part, rows in results["results"].items():
        n = results["queries"][part]
        lines += [
            f"**{part}** ({n} queries, {results['depth']} documents from each retriever)",
            "",
            "| fusion | nDCG@10 | R@100 | Δ nDCG@10 vs rrf | p |",
            "|---|---:|---:|---:|---:|",
        ]
        for name, row in rows.items():
            delta = f"{row['delta']:+.4f}" if "delta" in row else "—"
            p = f"{row['p']:.3g}" if "p" in row else "—"
            lines.append(f"| {name} | {row['nDCG@10']:.4f} | {row['R@100']:.4f} | {delta} | {p} |")
        lines.append("")
    lines.append(f"Wall time {results['seconds']:.0f} s.")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", required=True, help="BEIR folder")
    parser.add_argument("--split", default="test")
    parser.add_argument("--model", required=True, help="exported bi-encoder folder (its int8 file is used)")
    parser.add_argument("--run", help="a syntriever run folder: also score its gate's held-out synthetic queries")
    parser.add_argument("--depth", type=int, default=100, help="documents from each retriever (default 100)")
    parser.add_argument("--linear", default="0.2,0.5,1.0", help="comma-separated BM25 weights of linear fusion")
    parser.add_argument("--no-title", action="store_true", help="index the documents without their titles")
    parser.add_argument("--out", required=True, help="output path without extension (.json and .md are written)")
    args = parser.parse_args()

    from syntriever_haystack.data.beir import load_beir

    started = time.perf_counter()
    dataset = load_beir(args.dataset, args.split)
    weights = [float(w) for w in args.linear.split(",") if w.strip()]
    parts = {"judgments": dataset}
    if args.run:
        parts["gate queries (synthetic)"] = gate_dataset_of(Path(args.run), dataset)
    results: dict[str, Any] = {
        "dataset": f"{dataset.name} {args.split}",
        "model": args.model,
        "depth": args.depth,
        "queries": {},
        "results": {},
    }
    for part, data in parts.items():
        bm25, dense = first_stages(data, args.model, args.depth, include_title=not args.no_title)
        runs = {"bm25": bm25, "dense": dense, **fusions(bm25, dense, args.depth, weights)}
        qrels = {q: dict(judged) for q, judged in data.qrels.items()}
        results["queries"][part] = sum(1 for judged in qrels.values() if any(v > 0 for v in judged.values()))
        results["results"][part] = score(runs, qrels)
        print(f"{part}: " + ", ".join(f"{k} {v['nDCG@10']:.4f}" for k, v in results["results"][part].items()))
    results["seconds"] = round(time.perf_counter() - started, 1)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(results, indent=2) + "\n")
    out.with_suffix(".md").write_text(to_markdown(results))
    print(to_markdown(results))


if __name__ == "__main__":
    main()
