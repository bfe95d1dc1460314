"""Index layout, validation before writes and alias swaps: exact requests through a real client, no sockets."""

from __future__ import annotations

import base64
from typing import Any

import pytest
from haystack import Document
from haystack.utils import Secret
from haystack_integrations.components.retrievers.opensearch import (
    OpenSearchBM25Retriever,
    OpenSearchEmbeddingRetriever,
)
from haystack_integrations.document_stores.opensearch import OpenSearchDocumentStore
from opensearchpy.exceptions import AuthenticationException, AuthorizationException, ConnectionError, SSLError

from syntriever_haystack import __version__
from syntriever_haystack.errors import ExportedModelError, SyntrieverError
from syntriever_haystack.opensearch.connection import OpenSearchConnection
from syntriever_haystack.opensearch.index import (
    IndexMismatchError,
    ensure_index,
    index_spec,
    reindex_via_alias,
)
from syntriever_haystack.opensearch.store import opensearch_document_store
from syntriever_haystack.runtime.metadata import ModelMetadata
from syntriever_haystack.runtime.vector_space import vector_space
from tests.support.fake_opensearch import URL, FakeCluster, hit


def _metadata(*, dim: int = 384, normalize: bool = True, similarity: str = "cosine") -> ModelMetadata:
    return ModelMetadata(
        kind="bi-encoder",
        max_length=128,
        files={"fp32": "onnx/model.onnx"},
        embedding_dim=dim,
        pooling="mean",
        normalize=normalize,
        similarity=similarity,
        source_model="sentence-transformers/all-MiniLM-L6-v2",
    )


MODEL = _metadata()


def _store(cluster: FakeCluster, index: str = "docs", **kwargs: Any) -> OpenSearchDocumentStore:
    return OpenSearchDocumentStore(
        hosts=[URL], index=index, connection_class=cluster.connection_class(), http_auth=None, **kwargs
    )


# --------------------------------------------------------------------------- the index body


def test_index_spec_is_the_exact_create_body() -> None:
    assert index_spec(MODEL, model_name="models/minilm-onnx") == {
        "settings": {"index": {"knn": True}},
        "mappings": {
            "_meta": {
                "syntriever": {
                    "model": "models/minilm-onnx",
                    "source_model": "sentence-transformers/all-MiniLM-L6-v2",
                    "dimension": 384,
                    "space_type": "innerproduct",
                    "similarity": "cosine",
                    "normalize": True,
                    "pooling": "mean",
                    "engine": "lucene",
                    "text_field": "content",
                    "embedding_field": "embedding",
                    "syntriever_haystack": __version__,
                }
            },
            "properties": {
                "embedding": {
                    "type": "knn_vector",
                    "dimension": 384,
                    "method": {
                        "name": "hnsw",
                        "space_type": "innerproduct",
                        "engine": "lucene",
                        "parameters": {"m": 16, "ef_construction": 100},
                    },
                },
                "content": {"type": "text", "analyzer": "english"},
            },
            "dynamic_templates": [{"strings": {"match_mapping_type": "string", "mapping": {"type": "keyword"}}}],
        },
    }


def test_index_spec_matches_the_haystack_store_default_mapping() -> None:
    """Same field names, field types and metadata template as OpenSearchDocumentStore's own default."""
    default = OpenSearchDocumentStore(hosts=[URL], embedding_dim=384)._get_default_mappings()
    ours = index_spec(MODEL)["mappings"]
    assert set(default["properties"]) <= set(ours["properties"])
    for name, mapping in default["properties"].items():
        assert ours["properties"][name]["type"] == mapping["type"]
    assert ours["properties"]["embedding"]["dimension"] == default["properties"]["embedding"]["dimension"]
    assert ours["dynamic_templates"] == default["dynamic_templates"]


