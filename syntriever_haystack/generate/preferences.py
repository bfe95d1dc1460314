"""Retriever stage 2 (alignment, METHOD.md §2): pairwise preferences over a retriever's top-K.

For every query, the top ``K`` passages of a retriever (the stage-1 model by default) are compared in all
``K(K-1)/2`` pairs by a preference judge; with an LLM judge each pair is asked in both orders and only
consistent verdicts are kept. Each verdict becomes a triple ``(query, preferred, rejected)``.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from syntriever_haystack.generate.judges import Preference, PreferenceJudge
from syntriever_haystack.generate.llm import LLMClient
from syntriever_haystack.generate.records import stable_id, utc_now
from syntriever_haystack.generate.runner import ItemResult, LoopStats, process_items, provenance


@dataclass(frozen=True)
class CandidateSet:
    """A query and its retrieved candidates ``(doc_id, text)``, best first."""

    query_id: str
    query: str
    candidates: tuple[tuple[str, str], ...]


@dataclass
class PreferenceGenerator:
    """Write preference triples for ``items`` into ``output`` (JSONL), resumably.

    :param judge: Pairwise judge (:class:`~syntriever_haystack.generate.judges.LLMPreferenceJudge` or a score
        judge).
    :param client: The LLM client, for provenance and accounting (may be ``None`` with a score judge).
    :param retriever: Name of the retriever that supplied the candidates (recorded in provenance).
    """

    judge: PreferenceJudge
    client: LLMClient | None = None
    retriever: str = ""
    parallel: int = 8
    progress: bool = True
    extra_provenance: dict[str, Any] = field(default_factory=dict)

    async def generate(self, items: Sequence[CandidateSet], output: str | Path) -> LoopStats[CandidateSet]:
        prompts = [self.judge.prompt] if hasattr(self.judge, "prompt") else []
        self._provenance = provenance(
            self.client, prompts, judge=self.judge.name, retriever=self.retriever, **self.extra_provenance
        )
        from syntriever_haystack.generate.accounting import Accounting

        accounting = self.client.accounting if self.client is not None else Accounting()
        self._accounting = accounting
        return await process_items(
            items,
            self._one,
            item_id=lambda item: item.query_id,
            output=Path(output),
            accounting=accounting,
            parallel=self.parallel,
            desc="preferences",
            progress=self.progress,
        )

    async def _one(self, item: CandidateSet) -> ItemResult:
        pairs = list(itertools.combinations(range(len(item.candidates)), 2))
        verdicts: list[Preference | BaseException] = await asyncio.gather(
            *(self.judge.compare(item.query, item.candidates[i][1], item.candidates[j][1]) for i, j in pairs),
            return_exceptions=True,
        )
        from syntriever_haystack.generate.llm import Deferred

        for verdict in verdicts:
            if isinstance(verdict, Deferred):
                raise verdict
            if isinstance(verdict, BaseException):
                raise verdict
        result = ItemResult()
        for (i, j), verdict in zip(pairs, verdicts, strict=True):
            assert isinstance(verdict, Preference)
            if verdict.winner is None:
                reason = verdict.reason or "no_verdict"
                if reason.startswith("failed:"):
                    result.failures.append({"step": "preference", "pair": [i, j], "cause": reason[7:]})
                else:
                    self._accounting.count_filtered(f"pair_{reason}")
                continue
            win, lose = (i, j) if verdict.winner == 0 else (j, i)
            preferred, rejected = item.candidates[win], item.candidates[lose]
            result.records.append(
                {
                    "id": stable_id("preference", item.query_id, preferred[0], rejected[0]),
                    "kind": "preference",
                    "query_id": item.query_id,
                    "query": item.query,
                    "preferred": {"doc_id": preferred[0], "text": preferred[1], "rank": win + 1},
                    "rejected": {"doc_id": rejected[0], "text": rejected[1], "rank": lose + 1},
                    "votes": verdict.votes,
                    "judge": verdict.judge,
                    "provenance": {**self._provenance, "created": utc_now()},
                }
            )
        self._accounting.count_item("pairs_kept", len(result.records))
        return result
