"""Reranker data (METHOD.md §3): synthetic queries, first-stage candidates, judged labels → LCE groups.

Three resumable phases, each writing a JSONL file in the output folder:

1. ``queries.jsonl`` — for each sampled passage, ``n`` queries of varied types (question, keywords, claim),
   filtered (empty, truncated, copies the passage or a few-shot example, duplicate, near-duplicate); rejected
   queries are kept in the file with their ``rejected`` reason so that the numbers add up and a rerun makes the
   same decisions.
2. ``candidates.jsonl`` — the top ``m`` candidates of a first-stage retriever for every accepted query;
   with ``round_trip_k`` a query is dropped unless its source passage is in the retriever's top-k.
3. ``reranker.jsonl`` — the judge labels the source passage (presumed positive, verified) and the candidates;
   candidates judged not relevant are the localised hard negatives of the group.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from syntriever_haystack.data.beir import Passage
from syntriever_haystack.generate.candidates import CandidateRetriever
from syntriever_haystack.generate.filters import QueryFilter, normalize_text
from syntriever_haystack.generate.judges import RelevanceJudge
from syntriever_haystack.generate.llm import LLMClient
from syntriever_haystack.generate.prompts import PromptTemplate
from syntriever_haystack.generate.records import JsonlStore, stable_id, utc_now
from syntriever_haystack.generate.runner import ItemResult, gather_answers, process_items, provenance

QUERY_TYPES = ("question", "keywords", "claim")


@dataclass(frozen=True)
class PassageItem:
    doc_id: str
    text: str


def query_types_for(doc_id: str, query_types: Sequence[str], n: int) -> list[str]:
    """The types of a passage's ``n`` queries: cycled, starting at a per-passage offset when ``n`` is not a
    multiple of the number of types (so with 2 queries and 3 types every type still occurs across passages)."""
    offset = 0
    if n % len(query_types):
        offset = int(hashlib.sha256(doc_id.encode()).hexdigest()[:8], 16) % len(query_types)
    return [query_types[(offset + i) % len(query_types)] for i in range(n)]


def by_prompt_prefix(passages: Sequence[PassageItem], query_types: Sequence[str], n: int) -> list[PassageItem]:
    """``passages`` grouped by their first query type (stable), so consecutive prompts share the type's few-shot
    prefix: llama.cpp (and vLLM / llama.cpp servers with prefix caching) then evaluate only the new passage. On 2
    cores with Gemma 3 270M a call takes 1.16 s instead of 1.41 s (``benchmarks/llm_prompt_order.py``, 24 SciFact
    passages; the prompt is ~40 % few-shot prefix). With one
    query per passage (the flow's) passages start with different types; when ``n`` is a multiple of the number of
    types every passage starts with the first type and the order is unchanged."""
    return sorted(passages, key=lambda item: query_types.index(query_types_for(item.doc_id, query_types, n)[0]))


@dataclass(frozen=True)
class QueryGroupItem:
    query_id: str
    query: str
    query_type: str
    source_doc_id: str
    candidates: tuple[tuple[str, float], ...]


@dataclass
class RerankerDataGenerator:
    """Generate LCE training groups from a corpus.

    :param client: The LLM client that writes the queries.
    :param prompts: The prompt set (``queries``; the judge brings its own).
    :param judge: Labels (query, passage) pairs: an LLM (``relevance`` prompt) or a score judge.
    :param retriever: First stage that supplies candidates (BM25, our dense model, hybrid, or a Haystack
        retriever).
    :param corpus: Document id → passage, to read candidate texts.
    :param queries_per_passage: ``n`` queries per passage; their types cycle through ``query_types``.
    :param candidates: ``m`` candidates retrieved (and judged) per query.
    :param round_trip_k: Keep a query only if the retriever finds its source passage in its top-k.
    :param verify_source: Ask the judge about the source passage too; a rejected source drops the query.
    :param query_filter: The filter (default: global duplicate detection, passage-copy detection).
    """

    client: LLMClient
    prompts: Mapping[str, PromptTemplate]
    judge: RelevanceJudge
    retriever: CandidateRetriever
    corpus: Mapping[str, Passage]
    queries_per_passage: int = 3
    query_types: Sequence[str] = QUERY_TYPES
    candidates: int = 20
    round_trip_k: int | None = None
    verify_source: bool = True
    include_title: bool = True
    parallel: int = 16
    progress: bool = True
    query_filter: QueryFilter = field(default_factory=QueryFilter)
    extra_provenance: dict[str, Any] = field(default_factory=dict)

    def passage_text(self, doc_id: str) -> str:
        return self.corpus[doc_id].model_text(self.include_title)

    async def generate(self, passages: Sequence[PassageItem], output_dir: str | Path) -> dict[str, Any]:
        folder = Path(output_dir)
        folder.mkdir(parents=True, exist_ok=True)
        stats: dict[str, Any] = {}
        queries = await self.generate_queries(passages, folder / "queries.jsonl")
        stats["queries"] = {"accepted": len(queries), "filtered": dict(self.query_filter.counts)}
        groups_input = self.retrieve_candidates(queries, folder / "candidates.jsonl", stats)
        loop = await self.label(groups_input, folder / "reranker.jsonl")
        stats["groups"] = {"written": loop.records, "failed_items": loop.failed, "deferred": loop.deferred}
        return stats

    # ------------------------------------------------------------------------------------ phase 1: queries
    async def generate_queries(self, passages: Sequence[PassageItem], output: Path) -> list[dict[str, Any]]:
        prompt = self.prompts["queries"]
        prov = provenance(self.client, [prompt], **self.extra_provenance)
        decided: set[str] = set()  # ids of the queries an earlier run already wrote (accepted or rejected)
        if output.exists():  # resume: decisions already made stay made, duplicates are checked against them
            with JsonlStore(output) as existing:
                for record in existing.records():
                    decided.add(record["id"])
                    if not record.get("rejected"):
                        source = record["source_doc_id"]
                        text = self.passage_text(source) if source in self.corpus else None
                        self.query_filter.register(record["query"], passage=text, passage_id=source)
        accounting = self.client.accounting
        example_outputs = {normalize_text(e.output) for e in prompt.examples}

        async def one(item: PassageItem) -> ItemResult:
            types = query_types_for(item.doc_id, self.query_types, self.queries_per_passage)
            answers = await gather_answers(
                *(
                    self.client.ask(prompt, {"passage": item.text, "query_type": t}, sample=i)
                    for i, t in enumerate(types)
                )
            )
            result = ItemResult()
            for sample, (query_type, answer) in enumerate(zip(types, answers, strict=True)):
                if not answer.ok:
                    result.failures.append({"step": answer.prompt, "sample": sample, "cause": answer.failure})
                    continue
                record_id = stable_id("query", item.doc_id, str(sample))
                if record_id in decided:
                    # a passage redone after a failure or a kill: this query was checked and written before (an
                    # accepted one is registered, so checking it again would reject it as its own duplicate)
                    continue
                reason = self.query_filter.check(answer.value, passage=item.text, passage_id=item.doc_id)
                if reason is None and normalize_text(answer.value) in example_outputs:
                    reason = "copies_example"  # small models sometimes repeat a few-shot answer verbatim
                    self.query_filter.counts["accepted"] -= 1
                    self.query_filter.counts[reason] += 1
                if reason is not None:
                    accounting.count_filtered(reason)
                result.records.append(
                    {
                        "id": record_id,
                        "kind": "query",
                        "query": answer.value,
                        "query_type": query_type,
                        "source_doc_id": item.doc_id,
                        "rejected": reason,
                        "provenance": {**prov, "created": utc_now(), "cached": answer.cached},
                    }
                )
            return result

        await process_items(
            by_prompt_prefix(passages, self.query_types, self.queries_per_passage),
            one,
            item_id=lambda item: item.doc_id,
            output=output,
            accounting=accounting,
            parallel=self.parallel,
            desc="synthetic queries",
            progress=self.progress,
        )
        with JsonlStore(output) as store:
            return [r for r in store.records() if not r.get("rejected")]

    # --------------------------------------------------------------------------------- phase 2: candidates
    def retrieve_candidates(
        self, queries: Sequence[Mapping[str, Any]], output: Path, stats: dict[str, Any]
    ) -> list[QueryGroupItem]:
        by_id = {q["id"]: q for q in queries}
        depth = max(self.candidates, self.round_trip_k or 0)
        ranked = self.retriever.retrieve({qid: q["query"] for qid, q in by_id.items()}, depth)
        items: list[QueryGroupItem] = []
        dropped = 0
        tmp = output.with_suffix(".tmp")
        with tmp.open("w", encoding="utf-8") as handle:
            for qid, query in by_id.items():
                hits = ranked.get(qid, [])
                source = query["source_doc_id"]
                rank = next((r for r, (doc_id, _) in enumerate(hits, start=1) if doc_id == source), None)
                kept = self.round_trip_k is None or (rank is not None and rank <= self.round_trip_k)
                handle.write(
                    json.dumps(
                        {
                            "id": qid,
                            "retriever": self.retriever.name,
                            "source_rank": rank,
                            "kept": kept,
                            "candidates": [[d, round(s, 6)] for d, s in hits[: self.candidates]],
                        },
                        ensure_ascii=False,
                    )
                    + "\n"
                )
                if not kept:
                    dropped += 1
                    continue
                items.append(
                    QueryGroupItem(qid, query["query"], query["query_type"], source, tuple(hits[: self.candidates]))
                )
        os.replace(tmp, output)
        if dropped:
            self.client.accounting.count_filtered("round_trip", dropped)
        stats["round_trip"] = {"k": self.round_trip_k, "dropped": dropped, "kept": len(items)}
        return items

    # ------------------------------------------------------------------------------------- phase 3: labels
    async def label(self, items: Sequence[QueryGroupItem], output: Path) -> Any:
        judge_prompt = getattr(self.judge, "prompt", None)  # an LLM judge's prompt (score judges have none)
        prov = provenance(
            self.client,
            [judge_prompt] if isinstance(judge_prompt, PromptTemplate) else [],
            judge=self.judge.name,
            retriever=self.retriever.name,
            **self.extra_provenance,
        )
        accounting = self.client.accounting

        async def one(item: QueryGroupItem) -> ItemResult:
            others = [(d, s) for d, s in item.candidates if d != item.source_doc_id and d in self.corpus]
            texts = [self.passage_text(d) for d, _ in others]
            source_text = self.passage_text(item.source_doc_id)
            to_judge = ([source_text] if self.verify_source else []) + texts
            verdicts = await self.judge.judge(item.query, to_judge)
            failed = [v for v in verdicts if v.label is None]
            if failed:
                return ItemResult(failures=[{"step": "label", "cause": failed[0].failure or "judge_failed"}])
            if self.verify_source:
                source_verdict, verdicts = verdicts[0], verdicts[1:]
                if not source_verdict.label:
                    accounting.count_filtered("source_rejected")
                    return ItemResult()
                positive = {
                    "doc_id": item.source_doc_id,
                    "text": source_text,
                    "label": True,
                    "score": source_verdict.score,
                    "judge": source_verdict.judge,
                }
            else:
                positive = {
                    "doc_id": item.source_doc_id,
                    "text": source_text,
                    "label": True,
                    "score": None,
                    "judge": None,
                }
            negatives: list[dict[str, Any]] = []
            extra_positives: list[dict[str, Any]] = []
            for rank, ((doc_id, retrieval_score), text, verdict) in enumerate(
                zip(others, texts, verdicts, strict=True), start=1
            ):
                entry = {
                    "doc_id": doc_id,
                    "text": text,
                    "label": verdict.label,
                    "score": verdict.score,
                    "judge": verdict.judge,
                    "rank": rank,
                    "retrieval_score": retrieval_score,
                }
                (extra_positives if verdict.label else negatives).append(entry)
            if not negatives:
                accounting.count_filtered("no_negatives")
                return ItemResult()
            record = {
                "id": stable_id("reranker", item.query_id),
                "kind": "reranker",
                "query_id": item.query_id,
                "query": item.query,
                "query_type": item.query_type,
                "source_doc_id": item.source_doc_id,
                "positive": positive,
                "negatives": negatives,
                "other_positives": extra_positives,
                "provenance": {**prov, "created": utc_now()},
            }
            return ItemResult(records=[record])

        return await process_items(
            items,
            one,
            item_id=lambda item: item.query_id,
            output=output,
            accounting=accounting,
            parallel=self.parallel,
            desc="reranker labels",
            progress=self.progress,
        )
