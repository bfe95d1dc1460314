"""index_documents with precomputed embeddings, its progress bar, and the flow's index step reusing the corpus
embeddings the gate / evaluation cached (only under the exact key: same model file, precision, text rule, corpus)."""

from __future__ import annotations

import json
import shutil
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from haystack import Document

from syntriever_haystack.errors import SyntrieverError
from syntriever_haystack.runtime.metadata import ModelMetadata
from syntriever_haystack.serve.indexing import index_documents
from syntriever_haystack.serve.memory_store import memory_document_store
from syntriever_haystack.serve.pipelines import indexing_pipeline
from tests.conftest import WORDS

DOCS = [
    Document(id="d-aspirin", content="Aspirin reduces the risk of heart attack in patients", meta={"title": "A"}),
    Document(id="d-iron", content="Iron deficiency and blood loss cause anaemia", meta={"title": "B"}),
    Document(id="d-paris", content="Paris is the capital city of france", meta={"title": "C"}),
]


class EmbedCounter:
    """Counts the texts the document embedder embeds (wraps the embed function its module calls)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        import haystack_integrations.components.embedders.syntriever.document_embedder as module

        self.texts = 0
        original = module.embed_documents

        def counting(model: Any, texts: Any, **kwargs: Any) -> Any:
            self.texts += len(texts)
            return original(model, texts, **kwargs)

        monkeypatch.setattr(module, "embed_documents", counting)


def _pipeline(model: Path, split_by: str | None = None) -> tuple[Any, Any]:
    store = memory_document_store(ModelMetadata.load(model), index=f"reuse-{uuid.uuid4().hex}", shared=False)
    return indexing_pipeline(store, model, split_by=split_by, split_length=4, split_overlap=1), store


def test_given_embeddings_are_written_through_the_writer_without_embedding(
    exported_bi_encoder: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    counter = EmbedCounter(monkeypatch)
    pipeline, store = _pipeline(exported_bi_encoder)
    embedded = index_documents(pipeline, DOCS, progress=False, keep_embedded=True, batch_size=2)
    assert counter.texts == len(DOCS)
    assert embedded.reused == 0
    vectors = np.asarray([d.embedding for d in embedded.embedded], np.float32)

    reused_pipeline, reused_store = _pipeline(exported_bi_encoder)
    reused = index_documents(
        reused_pipeline, DOCS, progress=False, keep_embedded=True, embeddings=vectors, batch_size=2
    )
    assert counter.texts == len(DOCS)  # the embedder did not run again
    assert reused.written == reused.reused == len(DOCS)
    # the store holds what the full pipeline wrote: same ids, content, meta and embeddings
    assert [d.to_dict() for d in reused_store.storage.values()] == [d.to_dict() for d in store.storage.values()]
    assert [d.embedding for d in reused.embedded] == [d.embedding for d in embedded.embedded]
    assert all(d.embedding is None for d in DOCS)  # the inputs are not modified


def test_given_embeddings_need_whole_documents_and_one_row_each(exported_bi_encoder: Path) -> None:
    vectors = np.zeros((len(DOCS), 32), np.float32)
    split, _ = _pipeline(exported_bi_encoder, split_by="word")
    with pytest.raises(SyntrieverError, match="no splitter"):
        index_documents(split, DOCS, progress=False, embeddings=vectors)
    whole, _ = _pipeline(exported_bi_encoder)
    with pytest.raises(SyntrieverError, match="2 precomputed embeddings for 3 documents"):
        index_documents(whole, DOCS, progress=False, embeddings=vectors[:2])


def test_progress_bar_counts_documents_per_second(
    exported_bi_encoder: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pipeline, _ = _pipeline(exported_bi_encoder)
    index_documents(pipeline, DOCS, progress=True, batch_size=2)
    err = capsys.readouterr().err
    assert "Indexing" in err
    assert "3/3" in err
    assert "doc/s" in err
    assert "s/doc" not in err


# --------------------------------------------------------------------------------------- the flow's index step


def _tiny_beir(folder: Path, n_docs: int = 12) -> Path:
    import random

    rng = random.Random(3)
    alpha = [w for w in WORDS if w.isalpha() and len(w) > 2]
    (folder / "qrels").mkdir(parents=True)
    docs = [
        {"_id": f"d{i}", "title": f"t{i}", "text": " ".join(rng.choices(alpha, k=rng.randint(4, 20)))}
        for i in range(n_docs)
    ]
    (folder / "corpus.jsonl").write_text("".join(json.dumps(d) + "\n" for d in docs), encoding="utf-8")
    queries = [{"_id": f"q{i}", "text": docs[i]["text"].split()[0]} for i in range(3)]
    (folder / "queries.jsonl").write_text("".join(json.dumps(q) + "\n" for q in queries), encoding="utf-8")
    (folder / "qrels" / "test.tsv").write_text(
        "query-id\tcorpus-id\tscore\n" + "".join(f"q{i}\td{i}\t1\n" for i in range(3)), encoding="utf-8"
    )
    return folder


def _context(tmp_path: Path, model: Path, precision: str) -> Any:
    from syntriever_haystack.flow.context import FlowContext
    from syntriever_haystack.flow.recipe import recipe_from_dict

    beir = tmp_path / "beir"
    if not beir.exists():
        _tiny_beir(beir)
    recipe = recipe_from_dict(
        {
            "name": "reuse",
            "dataset": {"path": str(beir)},
            "serve": {"index": f"reuse-{uuid.uuid4().hex}"},
            "export": {"precision": precision},
        }
    )
    out = tmp_path / "run"
    ctx = FlowContext(recipe=recipe, out=out, progress=False, echo=lambda text: None)
    if not ctx.layout.base_onnx.exists():
        shutil.copytree(model, ctx.layout.base_onnx)
    ctx.results.update(
        data={"path": str(beir), "eval_split": "test", "name": "reuse"},
        gate={"enabled": True, "served_retriever": "zero-shot", "checks": []},
        **{"base-model": {"precision": precision}},
    )
    return ctx


def _gate_embeds_corpus(ctx: Any) -> np.ndarray:
    """What the gate does: the served model's dense system evaluated over the corpus, with the on-disk cache."""
    from syntriever_haystack.evaluate import evaluate_systems
    from syntriever_haystack.evaluate.systems import EmbeddingCache, default_cache_dir

    model, precision = ctx.served_retriever()
    cache = EmbeddingCache(default_cache_dir() / "embeddings")
    dataset = ctx.eval_dataset()
    evaluate_systems(
        dataset, [f"dense:{model.resolve()}?precision={precision}"], metrics=["nDCG@10"], cache=cache, progress=False
    )
    assert cache.misses == 1
    return next(iter(cache._memory.values()))


