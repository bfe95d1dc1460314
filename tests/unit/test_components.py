from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from haystack import Document

from syntriever_haystack import SyntrieverDocumentEmbedder, SyntrieverRanker, SyntrieverTextEmbedder
from syntriever_haystack.errors import ExportedModelError
from syntriever_haystack.runtime.onnx_model import OnnxModel

TEXTS = [
    "iron deficiency",
    "the heart attack risk of aspirin in elderly patients with kidney disease and diabetes",
    "a",
    "",
    "vitamin bone fracture",
    "paris is the capital city of france and berlin is the capital of germany",
    "the quick brown fox jumps over the lazy dog",
]


# ----------------------------------------------------------------------------- text embedder
def test_text_embedder_embeds_normalised_with_model_prefix(exported_bi_encoder: Path) -> None:
    embedder = SyntrieverTextEmbedder(model=exported_bi_encoder)
    embedding = embedder.run(text="iron deficiency")["embedding"]
    assert isinstance(embedding, list)
    assert len(embedding) == 32
    assert np.linalg.norm(embedding) == pytest.approx(1.0, abs=1e-5)
    model = OnnxModel(exported_bi_encoder)
    with_prefix = model.embed(["query: iron deficiency"], normalize=True)[0]
    np.testing.assert_allclose(embedding, with_prefix, atol=1e-6)
    no_prefix = SyntrieverTextEmbedder(model=exported_bi_encoder, prefix="").run(text="iron deficiency")
    assert not np.allclose(no_prefix["embedding"], embedding)


def test_text_embedder_normalize_override(exported_bi_encoder: Path) -> None:
    raw = SyntrieverTextEmbedder(model=exported_bi_encoder, normalize_embeddings=False).run(text="heart")["embedding"]
    assert np.linalg.norm(raw) != pytest.approx(1.0, abs=1e-3)


def test_warm_up_is_idempotent_and_shares_sessions(exported_bi_encoder: Path) -> None:
    embedder = SyntrieverTextEmbedder(model=exported_bi_encoder)
    assert embedder._model is None  # __init__ loads nothing
    embedder.warm_up()
    first = embedder._model
    embedder.warm_up()
    assert embedder._model is first
    doc_embedder = SyntrieverDocumentEmbedder(model=exported_bi_encoder)
    doc_embedder.warm_up()
    assert doc_embedder._model is first  # same model folder -> one session in memory


def test_text_embedder_rejects_non_string(exported_bi_encoder: Path) -> None:
    embedder = SyntrieverTextEmbedder(model=exported_bi_encoder)
    with pytest.raises(TypeError, match="SyntrieverDocumentEmbedder"):
        embedder.run(text=[Document(content="x")])  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="expects a string"):
        embedder.run(text=3)  # type: ignore[arg-type]


def test_int8_is_close_to_fp32(exported_bi_encoder: Path) -> None:
    fp32 = SyntrieverTextEmbedder(model=exported_bi_encoder).run(text="heart attack risk")["embedding"]
    int8 = SyntrieverTextEmbedder(model=exported_bi_encoder, quantization="int8").run(text="heart attack risk")
    assert float(np.dot(fp32, int8["embedding"])) > 0.99


# ----------------------------------------------------------------------------- errors naming the fix
def test_missing_directory(tmp_path: Path) -> None:
    with pytest.raises(ExportedModelError, match="syntriever export"):
        SyntrieverTextEmbedder(model=tmp_path / "nope").warm_up()


def test_torch_model_directory_is_refused_with_export_hint(tiny_bi_encoder: Path) -> None:
    with pytest.raises(ExportedModelError, match=r"syntriever export .*tiny-bi-encoder"):
        SyntrieverDocumentEmbedder(model=tiny_bi_encoder).warm_up()


def test_missing_onnx_file(exported_bi_encoder: Path, tmp_path: Path) -> None:
    broken = tmp_path / "broken"
    shutil.copytree(exported_bi_encoder, broken)
    (broken / "onnx" / "model_int8.onnx").unlink()
    with pytest.raises(ExportedModelError, match="--force"):
        SyntrieverTextEmbedder(model=broken, quantization="int8").warm_up()


