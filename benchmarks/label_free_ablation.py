"""Label-free stage-1 ablation: which synthetic data moves the dense retriever, measured on real judgments.

No training query and no judgment is read for training: the LLM's queries (a ``queries.jsonl`` written by
``syntriever generate reranker`` / the flow's ``generate-queries``) and extractive sentence queries (ICT) for
passages of the corpus; hard negatives from BM25 (or the base model) behind a false-negative guard. Each variant
is trained, exported (int8, as served), and scored twice: on held-out synthetic queries over the full corpus (the
label-free gate) and on the dataset's test judgments (what the gate is meant to predict).

    python benchmarks/label_free_ablation.py --dataset ../shared/datasets/scifact \
        --queries runs/x/data/gen-queries/queries.jsonl --base-onnx runs/x/models/base-onnx \
        --out /tmp/ablation --variants llm,ict,llm+ict
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


def _variant(name: str) -> dict[str, Any]:
    """``llm``, ``ict``, ``llm+ict`` with ``:key=value`` options (``negatives``, ``candidates``, ``epochs``,
    ``lr``, ``ict``, ``guard``, ``skip``, ``mse``)."""
    base, _, opts = name.partition(":")
    settings: dict[str, Any] = {
        "sources": base.split("+"),
        "negatives": 3,
        "candidates": "bm25",
        "epochs": 1.0,
        "lr": 5e-5,
        "ict": 2000,
        "guard": 0.0,
        "skip": 0,
        "mse": 0.0,
        "tw": 0.5,
        "plen": 160,
        "interp": 1.0,
        "name": name,
    }
    for item in filter(None, opts.split(",")):
        key, _, value = item.partition("=")
        settings[key] = type(settings[key])(value) if key in settings else value
    return settings


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", required=True)
    parser.add_argument("--split", default="test")
    parser.add_argument("--queries", required=True, help="queries.jsonl of the LLM query generation")
    parser.add_argument("--base-onnx", required=True, help="the base model exported to ONNX (zero-shot)")
    parser.add_argument("--base", default="all-MiniLM-L6-v2")
    parser.add_argument("--out", required=True)
    parser.add_argument("--variants", default="llm,ict,llm+ict", help="';'-separated variant names")
    parser.add_argument("--held-out", type=float, default=0.2)
    parser.add_argument("--seed", type=int, default=13)
    parser.add_argument("--no-title", action="store_true")
    args = parser.parse_args()

    from syntriever_haystack.data.beir import load_beir
    from syntriever_haystack.evaluate.runner import evaluate_systems
    from syntriever_haystack.evaluate.systems import EmbeddingCache, default_cache_dir
    from syntriever_haystack.export.exporter import export_model
    from syntriever_haystack.generate import label_free as lf
    from syntriever_haystack.generate.candidates import SpecRetriever
    from syntriever_haystack.models import resolve_model
    from syntriever_haystack.train.loop import LoopSettings
    from syntriever_haystack.train.retriever import RetrieverTrainingConfig, train_retriever

    include_title = not args.no_title
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    test = load_beir(args.dataset, args.split)
    corpus = test.corpus
    cache = EmbeddingCache(default_cache_dir() / "embeddings")
    llm_queries = [q for q in lf.read_synthetic_queries(Path(args.queries)) if q.source_doc_id in corpus]
    held = lf.held_out_passages(sorted(corpus), args.held_out, args.seed)
    gate_queries = [q for q in llm_queries if q.source_doc_id in held]
    train_llm = [q for q in llm_queries if q.source_doc_id not in held]
    print(f"LLM queries: {len(llm_queries)} ({len(train_llm)} train, {len(gate_queries)} held out)")
    gate = lf.gate_dataset(gate_queries, corpus, name=test.name)
    base_spec = f"dense:{args.base_onnx}?precision=int8"

    retrievers: dict[str, SpecRetriever] = {}

    def candidates(kind: str, queries: list[lf.SyntheticQuery]) -> dict[str, list[tuple[str, float]]]:
        spec = "bm25" if kind == "bm25" else base_spec
        if kind not in retrievers:
            retrievers[kind] = SpecRetriever(spec, corpus, include_title=include_title, cache=cache, progress=False)
        return retrievers[kind].retrieve({q.query_id: q.query for q in queries}, 30)

    rows: list[dict[str, Any]] = []
    baseline_done = False
    for name in [v for v in args.variants.split(";") if v]:
        v = _variant(name)
        queries: list[lf.SyntheticQuery] = []
        if "llm" in v["sources"]:
            queries += train_llm
        if "ict" in v["sources"]:
            pool = sorted(d for d in corpus if d not in held)
            import random

            docs = random.Random(args.seed).sample(pool, min(v["ict"], len(pool)))
            queries += lf.sentence_queries(corpus, docs, seed=args.seed, include_title=include_title)
        import re

        trained_name = re.sub(r",?interp=[0-9.]+", "", name)  # interpolations reuse the trained model
        folder = out / trained_name.replace(":", "_").replace(",", "_").replace("=", "-")
        data = folder / "retriever.jsonl"
        started = time.perf_counter()
        if not data.exists():
            cands = candidates(v["candidates"], queries)
            options = {"negatives": v["negatives"], "skip_top": v["skip"], "guard": v["guard"]}
            records = lf.stage1_records(queries, cands, corpus, include_title=include_title, **options)
            if v["mse"] > 0:  # teacher scores (base model + BM25) for margin-MSE
                from syntriever_haystack.generate.teacher import ensemble_teacher

                teacher = ensemble_teacher(
                    {r["query_id"]: r["query"] for r in records},
                    {r["query_id"]: [e["doc_id"] for e in (*r["positives"], *r["negatives"])] for r in records},
                    corpus,
                    base_model=args.base_onnx,
                    precision="int8",
                    cache=cache,
                    include_title=include_title,
                    bm25_weight=v["tw"],
                    corpus_name=test.name,
                )
                records = lf.stage1_records(
                    queries, cands, corpus, include_title=include_title, teacher=teacher, **options
                )
            lf.write_jsonl(data, records)
        model_dir = folder / "model"
        if not (model_dir / "train_summary.json").exists():
            config = RetrieverTrainingConfig(
                stage=1,
                base=resolve_model(args.base),
                output=str(model_dir),
                data=str(data),
                batch_size=32,
                mini_batch_size=None,
                query_max_length=64,
                passage_max_length=v["plen"],
                margin_mse_weight=v["mse"],
                dev_fraction=0.0,
                settings=LoopSettings(
                    epochs=v["epochs"],
                    learning_rate=v["lr"],
                    seed=42,
                    eval_at_start=False,
                    checkpoint_steps=1000,
                    progress=False,
                ),
            )
            summary = train_retriever(config)
            train_seconds = summary.get("seconds")
        else:
            train_seconds = json.loads((model_dir / "train_summary.json").read_text()).get("seconds")
        if v["interp"] < 1.0:  # weight interpolation with the base model (WiSE-FT): interp·trained + (1-interp)·base
            mixed = folder / f"model-interp{v['interp']}"
            if not (mixed / "config.json").exists():
                from sentence_transformers import SentenceTransformer

                trained_model = SentenceTransformer(str(model_dir), device="cpu")
                base_state = SentenceTransformer(resolve_model(args.base), device="cpu").state_dict()
                state = trained_model.state_dict()
                for key, value in state.items():
                    if value.is_floating_point() and key in base_state:
                        state[key] = v["interp"] * value + (1 - v["interp"]) * base_state[key]
                trained_model.load_state_dict(state)
                trained_model.save(str(mixed))
            model_dir = mixed
        onnx_dir = folder / ("onnx" if v["interp"] >= 1.0 else f"onnx-interp{v['interp']}")
        if not (onnx_dir / "syntriever.json").exists():
            export_model(model_dir, onnx_dir, kind="bi-encoder", max_length=256, force=True)
        trained = f"dense:{onnx_dir}?precision=int8"
        systems = [trained, f"hybrid:{onnx_dir}?precision=int8"]
        if not baseline_done:
            systems = [base_spec, "bm25", f"hybrid:{args.base_onnx}?precision=int8", *systems]
        row: dict[str, Any] = {"variant": name, "train_queries": len(queries), "train_seconds": train_seconds}
        for label, dataset in (("test", test), ("gate", gate)):
            report = evaluate_systems(
                dataset,
                systems,
                metrics=["nDCG@10", "R@100", "RR@10"],
                baseline=systems[0],
                cache=cache,
                include_title=include_title,
                progress=False,
            )
            for result in report.systems:
                key = (
                    "trained"
                    if result.spec == trained
                    else ("hybrid-trained" if result.spec.startswith(f"hybrid:{onnx_dir}") else result.spec)
                )
                row[f"{label}:{key}"] = round(result.means["nDCG@10"], 4)
                if label == "test" and not baseline_done:
                    pass
        if not baseline_done:
            baseline_row = {
                k.replace(base_spec, "zero-shot").replace(
                    f"hybrid:{args.base_onnx}?precision=int8", "hybrid-zero-shot"
                ): v2
                for k, v2 in row.items()
                if not k.endswith("trained")
            }
            baseline_row["variant"] = "(baselines)"
            rows.append(baseline_row)
            baseline_done = True
        row = {
            k: v2
            for k, v2 in row.items()
            if k in ("variant", "train_queries", "train_seconds") or k.endswith("trained")
        }
        row["seconds"] = round(time.perf_counter() - started, 1)
        rows.append(row)
        print(json.dumps(row), flush=True)
        (out / "ablation.json").write_text(json.dumps(rows, indent=2))
    print(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
