"""The LLM steps that build on queries: ``generate-retriever`` (the paper's stage-1 examples for *training queries*:
only with ``dataset.use_training_labels``) and ``generate-preferences`` (stage-2 preferences over the top-K of the
stage-1 retriever exported by ``export-stage1``, or of BM25, for the synthetic queries — or the training queries with
``dataset.use_training_labels``). The label-free queries themselves are :mod:`.synthetic`'s."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from syntriever_haystack.flow.context import FlowContext, Layout
from syntriever_haystack.flow.step import Step, as_dict, stage2_enabled
from syntriever_haystack.specs import SystemSpec

if TYPE_CHECKING:
    from syntriever_haystack.generate.tasks import LLMSession


def finish_generation(ctx: FlowContext, client: Any, folder: Path, extra: dict[str, Any]) -> None:
    """Write the LLM accounting (``summary.json`` / ``.md``) of a generation step, close its cache, warn on failures."""
    client.accounting.write(folder, extra=extra)
    if client.cache is not None:
        client.cache.close()
    failures = sum(client.accounting.failures.values())
    if failures:
        ctx.warn(
            f"{folder.name}: {failures} LLM answers failed (see {folder / 'summary.md'}); their items are left out"
        )


def _generation_clean(folder: Callable[[Layout], Path], stem: str) -> Callable[[Layout], list[Path]]:
    def clean(layout: Layout) -> list[Path]:
        base = folder(layout)
        files = [f"{stem}.jsonl", f"{stem}.done.jsonl", f"{stem}.failures.jsonl", "summary.json", "summary.md"]
        if stem == "reranker":
            files += ["queries.jsonl", "queries.done.jsonl", "candidates.jsonl", "candidates.done.jsonl", "probes.tsv"]
        return [base / f for f in files]

    return clean


def llm_session(ctx: FlowContext, folder: Path, **generation_kwargs: Any) -> LLMSession:
    from syntriever_haystack.generate.tasks import LLMSession

    return LLMSession(ctx.llm_client(folder, generation_kwargs=generation_kwargs or None))


def candidate_retriever(ctx: FlowContext, system: SystemSpec, corpus: Any) -> Any:
    """A first stage over ``corpus`` for candidates, sharing the evaluation's embedding cache."""
    from syntriever_haystack.evaluate.systems import EmbeddingCache, default_cache_dir
    from syntriever_haystack.generate.candidates import SpecRetriever

    cache = EmbeddingCache(default_cache_dir() / "embeddings" if ctx.recipe.evaluate.cache else None)
    return SpecRetriever(
        system, corpus, include_title=ctx.recipe.dataset.include_title, cache=cache, progress=ctx.progress
    )


def run_generate_retriever(ctx: FlowContext, resume: bool) -> dict[str, Any]:
    """Stage-1 examples for a seeded sample of the training queries (resumes from the records written)."""
    from syntriever_haystack.generate import tasks

    section = ctx.recipe.generate
    folder = ctx.layout.gen_retriever
    judge = ctx.judge(section.judge, purpose="relevance", value=section.threshold)
    judge.check()
    items = tasks.split_query_items(ctx.train_dataset(), include_title=ctx.recipe.dataset.include_title)
    items = tasks.seeded_sample(items, section.retriever_queries, ctx.recipe.seed)
    session = llm_session(ctx, folder, max_tokens=ctx.recipe.llm.max_tokens)
    result = tasks.generate_retriever_examples(
        items,
        folder / "retriever.jsonl",
        session=session,
        judge=judge,
        use_cot=section.use_cot,
        run=tasks.TaskRun(
            parallel=ctx.recipe.llm.concurrency,
            progress=ctx.progress,
            provenance={"dataset": ctx.results["data"]["name"], "split": ctx.recipe.dataset.train_split},
        ),
    )
    stats = result.stats
    finish_generation(
        ctx, session.client, folder, {"task": "retriever", "records": stats.records, "items": result.items}
    )
    return {
        "file": ctx.relative(folder / "retriever.jsonl"),
        "items": result.items,
        "records": tasks.count_records(folder / "retriever.jsonl"),
        "failed_items": stats.failed,
        "judge": ctx.short(result.judge),
        "llm": session.client.model,
    }


