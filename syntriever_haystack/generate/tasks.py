"""The three generation tasks, one typed function each, plus the item lists they run over.

``syntriever generate retriever|preferences|reranker`` and the flow's ``generate-*`` steps both call these; they
differ only in where their settings come from (CLI arguments or the recipe, parsed once into typed specs there).

- :func:`generate_retriever_examples`: stage-1 examples (p+, p-, q_cot, verified) for training queries;
- :func:`generate_preferences`: stage-2 pairwise preferences over a first stage's top-K;
- :func:`generate_reranker_groups`: synthetic queries for sampled passages, candidates, labels → LCE groups.

Items: :func:`split_query_items` (a split's queries with their judged passages), :func:`synthetic_query_items`
(the accepted queries of a reranker run, source passage as gold), :func:`candidate_sets` (a retriever's top-K per
query) and :func:`sample_passages` (passages long enough to write queries for).
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable, Coroutine, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar, cast

from syntriever_haystack.data.beir import BeirDataset, Passage
from syntriever_haystack.errors import SyntrieverError
from syntriever_haystack.generate.candidates import CandidateRetriever
from syntriever_haystack.generate.filters import QueryFilter
from syntriever_haystack.generate.judges import preference_judge, relevance_judge
from syntriever_haystack.generate.llm import LLMClient
from syntriever_haystack.generate.preferences import CandidateSet, PreferenceGenerator
from syntriever_haystack.generate.prompts import PromptTemplate, load_prompts
from syntriever_haystack.generate.records import read_records
from syntriever_haystack.generate.reranker_data import QUERY_TYPES, PassageItem, RerankerDataGenerator
from syntriever_haystack.generate.retriever_data import QueryItem, RetrieverDataGenerator
from syntriever_haystack.specs import JudgeSpec

T = TypeVar("T")
Executor = Callable[[Callable[[], Coroutine[Any, Any, Any]]], Any]


def run_now(job: Callable[[], Coroutine[Any, Any, T]]) -> T:
    """The default executor: run the task's coroutine to completion (``--batch`` plugs in its own rounds)."""
    return asyncio.run(job())


@dataclass
class LLMSession:
    """What a task talks to the LLM with.

    :param client: The LLM client (response cache, limits, accounting).
    :param prompts: The prompt set (default: the built-in prompts).
    :param execute: Runs the task's coroutine: at once, or in Batch-API rounds.
    """

    client: LLMClient
    prompts: Mapping[str, PromptTemplate] = field(default_factory=lambda: load_prompts(None))
    execute: Executor = run_now


@dataclass(frozen=True)
class TaskRun:
    """How a task runs: concurrency, progress bars, provenance recorded in every record."""

    parallel: int = 8
    progress: bool = True
    provenance: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class TaskResult:
    """What a task produced: its loop statistics and the name of the judge that labelled it."""

    stats: Any
    judge: str
    items: int


def seeded_sample(items: Sequence[T], n: int | None, seed: int) -> list[T]:
    """``n`` items drawn with ``random.Random(seed)`` (all of them, in order, when ``n`` is ``None``)."""
    if n is None:
        return list(items)
    return random.Random(seed).sample(list(items), min(n, len(items)))


# ------------------------------------------------------------------------------------------------------ items
def split_query_items(dataset: BeirDataset, *, include_title: bool) -> list[QueryItem]:
    """A split's queries, each with the passages judged relevant to it (the gold positives)."""
    texts = dict(zip(dataset.doc_ids, dataset.doc_texts(include_title=include_title), strict=True))
    items = []
    for qid, text in dataset.queries.items():
        judged = dataset.qrels.get(qid, {})
        items.append(QueryItem(qid, text, tuple((d, texts[d]) for d, s in judged.items() if s > 0 and d in texts)))
    return items


