"""The label-free data steps: ``generate-queries`` (LLM queries for sampled corpus passages) and ``mine``
(sentence queries, first-stage candidates, guarded hard negatives, the held-out split → stage-1 records, LCE groups
and the gate's queries). Neither reads a training query or a judgment."""

from __future__ import annotations

import json
from typing import Any

from syntriever_haystack.flow.context import FlowContext, write_json
from syntriever_haystack.flow.step import Step, as_dict


def sampled_passages(ctx: FlowContext, n: int) -> list[str]:
    """The first ``n`` long-enough passages in the run's seeded hash order (a bigger ``n`` extends the sample)."""
    from syntriever_haystack.errors import SyntrieverError
    from syntriever_haystack.generate.tasks import hashed_order

    min_words = ctx.recipe.generate.min_words
    corpus = ctx.corpus()
    eligible = [d for d, p in corpus.items() if len(p.text.split()) >= min_words]
    if not eligible:
        raise SyntrieverError(f"generate.min_words: no passage has at least {min_words} words; lower it.")
    return hashed_order(eligible, ctx.recipe.seed)[:n]


def run_generate_queries(ctx: FlowContext, resume: bool) -> dict[str, Any]:
    """LLM queries for ``generate.passages`` sampled passages (resumable; answers cached in the step folder)."""
    from syntriever_haystack.flow.steps.generation import finish_generation, llm_session
    from syntriever_haystack.generate import tasks
    from syntriever_haystack.generate.reranker_data import PassageItem

    section = ctx.recipe.generate
    folder = ctx.layout.gen_queries
    corpus = ctx.corpus()
    passages = [PassageItem(d, ctx.passage_text(corpus[d])) for d in sampled_passages(ctx, section.passages)]
    session = llm_session(ctx, folder)
    result = tasks.generate_passage_queries(
        passages,
        folder / "queries.jsonl",
        session=session,
        corpus=corpus,
        queries_per_passage=section.queries_per_passage,
        include_title=ctx.recipe.dataset.include_title,
        run=tasks.TaskRun(
            parallel=ctx.recipe.llm.concurrency,
            progress=ctx.progress,
            provenance={"dataset": ctx.results["data"]["name"]},
        ),
    )
    finish_generation(
        ctx, session.client, folder, {"task": "queries", "stats": result.stats, "passages": len(passages)}
    )
    return {
        "file": ctx.relative(folder / "queries.jsonl"),
        "passages": len(passages),
        "queries": result.stats["accepted"],
        "filtered": {k: v for k, v in result.stats["filtered"].items() if k != "accepted" and v},
        "llm": session.client.model,
    }


GENERATE_QUERIES = Step(
    "generate-queries",
    "synthetic queries for sampled corpus passages (the LLM)",
    run_generate_queries,
    config=lambda r: {
        "llm": as_dict(r.llm),
        "seed": r.seed,
        "include_title": r.dataset.include_title,
        "generate": {k: getattr(r.generate, k) for k in ("passages", "queries_per_passage", "min_words")},
    },
    outputs=lambda lay: [lay.gen_queries / "queries.jsonl"],
    deps=("data",),
    enabled=lambda r: r.generate.passages > 0,
    clean=lambda lay: [
        lay.gen_queries / f for f in ("queries.jsonl", "queries.done.jsonl", "queries.failures.jsonl", "summary.json")
    ],
)


def _candidate_spec(ctx: FlowContext) -> Any:
    from syntriever_haystack.specs import SystemSpec

    name = ctx.recipe.generate.candidate_retriever
    if name == "zero-shot":
        return SystemSpec.parse(f"dense:{ctx.layout.base_onnx}?precision={ctx.precision('base-model')}")
    return SystemSpec.parse(name)


