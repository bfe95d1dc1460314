"""The syntriever store's dense scores: one cached float32 matrix, the same results as Haystack's store."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from haystack import Document
from haystack.document_stores.in_memory import InMemoryDocumentStore

from haystack_integrations.document_stores.syntriever import SyntrieverInMemoryDocumentStore


def _documents(n: int = 40, dim: int = 8, seed: int = 0) -> list[Document]:
    rng = np.random.default_rng(seed)
    return [
        Document(id=f"d{i}", content=f"text {i}", meta={"even": i % 2 == 0}, embedding=rng.normal(size=dim).tolist())
        for i in range(n)
    ]


@pytest.mark.parametrize("similarity", ["cosine", "dot_product"])
@pytest.mark.parametrize("scale_score", [False, True])
def test_scores_and_ranking_equal_haystacks(tmp_path: Path, similarity: str, scale_score: bool) -> None:
    docs = _documents()
    ours = SyntrieverInMemoryDocumentStore(
        path=tmp_path / "s.json", missing="empty", shared=False, embedding_similarity_function=similarity
    )
    plain = InMemoryDocumentStore(embedding_similarity_function=similarity)
    ours.write_documents(docs)
    plain.write_documents(docs)
    query = np.random.default_rng(1).normal(size=8).tolist()
    for filters in (None, {"field": "meta.even", "operator": "==", "value": True}):
        got = ours.embedding_retrieval(query, filters=filters, top_k=15, scale_score=scale_score)
        want = plain.embedding_retrieval(query, filters=filters, top_k=15, scale_score=scale_score)
        assert [d.id for d in got] == [d.id for d in want]
        np.testing.assert_allclose([d.score for d in got], [d.score for d in want], rtol=1e-5, atol=1e-6)


def test_matrix_is_reused_and_rebuilt_when_the_documents_change(tmp_path: Path) -> None:
    store = SyntrieverInMemoryDocumentStore(path=tmp_path / "s.json", missing="empty", shared=False)
    store.write_documents(_documents(10))
    query = [1.0] * 8
    store.embedding_retrieval(query, top_k=3)
    first = store.__dict__["_dense_matrix"][1]
    store.embedding_retrieval(query, top_k=3)
    assert store.__dict__["_dense_matrix"][1] is first  # same documents: the same matrix
    best = Document(id="best", content="x", embedding=[10.0] * 8)
    store.write_documents([best])
    assert store.embedding_retrieval(query, top_k=1)[0].id == "best"  # a new document is searched
    store.delete_documents(["best"])
    assert store.embedding_retrieval(query, top_k=1)[0].id != "best"