def test_precision_not_exported(exported_bi_encoder: Path, tmp_path: Path) -> None:
    folder = tmp_path / "fp32only"
    shutil.copytree(exported_bi_encoder, folder)
    meta = json.loads((folder / "syntriever.json").read_text())
    del meta["files"]["int8"]
    (folder / "syntriever.json").write_text(json.dumps(meta))
    with pytest.raises(ExportedModelError, match="Use 'fp32' weights \\(quantization="):
        SyntrieverTextEmbedder(model=folder, quantization="int8").warm_up()


def test_unknown_precision_and_provider(exported_bi_encoder: Path) -> None:
    with pytest.raises(ExportedModelError, match="precision"):
        OnnxModel(exported_bi_encoder, precision="fp8")
    with pytest.raises(ExportedModelError, match="available"):
        OnnxModel(exported_bi_encoder, providers=["NoSuchExecutionProvider"])


def test_kind_mismatch(exported_bi_encoder: Path, exported_cross_encoder: Path) -> None:
    with pytest.raises(ExportedModelError, match="SyntrieverRanker"):
        SyntrieverTextEmbedder(model=exported_cross_encoder).warm_up()
    with pytest.raises(ExportedModelError, match="SyntrieverRanker"):
        SyntrieverDocumentEmbedder(model=exported_cross_encoder).warm_up()
    with pytest.raises(ExportedModelError, match="SyntrieverTextEmbedder"):
        SyntrieverRanker(model=exported_bi_encoder).warm_up()


def test_corrupt_metadata(exported_bi_encoder: Path, tmp_path: Path) -> None:
    folder = tmp_path / "bad"
    shutil.copytree(exported_bi_encoder, folder)
    (folder / "syntriever.json").write_text("{not json")
    with pytest.raises(ExportedModelError, match=r"re-run `syntriever export .*--force`"):
        OnnxModel(folder)
    (folder / "syntriever.json").write_text(json.dumps({"kind": "bi-encoder", "format_version": 99}))
    with pytest.raises(ExportedModelError, match="Upgrade"):
        OnnxModel(folder)


# ----------------------------------------------------------------------------- document embedder
def test_document_embedder_batches_match_one_by_one(exported_bi_encoder: Path) -> None:
    """Length-sorted, dynamically padded batches give the same vectors, in input order."""
    docs = [Document(content=t) for t in TEXTS]
    batched = SyntrieverDocumentEmbedder(model=exported_bi_encoder, batch_size=3, progress_bar=False).run(docs)
    single = SyntrieverDocumentEmbedder(model=exported_bi_encoder, batch_size=1, progress_bar=False).run(docs)
    for a, b, original in zip(batched["documents"], single["documents"], docs, strict=True):
        assert a.id == original.id
        assert a.content == original.content
        np.testing.assert_allclose(a.embedding, b.embedding, atol=1e-5)


def test_document_embedder_returns_new_documents(exported_bi_encoder: Path) -> None:
    docs = [Document(content="heart attack", meta={"title": "aspirin"})]
    out = SyntrieverDocumentEmbedder(model=exported_bi_encoder, progress_bar=False).run(docs)["documents"]
    assert docs[0].embedding is None
    assert out[0] is not docs[0]
    assert out[0].meta == {"title": "aspirin"}
    assert len(out[0].embedding) == 32


def test_meta_fields_to_embed(exported_bi_encoder: Path) -> None:
    doc = Document(content="heart attack", meta={"title": "aspirin risk", "year": None})
    embedder = SyntrieverDocumentEmbedder(
        model=exported_bi_encoder, meta_fields_to_embed=["title", "year"], embedding_separator=" | ", progress_bar=False
    )
    with_meta = embedder.run([doc])["documents"][0].embedding
    expected = OnnxModel(exported_bi_encoder).embed(["aspirin risk | heart attack"], normalize=True)[0]
    np.testing.assert_allclose(with_meta, expected, atol=1e-6)