@pytest.mark.parametrize(
    ("normalize", "similarity", "space_type", "in_memory"),
    [
        (True, "cosine", "innerproduct", "dot_product"),
        (True, "dot", "innerproduct", "dot_product"),
        (True, "euclidean", "innerproduct", "dot_product"),
        (False, "cosine", "cosinesimil", "cosine"),
        (False, "dot_product", "innerproduct", "dot_product"),
    ],
)
def test_space_type_rule(normalize: bool, similarity: str, space_type: str, in_memory: str) -> None:
    metadata = _metadata(normalize=normalize, similarity=similarity)
    space = vector_space(metadata)
    assert (space.space_type, space.haystack_similarity) == (space_type, in_memory)
    method = index_spec(metadata)["mappings"]["properties"]["embedding"]["method"]
    assert method["space_type"] == space_type


def test_unnormalised_euclidean_is_l2_and_has_no_in_memory_similarity() -> None:
    space = vector_space(_metadata(normalize=False, similarity="euclidean"))
    assert space.space_type == "l2"
    with pytest.raises(ExportedModelError, match="OpenSearch store"):
        _ = space.haystack_similarity


def test_unsupported_models_are_refused() -> None:
    with pytest.raises(ExportedModelError, match="l2"):
        index_spec(_metadata(similarity="manhattan"))
    cross = ModelMetadata(kind="cross-encoder", max_length=64, files={"fp32": "onnx/model.onnx"})
    with pytest.raises(ExportedModelError, match="bi-encoder"):
        index_spec(cross)


def test_engines() -> None:
    faiss = index_spec(MODEL, engine="faiss", m=32, ef_construction=256, ef_search=128, replicas=0, shards=2)
    assert faiss["settings"] == {"index": {"knn": True, "number_of_shards": 2, "number_of_replicas": 0}}
    assert faiss["mappings"]["properties"]["embedding"]["method"] == {
        "name": "hnsw",
        "space_type": "innerproduct",
        "engine": "faiss",
        "parameters": {"m": 32, "ef_construction": 256, "ef_search": 128},
    }
    with pytest.raises(SyntrieverError, match=r"deprecated.*OpenSearch 3\.0"):
        index_spec(MODEL, engine="nmslib")
    with pytest.raises(SyntrieverError, match="unknown k-NN engine"):
        index_spec(MODEL, engine="annoy")
    with pytest.raises(SyntrieverError, match="Faiss setting"):
        index_spec(MODEL, engine="lucene", ef_search=100)
    assert index_spec(MODEL, text_analyzer="standard")["mappings"]["properties"]["content"] == {
        "type": "text",
        "analyzer": "standard",
    }
    assert index_spec(MODEL, text_analyzer=None)["mappings"]["properties"]["content"] == {"type": "text"}


# --------------------------------------------------------------------------- ensure_index


def test_ensure_index_creates_an_absent_index() -> None:
    cluster = FakeCluster()
    status = ensure_index(cluster.client(), "docs", MODEL, model_name="m")
    assert status.created
    assert status.indices == ("docs",)
    assert cluster.calls() == [("HEAD", "/docs"), ("PUT", "/docs")]
    assert cluster.requests[1].body == index_spec(MODEL, model_name="m")


def test_ensure_index_accepts_a_fitting_index_without_writing() -> None:
    cluster = FakeCluster()
    cluster.add_index("docs", index_spec(MODEL, engine="faiss"))
    status = ensure_index(cluster.client(), "docs", MODEL)
    assert not status.created
    assert not status.is_alias
    assert cluster.calls() == [("HEAD", "/docs"), ("GET", "/docs")]


@pytest.mark.parametrize(
    ("existing", "engine", "message"),
    [
        (_metadata(dim=768), None, "index 'docs' has dimension 768, the model makes 384-d vectors"),
        (
            _metadata(normalize=False),
            None,
            "index 'docs' uses space_type 'cosinesimil', the model needs 'innerproduct' (the model L2-normalises",
        ),
        (MODEL, "faiss", "index 'docs' uses the lucene engine, faiss was asked for"),
    ],
)
def test_mismatch_raises_before_any_write(existing: ModelMetadata, engine: str | None, message: str) -> None:
    cluster = FakeCluster()
    cluster.add_index("docs", index_spec(existing))
    with pytest.raises(IndexMismatchError) as caught:
        ensure_index(cluster.client(), "docs", MODEL, engine=engine)
    text = str(caught.value)
    assert message in text
    assert "--index NEW_NAME" in text
    assert "--recreate" in text
    assert "--alias" in text
    assert caught.value.index == "docs"
    assert cluster.writes() == []