def synthetic_query_items(
    queries_file: Path, corpus: Mapping[str, Passage], *, include_title: bool, key: str = "--queries-file"
) -> list[QueryItem]:
    """Fully synthetic setting: the accepted queries of a reranker run (queries.jsonl), source passage as gold."""
    items = []
    for record in read_records(queries_file, what=key):  # read only: the file and its folder are never created
        if record.get("kind") != "query":
            raise SyntrieverError(
                f"{key}: {queries_file} holds {record.get('kind')!r} records; pass the queries.jsonl written by "
                "`syntriever generate reranker`."
            )
        if record.get("rejected"):
            continue
        source = record.get("source_doc_id")
        if not isinstance(source, str) or not isinstance(record.get("query"), str) or "id" not in record:
            raise SyntrieverError(
                f"{key}: {queries_file} has a query record without id / query / source_doc_id; pass the "
                "queries.jsonl written by `syntriever generate reranker`."
            )
        if source not in corpus:
            raise SyntrieverError(f"Query {record['id']} comes from document {source!r}, not in --dataset's corpus.")
        items.append(QueryItem(record["id"], record["query"], ((source, corpus[source].model_text(include_title)),)))
    return items


def candidate_sets(
    queries: Mapping[str, str],
    retriever: CandidateRetriever,
    corpus: Mapping[str, Passage],
    *,
    top_k: int,
    include_title: bool,
) -> list[CandidateSet]:
    """Each query with the retriever's top ``top_k`` passages, best first."""
    ranked = retriever.retrieve(queries, top_k)
    return [
        CandidateSet(qid, text, tuple((d, corpus[d].model_text(include_title)) for d, _ in ranked.get(qid, [])[:top_k]))
        for qid, text in queries.items()
    ]


def sample_passages(
    corpus: Mapping[str, Passage],
    n: int,
    *,
    min_words: int,
    seed: int,
    include_title: bool,
    key: str = "--min-words",
) -> list[PassageItem]:
    """``n`` seeded passages of at least ``min_words`` words (an error naming ``key`` when there is none)."""
    eligible = [d for d, p in corpus.items() if len(p.text.split()) >= min_words]
    if not eligible:
        raise SyntrieverError(f"{key}: no passage has at least {min_words} words; lower it.")
    return [PassageItem(d, corpus[d].model_text(include_title)) for d in seeded_sample(eligible, n, seed)]


# ------------------------------------------------------------------------------------------------------ tasks
def generate_retriever_examples(
    items: Sequence[QueryItem],
    output: Path,
    *,
    session: LLMSession,
    judge: JudgeSpec,
    use_cot: bool = True,
    verify_negative: bool = True,
    run: TaskRun = TaskRun(),
) -> TaskResult:
    """Stage 1: for each query, p+ / p- / q_cot written by the LLM and checked by ``judge`` → ``output`` (JSONL)."""
    relevance = relevance_judge(judge, client=session.client, prompt=session.prompts["verify"])
    generator = RetrieverDataGenerator(
        client=session.client,
        prompts=session.prompts,
        judge=relevance,
        use_cot=use_cot,
        verify_negative=verify_negative,
        parallel=max(run.parallel, 1),
        progress=run.progress,
        extra_provenance=dict(run.provenance),
    )
    stats = session.execute(lambda: generator.generate(items, output))
    return TaskResult(stats, relevance.name, len(items))


def generate_preferences(
    items: Sequence[CandidateSet],
    output: Path,
    *,
    judge: JudgeSpec,
    session: LLMSession | None,
    retriever: str,
    both_orders: bool = True,
    require_consistent: bool = True,
    run: TaskRun = TaskRun(),
) -> TaskResult:
    """Stage 2: ``judge`` compares every pair of each query's candidates → preference triples in ``output``.

    ``session`` may be ``None`` with a score judge (no LLM is called); ``retriever`` names the first stage that
    supplied the candidates (provenance).
    """
    if session is None and judge.is_llm:
        raise SyntrieverError("The 'llm' preference judge needs an LLM; configure one with --llm.")
    client = session.client if session is not None else None
    prompts = session.prompts if session is not None else load_prompts(None)
    pairwise = preference_judge(
        judge,
        client=client,
        prompt=prompts["preference"],
        both_orders=both_orders,
        require_consistent=require_consistent,
    )
    generator = PreferenceGenerator(
        judge=pairwise,
        client=client,
        retriever=retriever,
        parallel=max(run.parallel, 1),
        progress=run.progress,
        extra_provenance=dict(run.provenance),
    )
    execute = session.execute if session is not None else run_now
    stats = execute(lambda: generator.generate(items, output))
    return TaskResult(stats, pairwise.name, len(items))


