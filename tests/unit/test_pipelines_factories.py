"""Indexing and hybrid query pipelines with tiny exported (ONNX) models: in-memory end to end, OpenSearch offline."""

from __future__ import annotations

import json
import shutil
import uuid
from pathlib import Path

import pytest
from haystack import Document
from haystack.components.joiners import DocumentJoiner
from haystack.components.joiners.document_joiner import JoinMode
from haystack.components.retrievers.in_memory import InMemoryEmbeddingRetriever
from haystack.document_stores.in_memory import InMemoryDocumentStore
from haystack_integrations.components.retrievers.opensearch import (
    OpenSearchBM25Retriever,
    OpenSearchEmbeddingRetriever,
)
from haystack_integrations.document_stores.opensearch import OpenSearchDocumentStore

from haystack_integrations.components.joiners.syntriever import SyntrieverScoreFusionJoiner
from haystack_integrations.components.retrievers.syntriever import SyntrieverBM25Retriever
from syntriever_haystack.errors import ExportedModelError, SyntrieverError
from syntriever_haystack.opensearch.connection import OpenSearchConnection
from syntriever_haystack.opensearch.index import ensure_index
from syntriever_haystack.opensearch.store import opensearch_document_store
from syntriever_haystack.runtime.metadata import ModelMetadata
from syntriever_haystack.serve.memory_store import (
    check_memory_store,
    load_memory_store,
    memory_document_store,
    save_memory_store,
    store_record,
)
from syntriever_haystack.serve.pipelines import (
    indexing_inputs,
    indexing_pipeline,
    load_pipeline,
    query_pipeline,
    run_query,
    save_pipeline,
)
from tests.support.fake_opensearch import URL, FakeCluster, hit

DOCS = [
    Document(id="aspirin", content="aspirin reduce the risk of heart attack in patients", meta={"title": "Aspirin"}),
    Document(id="iron", content="iron deficiency and blood loss cause anaemia", meta={"title": "Iron"}),
    Document(id="paris", content="paris is the capital city of france", meta={"title": "Paris"}),
    Document(id="brain", content="brain tumour in adults and children", meta={"title": "Brain"}),
    Document(id="fox", content="the quick brown fox jumps over the lazy dog", meta={"title": "Fox"}),
]


def _store(bi: Path) -> InMemoryDocumentStore:
    return memory_document_store(ModelMetadata.load(bi), index=f"test-{uuid.uuid4().hex}")


def _indexed(bi: Path) -> InMemoryDocumentStore:
    store = _store(bi)
    pipeline = indexing_pipeline(store, bi, split_length=8, split_overlap=2)
    pipeline.run(indexing_inputs(pipeline, DOCS))
    return store


def test_memory_store_similarity_follows_the_model(exported_bi_encoder: Path) -> None:
    assert _store(exported_bi_encoder).embedding_similarity_function == "dot_product"  # tiny model normalises


def test_indexing_splits_embeds_and_overwrites(exported_bi_encoder: Path) -> None:
    store = _store(exported_bi_encoder)
    pipeline = indexing_pipeline(store, exported_bi_encoder, split_length=8, split_overlap=2)
    assert list(dict(pipeline.walk())) == ["splitter", "embedder", "writer"]
    written = pipeline.run(indexing_inputs(pipeline, DOCS))["writer"]["documents_written"]
    chunks = store.filter_documents()
    assert written == len(chunks) == 7  # the two 9-word documents become 2 chunks of ≤ 8 words each
    assert sorted(c.meta["split_id"] for c in chunks if c.meta["source_id"] == "aspirin") == [0, 1]
    assert all(len(c.embedding or []) == 32 and c.meta["title"] for c in chunks)
    pipeline.run(indexing_inputs(pipeline, DOCS))  # same chunks again: overwritten, not duplicated
    assert store.count_documents() == 7
    unsplit = indexing_pipeline(_store(exported_bi_encoder), exported_bi_encoder, split_by=None)
    assert "splitter" not in dict(unsplit.walk())
    assert indexing_inputs(unsplit, DOCS) == {"embedder": {"documents": DOCS}}


