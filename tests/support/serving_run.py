"""A small run folder laid out as `syntriever quickstart` writes it, for the serving tests and the load benchmark.

RUN/models/retriever-onnx, RUN/models/reranker-onnx   exported models (copied)
RUN/data/document_store.json                          the in-memory store file
RUN/pipelines/{indexing,query,query-rerank}.yaml      saved with serve.pipelines.save_pipeline
"""

from __future__ import annotations

import random
import shutil
import uuid
from pathlib import Path

from haystack import Document

SERVING_DOCS = [
    ("Aspirin", "health", "Low-dose aspirin reduces the risk of a second heart attack in patients with heart disease."),
    ("Anaemia", "health", "Iron deficiency anaemia is caused by blood loss or a low iron diet."),
    ("Paris", "geography", "Paris is the capital city of France; the tower was built by the river."),
    ("Berlin", "geography", "Berlin is the capital city of Germany."),
    ("Fox", "animals", "The quick brown fox jumps over the lazy dog."),
]


def serving_documents(extra: int = 0, *, seed: int = 0) -> list[Document]:
    """The five fixed documents (meta ``title`` and ``topic``), plus ``extra`` synthetic ones made of ``words``."""
    docs = [Document(content=text, meta={"title": title, "topic": topic}) for title, topic, text in SERVING_DOCS]
    if extra:
        from tests.conftest import WORDS

        rng = random.Random(seed)
        content = [w for w in WORDS if len(w) > 3]
        for i in range(extra):
            text = " ".join(rng.choices(content, k=rng.randint(20, 60)))
            docs.append(Document(content=text, meta={"title": f"synthetic {i}", "topic": f"t{i % 7}"}))
    return docs


def build_run_folder(
    run: Path, bi_encoder: Path, cross_encoder: Path | None, documents: list[Document], *, top_k: int = 3
) -> Path:
    """Write ``run`` (see the module docstring) and empty the in-process index again, so that whatever serves it
    must load the documents from ``data/document_store.json``."""
    from syntriever_haystack.runtime.metadata import ModelMetadata
    from syntriever_haystack.serve.memory_store import memory_document_store, save_memory_store, store_record
    from syntriever_haystack.serve.pipelines import indexing_inputs, indexing_pipeline, query_pipeline, save_pipeline

    models = run / "models"
    bi = Path(shutil.copytree(bi_encoder, models / "retriever-onnx"))
    ce = Path(shutil.copytree(cross_encoder, models / "reranker-onnx")) if cross_encoder is not None else None
    metadata = ModelMetadata.load(bi)
    store = memory_document_store(metadata, index=f"serving-{uuid.uuid4().hex[:12]}")
    indexing = indexing_pipeline(store, bi, split_by=None)
    indexing.run(indexing_inputs(indexing, documents))
    save_memory_store(store, run / "data" / "document_store.json", store_record(metadata, model_name="retriever-onnx"))
    pipelines = run / "pipelines"
    save_pipeline(indexing, pipelines / "indexing.yaml")
    save_pipeline(query_pipeline(store, bi, top_k=top_k), pipelines / "query.yaml")
    if ce is not None:
        save_pipeline(query_pipeline(store, bi, ce, top_k=top_k, candidates=4), pipelines / "query-rerank.yaml")
    store.delete_all_documents()
    return run
