"""Evaluation runs what is served: the evaluator and the score judges encode and score exactly as the components.

All of them go through :mod:`syntriever_haystack.runtime.encode`; these tests pin the numbers bit for bit on the
tiny exported models (and on copies whose metadata has prefixes and no normalisation, so every rule is exercised).
"""

from __future__ import annotations

import asyncio
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from haystack import Document

from syntriever_haystack import SyntrieverDocumentEmbedder, SyntrieverRanker, SyntrieverTextEmbedder
from syntriever_haystack.data import load_beir
from syntriever_haystack.evaluate import SystemRunner, parse_system
from syntriever_haystack.evaluate.dense import onnx_vectors
from syntriever_haystack.evaluate.embedding_cache import EmbeddingCache
from syntriever_haystack.evaluate.texts import SplitTexts
from syntriever_haystack.generate.judges import EmbedderScorer, RankerScorer, relevance_judge
from syntriever_haystack.runtime.encode import l2_normalize, passage_text, scale_logits
from tests.unit.test_beir_loader import write_beir
from tests.unit.test_evaluate_systems import CORPUS, QRELS, QUERIES

ROOT = Path(__file__).resolve().parents[2]


def _variant(model: Path, tmp_path: Path, name: str, **changes: object) -> Path:
    """A copy of an exported model whose ``syntriever.json`` says something else (prefixes, normalisation)."""
    copy = tmp_path / name
    shutil.copytree(model, copy)
    meta = json.loads((copy / "syntriever.json").read_text())
    meta.update(changes)
    (copy / "syntriever.json").write_text(json.dumps(meta))
    return copy


@pytest.fixture
def dataset_dir(tmp_path: Path) -> Path:
    return write_beir(
        tmp_path / "tiny",
        corpus=[{"_id": i, "title": t, "text": x} for i, t, x in CORPUS],
        queries=[{"_id": i, "text": x} for i, x in QUERIES],
        qrels={"test": QRELS},
    )


@pytest.fixture(params=["as-exported", "prefixed-unnormalised"])
def bi_encoder(request: pytest.FixtureRequest, exported_bi_encoder: Path, tmp_path: Path) -> Path:
    if request.param == "as-exported":
        return exported_bi_encoder
    return _variant(exported_bi_encoder, tmp_path, "bi", normalize=False, document_prefix="passage: ")


@pytest.fixture(params=["as-exported", "prefixed"])
def cross_encoder(request: pytest.FixtureRequest, exported_cross_encoder: Path, tmp_path: Path) -> Path:
    if request.param == "as-exported":
        return exported_cross_encoder
    return _variant(exported_cross_encoder, tmp_path, "ce", query_prefix="q: ", document_prefix="d: ")


def test_evaluator_dense_vectors_equal_the_embedders(bi_encoder: Path, dataset_dir: Path) -> None:
    texts = SplitTexts.from_dataset(load_beir(dataset_dir, "test"))
    stage = parse_system(f"dense:{bi_encoder}?batch_size=3").first_stage
    doc_vectors, query_vectors, _ = onnx_vectors(stage, texts, EmbeddingCache(None), show_progress=False)

    documents = [Document(id=str(i), content=t) for i, t in enumerate(texts.doc_texts)]
    embedder = SyntrieverDocumentEmbedder(model=bi_encoder, batch_size=3, progress_bar=False)
    served_docs = np.asarray([d.embedding for d in embedder.run(documents=documents)["documents"]], np.float32)
    # Queries: the query embedder embeds one text per call; the evaluator batches them (batch_size=1: identical).
    text_embedder = SyntrieverTextEmbedder(model=bi_encoder)
    served_queries = np.asarray([text_embedder.run(text=q)["embedding"] for q in texts.query_texts], np.float32)
    metadata = json.loads((bi_encoder / "syntriever.json").read_text())
    if metadata["similarity"] == "cosine" and not metadata["normalize"]:  # searched as cosine: unit vectors
        served_docs, served_queries = l2_normalize(served_docs), l2_normalize(served_queries)
    assert np.array_equal(doc_vectors, served_docs)
    # The evaluator embeds queries one per call by default, as the served query embedder does: identical.
    assert np.array_equal(query_vectors, served_queries)
    batched = parse_system(f"dense:{bi_encoder}?batch_size=3&query_batch_size=3").first_stage
    _, batched_queries, _ = onnx_vectors(batched, texts, EmbeddingCache(None), show_progress=False)
    assert np.allclose(batched_queries, served_queries, atol=1e-6)  # fp32 batched: padding changes only rounding


