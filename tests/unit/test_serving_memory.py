"""Memory settings of a serving process (issue 17): ONNX Runtime session options, query-time batch sizes, the store."""

from __future__ import annotations

import json
from pathlib import Path

import onnxruntime as ort
import pytest
from haystack import Document
from haystack.document_stores.in_memory import InMemoryDocumentStore

from haystack_integrations.document_stores.syntriever import SyntrieverInMemoryDocumentStore
from syntriever_haystack import SyntrieverRanker
from syntriever_haystack.errors import ExportedModelError
from syntriever_haystack.runtime.onnx_model import OnnxModel, session_options


def _check_query_time_options(options: ort.SessionOptions) -> None:
    assert options.enable_mem_pattern is False  # dynamic padding: a planned pattern per shape only costs memory
    assert options.enable_cpu_mem_arena is True  # off raised the peak (glibc keeps freed activations)
    assert options.graph_optimization_level == ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    assert options.execution_mode == ort.ExecutionMode.ORT_SEQUENTIAL
    assert options.inter_op_num_threads == 1


def test_session_options_are_set_for_query_time_memory() -> None:
    _check_query_time_options(session_options())
    assert session_options(3).intra_op_num_threads == 3
    with pytest.raises(ExportedModelError, match="num_threads"):
        session_options(0)


def test_onnx_model_sessions_run_with_those_options(exported_bi_encoder: Path, exported_cross_encoder: Path) -> None:
    for folder in (exported_bi_encoder, exported_cross_encoder):
        model = OnnxModel(folder, num_threads=1)
        _check_query_time_options(model.session.get_session_options())
        assert model.session.get_session_options().intra_op_num_threads == 1


def test_ranker_scores_two_pairs_per_call_by_default(exported_cross_encoder: Path) -> None:
    ranker = SyntrieverRanker(model=exported_cross_encoder)
    assert ranker.batch_size == 2
    assert ranker.to_dict()["init_parameters"]["batch_size"] == 2


DOCS = [
    Document(id="a", content="Aspirin reduces the risk of heart attack in elderly patients"),
    Document(id="b", content="Iron deficiency and blood loss cause anaemia in patients"),
    Document(id="c", content="Paris is the capital city of France"),
    Document(id="d", content=None, meta={"kind": "image"}),
    Document(id="e", content="the heart of the city: Paris, France"),
]


def _store_file(folder: Path) -> Path:
    path = folder / "document_store.json"
    data = {
        "init_parameters": {"embedding_similarity_function": "dot_product"},
        "documents": [doc.to_dict(flatten=False) for doc in DOCS],
    }
    path.write_text(json.dumps(data), encoding="utf-8")
    return path


def test_loaded_store_shares_one_string_per_bm25_token(tmp_path: Path) -> None:
    store = SyntrieverInMemoryDocumentStore(path=_store_file(tmp_path), shared=False)
    counts = store._bm25_attr
    first = next(t for t in counts["a"].freq_token if t == "patients")
    second = next(t for t in counts["b"].freq_token if t == "patients")
    assert first is second  # interned: one string per distinct token, not one per document


def test_loaded_store_keeps_haystacks_bm25(tmp_path: Path) -> None:
    """Interning changes no statistic: Haystack's own BM25 over the loaded store equals a plain store's."""
    loaded = SyntrieverInMemoryDocumentStore(path=_store_file(tmp_path), shared=False)
    plain = InMemoryDocumentStore(embedding_similarity_function="dot_product")
    plain.write_documents(DOCS)
    assert loaded._bm25_attr == plain._bm25_attr
    assert loaded._freq_vocab_for_idf == plain._freq_vocab_for_idf
    assert loaded._avg_doc_len == pytest.approx(plain._avg_doc_len)
    for query in ("heart attack patients", "paris france", "anaemia"):
        got = [(d.id, d.score) for d in loaded.bm25_retrieval(query, top_k=5)]
        want = [(d.id, d.score) for d in plain.bm25_retrieval(query, top_k=5)]
        assert [i for i, _ in got] == [i for i, _ in want]
        assert [s for _, s in got] == pytest.approx([s for _, s in want])
    loaded.delete_documents(["c"])
    plain.delete_documents(["c"])
    assert loaded._freq_vocab_for_idf == plain._freq_vocab_for_idf