def test_hybrid_query_finds_the_obvious_document(exported_bi_encoder: Path) -> None:
    store = _indexed(exported_bi_encoder)
    pipeline = query_pipeline(store, exported_bi_encoder, top_k=3)
    components = dict(pipeline.walk())
    assert isinstance(components["bm25_retriever"], SyntrieverBM25Retriever)  # the evaluation's bm25
    assert isinstance(components["embedding_retriever"], InMemoryEmbeddingRetriever)
    assert isinstance(components["joiner"], SyntrieverScoreFusionJoiner)  # the default: score fusion
    assert "ranker" not in components
    rrf = query_pipeline(store, exported_bi_encoder, top_k=3, fusion="rrf")
    joiner = dict(rrf.walk())["joiner"]
    assert isinstance(joiner, DocumentJoiner)
    assert joiner.join_mode == JoinMode.RECIPROCAL_RANK_FUSION
    for served in (pipeline, rrf):
        for query, expected in (("iron deficiency anaemia", "iron"), ("capital city of france", "paris")):
            results = run_query(served, query)
            assert len(results) == 3
            assert results[0].meta["source_id"] == expected, [d.content for d in results]
    with pytest.raises(SyntrieverError, match="fusion 'max' is not one of dbsf, rrf"):
        query_pipeline(store, exported_bi_encoder, fusion="max")  # type: ignore[arg-type]


def test_reranked_query(exported_bi_encoder: Path, exported_cross_encoder: Path) -> None:
    store = _indexed(exported_bi_encoder)
    pipeline = query_pipeline(store, exported_bi_encoder, exported_cross_encoder, top_k=2, candidates=4)
    assert dict(pipeline.walk())["joiner"].top_k == 4
    results = run_query(pipeline, "heart attack risk")
    assert len(results) == 2
    assert results[0].score >= results[1].score
    assert all(0.0 <= d.score <= 1.0 for d in results)


def test_yaml_round_trip_gives_the_same_results(
    exported_bi_encoder: Path, exported_cross_encoder: Path, tmp_path: Path
) -> None:
    store = _store(exported_bi_encoder)
    indexing = indexing_pipeline(store, exported_bi_encoder, split_length=8, split_overlap=2)
    indexing.run(indexing_inputs(indexing, DOCS))
    before = {d.id: d.embedding for d in store.filter_documents()}
    loaded_indexing = load_pipeline(save_pipeline(indexing, tmp_path / "indexing.yaml"))
    store.delete_all_documents()
    loaded_indexing.run(indexing_inputs(loaded_indexing, DOCS))  # its store shares the index: same documents
    assert {d.id: d.embedding for d in store.filter_documents()} == before

    query = query_pipeline(store, exported_bi_encoder, exported_cross_encoder, top_k=3)
    yaml_text = save_pipeline(query, tmp_path / "query.yaml").read_text()
    assert "SyntrieverScoreFusionJoiner" in yaml_text
    assert "SyntrieverRanker" in yaml_text
    loaded_query = load_pipeline(tmp_path / "query.yaml")
    for text in ("aspirin heart attack", "brain tumour"):
        original = [(d.id, d.score) for d in run_query(query, text)]
        assert [(d.id, d.score) for d in run_query(loaded_query, text)] == original