def test_document_store_factory_validates_before_any_write() -> None:
    """The pipeline never gets a store for a misfit index: the factory raises first, having only read."""
    cluster = FakeCluster()
    cluster.add_index("docs", index_spec(_metadata(dim=768)))
    with pytest.raises(IndexMismatchError, match="dimension 768"):
        opensearch_document_store(OpenSearchConnection(url=URL), "docs", MODEL, client=cluster.client())
    assert cluster.writes() == []


def test_index_without_vectors_is_refused() -> None:
    cluster = FakeCluster()
    cluster.add_index("docs", {"mappings": {"properties": {"content": {"type": "text"}}}, "settings": {}})
    with pytest.raises(IndexMismatchError, match="has no 'embedding' field"):
        ensure_index(cluster.client(), "docs", MODEL)


def test_alias_is_checked_index_by_index() -> None:
    cluster = FakeCluster()
    cluster.add_index("docs-1", index_spec(_metadata(dim=768)))
    cluster.aliases["docs"] = {"docs-1"}
    with pytest.raises(IndexMismatchError, match=r"index 'docs-1' \(behind alias 'docs'\) has dimension 768"):
        ensure_index(cluster.client(), "docs", MODEL)


def test_recreate_deletes_then_creates() -> None:
    cluster = FakeCluster()
    cluster.add_index("docs", index_spec(_metadata(dim=768)))
    ensure_index(cluster.client(), "docs", MODEL, recreate=True)
    assert cluster.calls() == [("HEAD", "/docs"), ("GET", "/docs"), ("DELETE", "/docs"), ("PUT", "/docs")]
    assert cluster.indices["docs"]["mappings"]["properties"]["embedding"]["dimension"] == 384


def test_recreate_refuses_an_alias_and_create_false_refuses_absent() -> None:
    cluster = FakeCluster()
    cluster.add_index("docs-1", index_spec(MODEL))
    cluster.aliases["docs"] = {"docs-1"}
    with pytest.raises(SyntrieverError, match="is an alias"):
        ensure_index(cluster.client(), "docs", MODEL, recreate=True)
    with pytest.raises(SyntrieverError, match="index 'other' does not exist"):
        ensure_index(cluster.client(), "other", MODEL, create=False)
    assert cluster.writes() == []


# --------------------------------------------------------------------------- alias re-indexing


class _Fill:
    """A ``fill`` callback writing ``n`` documents through OpenSearchDocumentStore (bulk), remembering its targets."""

    def __init__(self, cluster: FakeCluster, n: int = 2) -> None:
        self.cluster = cluster
        self.n = n
        self.filled: list[str] = []

    def __call__(self, name: str) -> None:
        self.filled.append(name)
        store = _store(self.cluster, name, create_index=False)
        store.write_documents([Document(id=f"d{i}", content=f"text {i}", embedding=[0.1] * 384) for i in range(self.n)])


def test_alias_swap_is_one_atomic_request() -> None:
    cluster = FakeCluster()
    cluster.add_index("docs-old", index_spec(MODEL))
    cluster.aliases["docs"] = {"docs-old"}
    fill = _Fill(cluster)
    swap = reindex_via_alias(cluster.client(), "docs", MODEL, fill, new_index="docs-new", delete_old=True)
    assert fill.filled == ["docs-new"]
    assert (swap.index, swap.previous, swap.deleted, swap.documents) == ("docs-new", ("docs-old",), ("docs-old",), 2)
    alias_requests = [r for r in cluster.requests if r.path == "/_aliases"]
    assert len(alias_requests) == 1
    assert alias_requests[0].method == "POST"
    assert alias_requests[0].body == {
        "actions": [
            {"remove": {"index": "docs-old", "alias": "docs"}},
            {"add": {"index": "docs-new", "alias": "docs"}},
        ]
    }
    calls = cluster.calls()
    assert calls[:4] == [("HEAD", "/docs"), ("GET", "/docs"), ("HEAD", "/docs-new"), ("PUT", "/docs-new")]
    assert calls.index(("POST", "/docs-new/_refresh")) < calls.index(("POST", "/_aliases"))
    assert calls[-1] == ("DELETE", "/docs-old")
    assert cluster.requests[3].body == index_spec(MODEL)
    assert cluster.aliases["docs"] == {"docs-new"}
    assert "docs-old" not in cluster.indices


