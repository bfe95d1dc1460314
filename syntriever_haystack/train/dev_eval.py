"""Dev evaluation during training, with the project's own metrics (:mod:`syntriever_haystack.evaluate`).

- :class:`RetrievalDevSet`: held-out queries against a corpus (their gold passages plus a fixed random sample
  of the rest, so one evaluation costs seconds to a minute on CPU, not a full-corpus encoding).
- :class:`GroupDevSet`: held-out LCE groups for a reranker: is the positive ranked above its hard negatives?
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from syntriever_haystack.data.beir import BeirDataset
from syntriever_haystack.evaluate.metrics import score_run

__all__ = ["GroupDevSet", "RetrievalDevSet"]

DEV_METRICS = ("nDCG@10", "R@100", "RR@10")


@dataclass
class RetrievalDevSet:
    """Queries, a corpus and relevance judgments to score a bi-encoder on."""

    queries: dict[str, str]
    corpus: dict[str, str]
    qrels: dict[str, dict[str, int]]

    @classmethod
    def from_dataset(
        cls, dataset: BeirDataset, query_ids: Sequence[str], *, corpus_size: int = 2000, seed: int = 0
    ) -> RetrievalDevSet:
        """Dev queries of ``dataset`` against their gold passages plus ``corpus_size`` sampled other passages."""
        texts = dict(zip(dataset.doc_ids, dataset.doc_texts(), strict=True))
        queries = {q: dataset.queries[q] for q in query_ids if q in dataset.queries}
        qrels = {q: dict(dataset.qrels[q]) for q in queries if q in dataset.qrels}
        gold = {d for judged in qrels.values() for d, g in judged.items() if g > 0 and d in texts}
        others = sorted(set(texts) - gold)
        random.Random(seed).shuffle(others)
        chosen = sorted(gold) + others[: max(0, corpus_size - len(gold))]
        return cls(queries=queries, corpus={d: texts[d] for d in chosen}, qrels=qrels)

    def evaluate(self, encode: Callable[[list[str], bool], np.ndarray], *, depth: int = 100) -> dict[str, float]:
        """Encode (``encode(texts, is_query)`` → L2-normalised rows), rank by cosine, return the mean metrics."""
        if not self.queries:
            return {}
        doc_ids = list(self.corpus)
        doc_vectors = encode([self.corpus[d] for d in doc_ids], False)
        query_ids = list(self.queries)
        query_vectors = encode([self.queries[q] for q in query_ids], True)
        scores = query_vectors @ doc_vectors.T
        depth = min(depth, len(doc_ids))
        run: dict[str, dict[str, float]] = {}
        for row, query_id in enumerate(query_ids):
            top = np.argpartition(-scores[row], depth - 1)[:depth]
            run[query_id] = {doc_ids[i]: float(scores[row, i]) for i in top}
        result = score_run(run, self.qrels, list(DEV_METRICS), query_ids=query_ids)
        return {f"dev_{name}": value for name, value in result.means.items()}


@dataclass
class GroupDevSet:
    """Held-out reranker groups: a query, its positive, its hard negatives."""

    groups: list[tuple[str, str, list[str]]]

    def evaluate(self, score: Callable[[list[tuple[str, str]]], np.ndarray]) -> dict[str, float]:
        """MRR of the positive within its group and the fraction of groups where it comes first."""
        if not self.groups:
            return {}
        pairs = [(q, d) for q, pos, negs in self.groups for d in [pos, *negs]]
        logits = score(pairs)
        offset, reciprocal, top1 = 0, [], []
        for _, _, negs in self.groups:
            group = logits[offset : offset + 1 + len(negs)]
            offset += 1 + len(negs)
            rank = 1 + int(np.sum(group[1:] > group[0]))
            reciprocal.append(1.0 / rank)
            top1.append(float(rank == 1))
        return {"dev_group_MRR": float(np.mean(reciprocal)), "dev_group_P@1": float(np.mean(top1))}

    @staticmethod
    def from_examples(examples: Sequence[tuple[str, str, Sequence[str]]], *, max_negatives: int = 15) -> GroupDevSet:
        return GroupDevSet([(q, p, list(n)[:max_negatives]) for q, p, n in examples])