def test_over_long_text_is_truncated(exported_bi_encoder: Path) -> None:
    long_text = " ".join(["heart attack risk"] * 100)  # 300 tokens > max_length 64
    embedder = SyntrieverDocumentEmbedder(model=exported_bi_encoder, progress_bar=False)
    a, b = embedder.run([Document(content=long_text), Document(content=long_text + " paris france")])["documents"]
    np.testing.assert_allclose(a.embedding, b.embedding, atol=1e-6)


def test_document_embedder_rejects_bad_input(exported_bi_encoder: Path) -> None:
    embedder = SyntrieverDocumentEmbedder(model=exported_bi_encoder)
    with pytest.raises(TypeError, match="SyntrieverTextEmbedder"):
        embedder.run("just a string")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="item 1"):
        embedder.run([Document(content="ok"), "not a document"])  # type: ignore[list-item]
    assert embedder.run([])["documents"] == []


def test_pooling_modes_match_brute_force(exported_bi_encoder: Path, tmp_path: Path) -> None:
    reference_model = OnnxModel(exported_bi_encoder)
    texts = ["heart attack risk in the elderly", "a", "iron"]
    for mode in ("cls", "max", "lasttoken", "mean"):
        folder = tmp_path / mode
        shutil.copytree(exported_bi_encoder, folder)
        meta = json.loads((folder / "syntriever.json").read_text())
        meta["pooling"] = mode
        (folder / "syntriever.json").write_text(json.dumps(meta))
        pooled = OnnxModel(folder).embed(texts, batch_size=3)
        for text, vector in zip(texts, pooled, strict=True):
            enc = reference_model.tokenizer.encode(text)
            ids = np.array([enc.ids], dtype=np.int64)
            hidden = reference_model.session.run(
                None, {"input_ids": ids, "attention_mask": np.ones_like(ids), "token_type_ids": np.zeros_like(ids)}
            )[0][0]
            expected = {
                "cls": hidden[0],
                "max": hidden.max(axis=0),
                "lasttoken": hidden[-1],
                "mean": hidden.mean(axis=0),
            }[mode]
            np.testing.assert_allclose(vector, expected, atol=1e-5)


# ----------------------------------------------------------------------------- ranker
def _docs() -> list[Document]:
    return [
        Document(id="d1", content="aspirin reduces heart attack risk", score=0.1),
        Document(id="d2", content="paris is the capital of france", score=0.2),
        Document(id="d3", content="iron deficiency causes anaemia"),
        Document(id="d4", content="heart attack"),
    ]


def test_ranker_orders_by_cross_encoder_score(exported_cross_encoder: Path) -> None:
    ranker = SyntrieverRanker(model=exported_cross_encoder)
    docs = _docs()
    out = ranker.run(query="heart attack risk", documents=docs)["documents"]
    scores = [d.score for d in out]
    assert scores == sorted(scores, reverse=True)
    assert all(0.0 < s < 1.0 for s in scores)  # sigmoid-scaled by default
    logits = OnnxModel(exported_cross_encoder).score("heart attack risk", [d.content for d in docs])
    assert [d.id for d in out] == [docs[i].id for i in np.argsort(-logits)]
    assert docs[0].score == 0.1  # inputs untouched


def test_ranker_batches_match_brute_force(exported_cross_encoder: Path) -> None:
    docs = [Document(content=t) for t in TEXTS if t]
    small = SyntrieverRanker(model=exported_cross_encoder, batch_size=2, scale_score=False, top_k=50)
    big = SyntrieverRanker(model=exported_cross_encoder, batch_size=64, scale_score=False, top_k=50)
    a = {d.id: d.score for d in small.run(query="heart risk", documents=docs)["documents"]}
    b = {d.id: d.score for d in big.run(query="heart risk", documents=docs)["documents"]}
    assert a.keys() == b.keys()
    for key in a:
        assert a[key] == pytest.approx(b[key], abs=1e-5)