def generate_reranker_groups(
    passages: Sequence[PassageItem],
    output_dir: Path,
    *,
    session: LLMSession,
    judge: JudgeSpec,
    retriever: CandidateRetriever,
    corpus: Mapping[str, Passage],
    queries_per_passage: int = 3,
    query_types: Sequence[str] = QUERY_TYPES,
    candidates: int = 20,
    round_trip_k: int | None = None,
    verify_source: bool = True,
    include_title: bool = True,
    run: TaskRun = TaskRun(),
) -> TaskResult:
    """Synthetic queries for ``passages``, ``candidates`` from ``retriever``, labels by ``judge`` → LCE groups."""
    relevance = relevance_judge(judge, client=session.client, prompt=session.prompts["relevance"])
    generator = RerankerDataGenerator(
        client=session.client,
        prompts=session.prompts,
        judge=relevance,
        retriever=retriever,
        corpus=corpus,
        queries_per_passage=queries_per_passage,
        query_types=tuple(query_types),
        candidates=candidates,
        round_trip_k=round_trip_k,
        verify_source=verify_source,
        include_title=include_title,
        parallel=max(run.parallel, 1),
        progress=run.progress,
        query_filter=QueryFilter(),
        extra_provenance=dict(run.provenance),
    )
    stats = session.execute(lambda: generator.generate(passages, output_dir))
    return TaskResult(stats, relevance.name, len(passages))


def count_records(path: Path) -> int:
    """Non-empty lines of a JSONL file (0 when it does not exist)."""
    if not path.is_file():
        return 0
    with path.open(encoding="utf-8") as handle:
        return sum(1 for line in handle if line.strip())


def generate_passage_queries(
    passages: Sequence[PassageItem],
    output: Path,
    *,
    session: LLMSession,
    corpus: Mapping[str, Passage],
    queries_per_passage: int = 1,
    query_types: Sequence[str] = QUERY_TYPES,
    include_title: bool = True,
    run: TaskRun = TaskRun(),
) -> TaskResult:
    """Label-free queries: ``queries_per_passage`` LLM queries for each passage, filtered (empty, truncated, copies
    of the passage or of a few-shot example, duplicates), written to ``output`` (``queries.jsonl``, resumable)."""
    generator = RerankerDataGenerator(
        client=session.client,
        prompts=session.prompts,
        judge=cast(Any, None),  # the query phase neither judges nor retrieves
        retriever=cast(Any, None),
        corpus=corpus,
        queries_per_passage=queries_per_passage,
        query_types=tuple(query_types),
        include_title=include_title,
        parallel=max(run.parallel, 1),
        progress=run.progress,
        query_filter=QueryFilter(),
        extra_provenance=dict(run.provenance),
    )
    output.parent.mkdir(parents=True, exist_ok=True)
    accepted = session.execute(lambda: generator.generate_queries(passages, output))
    stats = {"accepted": len(accepted), "filtered": dict(generator.query_filter.counts)}
    return TaskResult(stats, "", len(passages))


def hashed_order(keys: Sequence[str], seed: int) -> list[str]:
    """``keys`` in a seeded hash order: the first ``n`` of it are a sample that only grows when ``n`` grows (so a
    bigger budget reuses every LLM answer of a smaller one)."""
    import hashlib

    return sorted(keys, key=lambda k: hashlib.sha256(f"{seed}:{k}".encode()).hexdigest())