def test_evaluator_int8_query_vectors_are_the_served_ones(exported_bi_encoder: Path, dataset_dir: Path) -> None:
    """int8 quantises each call's activations with one scale: batched queries move, one per call they do not."""
    texts = SplitTexts.from_dataset(load_beir(dataset_dir, "test"))
    stage = parse_system(f"dense:{exported_bi_encoder}?precision=int8").first_stage
    _, query_vectors, _ = onnx_vectors(stage, texts, EmbeddingCache(None), show_progress=False)
    text_embedder = SyntrieverTextEmbedder(model=exported_bi_encoder, quantization="int8")
    served = np.asarray([text_embedder.run(text=q)["embedding"] for q in texts.query_texts], np.float32)
    metadata = json.loads((exported_bi_encoder / "syntriever.json").read_text())
    if metadata["similarity"] == "cosine" and not metadata["normalize"]:
        served = l2_normalize(served)
    assert np.array_equal(query_vectors, served)
    batched = parse_system(f"dense:{exported_bi_encoder}?precision=int8&query_batch_size=8").first_stage
    _, batched_queries, _ = onnx_vectors(batched, texts, EmbeddingCache(None), show_progress=False)
    assert not np.array_equal(batched_queries, served)  # what the default avoids


def test_evaluator_rerank_scores_equal_the_ranker(cross_encoder: Path, dataset_dir: Path) -> None:
    dataset = load_beir(dataset_dir, "test")
    runner = SystemRunner(dataset, progress=False)
    first, _ = runner.run(parse_system("bm25"))
    reranked, _ = runner.run(parse_system(f"bm25+rerank:{cross_encoder}?top_k=3"))  # both at their default batch
    ranker = SyntrieverRanker(model=cross_encoder, scale_score=False, top_k=100)
    text_of = runner.texts.text_of
    checked = 0
    for query_id, docs in first.items():
        head = sorted(docs, key=lambda d: -docs[d])[:3]
        if not head:
            continue
        served = ranker.run(
            query=dataset.queries[query_id], documents=[Document(id=d, content=text_of[d]) for d in head]
        )
        assert {d.id: d.score for d in served["documents"]} == {d: reranked[query_id][d] for d in head}
        checked += 1
    assert checked >= 5


def test_score_judges_equal_the_components(bi_encoder: Path, cross_encoder: Path) -> None:
    query = "what causes iron deficiency anemia"
    passages = ["iron deficiency anemia is caused by blood loss", "the eiffel tower in paris was built in 1889", ""]

    q = np.asarray(SyntrieverTextEmbedder(model=bi_encoder).run(text=query)["embedding"], np.float32)
    docs = SyntrieverDocumentEmbedder(model=bi_encoder, progress_bar=False).run(
        documents=[Document(content=p) for p in passages]
    )["documents"]
    d = np.asarray([doc.embedding for doc in docs], np.float32)
    cosine = l2_normalize(d) @ (q / max(float(np.linalg.norm(q)), 1e-12))
    assert EmbedderScorer(bi_encoder)(query, passages) == [float(x) for x in cosine]

    ranked = SyntrieverRanker(model=cross_encoder, top_k=10).run(
        query=query, documents=[Document(id=str(i), content=p) for i, p in enumerate(passages)]
    )["documents"]
    by_id = {doc.id: doc.score for doc in ranked}
    assert RankerScorer(cross_encoder)(query, passages) == [by_id[str(i)] for i in range(len(passages))]
    verdicts = asyncio.run(relevance_judge(f"ranker:{cross_encoder}?threshold=0.5").judge(query, passages))
    assert [v.score for v in verdicts] == [by_id[str(i)] for i in range(len(passages))]


def test_shared_rules() -> None:
    meta = {"title": "Anaemia", "year": 2020, "empty": None}
    assert (
        passage_text("iron", meta, meta_fields=["title", "empty", "year"], separator=" | ") == "Anaemia | 2020 | iron"
    )
    assert passage_text(None) == ""
    logits = np.array([0.0, 2.0, -1.5], dtype=np.float32)
    assert scale_logits(logits, False).dtype == np.float64
    assert scale_logits(logits, True).tolist() == pytest.approx([0.5, 1 / (1 + np.exp(-2.0)), 1 / (1 + np.exp(1.5))])
    assert np.array_equal(l2_normalize(np.zeros((1, 3), np.float32)), np.zeros((1, 3), np.float32))


def test_the_library_does_not_import_the_components() -> None:
    """Layers point one way: the runtime and the evaluation library never import ``haystack_integrations``."""
    sources = [
        *(ROOT / "syntriever_haystack" / "runtime").glob("*.py"),
        *(ROOT / "syntriever_haystack" / "evaluate").glob("*.py"),
        ROOT / "syntriever_haystack" / "generate" / "judges.py",
    ]
    offenders = [str(p.relative_to(ROOT)) for p in sources if "haystack_integrations" in p.read_text(encoding="utf-8")]
    assert offenders == []