def test_ranker_deduplicates_by_id(exported_cross_encoder: Path) -> None:
    docs = [*_docs(), Document(id="d1", content="aspirin reduces heart attack risk", score=0.9)]
    out = SyntrieverRanker(model=exported_cross_encoder).run(query="heart", documents=docs)["documents"]
    assert sorted(d.id for d in out) == ["d1", "d2", "d3", "d4"]


def test_ranker_runtime_overrides_use_is_none(exported_cross_encoder: Path) -> None:
    ranker = SyntrieverRanker(model=exported_cross_encoder, top_k=2, scale_score=True, score_threshold=2.0)
    assert ranker.run(query="heart", documents=_docs())["documents"] == []  # sigmoid never reaches 2.0
    # score_threshold=0.0 must win over 2.0 although it is falsy
    assert len(ranker.run(query="heart", documents=_docs(), score_threshold=0.0)["documents"]) == 2
    # scale_score=False must win over True: raw logits
    raw = ranker.run(query="heart", documents=_docs(), scale_score=False, score_threshold=-1e9, top_k=4)["documents"]
    logits = OnnxModel(exported_cross_encoder).score("heart", [d.content for d in _docs()])
    assert sorted(d.score for d in raw) == pytest.approx(sorted(logits.tolist()), abs=1e-5)
    assert len(ranker.run(query="heart", documents=_docs(), top_k=3, score_threshold=0.0)["documents"]) == 3
    with pytest.raises(ValueError, match="top_k"):
        ranker.run(query="heart", documents=_docs(), top_k=0)


def test_ranker_fuses_with_the_first_stage_as_the_evaluation_does(exported_cross_encoder: Path) -> None:
    """``first_stage_weight=W``: logits and incoming scores, each mapped by its list's mean and std, summed with
    weights 1 and W (by hand); a document without an incoming score counts as the list's lowest."""
    import math

    docs = [
        Document(id="d1", content="aspirin reduces heart attack risk", score=3.0),
        Document(id="d2", content="paris is the capital of france", score=9.0),
        Document(id="d3", content="iron deficiency causes anaemia", score=1.0),
        Document(id="d4", content="heart attack", score=None),
    ]
    query = "heart attack risk"
    logits = OnnxModel(exported_cross_encoder).score(query, [d.content for d in docs]).tolist()

    def normalised(values: list[float]) -> list[float]:
        mean = sum(values) / len(values)
        std = math.sqrt(sum((v - mean) ** 2 for v in values) / len(values))
        return [(v - mean + 3 * std) / (6 * std) for v in values]

    for weight in (0.5, 2.0):
        first = normalised([3.0, 9.0, 1.0, 1.0])  # None → the list's lowest
        expected = {d.id: weight * f + c for d, f, c in zip(docs, first, normalised(logits), strict=True)}
        ranker = SyntrieverRanker(model=exported_cross_encoder, first_stage_weight=weight, top_k=4)
        out = ranker.run(query=query, documents=docs)["documents"]
        assert [d.id for d in out] == sorted(expected, key=lambda d: -expected[d])
        assert [d.score for d in out] == pytest.approx([expected[d.id] for d in out], abs=1e-5)
    # a large weight keeps the first stage's order; 0 is the cross-encoder alone
    heavy = SyntrieverRanker(model=exported_cross_encoder, first_stage_weight=1e6, top_k=4)
    assert [d.id for d in heavy.run(query=query, documents=docs)["documents"]][:3] == ["d2", "d1", "d3"]
    plain = SyntrieverRanker(model=exported_cross_encoder, first_stage_weight=0.0, top_k=4)
    assert [d.id for d in plain.run(query=query, documents=docs)["documents"]] == [
        docs[i].id for i in np.argsort(-np.array(logits))
    ]
    with pytest.raises(ValueError, match="first_stage_weight must be a number >= 0"):
        SyntrieverRanker(model=exported_cross_encoder, first_stage_weight=-1.0)


