"""Pluggable judges: who decides relevance and preference (METHOD.md §4).

Two families, same interface, and every label records the judge that made it:

- LLM judges (the papers' choice, for a capable model): :class:`LLMRelevanceJudge` (yes/no) and
  :class:`LLMPreferenceJudge` (pairwise, asked in both orders to cancel position bias).
- Score judges (for offline use, where small local LLMs judge at chance): :class:`ScoreRelevanceJudge` and
  :class:`ScorePreferenceJudge` over a model's scores — our exported ranker (sigmoid of the cross-encoder
  logit) or embedder (cosine) — with a threshold / margin.

Build one from a spec string with :func:`relevance_judge` / :func:`preference_judge`::

    llm                                   # the run's LLM
    embedder:EXPORTED_DIR?threshold=0.5   # cosine of our ONNX embedder ≥ threshold
    ranker:EXPORTED_DIR?threshold=0.5     # sigmoid(cross-encoder logit) ≥ threshold
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from syntriever_haystack.generate.llm import LLMClient, gather_answers
from syntriever_haystack.generate.prompts import PromptTemplate
from syntriever_haystack.runtime.encode import embed_documents, embed_queries, score_documents
from syntriever_haystack.runtime.onnx_model import OnnxModel, load_onnx_model
from syntriever_haystack.specs import JudgeSpec, JudgeSpecError, Precision

Scorer = Callable[[str, Sequence[str]], list[float]]


@dataclass(frozen=True)
class Judgement:
    """A relevance label.

    :param label: ``True`` relevant, ``False`` not, ``None`` when the judge failed (see ``failure``).
    :param score: The model score behind a score judge's label (``None`` for LLM judges).
    :param judge: Which judge made the label (``llm:gpt-4o-mini:verify@1#…``, ``embedder:models/x@0.5``).
    :param failure: Failure cause when ``label`` is ``None``.
    """

    label: bool | None
    score: float | None
    judge: str
    failure: str | None = None


@dataclass(frozen=True)
class Preference:
    """A pairwise verdict: ``winner`` is 0 (first passage), 1 (second) or ``None`` (tie/inconsistent/failed).

    ``votes`` records the raw outcome of each order asked (``{"ab": 1, "ba": 2}``) or the two scores.
    """

    winner: int | None
    judge: str
    votes: dict[str, Any] = field(default_factory=dict)
    reason: str | None = None


class RelevanceJudge(Protocol):
    name: str

    async def judge(self, query: str, passages: Sequence[str]) -> list[Judgement]: ...


class PreferenceJudge(Protocol):
    name: str

    async def compare(self, query: str, first: str, second: str) -> Preference: ...


# ------------------------------------------------------------------------------------------------ LLM judges
class LLMRelevanceJudge:
    """Ask the LLM, one passage at a time, whether it answers/is relevant to the query (yes/no).

    :param client: The run's LLM client.
    :param prompt: ``verify`` (does it answer the query) or ``relevance`` (is it relevant).
    """

    def __init__(self, client: LLMClient, prompt: PromptTemplate) -> None:
        self.client = client
        self.prompt = prompt
        self.name = f"llm:{client.model}:{prompt.label}"

    async def judge(self, query: str, passages: Sequence[str]) -> list[Judgement]:
        answers = await gather_answers(
            *(self.client.ask(self.prompt, {"query": query, "passage": p}) for p in passages)
        )
        return [Judgement(a.value if a.ok else None, None, self.name, a.failure) for a in answers]


class LLMPreferenceJudge:
    """Ask the LLM which of two passages answers the query better.

    :param both_orders: Ask (first, second) and (second, first) to control position bias.
    :param require_consistent: With both orders, keep only verdicts that agree; an inconsistent pair gives
        ``winner=None`` (reason ``inconsistent``). Without it the first order decides.
    """

    def __init__(
        self, client: LLMClient, prompt: PromptTemplate, *, both_orders: bool = True, require_consistent: bool = True
    ) -> None:
        self.client = client
        self.prompt = prompt
        self.both_orders = both_orders
        self.require_consistent = require_consistent
        self.name = f"llm:{client.model}:{prompt.label}" + (":both-orders" if both_orders else "")

    async def compare(self, query: str, first: str, second: str) -> Preference:
        asks = [self.client.ask(self.prompt, {"query": query, "passage_1": first, "passage_2": second})]
        if self.both_orders:
            asks.append(self.client.ask(self.prompt, {"query": query, "passage_1": second, "passage_2": first}))
        answers = await gather_answers(*asks)
        failed = [a.failure for a in answers if not a.ok]
        if failed:
            return Preference(None, self.name, reason=f"failed:{failed[0]}")
        forward = 0 if answers[0].value == 1 else 1
        votes: dict[str, Any] = {"ab": answers[0].value}
        if not self.both_orders:
            return Preference(forward, self.name, votes)
        backward = 1 if answers[1].value == 1 else 0  # "passage 1" in the swapped order is `second`
        votes["ba"] = answers[1].value
        if forward == backward:
            return Preference(forward, self.name, votes)
        if self.require_consistent:
            return Preference(None, self.name, votes, reason="inconsistent")
        return Preference(forward, self.name, votes)


# ---------------------------------------------------------------------------------------------- score judges
class ScoreRelevanceJudge:
    """Relevant when a model's score reaches ``threshold``.

    :param scorer: ``scorer(query, passages) -> scores`` (synchronous; run in a worker thread).
    :param threshold: Minimum score for a positive label.
    :param name: Recorded as the judge of every label.
    """

    def __init__(self, scorer: Scorer, *, threshold: float, name: str) -> None:
        self.scorer = scorer
        self.threshold = threshold
        self.name = name

    async def judge(self, query: str, passages: Sequence[str]) -> list[Judgement]:
        if not passages:
            return []
        scores = await asyncio.to_thread(self.scorer, query, list(passages))
        return [Judgement(bool(s >= self.threshold), float(s), self.name) for s in scores]


class ScorePreferenceJudge:
    """Prefer the passage with the higher model score; closer than ``margin`` is a tie (``winner=None``)."""

    def __init__(self, scorer: Scorer, *, margin: float = 0.0, name: str) -> None:
        self.scorer = scorer
        self.margin = margin
        self.name = name

    async def compare(self, query: str, first: str, second: str) -> Preference:
        a, b = await asyncio.to_thread(self.scorer, query, [first, second])
        votes = {"scores": [float(a), float(b)]}
        if abs(a - b) <= self.margin:
            return Preference(None, self.name, votes, reason="tie")
        return Preference(0 if a > b else 1, self.name, votes)


# ------------------------------------------------------------------------------------------------- scorers
class EmbedderScorer:
    """Cosine similarity from our exported ONNX bi-encoder (torch-free).

    The query and the passages are encoded exactly as :class:`SyntrieverTextEmbedder` and
    :class:`SyntrieverDocumentEmbedder` encode them (the shared rules of :mod:`syntriever_haystack.runtime.encode`).
    """

    def __init__(self, model: str | Path, *, precision: Precision = "fp32") -> None:
        self.model_dir = str(model)
        self.precision: Precision = precision
        self._model: OnnxModel | None = None
        self._lock = threading.Lock()

    def __call__(self, query: str, passages: Sequence[str]) -> list[float]:
        with self._lock:
            if self._model is None:
                self._model = load_onnx_model(self.model_dir, precision=self.precision, expected_kind="bi-encoder")
            q = embed_queries(self._model, [query], batch_size=1)[0]
            d = embed_documents(self._model, list(passages))
        q = q / max(float(np.linalg.norm(q)), 1e-12)
        d = d / np.maximum(np.linalg.norm(d, axis=1, keepdims=True), 1e-12)
        return [float(x) for x in d @ q]


class RankerScorer:
    """``sigmoid(logit)`` of our exported ONNX cross-encoder (torch-free), scored as :class:`SyntrieverRanker`
    scores (the shared rules of :mod:`syntriever_haystack.runtime.encode`)."""

    def __init__(self, model: str | Path, *, precision: Precision = "fp32") -> None:
        self.model_dir = str(model)
        self.precision: Precision = precision
        self._model: OnnxModel | None = None
        self._lock = threading.Lock()

    def __call__(self, query: str, passages: Sequence[str]) -> list[float]:
        with self._lock:
            if self._model is None:
                self._model = load_onnx_model(self.model_dir, precision=self.precision, expected_kind="cross-encoder")
            scores = score_documents(self._model, query, list(passages), scale_score=True, batch_size=16)
        return [float(s) for s in scores]


# ---------------------------------------------------------------------------------------------------- specs
def _scorer(spec: JudgeSpec) -> Scorer:
    spec.check()
    assert spec.model is not None
    if spec.kind == "embedder":
        return EmbedderScorer(spec.model, precision=spec.precision)
    return RankerScorer(spec.model, precision=spec.precision)


def relevance_judge(
    spec: JudgeSpec | str, *, client: LLMClient | None = None, prompt: PromptTemplate | None = None
) -> RelevanceJudge:
    """Build a relevance judge from ``spec`` (a :class:`JudgeSpec`, or its text: see the module docstring)."""
    judge = JudgeSpec.coerce(spec, purpose="relevance")
    if judge.is_llm:
        if client is None or prompt is None:
            raise JudgeSpecError("The 'llm' judge needs an LLM; configure one with --llm.")
        return LLMRelevanceJudge(client, prompt)
    threshold = 0.5 if judge.threshold is None else judge.threshold
    return ScoreRelevanceJudge(_scorer(judge), threshold=threshold, name=f"{judge.kind}:{judge.model}@{threshold:g}")


def preference_judge(
    spec: JudgeSpec | str,
    *,
    client: LLMClient | None = None,
    prompt: PromptTemplate | None = None,
    both_orders: bool = True,
    require_consistent: bool = True,
) -> PreferenceJudge:
    """Build a preference judge from ``spec`` (``margin=`` instead of ``threshold=`` for score judges)."""
    judge = JudgeSpec.coerce(spec, purpose="preference")
    if judge.is_llm:
        if client is None or prompt is None:
            raise JudgeSpecError("The 'llm' judge needs an LLM; configure one with --llm.")
        return LLMPreferenceJudge(client, prompt, both_orders=both_orders, require_consistent=require_consistent)
    margin = 0.0 if judge.margin is None else judge.margin
    return ScorePreferenceJudge(_scorer(judge), margin=margin, name=f"{judge.kind}:{judge.model}~{margin:g}")
