"""Serving without torch, and YAML pipelines that load in a fresh process with Haystack's default allow-list."""

from __future__ import annotations

import json
import subprocess
import textwrap
from pathlib import Path

import pytest
from haystack import Document, Pipeline
from haystack.components.retrievers.in_memory import InMemoryEmbeddingRetriever
from haystack.components.writers import DocumentWriter
from haystack.document_stores.in_memory import InMemoryDocumentStore

from syntriever_haystack import SyntrieverDocumentEmbedder, SyntrieverRanker, SyntrieverTextEmbedder
from tests.conftest import PYTHON

# Installed in a child process before anything else: importing any of these raises, as in a slim serving
# image where they are not installed. (Haystack imports torch whenever it is importable, so a check of
# sys.modules in a full environment would prove nothing.)
BLOCK_TORCH = textwrap.dedent(
    """
    import importlib.abc, sys
    BLOCKED = ("torch", "transformers", "optimum", "sentence_transformers", "onnx", "onnxscript")
    class _Blocker(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in BLOCKED:
                raise ModuleNotFoundError(f"No module named {name!r} (blocked: torch-free test)", name=name)
            return None
    sys.meta_path.insert(0, _Blocker())
    try:
        import torch  # noqa
        raise SystemExit("blocker failed")
    except ModuleNotFoundError:
        pass
    """
)


def _run(code: str, env: dict[str, str]) -> dict:
    proc = subprocess.run([PYTHON, "-c", code], capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_components_import_and_run_without_torch(
    exported_bi_encoder: Path, exported_cross_encoder: Path, subprocess_env: dict[str, str]
) -> None:
    code = BLOCK_TORCH + textwrap.dedent(
        f"""
        import json
        from haystack import Document
        from syntriever_haystack import SyntrieverTextEmbedder, SyntrieverDocumentEmbedder, SyntrieverRanker
        q = SyntrieverTextEmbedder(model={str(exported_bi_encoder)!r}, quantization="int8").run(text="heart attack")
        d = SyntrieverDocumentEmbedder(model={str(exported_bi_encoder)!r}, progress_bar=False).run(
            [Document(content="aspirin risk"), Document(content="paris")])
        r = SyntrieverRanker(model={str(exported_cross_encoder)!r}).run(
            query="heart", documents=[Document(content="heart attack"), Document(content="paris france")])
        print(json.dumps({{"dim": len(q["embedding"]), "docs": len(d["documents"]),
                           "ranked": len(r["documents"]), "torch": "torch" in __import__("sys").modules}}))
        """
    )
    assert _run(code, subprocess_env) == {"dim": 32, "docs": 2, "ranked": 2, "torch": False}


def _pipelines(bi: Path, ce: Path) -> tuple[Pipeline, Pipeline, InMemoryDocumentStore]:
    store = InMemoryDocumentStore()
    indexing = Pipeline()
    indexing.add_component("embedder", SyntrieverDocumentEmbedder(model=bi, progress_bar=False))
    indexing.add_component("writer", DocumentWriter(document_store=store))
    indexing.connect("embedder.documents", "writer.documents")
    query = Pipeline()
    query.add_component("text_embedder", SyntrieverTextEmbedder(model=bi, quantization="int8"))
    query.add_component("retriever", InMemoryEmbeddingRetriever(document_store=store, top_k=5))
    query.add_component("ranker", SyntrieverRanker(model=ce, top_k=2, score_threshold=0.0))
    query.connect("text_embedder.embedding", "retriever.query_embedding")
    query.connect("retriever.documents", "ranker.documents")
    return indexing, query, store


def test_cli_runs_without_torch_and_names_the_extra_for_training(
    exported_bi_encoder: Path, subprocess_env: dict[str, str]
) -> None:
    """`syntriever` starts in a serving install: serving commands work, training says which extra to install."""
    code = BLOCK_TORCH + textwrap.dedent(
        f"""
        import contextlib, io, json
        from syntriever_haystack.cli import main
        out, err = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            info = main(["info", {str(exported_bi_encoder)!r}])
            train = main(["train", "reranker", "--data", "x.jsonl"])
        print(json.dumps({{"info": info, "train": train, "err": err.getvalue(),
                          "torch": "torch" in __import__("sys").modules}}))
        """
    )
    result = _run(code, subprocess_env)
    assert (result["info"], result["train"], result["torch"]) == (0, 1, False)
    assert "pip install 'syntriever-haystack[train]'" in result["err"]


def test_pipeline_runs_in_process(exported_bi_encoder: Path, exported_cross_encoder: Path) -> None:
    indexing, query, store = _pipelines(exported_bi_encoder, exported_cross_encoder)
    docs = [Document(content=t) for t in ("aspirin heart attack", "paris france capital", "iron anaemia", "dog fox")]
    indexing.run({"embedder": {"documents": docs}})
    assert store.count_documents() == 4
    result = query.run({"text_embedder": {"text": "heart attack"}, "ranker": {"query": "heart attack"}})
    ranked = result["ranker"]["documents"]
    assert len(ranked) == 2
    assert ranked[0].score >= ranked[1].score


@pytest.mark.parametrize("block_torch", [False, True], ids=["full-env", "torch-free"])
def test_yaml_pipeline_loads_in_fresh_process(
    exported_bi_encoder: Path,
    exported_cross_encoder: Path,
    subprocess_env: dict[str, str],
    tmp_path: Path,
    block_torch: bool,
) -> None:
    """`Pipeline.dumps` → `Pipeline.loads` in a new interpreter that never imported syntriever_haystack."""
    _, query, _ = _pipelines(exported_bi_encoder, exported_cross_encoder)
    query.remove_component("retriever")  # the in-memory store would come back empty; keep the model parts
    yaml_path = tmp_path / "query.yaml"
    yaml_path.write_text(query.dumps())
    assert "haystack_integrations.components.rankers.syntriever" in yaml_path.read_text()
    env = {k: v for k, v in subprocess_env.items() if k != "HAYSTACK_DESERIALIZATION_ALLOWLIST"}
    code = (BLOCK_TORCH if block_torch else "") + textwrap.dedent(
        f"""
        import json
        from haystack import Document, Pipeline
        pipe = Pipeline.loads(open({str(yaml_path)!r}).read())
        out = pipe.run({{"text_embedder": {{"text": "heart"}},
                         "ranker": {{"query": "heart", "documents": [Document(content="heart attack"),
                                                                       Document(content="paris")]}}}})
        print(json.dumps({{"dim": len(out["text_embedder"]["embedding"]), "ranked": len(out["ranker"]["documents"])}}))
        """
    )
    assert _run(code, env) == {"dim": 32, "ranked": 2}
