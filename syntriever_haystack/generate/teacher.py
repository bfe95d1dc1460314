"""A label-free teacher for margin-MSE distillation (GPL, Wang et al. 2022): an ensemble of the base dense model and
BM25, which on corpora like SciFact ranks better than the dense model alone (hybrid > zero-shot), so distilling its
score margins gives the student a signal stronger than itself.

``teacher(q, d) = cos_base(q, d) + bm25_weight · bm25(q, d) / max_d' bm25(q, d')`` — on the cosine's scale, which
is what the student's margin is measured on.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import numpy as np

from syntriever_haystack.data.beir import Passage
from syntriever_haystack.evaluate.systems import EmbeddingCache

__all__ = ["ensemble_teacher"]


def ensemble_teacher(
    queries: Mapping[str, str],
    pairs: Mapping[str, Iterable[str]],
    corpus: Mapping[str, Passage],
    *,
    base_model: str,
    precision: str,
    cache: EmbeddingCache,
    include_title: bool = True,
    bm25_weight: float = 0.5,
    progress: bool = False,
    corpus_name: str = "corpus",
) -> dict[str, dict[str, float]]:
    """Teacher scores ``{query id: {doc id: score}}`` for the ``pairs`` (query id → the documents to score).

    :param base_model: The exported base model folder (its int8/fp32 ONNX file, the evaluation's embeddings cache).
    :param corpus_name: The dataset's name: with the corpus it keys the cached corpus embeddings (shared with the
        evaluation and the gate).
    """
    from syntriever_haystack.data.beir import BeirDataset
    from syntriever_haystack.evaluate.dense import onnx_vectors
    from syntriever_haystack.evaluate.texts import SplitTexts
    from syntriever_haystack.runtime.bm25 import BM25Index, BM25Params, tokenize
    from syntriever_haystack.specs import SystemSpec

    query_ids = [q for q in queries if q in pairs]
    dataset = BeirDataset(
        name=corpus_name,
        path=None,
        split="synthetic",
        corpus=dict(corpus),
        queries={q: queries[q] for q in query_ids},
        qrels={},
    )
    texts = SplitTexts.from_dataset(dataset, include_title=include_title)  # the evaluation's cache key
    doc_ids, doc_texts = texts.doc_ids, texts.doc_texts
    stage = SystemSpec.parse(f"dense:{base_model}?precision={precision}").first_stage
    # Training margins, not served vectors: the queries are batched.
    doc_vectors, query_vectors, _ = onnx_vectors(stage, texts, cache, show_progress=progress, query_batch_size=32)
    params = BM25Params()
    index = BM25Index.build(doc_texts, params)
    row = {d: i for i, d in enumerate(doc_ids)}
    out: dict[str, dict[str, float]] = {}
    for qi, query_id in enumerate(query_ids):
        wanted = [d for d in dict.fromkeys(pairs[query_id]) if d in row]
        if not wanted:
            continue
        bm25 = index.scores(tokenize([queries[query_id]], params)[0])
        top = float(bm25.max()) if bm25.size and bm25.max() > 0 else 1.0
        columns = np.asarray([row[d] for d in wanted])
        dense = doc_vectors[columns] @ query_vectors[qi]
        lexical = bm25[columns] / top
        out[query_id] = {d: float(s) for d, s in zip(wanted, dense + bm25_weight * lexical, strict=True)}
    return out
