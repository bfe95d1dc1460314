"""Saved pipelines of a run folder answer after the folder moves, in a fresh (torch-free) process."""

from __future__ import annotations

import json
import shutil
import subprocess
import textwrap
import uuid
from pathlib import Path

import pytest
from haystack import Document

from syntriever_haystack.runtime.metadata import ModelMetadata
from syntriever_haystack.serve.indexing import index_documents
from syntriever_haystack.serve.memory_store import file_document_store, save_memory_store, store_record
from syntriever_haystack.serve.pipelines import indexing_pipeline, load_pipeline, query_pipeline, save_pipeline
from tests.conftest import PYTHON
from tests.unit.test_torch_free_and_pipelines import BLOCK_TORCH

DOCS = [
    Document(id="d-aspirin", content="Aspirin aspirin reduce the risk of heart attack in patients"),
    Document(id="d-iron", content="Iron iron deficiency and blood loss cause anaemia"),
    Document(id="d-paris", content="Paris paris is the capital city of france"),
    Document(id="d-brain", content="Brain brain tumour in adults and children"),
    Document(id="d-fox", content="the quick brown fox jumps over the lazy dog"),
]


def build_run(run: Path, bi: Path, ce: Path) -> Path:
    """A run folder laid out like `syntriever run`'s: models/, data/document_store.json (+ .bm25/), pipelines/."""
    models = run / "models"
    shutil.copytree(bi, models / "retriever-onnx")
    shutil.copytree(ce, models / "reranker-onnx")
    embedder, ranker = (models / "retriever-onnx").resolve(), (models / "reranker-onnx").resolve()
    metadata = ModelMetadata.load(embedder)
    store_file = (run / "data" / "document_store.json").absolute()
    index = f"run-{uuid.uuid4().hex}"
    indexing_store = file_document_store(metadata, store_file, index=index, missing="empty", load=False)
    query_store = file_document_store(metadata, store_file, index=index, load=False)
    indexing = indexing_pipeline(indexing_store, embedder, split_by=None)
    save_pipeline(indexing, run / "pipelines" / "indexing.yaml")
    save_pipeline(query_pipeline(query_store, embedder, top_k=3), run / "pipelines" / "query.yaml")
    save_pipeline(query_pipeline(query_store, embedder, ranker, top_k=3), run / "pipelines" / "query-rerank.yaml")
    loaded = load_pipeline(run / "pipelines" / "indexing.yaml")  # as the index step does
    index_documents(loaded, DOCS, progress=False)
    store = next(c.document_store for _, c in loaded.walk() if hasattr(c, "document_store"))
    save_memory_store(store, store_file, store_record(metadata, model_name="retriever-onnx"))
    store.delete_all_documents()  # nothing left in this process: the loaded pipelines must read the file
    return run


def test_saved_yaml_holds_relative_paths(
    exported_bi_encoder: Path, exported_cross_encoder: Path, tmp_path: Path
) -> None:
    run = build_run(tmp_path / "run", exported_bi_encoder, exported_cross_encoder)
    text = (run / "pipelines" / "query-rerank.yaml").read_text()
    assert "model: ../models/retriever-onnx" in text
    assert "model: ../models/reranker-onnx" in text
    assert "path: ../data/document_store.json" in text
    assert "SyntrieverBM25Retriever" in text
    assert "SyntrieverInMemoryDocumentStore" in text
    assert str(tmp_path) not in text
    assert str(tmp_path.resolve()) not in text
    assert (run / "data" / "document_store.bm25" / "syntriever_bm25.json").is_file()


@pytest.mark.parametrize("how", ["env", "load_pipeline"])
def test_moved_run_folder_answers_in_a_fresh_torch_free_process(
    exported_bi_encoder: Path,
    exported_cross_encoder: Path,
    subprocess_env: dict[str, str],
    tmp_path: Path,
    how: str,
) -> None:
    original = build_run(tmp_path / "run", exported_bi_encoder, exported_cross_encoder)
    moved = tmp_path / "elsewhere" / "mounted-run"
    shutil.copytree(original, moved)
    shutil.rmtree(original)
    env = {k: v for k, v in subprocess_env.items() if k not in ("HAYSTACK_DESERIALIZATION_ALLOWLIST",)}
    env.pop("SYNTRIEVER_PIPELINE_DIR", None)
    pipelines = moved / "pipelines"
    if how == "env":
        env["SYNTRIEVER_PIPELINE_DIR"] = str(pipelines)
        load = "from haystack import Pipeline\nload = lambda p: Pipeline.loads(open(p).read())"
    else:
        load = "from syntriever_haystack.serve.pipelines import load_pipeline as load"
    code = (
        BLOCK_TORCH
        + load
        + textwrap.dedent(
            f"""
        import json, sys
        from syntriever_haystack.serve.pipelines import run_query
        out = {{}}
        for name in ("query", "query-rerank"):
            pipe = load({str(pipelines)!r} + "/" + name + ".yaml")
            out[name] = [d.id for d in run_query(pipe, "iron deficiency anaemia")]
        out["torch"] = "torch" in sys.modules
        print(json.dumps(out))
        """
        )
    )
    proc = subprocess.run([PYTHON, "-c", code], capture_output=True, text=True, env=env, timeout=300, cwd=str(tmp_path))
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["query"][0] == "d-iron"  # the only BM25 hit is first after fusion
    assert len(result["query-rerank"]) == 3
    assert result["torch"] is False


def test_missing_store_file_names_the_fix(
    exported_bi_encoder: Path, exported_cross_encoder: Path, tmp_path: Path
) -> None:
    from syntriever_haystack.errors import SyntrieverError

    run = build_run(tmp_path / "run", exported_bi_encoder, exported_cross_encoder)
    (run / "data" / "document_store.json").unlink()
    with pytest.raises(SyntrieverError, match=r"document_store\.json does not exist.*--until index"):
        load_pipeline(run / "pipelines" / "query.yaml")
    assert load_pipeline(run / "pipelines" / "indexing.yaml") is not None  # the indexing store may start empty