def test_ranker_input_validation(exported_cross_encoder: Path) -> None:
    with pytest.raises(ValueError, match="top_k"):
        SyntrieverRanker(model=exported_cross_encoder, top_k=0)
    ranker = SyntrieverRanker(model=exported_cross_encoder)
    assert ranker.run(query="q", documents=[])["documents"] == []
    with pytest.raises(TypeError, match="query"):
        ranker.run(query=None, documents=_docs())  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="Document"):
        ranker.run(query="q", documents=["text"])  # type: ignore[list-item]


def test_ranker_truncates_long_pairs(exported_cross_encoder: Path) -> None:
    long_doc = " ".join(["heart attack risk"] * 100)
    ranker = SyntrieverRanker(model=exported_cross_encoder, scale_score=False)
    a, b = (
        ranker.run(query="heart", documents=[Document(content=c)])["documents"][0].score
        for c in (long_doc, long_doc + " paris")
    )
    assert a == pytest.approx(b, abs=1e-6)


# ----------------------------------------------------------------------------- serialisation
@pytest.mark.parametrize(
    ("cls", "kwargs"),
    [
        (SyntrieverTextEmbedder, {"quantization": "int8", "prefix": "", "num_threads": 1}),
        (
            SyntrieverDocumentEmbedder,
            {"meta_fields_to_embed": ["title"], "batch_size": 8, "providers": ["CPUExecutionProvider"]},
        ),
        (
            SyntrieverRanker,
            {"top_k": 3, "scale_score": False, "score_threshold": 0.0, "max_length": 128, "first_stage_weight": 1.0},
        ),
    ],
)
def test_to_dict_from_dict_roundtrip(cls: type, kwargs: dict, exported_bi_encoder: Path) -> None:
    component = cls(model=exported_bi_encoder, **kwargs)
    data = component.to_dict()
    assert data["type"].startswith("haystack_integrations.components.")
    assert data["init_parameters"]["model"] == str(exported_bi_encoder)
    for key, value in kwargs.items():
        assert data["init_parameters"][key] == value
    restored = cls.from_dict(data)
    assert restored.to_dict() == data


def test_max_length_override_truncates_and_is_bounded(exported_bi_encoder: Path, exported_cross_encoder: Path) -> None:
    text = "heart attack risk of aspirin in elderly patients with kidney disease"  # > 8 tokens
    short = SyntrieverTextEmbedder(model=exported_bi_encoder, max_length=8, prefix="")
    a = short.run(text=text)["embedding"]
    b = short.run(text=text + " paris france")["embedding"]
    np.testing.assert_allclose(a, b, atol=1e-6)
    full = SyntrieverTextEmbedder(model=exported_bi_encoder, prefix="").run(text=text)["embedding"]
    assert not np.allclose(a, full, atol=1e-4)
    with pytest.raises(ExportedModelError, match="--max-length"):
        SyntrieverRanker(model=exported_cross_encoder, max_length=10_000).warm_up()


def test_quantization_is_not_sentence_transformers_precision(exported_bi_encoder: Path) -> None:
    """The ONNX-weights choice is `quantization`; `precision` (an embedding's precision next door) is refused, and a
    pipeline saved with the old `precision` key still loads, with a deprecation warning."""
    with pytest.raises(TypeError, match="precision"):
        SyntrieverTextEmbedder(model=exported_bi_encoder, precision="int8")  # type: ignore[call-arg]
    saved = SyntrieverTextEmbedder(model=exported_bi_encoder, quantization="int8").to_dict()
    assert saved["init_parameters"]["quantization"] == "int8"
    assert "precision" not in saved["init_parameters"]
    old = {**saved, "init_parameters": {**saved["init_parameters"]}}
    old["init_parameters"]["precision"] = old["init_parameters"].pop("quantization")
    with pytest.warns(DeprecationWarning, match="'precision' is now 'quantization'"):
        loaded = SyntrieverTextEmbedder.from_dict(old)
    assert loaded.quantization == "int8"
    for cls in (SyntrieverDocumentEmbedder, SyntrieverRanker):
        assert "quantization" in cls.__init__.__code__.co_varnames
