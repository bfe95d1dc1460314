"""End to end in a real OpenSearch: register + deploy the tiny exported models with ML Commons, embed documents
with an ingest pipeline, retrieve with a ``neural`` query and rerank with the ``rerank`` search processor.

Needs OpenSearch (``OPENSEARCH_URL`` or Docker, see tests/integration/opensearch_service.py); skips otherwise.
The cluster's ML Commons settings are changed to the development ones (a test cluster only).
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from haystack import Document

from syntriever_haystack import SyntrieverDocumentEmbedder, SyntrieverRanker, SyntrieverTextEmbedder
from syntriever_haystack.export.ml_commons_bundle import build_bundle
from syntriever_haystack.opensearch.connection import OpenSearchConnection
from syntriever_haystack.opensearch.ml_commons import (
    DeployedModel,
    MLCommonsClient,
    ingest_pipeline_body,
    neural_index_body,
    search_body,
    search_pipeline_body,
)

pytestmark = pytest.mark.integration

DOCS = [
    "iron deficiency and blood loss cause anaemia",
    "aspirin may reduce the risk of heart attack in adults",
    "the capital city of france is paris",
    "vitamin levels and bone fractures in elderly patients",
]
QUERY = "what causes anaemia"


@pytest.fixture(scope="module")
def ml(opensearch_url: str) -> MLCommonsClient:
    client = MLCommonsClient(OpenSearchConnection(url=opensearch_url, timeout=120).client(), poll_interval=1.0)
    client.apply_dev_cluster_settings()
    return client


@pytest.fixture(scope="module")
def deployed(
    ml: MLCommonsClient,
    exported_bi_encoder: Path,
    exported_cross_encoder: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[dict[str, DeployedModel]]:
    folder = tmp_path_factory.mktemp("mlc-bundles")
    group_id = ml.register_model_group(f"syntriever-test-{uuid.uuid4().hex[:8]}")
    models: dict[str, DeployedModel] = {}
    try:
        for kind, export in (("retriever", exported_bi_encoder), ("reranker", exported_cross_encoder)):
            bundle = build_bundle(export, folder / f"{kind}.zip", chunk_size=50_000)  # several chunks
            models[kind] = ml.register_and_deploy(bundle, model_group_id=group_id, timeout=600)
        yield models
    finally:
        for model in models.values():
            for cleanup in (ml.undeploy, ml.delete_model):
                with contextlib.suppress(Exception):
                    cleanup(model.model_id)


def _cos(a: Any, b: Any) -> float:
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


def test_deployed_models_predict_like_our_components(
    ml: MLCommonsClient, deployed: dict[str, DeployedModel], exported_bi_encoder: Path, exported_cross_encoder: Path
) -> None:
    retriever = deployed["retriever"]
    embedder = SyntrieverTextEmbedder(model=str(exported_bi_encoder))
    embedder.warm_up()
    got = ml.embed(retriever.model_id, [retriever.bundle.query_prefix + QUERY])[0]
    assert len(got) == 32
    assert _cos(got, embedder.run(text=QUERY)["embedding"]) > 0.999

    ranker = SyntrieverRanker(model=str(exported_cross_encoder), top_k=len(DOCS), scale_score=False)
    ranker.warm_up()
    expected = {
        d.content: d.score for d in ranker.run(query=QUERY, documents=[Document(content=t) for t in DOCS])["documents"]
    }
    scores = ml.similarity(deployed["reranker"].model_id, QUERY, DOCS)
    np.testing.assert_allclose(scores, [expected[t] for t in DOCS], atol=1e-3)


def test_ingest_pipeline_embeds_and_rerank_pipeline_reorders(
    ml: MLCommonsClient, deployed: dict[str, DeployedModel], exported_bi_encoder: Path, exported_cross_encoder: Path
) -> None:
    retriever, reranker = deployed["retriever"], deployed["reranker"]
    suffix = uuid.uuid4().hex[:8]
    index, ingest, rerank = f"syntriever-mlc-{suffix}", f"syntriever-embed-{suffix}", f"syntriever-rerank-{suffix}"
    client = ml.client
    try:
        ml.put_ingest_pipeline(ingest, ingest_pipeline_body(retriever.model_id, {"content": "embedding"}))
        ml.put_search_pipeline(rerank, search_pipeline_body(reranker.model_id, ["content"]))
        client.indices.create(
            index=index, body=neural_index_body("embedding", 32, ingest_pipeline=ingest, search_pipeline=rerank)
        )
        for i, text in enumerate(DOCS):
            client.index(index=index, id=str(i), body={"content": text}, refresh=True)

        stored = client.get(index=index, id="0")["_source"]
        assert stored["content"] == DOCS[0]
        doc_embedder = SyntrieverDocumentEmbedder(model=str(exported_bi_encoder), progress_bar=False)
        doc_embedder.warm_up()
        ours = doc_embedder.run([Document(content=DOCS[0])])["documents"][0].embedding
        assert _cos(stored["embedding"], ours) > 0.999  # embedded inside OpenSearch by the ingest pipeline

        body = search_body(
            "embedding", QUERY, retriever.model_id, k=len(DOCS), query_prefix=retriever.bundle.query_prefix, rerank=True
        )
        hits = client.search(index=index, body=body)["hits"]["hits"]
        assert len(hits) == len(DOCS)
        ranker = SyntrieverRanker(model=str(exported_cross_encoder), top_k=len(DOCS), scale_score=False)
        ranker.warm_up()
        expected = ranker.run(query=QUERY, documents=[Document(content=h["_source"]["content"]) for h in hits])
        assert [h["_source"]["content"] for h in hits] == [d.content for d in expected["documents"]]
    finally:
        client.indices.delete(index=index, ignore_unavailable=True)
        for path in (f"/_ingest/pipeline/{ingest}", f"/_search/pipeline/{rerank}"):
            with contextlib.suppress(Exception):
                client.transport.perform_request("DELETE", path)
