"""Index management and hybrid pipelines against a real OpenSearch (``opensearch_url``: skips without one)."""

from __future__ import annotations

import dataclasses
import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from haystack import Document

from syntriever_haystack.errors import SyntrieverError
from syntriever_haystack.opensearch.connection import OpenSearchConnection
from syntriever_haystack.opensearch.index import IndexMismatchError, ensure_index, index_spec, reindex_via_alias
from syntriever_haystack.opensearch.store import opensearch_document_store
from syntriever_haystack.runtime.metadata import ModelMetadata
from syntriever_haystack.serve.pipelines import indexing_inputs, indexing_pipeline, query_pipeline, run_query

pytestmark = pytest.mark.integration

DOCS = [
    Document(id="aspirin", content="aspirin reduce the risk of heart attack in patients", meta={"title": "Aspirin"}),
    Document(id="iron", content="iron deficiency and blood loss cause anaemia", meta={"title": "Iron"}),
    Document(id="paris", content="paris is the capital city of france", meta={"title": "Paris"}),
    Document(id="brain", content="brain tumour in adults and children", meta={"title": "Brain"}),
]


@pytest.fixture
def connection(opensearch_url: str) -> OpenSearchConnection:
    return OpenSearchConnection(url=opensearch_url)


@pytest.fixture
def names(connection: OpenSearchConnection) -> Iterator[str]:
    """A unique name prefix; every index and alias starting with it is deleted afterwards."""
    prefix = f"syntriever-test-{uuid.uuid4().hex[:12]}"
    yield prefix
    client = connection.client()
    for name in client.indices.get(index=f"{prefix}*"):
        client.indices.delete(index=name)


def _fill(connection: OpenSearchConnection, metadata: ModelMetadata, model: Path, docs: list[Document]) -> Any:
    def fill(name: str) -> None:
        store = opensearch_document_store(connection, name, metadata, ensure=False, create=False)
        pipeline = indexing_pipeline(store, model, split_by=None)
        pipeline.run(indexing_inputs(pipeline, docs))

    return fill


def test_index_and_hybrid_query(connection: OpenSearchConnection, names: str, exported_bi_encoder: Path) -> None:
    metadata = ModelMetadata.load(exported_bi_encoder)
    store = opensearch_document_store(connection, names, metadata, replicas=0)
    mapping = connection.client().indices.get_mapping(index=names)[names]["mappings"]
    assert mapping["properties"]["embedding"]["dimension"] == 32
    assert mapping["properties"]["embedding"]["method"]["space_type"] == "innerproduct"
    assert mapping["_meta"]["syntriever"]["dimension"] == 32
    indexing = indexing_pipeline(store, exported_bi_encoder, split_length=8, split_overlap=2)
    written = indexing.run(indexing_inputs(indexing, DOCS))["writer"]["documents_written"]
    assert store.count_documents() == written == 5  # the 9-word aspirin document makes 2 chunks
    results = run_query(query_pipeline(store, exported_bi_encoder, top_k=3), "iron deficiency anaemia")
    assert results[0].meta["source_id"] == "iron"
    assert results[0].meta["title"] == "Iron"


def test_mismatch_is_refused_before_writing(
    connection: OpenSearchConnection, names: str, exported_bi_encoder: Path
) -> None:
    metadata = ModelMetadata.load(exported_bi_encoder)
    client = connection.client()
    client.indices.create(index=names, body=index_spec(dataclasses.replace(metadata, embedding_dim=48)))
    with pytest.raises(IndexMismatchError, match=f"index '{names}' has dimension 48, the model makes 32-d vectors"):
        opensearch_document_store(connection, names, metadata)
    assert client.count(index=names)["count"] == 0
    status = ensure_index(client, names, metadata, recreate=True)
    assert status.created


def test_alias_reindexing(connection: OpenSearchConnection, names: str, exported_bi_encoder: Path) -> None:
    metadata = ModelMetadata.load(exported_bi_encoder)
    client = connection.client()
    alias = f"{names}-live"
    first = reindex_via_alias(
        client, alias, metadata, _fill(connection, metadata, exported_bi_encoder, DOCS[:2]), replicas=0
    )
    second = reindex_via_alias(
        client,
        alias,
        metadata,
        _fill(connection, metadata, exported_bi_encoder, DOCS),
        delete_old=True,
        replicas=0,
    )
    assert second.previous == (first.index,)
    assert second.deleted == (first.index,)
    assert second.documents == 4
    assert set(client.indices.get_alias(name=alias)) == {second.index}
    assert not client.indices.exists(index=first.index)
    store = opensearch_document_store(connection, alias, metadata, create=False)
    results = run_query(query_pipeline(store, exported_bi_encoder, top_k=2), "capital city of france")
    assert results[0].id == "paris"

    ensure_index(client, names, metadata, replicas=0)  # a concrete index cannot be swapped without asking
    with pytest.raises(SyntrieverError, match="is a concrete index"):
        reindex_via_alias(client, names, metadata, _fill(connection, metadata, exported_bi_encoder, DOCS))


def test_cli_index_and_search(
    opensearch_url: str,
    names: str,
    exported_bi_encoder: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    from syntriever_haystack.cli import main

    beir = tmp_path / "beir"
    beir.mkdir()
    rows = [{"_id": d.id, "title": d.meta["title"], "text": d.content} for d in DOCS]
    (beir / "corpus.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    common = ["--store", "opensearch", "--opensearch-url", opensearch_url, "--index", names]
    index = ["index", "--model", str(exported_bi_encoder), "--dataset", str(beir), "--quiet", "--replicas", "0"]
    assert main([*index, *common]) == 0
    assert "indexed 4 documents as 4 chunks" in capsys.readouterr().out
    search = ["search", "brain tumour", "--model", str(exported_bi_encoder), "--json", *common]
    assert main(search) == 0
    assert json.loads(capsys.readouterr().out)["results"][0]["id"] == "brain"