def run_mine(ctx: FlowContext, resume: bool) -> dict[str, Any]:
    """Training records, LCE groups and the gate's held-out queries from the synthetic queries."""
    from syntriever_haystack.flow.steps.generation import candidate_retriever
    from syntriever_haystack.generate import label_free as lf

    section = ctx.recipe.generate
    include_title = ctx.recipe.dataset.include_title
    corpus = ctx.corpus()
    queries_file = ctx.layout.gen_queries / "queries.jsonl"
    llm = lf.read_synthetic_queries(queries_file) if section.passages > 0 and queries_file.is_file() else []
    llm = [q for q in llm if q.source_doc_id in corpus]
    held = lf.held_out_passages(corpus, section.held_out, ctx.recipe.seed)
    order = sampled_passages(ctx, len(corpus))  # the whole corpus in the run's hash order, computed once
    sentence_docs = [d for d in order if d not in held][: section.sentence_queries]
    sentences = lf.sentence_queries(corpus, sentence_docs, seed=ctx.recipe.seed, include_title=include_title)
    train = [q for q in llm if q.source_doc_id not in held] + sentences
    gate = [q for q in llm if q.source_doc_id in held]
    gate_kind = "llm"
    if not gate and section.held_out > 0:  # no held-out LLM query: sentence queries of held-out passages instead
        gate_docs = [d for d in order if d in held][:200]
        gate = lf.sentence_queries(corpus, gate_docs, seed=ctx.recipe.seed, include_title=include_title)
        gate_kind = "sentence"
    retriever = candidate_retriever(ctx, _candidate_spec(ctx), corpus)
    depth = max(section.candidates, section.round_trip or 0)
    candidates = retriever.retrieve({q.query_id: q.query for q in train}, depth)
    dropped = 0
    if section.round_trip is not None:  # round-trip consistency for the LLM's queries (sentence queries pass it)
        kept = [
            q
            for q in train
            if q.query_type == "sentence"
            or q.source_doc_id in {d for d, _ in candidates.get(q.query_id, [])[: section.round_trip]}
        ]
        dropped = len(train) - len(kept)
        train = kept
    candidates = {q: hits[: section.candidates] for q, hits in candidates.items()}
    guard: dict[str, Any] = {"skip_top": section.skip_top, "guard": section.guard, "include_title": include_title}
    stage1 = lf.stage1_records(train, candidates, corpus, negatives=section.negatives, **guard)
    retriever_section = ctx.recipe.train.retriever
    if retriever_section.margin_mse_weight > 0:  # teacher scores for margin-MSE: base model + BM25
        from syntriever_haystack.evaluate.systems import EmbeddingCache, default_cache_dir
        from syntriever_haystack.generate.teacher import ensemble_teacher

        teacher = ensemble_teacher(
            {r["query_id"]: r["query"] for r in stage1},
            {r["query_id"]: [e["doc_id"] for e in (*r["positives"], *r["negatives"])] for r in stage1},
            corpus,
            base_model=str(ctx.layout.base_onnx),
            precision=ctx.precision("base-model"),
            cache=EmbeddingCache(default_cache_dir() / "embeddings" if ctx.recipe.evaluate.cache else None),
            include_title=include_title,
            bm25_weight=retriever_section.teacher_bm25_weight,
            progress=ctx.progress,
            corpus_name=str(ctx.results["data"]["name"]),
        )
        stage1 = lf.stage1_records(train, candidates, corpus, negatives=section.negatives, teacher=teacher, **guard)
    groups = lf.reranker_records(train, candidates, corpus, negatives=max(section.candidates - 1, 1), **guard)
    folder = ctx.layout.mined
    lf.write_jsonl(folder / "retriever.jsonl", stage1)
    lf.write_jsonl(folder / "reranker.jsonl", groups)
    lf.write_jsonl(
        folder / "gate.jsonl",
        (
            {"query_id": q.query_id, "query": q.query, "source_doc_id": q.source_doc_id, "query_type": q.query_type}
            for q in gate
        ),
    )
    result = {
        "llm_queries": len(llm),
        "sentence_queries": len(sentences),
        "train_queries": len(train),
        "round_trip_dropped": dropped,
        "held_out_passages": len(held),
        "gate_queries": len(gate),
        "gate_kind": gate_kind,
        "negatives": sum(len(r["negatives"]) for r in stage1),
        "reranker_groups": len(groups),
        "candidate_retriever": retriever.name,
        "retriever_file": ctx.relative(folder / "retriever.jsonl"),
        "reranker_file": ctx.relative(folder / "reranker.jsonl"),
        "gate_file": ctx.relative(folder / "gate.jsonl"),
    }
    write_json(folder / "summary.json", result)
    ctx.echo(
        f"        {len(train):,} training queries ({len(train) - len(sentences):,} LLM + {len(sentences):,} sentence), "
        f"{result['negatives']:,} hard negatives; {len(gate):,} held-out {gate_kind} queries for the gate"
    )
    return result


def read_gate_queries(ctx: FlowContext) -> list[Any]:
    """The held-out queries the mine step wrote."""
    from syntriever_haystack.generate.label_free import SyntheticQuery

    path = ctx.layout.mined / "gate.jsonl"
    with path.open(encoding="utf-8") as handle:
        return [
            SyntheticQuery(r["query_id"], r["query"], r["source_doc_id"], r["query_type"])
            for r in map(json.loads, filter(str.strip, handle))
        ]


MINE = Step(
    "mine",
    "sentence queries, hard negatives and the held-out split (no LLM)",
    run_mine,
    config=lambda r: {
        "seed": r.seed,
        "include_title": r.dataset.include_title,
        "precision": r.export.precision,
        "teacher": [r.train.retriever.margin_mse_weight > 0, r.train.retriever.teacher_bm25_weight],
        "generate": {
            k: getattr(r.generate, k)
            for k in (
                "passages",
                "sentence_queries",
                "held_out",
                "candidates",
                "candidate_retriever",
                "round_trip",
                "negatives",
                "skip_top",
                "guard",
                "min_words",
            )
        },
    },
    outputs=lambda lay: [lay.mined / "retriever.jsonl", lay.mined / "gate.jsonl"],
    deps=("data", "base-model", "generate-queries"),
    clean=lambda lay: [lay.mined],
)