GENERATE_RETRIEVER = Step(
    "generate-retriever",
    "synthetic stage-1 examples (p+, p-, q_cot) from the LLM",
    run_generate_retriever,
    config=lambda r: {
        "llm": as_dict(r.llm),
        "seed": r.seed,
        "generate": {k: getattr(r.generate, k) for k in ("judge", "threshold", "retriever_queries", "use_cot")},
        "precision": r.export.precision,
    },
    outputs=lambda lay: [lay.gen_retriever / "retriever.jsonl"],
    deps=("data", "base-model"),
    enabled=lambda r: r.dataset.use_training_labels and r.generate.retriever_queries > 0,
    clean=_generation_clean(lambda lay: lay.gen_retriever, "retriever"),
)


def run_generate_preferences(ctx: FlowContext, resume: bool) -> dict[str, Any]:
    """Stage-2 preferences: the judge compares every pair of each sampled query's top-K candidates."""
    from syntriever_haystack.generate import tasks

    section = ctx.recipe.generate.preferences
    folder = ctx.layout.gen_preferences
    folder.mkdir(parents=True, exist_ok=True)
    judge = ctx.judge(section.judge, purpose="preference", value=section.margin)
    judge.check()
    if section.retriever == "stage1":
        # exported by export-stage1, at the precision it actually wrote (int8 falls back to fp32 on a parity failure)
        system = SystemSpec.parse(f"dense:{ctx.layout.stage1_onnx}?precision={ctx.precision('export-stage1')}")
    else:
        system = SystemSpec.parse("bm25")
    if ctx.recipe.dataset.use_training_labels:
        dataset = ctx.train_dataset()
        queries, corpus = dict(dataset.queries), dataset.corpus
    else:  # the mined synthetic training queries (never the held-out ones)
        from syntriever_haystack.generate.label_free import read_synthetic_queries

        queries = {q.query_id: q.query for q in read_synthetic_queries(ctx.layout.mined / "retriever.jsonl")}
        corpus = ctx.corpus()
    queries = {q: queries[q] for q in tasks.seeded_sample(sorted(queries), section.queries, ctx.recipe.seed)}
    items = tasks.candidate_sets(
        queries,
        candidate_retriever(ctx, system, corpus),
        corpus,
        top_k=section.top_k,
        include_title=ctx.recipe.dataset.include_title,
    )
    session = llm_session(ctx, folder) if judge.is_llm else None
    result = tasks.generate_preferences(
        items,
        folder / "preferences.jsonl",
        judge=judge,
        session=session,
        retriever=str(system),
        run=tasks.TaskRun(
            parallel=ctx.recipe.llm.concurrency // 2,
            progress=ctx.progress,
            provenance={"dataset": ctx.results["data"]["name"], "top_k": section.top_k},
        ),
    )
    if session is not None:
        finish_generation(ctx, session.client, folder, {"task": "preferences", "items": result.items})
    return {
        "file": ctx.relative(folder / "preferences.jsonl"),
        "queries": result.items,
        "records": tasks.count_records(folder / "preferences.jsonl"),
        "judge": ctx.short(result.judge),
        "retriever": ctx.short(str(system)),
    }


GENERATE_PREFERENCES = Step(
    "generate-preferences",
    "stage-2 preferences over the stage-1 top-K",
    run_generate_preferences,
    config=lambda r: {
        "preferences": as_dict(r.generate.preferences),
        "llm": as_dict(r.llm) if r.generate.preferences.judge == "llm" else None,
        "seed": r.seed,
        "labels": r.dataset.use_training_labels,
        "precision": r.export.precision,
    },
    outputs=lambda lay: [lay.gen_preferences / "preferences.jsonl"],
    deps=("data", "base-model", "mine", "train-retriever", "export-stage1", "export-reranker"),
    enabled=stage2_enabled,
    clean=lambda lay: [
        lay.gen_preferences / f for f in ("preferences.jsonl", "preferences.done.jsonl", "summary.json")
    ],
)