def _index(ctx: Any) -> dict[str, Any]:
    from syntriever_haystack.flow.steps.serving import run_index, run_pipelines

    run_pipelines(ctx, False)
    return run_index(ctx, False)


def _stored(ctx: Any) -> dict[str, list[float]]:
    data = json.loads(ctx.layout.document_store.read_text(encoding="utf-8"))
    return {d["id"]: d["embedding"] for d in data["documents"]}


def test_index_step_writes_the_cached_corpus_embeddings_instead_of_embedding(
    exported_bi_encoder: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SYNTRIEVER_CACHE", str(tmp_path / "cache"))
    counter = EmbedCounter(monkeypatch)
    ctx = _context(tmp_path, exported_bi_encoder, "fp32")

    fresh = _index(ctx)  # nothing cached yet: the pipeline embeds the corpus
    assert counter.texts == 12
    assert fresh["reused_cached_embeddings"] == 0
    embedded = _stored(ctx)

    cached = _gate_embeds_corpus(ctx)
    counter.texts = 0
    reused = _index(ctx)
    assert counter.texts == 0  # (a) the key matches: not one document embedded
    assert reused["reused_cached_embeddings"] == reused["documents"] == 12
    stored = _stored(ctx)
    ids = list(ctx.eval_dataset().corpus)
    assert list(stored) == ids
    assert np.array_equal(np.asarray([stored[i] for i in ids], np.float32), cached)  # exactly the cached vectors
    for doc_id in ids:  # ... which are what the pipeline computes (fp32: up to float rounding)
        assert np.allclose(stored[doc_id], embedded[doc_id], atol=1e-5)
    assert np.array_equal(np.load(ctx.layout.index_dir / "embeddings.npy"), cached)  # what the evaluation reuses


def test_index_step_embeds_again_for_another_quantization_or_model_file(
    exported_bi_encoder: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    if "int8" not in ModelMetadata.load(exported_bi_encoder).files:
        pytest.skip("the tiny export has no int8 file")
    monkeypatch.setenv("SYNTRIEVER_CACHE", str(tmp_path / "cache"))
    counter = EmbedCounter(monkeypatch)
    ctx = _context(tmp_path, exported_bi_encoder, "fp32")
    _gate_embeds_corpus(ctx)  # fp32 vectors of the corpus in the cache

    # (b) the same model served int8: another key, embedded again
    int8 = _context(tmp_path, exported_bi_encoder, "int8")
    counter.texts = 0
    result = _index(int8)
    assert counter.texts == 12
    assert result["reused_cached_embeddings"] == 0

    # (b) another model file (syntriever.json rewritten: same settings, other bytes): embedded again
    settings = ctx.layout.base_onnx / "syntriever.json"
    settings.write_text(json.dumps(json.loads(settings.read_text(encoding="utf-8")), indent=1), encoding="utf-8")
    counter.texts = 0
    result = _index(_context(tmp_path, exported_bi_encoder, "fp32"))
    assert counter.texts == 12
    assert result["reused_cached_embeddings"] == 0


def test_index_step_embeds_when_the_text_rule_differs(
    exported_bi_encoder: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A pipeline embedding the title as a meta field (not the evaluation's text) never takes the cached vectors."""
    from syntriever_haystack.flow.evaluation import cached_corpus_embeddings

    monkeypatch.setenv("SYNTRIEVER_CACHE", str(tmp_path / "cache"))
    ctx = _context(tmp_path, exported_bi_encoder, "fp32")
    cached = _gate_embeds_corpus(ctx)
    model, _ = ctx.served_retriever()
    dataset = ctx.eval_dataset()
    texts = dataset.doc_texts(include_title=True)
    pipeline, _ = _pipeline(model)
    embedder = pipeline.get_component("embedder")
    found = cached_corpus_embeddings(ctx, embedder, dataset, texts)
    assert found is not None
    assert np.array_equal(found, cached)
    assert cached_corpus_embeddings(ctx, embedder, dataset, [t + "!" for t in texts]) is None
    titled = indexing_pipeline(
        memory_document_store(ModelMetadata.load(model), index=f"t-{uuid.uuid4().hex}", shared=False),
        model,
        split_by=None,
        meta_fields_to_embed=["title"],
    )
    assert cached_corpus_embeddings(ctx, titled.get_component("embedder"), dataset, texts) is None
