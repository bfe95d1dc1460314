"""A loaded store keeps its vectors in one matrix beside the Documents (issue 17: serving memory), and Haystack's BM25
statistics are counted when first read. Everything a user sees must equal a plain Haystack store of the same file."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from haystack import Document
from haystack.document_stores.in_memory import InMemoryDocumentStore
from haystack.document_stores.types import DuplicatePolicy

from haystack_integrations.components.retrievers.syntriever import SyntrieverBM25Retriever
from haystack_integrations.document_stores.syntriever import SyntrieverInMemoryDocumentStore
from haystack_integrations.document_stores.syntriever._vectors import parse_store_json
from syntriever_haystack.serve.memory_store import save_memory_store

WORDS = "heart attack patients anaemia iron blood paris france cells protein gene".split()


def _documents(n: int = 30, dim: int = 6, seed: int = 0) -> list[Document]:
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        text = " ".join(rng.choice(WORDS, size=int(rng.integers(3, 9))))
        vector = rng.normal(size=dim).astype(np.float32).tolist()  # what an ONNX model writes: float32 values
        out.append(Document(id=f"d{i}", content=text, meta={"even": i % 2 == 0}, embedding=vector))
    out.append(Document(id="no-vector", content="iron blood cells"))
    return out


def _file(tmp_path: Path, documents: list[Document], similarity: str = "dot_product") -> Path:
    path = tmp_path / "document_store.json"
    settings = InMemoryDocumentStore(embedding_similarity_function=similarity).to_dict()
    settings["documents"] = [doc.to_dict(flatten=False) for doc in documents]
    path.write_text(json.dumps(settings), encoding="utf-8")
    return path


def test_parse_keeps_every_value_and_detaches_only_top_level_vectors() -> None:
    docs = _documents(5)
    docs.append(Document(id="wide", content="x", embedding=[0.1, 0.2, 1 / 3, 0.4, 0.5, 0.6]))  # not float32-exact
    docs.append(Document(id="nested", content="y", meta={"inner": {"id": "m", "embedding": [1.5, 2.5]}}))
    text = json.dumps({"init_parameters": {}, "documents": [d.to_dict(flatten=False) for d in docs]})
    _, parsed, vectors = parse_store_json(text)
    assert vectors is not None
    assert [d.id for d in parsed] == [d.id for d in docs]
    assert all(d.embedding is None for d in parsed)
    assert parsed[-1].meta == {"inner": {"id": "m", "embedding": [1.5, 2.5]}}  # a meta value is left as it was
    assert vectors.matrix.dtype == np.float64  # 1/3 is not a float32: kept exactly
    for doc, original in zip(parsed, docs, strict=True):
        assert vectors.embedding(doc) == original.embedding


def test_parse_float32_matrix_and_ragged_vectors_stay_lists() -> None:
    docs = _documents(4)
    _, parsed, vectors = parse_store_json(json.dumps({"documents": [d.to_dict(flatten=False) for d in docs]}))
    assert vectors is not None
    assert vectors.matrix.dtype == np.float32
    assert vectors.matrix.shape == (4, 6)
    ragged = [*docs, Document(id="short", content="z", embedding=[1.0, 2.0])]
    _, parsed, vectors = parse_store_json(json.dumps({"documents": [d.to_dict(flatten=False) for d in ragged]}))
    assert vectors is None
    assert [d.embedding for d in parsed] == [d.embedding for d in ragged]


@pytest.mark.parametrize("similarity", ["dot_product", "cosine"])
def test_loaded_store_answers_as_haystacks_store_of_the_same_file(tmp_path: Path, similarity: str) -> None:
    docs = _documents()
    path = _file(tmp_path, docs, similarity)
    ours = SyntrieverInMemoryDocumentStore(path=path, shared=False)
    plain = InMemoryDocumentStore.load_from_disk(str(path))
    assert all(d.embedding is None for d in ours.storage.values())  # the vectors are not in the Documents
    query = np.random.default_rng(3).normal(size=6).tolist()
    for filters in (None, {"field": "meta.even", "operator": "==", "value": True}):
        for scale_score in (False, True):
            got = ours.embedding_retrieval(query, filters=filters, top_k=8, scale_score=scale_score)
            want = plain.embedding_retrieval(query, filters=filters, top_k=8, scale_score=scale_score)
            assert [d.id for d in got] == [d.id for d in want]
            np.testing.assert_allclose([d.score for d in got], [d.score for d in want], rtol=1e-5, atol=1e-6)
            assert all(d.embedding is None for d in got)
        got = ours.embedding_retrieval(query, filters=filters, top_k=8, return_embedding=True)
        want = plain.embedding_retrieval(query, filters=filters, top_k=8, return_embedding=True)
        assert [d.embedding for d in got] == [d.embedding for d in want]
        assert ours.filter_documents(filters) == plain.filter_documents(filters)  # embeddings given back
    for query_text in ("heart attack", "iron blood cells"):
        assert ours.bm25_retrieval(query_text, top_k=5) == plain.bm25_retrieval(query_text, top_k=5)
        bm25 = SyntrieverBM25Retriever(document_store=ours, top_k=5).run(query=query_text)["documents"]
        by_id = {d.id: d for d in docs}
        assert all(d.embedding == by_id[d.id].embedding for d in bm25)


def test_written_documents_keep_their_own_vectors(tmp_path: Path) -> None:
    docs = _documents()
    store = SyntrieverInMemoryDocumentStore(path=_file(tmp_path, docs), shared=False)
    best = Document(id="d3", content="replaced", embedding=[10.0] * 6)  # same id, another object
    store.write_documents([best], policy=DuplicatePolicy.OVERWRITE)
    store.write_documents([Document(id="new", content="n", embedding=[-10.0] * 6)])
    top = store.embedding_retrieval([1.0] * 6, top_k=1, return_embedding=True)[0]
    assert (top.id, top.embedding) == ("d3", [10.0] * 6)
    assert store.embedding_retrieval([-1.0] * 6, top_k=1)[0].id == "new"
    store.delete_documents(["d3", "new"])
    assert {d.id for d in store.embedding_retrieval([1.0] * 6, top_k=100)} == {d.id for d in docs[:-1]} - {"d3"}


def test_saving_a_loaded_store_writes_its_vectors(tmp_path: Path) -> None:
    docs = _documents()
    store = SyntrieverInMemoryDocumentStore(path=_file(tmp_path, docs), shared=False)
    again = save_memory_store(store, tmp_path / "again" / "document_store.json", {})
    saved = json.loads(again.read_text(encoding="utf-8"))["documents"]
    assert [d["embedding"] for d in saved] == [d.embedding for d in docs]
    store.save_to_disk(str(tmp_path / "haystack.json"))
    reloaded = InMemoryDocumentStore.load_from_disk(str(tmp_path / "haystack.json"))
    assert [d.embedding for d in reloaded.filter_documents()] == [d.embedding for d in docs]


def test_bm25_statistics_are_counted_when_first_read(tmp_path: Path) -> None:
    docs = _documents()
    path = _file(tmp_path, docs)
    store = SyntrieverInMemoryDocumentStore(path=path, shared=True, index="lazy-bm25-test")
    try:
        raw = InMemoryDocumentStore._bm25_attr.fget(store)  # type: ignore[attr-defined]
        assert raw == {}  # nothing counted by loading
        plain = InMemoryDocumentStore(embedding_similarity_function="dot_product")
        plain.write_documents(docs)
        assert store._bm25_attr == plain._bm25_attr
        assert store._avg_doc_len == plain._avg_doc_len  # the same running average, to the last bit
        second = SyntrieverInMemoryDocumentStore(path=path, shared=True, index="lazy-bm25-test")
        assert second._freq_vocab_for_idf == plain._freq_vocab_for_idf  # shared: counted once, seen by both
        store.write_documents([Document(id="extra", content="paris gene")])
        plain.write_documents([Document(id="extra", content="paris gene")])
        assert store._freq_vocab_for_idf == plain._freq_vocab_for_idf
        assert store._avg_doc_len == plain._avg_doc_len
    finally:
        store.delete_all_documents()


def test_stores_that_return_no_embedding_filter_and_search_as_haystack(tmp_path: Path) -> None:
    docs = _documents()
    path = _file(tmp_path, docs)
    ours = SyntrieverInMemoryDocumentStore(path=path, shared=False, return_embedding=False)
    plain = InMemoryDocumentStore(return_embedding=False)
    plain.write_documents(InMemoryDocumentStore.load_from_disk(str(path)).filter_documents())
    even = {"field": "meta.even", "operator": "==", "value": True}
    query = [0.3, -1.0, 0.5, 0.1, 2.0, -0.4]
    got = ours.embedding_retrieval(query, filters=even, top_k=5, return_embedding=None)
    want = plain.embedding_retrieval(query, filters=even, top_k=5, return_embedding=None)
    assert [(d.id, d.embedding) for d in got] == [(d.id, d.embedding) for d in want]
    assert len(got) == 5
    assert ours.filter_documents(even) == plain.filter_documents(even)


def test_a_write_before_the_statistics_are_read_counts_each_document_once(tmp_path: Path) -> None:
    docs = _documents()
    ours = SyntrieverInMemoryDocumentStore(path=_file(tmp_path, docs), shared=False)
    plain = InMemoryDocumentStore(embedding_similarity_function="dot_product")
    plain.write_documents(docs)
    extra = Document(id="extra", content="paris gene iron")
    ours.write_documents([extra])  # the first thing that touches the statistics
    plain.write_documents([extra])
    assert ours._freq_vocab_for_idf == plain._freq_vocab_for_idf
    assert ours._avg_doc_len == plain._avg_doc_len
    assert ours.bm25_retrieval("paris gene iron", top_k=5) == plain.bm25_retrieval("paris gene iron", top_k=5)
    ours.delete_documents(["d0"])
    plain.delete_documents(["d0"])
    assert ours._freq_vocab_for_idf == plain._freq_vocab_for_idf


def test_a_plain_store_on_the_index_that_load_memory_store_fills_sees_the_vectors(tmp_path: Path) -> None:
    from syntriever_haystack.serve.memory_store import load_memory_store

    docs = _documents()
    path = _file(tmp_path, docs)
    data = json.loads(path.read_text(encoding="utf-8"))
    data["init_parameters"]["index"] = "plain-shares-it"
    path.write_text(json.dumps(data), encoding="utf-8")
    loaded, _ = load_memory_store(path)
    try:
        plain = InMemoryDocumentStore(index="plain-shares-it")  # e.g. a plain store in an old saved pipeline
        assert plain.count_documents() == len(docs)
        assert [d.embedding for d in plain.filter_documents()] == [d.embedding for d in docs]
        assert len(plain.embedding_retrieval([1.0] * 6, top_k=3)) == 3
        assert plain.bm25_retrieval("heart attack", top_k=3)  # its BM25 statistics are there
    finally:
        loaded.delete_all_documents()


def test_the_kept_vectors_end_when_any_store_empties_the_index(tmp_path: Path) -> None:
    path = _file(tmp_path, _documents())
    ours = SyntrieverInMemoryDocumentStore(path=path, index="emptied-by-plain")
    assert ours._vectors is not None
    InMemoryDocumentStore(index="emptied-by-plain").delete_all_documents()
    assert ours._vectors is None
    assert ours.count_documents() == 0
    ours.write_documents([Document(id="x", content="heart", embedding=[1.0] * 6)])
    assert ours._bm25_attr.keys() == {"x"}  # nothing stale counted
    assert ours.embedding_retrieval([1.0] * 6, top_k=5)[0].id == "x"
    ours.delete_all_documents()


def test_load_from_disk_filters_on_the_embedding_field_and_async(tmp_path: Path) -> None:
    import asyncio

    docs = _documents()
    ours = SyntrieverInMemoryDocumentStore(path=_file(tmp_path, docs), shared=False)
    ours.save_to_disk(str(tmp_path / "saved.json"))
    again = SyntrieverInMemoryDocumentStore.load_from_disk(str(tmp_path / "saved.json"))
    assert [d.embedding for d in again.stored_documents()] == [d.embedding for d in docs]
    has_vector = {"field": "embedding", "operator": "!=", "value": None}
    assert ours.count_documents_by_filter(has_vector) == len(docs) - 1
    assert {d.id for d in ours.filter_documents(has_vector)} == {d.id for d in docs[:-1]}
    assert ours.delete_by_filter({"field": "embedding", "operator": "==", "value": None}) == 1  # only "no-vector"
    assert ours.count_documents() == len(docs) - 1
    got = asyncio.run(ours.embedding_retrieval_async([1.0] * 6, top_k=3, return_embedding=True))
    want = ours.embedding_retrieval([1.0] * 6, top_k=3, return_embedding=True)
    assert got == want
    assert all(d.embedding is not None for d in got)


def test_float64_vectors_search_and_come_back_exactly(tmp_path: Path) -> None:
    rng = np.random.default_rng(5)
    docs = [Document(id=f"w{i}", content=f"t {i}", embedding=rng.normal(size=4).tolist()) for i in range(12)]
    path = _file(tmp_path, docs)
    ours = SyntrieverInMemoryDocumentStore(path=path, shared=False)
    plain = InMemoryDocumentStore.load_from_disk(str(path))
    query = rng.normal(size=4).tolist()
    got = ours.embedding_retrieval(query, top_k=12, return_embedding=True)
    want = plain.embedding_retrieval(query, top_k=12, return_embedding=True)
    assert [(d.id, d.embedding) for d in got] == [(d.id, d.embedding) for d in want]


def test_meta_values_named_embedding_are_not_converted() -> None:
    meta = {"inner": {"id": "m", "embedding": ["1", "2"]}, "flags": {"id": "f", "embedding": [True, 3]}}
    text = json.dumps({"documents": [Document(id="a", content="x", meta=meta, embedding=[0.5, 0.25]).to_dict()]})
    _, parsed, vectors = parse_store_json(text)
    assert parsed[0].meta == meta
    assert vectors is not None
    assert vectors.embedding(parsed[0]) == [0.5, 0.25]