def test_first_alias_has_only_an_add_action_and_a_timestamped_index() -> None:
    cluster = FakeCluster()
    swap = reindex_via_alias(cluster.client(), "docs", MODEL, _Fill(cluster))
    assert swap.index.startswith("docs-2")
    assert swap.previous == ()
    body = next(r.body for r in cluster.requests if r.path == "/_aliases")
    assert body == {"actions": [{"add": {"index": swap.index, "alias": "docs"}}]}


def test_concrete_index_is_not_swapped_unless_asked() -> None:
    cluster = FakeCluster()
    cluster.add_index("docs", index_spec(MODEL))
    with pytest.raises(SyntrieverError, match=r"is a concrete index, not an alias.*--replace-index"):
        reindex_via_alias(cluster.client(), "docs", MODEL, _Fill(cluster))
    assert cluster.writes() == []
    swap = reindex_via_alias(cluster.client(), "docs", MODEL, _Fill(cluster), new_index="docs-v2", replace_index=True)
    body = next(r.body for r in cluster.requests if r.path == "/_aliases")
    assert body == {"actions": [{"add": {"index": "docs-v2", "alias": "docs"}}, {"remove_index": {"index": "docs"}}]}
    assert swap.deleted == ("docs",)
    assert cluster.aliases["docs"] == {"docs-v2"}


def test_failed_or_empty_fill_leaves_the_alias_alone() -> None:
    cluster = FakeCluster()
    cluster.add_index("docs-old", index_spec(MODEL))
    cluster.aliases["docs"] = {"docs-old"}

    def broken(name: str) -> None:
        raise RuntimeError("embedding failed")

    with pytest.raises(RuntimeError, match="embedding failed"):
        reindex_via_alias(cluster.client(), "docs", MODEL, broken, new_index="docs-new")
    with pytest.raises(SyntrieverError, match="is empty"):
        reindex_via_alias(cluster.client(), "docs", MODEL, _Fill(cluster, n=0), new_index="docs-new")
    assert not any(r.path == "/_aliases" for r in cluster.requests)
    assert cluster.aliases["docs"] == {"docs-old"}
    assert "docs-new" not in cluster.indices
    assert cluster.calls().count(("DELETE", "/docs-new")) == 2


# --------------------------------------------------------------------------- Haystack's retrievers on our index


def test_embedding_retriever_knn_body_uses_our_vector_field() -> None:
    cluster = FakeCluster(search=lambda index, body: [hit("d1", "aspirin", 1.9, title="Aspirin")])
    ensure_index(cluster.client(), "docs", MODEL)
    retriever = OpenSearchEmbeddingRetriever(document_store=_store(cluster, create_index=False), top_k=3)
    vector = [0.5] * 384
    docs = retriever.run(query_embedding=vector)["documents"]
    search = cluster.requests[-1]
    assert (search.method, search.path) == ("POST", "/docs/_search")
    assert search.body == {
        "query": {"bool": {"must": [{"knn": {"embedding": {"vector": vector, "k": 3}}}]}},
        "size": 3,
        "_source": {"excludes": ["embedding"]},
    }
    field = next(iter(search.body["query"]["bool"]["must"][0]["knn"]))
    assert cluster.indices["docs"]["mappings"]["properties"][field]["type"] == "knn_vector"
    assert docs[0].id == "d1"
    assert docs[0].meta == {"title": "Aspirin"}
    assert docs[0].score == 1.9