def test_yaml_holds_no_secret_values(exported_bi_encoder: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENSEARCH_USERNAME", "search-admin")
    monkeypatch.setenv("OPENSEARCH_PASSWORD", "Sup3r-s3cret-pw")
    metadata = ModelMetadata.load(exported_bi_encoder)
    connection = OpenSearchConnection(url="https://search.internal:9200")
    store = opensearch_document_store(connection, "docs", metadata, ensure=False)
    for pipeline in (indexing_pipeline(store, exported_bi_encoder), query_pipeline(store, exported_bi_encoder)):
        text = pipeline.dumps()
        assert "Sup3r-s3cret-pw" not in text
        assert "search-admin" not in text
        assert "OPENSEARCH_PASSWORD" in text
        assert "OPENSEARCH_USERNAME" in text
        assert "verify_certs: true" in text
        loaded = type(pipeline).loads(text)  # loads without connecting (the store connects lazily)
        assert loaded.to_dict()["components"] == pipeline.to_dict()["components"]


def test_opensearch_hybrid_query_against_a_fake_cluster(exported_bi_encoder: Path) -> None:
    """The OpenSearch branch end to end, offline: real retrievers, real client, scripted hits, score fusion."""
    bm25_hits = [hit("a", "aspirin heart", 9.0), hit("b", "heart attack", 7.0), hit("c", "paris", 1.0)]
    knn_hits = [hit("b", "heart attack", 1.9), hit("d", "blood", 1.5), hit("a", "aspirin heart", 1.4)]
    cluster = FakeCluster(search=lambda index, body: knn_hits if "knn" in json.dumps(body) else bm25_hits)
    metadata = ModelMetadata.load(exported_bi_encoder)
    ensure_index(cluster.client(), "docs", metadata)
    created = len(cluster.requests)
    store = OpenSearchDocumentStore(
        hosts=[URL], index="docs", http_auth=None, create_index=False, connection_class=cluster.connection_class()
    )
    pipeline = query_pipeline(store, exported_bi_encoder, top_k=3, top_k_bm25=3, top_k_dense=3)
    components = dict(pipeline.walk())
    assert isinstance(components["bm25_retriever"], OpenSearchBM25Retriever)
    assert isinstance(components["embedding_retriever"], OpenSearchEmbeddingRetriever)
    results = run_query(pipeline, "aspirin heart attack")
    # b: 0.565 (BM25) + 0.731 (k-NN), a: 0.663 + 0.347, d: 0.424 (each list mapped by its mean ± 3 std)
    assert [d.id for d in results] == ["b", "a", "d"]
    assert [d.score for d in results] == pytest.approx([1.296, 1.010, 0.424], abs=2e-3)
    searches = [r.body for r in cluster.requests if r.path == "/docs/_search"]
    knn = next(b for b in searches if "knn" in json.dumps(b))
    assert knn["query"]["bool"]["must"][0]["knn"]["embedding"]["k"] == 3
    assert len(knn["query"]["bool"]["must"][0]["knn"]["embedding"]["vector"]) == 32
    bm25 = next(b for b in searches if "multi_match" in json.dumps(b))
    assert bm25["query"]["bool"]["must"][0]["multi_match"]["query"] == "aspirin heart attack"
    assert [(r.method, r.path) for r in cluster.requests[created:]] == [
        ("HEAD", "/docs"),  # the store's own lazy initialisation: exists + mapping, nothing written
        ("GET", "/docs/_mapping"),
        ("POST", "/docs/_search"),
        ("POST", "/docs/_search"),
    ]


def test_memory_store_file_round_trip_and_check(exported_bi_encoder: Path, tmp_path: Path) -> None:
    metadata = ModelMetadata.load(exported_bi_encoder)
    store = _indexed(exported_bi_encoder)
    path = save_memory_store(store, tmp_path / "s" / "store.json", store_record(metadata, model_name="tiny"))
    loaded, record = load_memory_store(path)
    assert loaded.count_documents() == store.count_documents()
    assert record["dimension"] == 32
    assert check_memory_store(loaded, record, metadata, label="f").space_type == "innerproduct"
    with pytest.raises(SyntrieverError, match=r"f holds 16-d vectors, the model makes 32-d vectors.*\(tiny\)"):
        check_memory_store(loaded, {**record, "dimension": 16}, metadata, label="f")
    with pytest.raises(SyntrieverError, match="does not exist"):
        load_memory_store(tmp_path / "missing.json")


def test_store_similarity_that_would_change_rankings_is_refused(exported_bi_encoder: Path, tmp_path: Path) -> None:
    dot_model = tmp_path / "dot-model"
    shutil.copytree(exported_bi_encoder, dot_model)
    meta = json.loads((dot_model / "syntriever.json").read_text())
    meta.update(normalize=False, similarity="dot_product")
    (dot_model / "syntriever.json").write_text(json.dumps(meta))
    cosine_store = InMemoryDocumentStore(embedding_similarity_function="cosine")
    with pytest.raises(SyntrieverError, match='embedding_similarity_function="dot_product"'):
        indexing_pipeline(cosine_store, dot_model)
    # A normalising model ranks identically under both: accepted.
    indexing_pipeline(cosine_store, exported_bi_encoder)


def test_wrong_models_and_stores_are_refused(exported_bi_encoder: Path, exported_cross_encoder: Path) -> None:
    store = _store(exported_bi_encoder)
    with pytest.raises(ExportedModelError, match="bi-encoder"):
        indexing_pipeline(store, exported_cross_encoder)
    with pytest.raises(ExportedModelError, match="needs an exported cross-encoder"):
        query_pipeline(store, exported_bi_encoder, exported_bi_encoder)
    with pytest.raises(SyntrieverError, match="unsupported document store dict"):
        query_pipeline({}, exported_bi_encoder)
    with pytest.raises(SyntrieverError, match="top_k must be at least 1"):
        query_pipeline(store, exported_bi_encoder, top_k=0)
