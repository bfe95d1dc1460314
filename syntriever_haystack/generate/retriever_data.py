"""Retriever stage 1 (Syntriever distillation, METHOD.md §1): p+, p-, q_cot and self-verification per query.

For each query the LLM writes a passage that answers it (``p+``), a plausible passage that does not (``p-``)
and its step-by-step reasoning (``q_cot``); a judge then verifies ``p+`` and ``p-``. Example written:

- positives: the gold passages, ``p+`` if verified, ``q_cot``;
- negatives: ``p-`` (dropped if the judge finds it relevant), ``p+`` if rejected (a hard negative).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from syntriever_haystack.generate.judges import RelevanceJudge
from syntriever_haystack.generate.llm import LLMClient
from syntriever_haystack.generate.prompts import PromptTemplate
from syntriever_haystack.generate.records import stable_id, utc_now
from syntriever_haystack.generate.runner import ItemResult, LoopStats, gather_answers, process_items, provenance


@dataclass(frozen=True)
class QueryItem:
    """A training query and its gold passages (``(doc_id, text)``; empty in the fully synthetic setting)."""

    query_id: str
    query: str
    gold: tuple[tuple[str, str], ...] = ()


@dataclass
class RetrieverDataGenerator:
    """Write stage-1 examples for ``items`` into ``output`` (JSONL), resumably.

    :param client: The LLM client (cache, limits, accounting).
    :param prompts: The prompt set (``positive_passage``, ``negative_passage``, ``cot``, ``verify``).
    :param judge: Verifies ``p+`` and ``p-`` (an LLM with the ``verify`` prompt, or a score judge).
    :param use_cot: Ask for ``q_cot`` and use it as a positive.
    :param verify_negative: Also judge ``p-`` and drop it when judged relevant.
    """

    client: LLMClient
    prompts: Mapping[str, PromptTemplate]
    judge: RelevanceJudge
    use_cot: bool = True
    verify_negative: bool = True
    parallel: int = 16
    progress: bool = True
    extra_provenance: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        used = [self.prompts["positive_passage"], self.prompts["negative_passage"]]
        if self.use_cot:
            used.append(self.prompts["cot"])
        judge_prompt = getattr(self.judge, "prompt", None)  # an LLM judge's prompt (score judges have none)
        if isinstance(judge_prompt, PromptTemplate):
            used.append(judge_prompt)
        self._provenance = provenance(self.client, used, judge=self.judge.name, **self.extra_provenance)

    async def generate(self, items: Sequence[QueryItem], output: str | Path) -> LoopStats[QueryItem]:
        """Write one example per item into ``output``; done items of an earlier run are skipped."""
        return await process_items(
            items,
            self.example,
            item_id=lambda item: item.query_id,
            output=Path(output),
            accounting=self.client.accounting,
            parallel=self.parallel,
            desc="retriever stage 1",
            progress=self.progress,
        )

    async def example(self, item: QueryItem) -> ItemResult:
        """The example for one query (or the failures that prevented it)."""
        variables = {"query": item.query}
        calls = [
            self.client.ask(self.prompts["positive_passage"], variables),
            self.client.ask(self.prompts["negative_passage"], variables),
        ]
        if self.use_cot:
            calls.append(self.client.ask(self.prompts["cot"], variables))
        answers = await gather_answers(*calls)
        failures = [{"step": a.prompt, "cause": a.failure} for a in answers if not a.ok]
        if failures:
            return ItemResult(failures=failures)
        positive, negative = answers[0].value, answers[1].value
        to_judge = [positive, negative] if self.verify_negative else [positive]
        verdicts = await self.judge.judge(item.query, to_judge)
        failed = [{"step": "verify", "cause": v.failure or "judge_failed"} for v in verdicts if v.label is None]
        if failed:
            return ItemResult(failures=failed)
        accounting = self.client.accounting
        positives: list[dict[str, Any]] = [
            {"text": text, "source": "gold", "doc_id": doc_id, "judge": None, "label": True}
            for doc_id, text in item.gold
        ]
        negatives: list[dict[str, Any]] = []
        p_verdict = verdicts[0]
        entry = {"text": positive, "doc_id": None, "judge": p_verdict.judge, "label": p_verdict.label}
        if p_verdict.score is not None:
            entry["score"] = p_verdict.score
        if p_verdict.label:
            positives.append({**entry, "source": "llm_positive"})
            accounting.count_filtered("positive_verified")
        else:
            negatives.append({**entry, "source": "rejected_positive"})
            accounting.count_filtered("positive_rejected")
        if self.use_cot:
            positives.append({"text": answers[2].value, "source": "cot", "doc_id": None, "judge": None, "label": None})
        n_entry: dict[str, Any] = {
            "text": negative,
            "source": "llm_negative",
            "doc_id": None,
            "judge": None,
            "label": None,
        }
        if self.verify_negative:
            n_verdict = verdicts[1]
            n_entry.update(judge=n_verdict.judge, label=n_verdict.label)
            if n_verdict.score is not None:
                n_entry["score"] = n_verdict.score
        if n_entry["label"]:
            accounting.count_filtered("negative_judged_relevant")
        else:
            negatives.append(n_entry)
        record = {
            "id": stable_id("retriever", item.query_id),
            "kind": "retriever",
            "query_id": item.query_id,
            "query": item.query,
            "positives": positives,
            "negatives": negatives,
            "provenance": {**self._provenance, "created": utc_now(), "cached": all(a.cached for a in answers)},
        }
        return ItemResult(records=[record])