def test_bm25_retriever_searches_our_text_field() -> None:
    cluster = FakeCluster(search=lambda index, body: [hit("d1", "aspirin heart", 3.2)])
    ensure_index(cluster.client(), "docs", MODEL)
    retriever = OpenSearchBM25Retriever(document_store=_store(cluster, create_index=False), top_k=7)
    assert retriever.run(query="aspirin")["documents"][0].content == "aspirin heart"
    body = cluster.requests[-1].body
    assert body["query"]["bool"]["must"][0]["multi_match"]["query"] == "aspirin"
    assert body["size"] == 7
    assert cluster.indices["docs"]["mappings"]["properties"]["content"] == {"type": "text", "analyzer": "english"}


def test_documents_are_written_with_flattened_metadata() -> None:
    cluster = FakeCluster()
    ensure_index(cluster.client(), "docs", MODEL)
    store = _store(cluster, create_index=False)
    store.write_documents([Document(id="d1", content="x", embedding=[0.0] * 384, meta={"title": "T"})])
    source = cluster.documents["docs"]["d1"]
    assert source["content"] == "x"
    assert source["title"] == "T"
    assert len(source["embedding"]) == 384


# --------------------------------------------------------------------------- the connection


def test_connection_auth_comes_from_env_secrets(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENSEARCH_USERNAME", "alice")
    monkeypatch.setenv("OPENSEARCH_PASSWORD", "wonder-land-42")
    connection = OpenSearchConnection(url="https://search.internal:9200")
    assert connection.verify_certs is True
    assert connection.use_ssl
    assert connection.http_auth() == ("alice", "wonder-land-42")
    node = connection.client().transport.connection_pool.connections[0]
    assert node.headers["authorization"] == "Basic " + base64.b64encode(b"alice:wonder-land-42").decode()
    assert node.pool.cert_reqs == "CERT_REQUIRED"
    kwargs = connection.document_store_kwargs()
    assert kwargs["verify_certs"] is True
    assert all(isinstance(s, Secret) for s in kwargs["http_auth"])
    assert "wonder-land-42" not in repr(connection.to_dict())
    assert OpenSearchConnection.from_dict(connection.to_dict()).http_auth() == ("alice", "wonder-land-42")


def test_connection_without_env_has_no_auth_and_bad_urls_fail(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OPENSEARCH_USERNAME", raising=False)
    monkeypatch.delenv("OPENSEARCH_PASSWORD", raising=False)
    assert OpenSearchConnection().http_auth() is None
    assert (
        OpenSearchConnection(url="https://h:9200", verify_certs=False).document_store_kwargs()["verify_certs"] is False
    )
    for url in ("localhost:9200", "ftp://h:21", "http://"):
        with pytest.raises(SyntrieverError, match="not an http"):
            OpenSearchConnection(url=url)
    monkeypatch.setenv("OPENSEARCH_USERNAME", "alice")
    with pytest.raises(SyntrieverError, match="OPENSEARCH_PASSWORD is not"):
        OpenSearchConnection().http_auth()


@pytest.mark.parametrize(
    ("error", "message"),
    [
        (
            ConnectionError("N/A", "refused", None),
            "cannot connect to OpenSearch at http://localhost:9200.*OPENSEARCH_URL",
        ),
        (SSLError("N/A", "self-signed certificate", None), "TLS verification failed.*--ca-certs.*--no-verify-certs"),
        (AuthenticationException(401, "security_exception", {}), "refused the credentials.*OPENSEARCH_PASSWORD"),
        (AuthorizationException(403, "security_exception", {}), "lacks a permission.*403"),
    ],
)
def test_client_errors_name_the_url_and_the_fix(error: Exception, message: str) -> None:
    cluster = FakeCluster(fail_with=error)
    with pytest.raises(SyntrieverError, match=message):
        opensearch_document_store(OpenSearchConnection(url=URL), "docs", MODEL, client=cluster.client())
