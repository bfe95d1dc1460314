from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from syntriever_haystack.cli import main
from syntriever_haystack.errors import ExportError
from syntriever_haystack.export import export_model, format_report, parity
from syntriever_haystack.export.exporter import length_summary
from syntriever_haystack.export.parity import spearman
from syntriever_haystack.export.source import inspect_source
from syntriever_haystack.runtime.metadata import ModelMetadata
from syntriever_haystack.runtime.onnx_model import OnnxModel
from tests.conftest import PYTHON


def test_bi_encoder_export_layout_and_metadata(exported_bi_encoder: Path) -> None:
    out = exported_bi_encoder
    for rel in (
        "syntriever.json",
        "config.json",
        "tokenizer.json",
        "tokenizer_config.json",
        "modules.json",
        "sentence_bert_config.json",
        "1_Pooling/config.json",
        "onnx/model.onnx",
        "onnx/model_int8.onnx",
    ):
        assert (out / rel).is_file(), rel
    assert not (out / "onnx" / "model_unoptimized.onnx").exists()
    meta = ModelMetadata.load(out)
    assert meta.kind == "bi-encoder"
    assert meta.embedding_dim == 32
    assert meta.pooling == "mean"
    assert meta.normalize is True
    assert meta.similarity == "cosine"
    assert meta.max_length == 64
    assert meta.query_prefix == "query: "
    assert meta.files == {"fp32": "onnx/model.onnx", "int8": "onnx/model_int8.onnx"}
    assert meta.parity["fp32"]["min_cosine"] >= 0.9999
    assert meta.parity["int8"]["mean_cosine"] >= 0.99
    assert meta.source_model
    assert meta.export["fused_operators"].get("Attention", 0) == 2  # both layers fused for CPU
    modules = json.loads((out / "modules.json").read_text())
    assert [m["type"].rsplit(".", 1)[-1] for m in modules] == ["Transformer", "Pooling", "Normalize"]


def test_cross_encoder_export_layout_and_metadata(exported_cross_encoder: Path) -> None:
    meta = ModelMetadata.load(exported_cross_encoder)
    assert meta.kind == "cross-encoder"
    assert meta.embedding_dim is None
    assert not (exported_cross_encoder / "modules.json").exists()
    assert meta.parity["fp32"]["spearman"] >= 0.99
    assert meta.parity["int8"]["ranking_ndcg@10"] >= 0.98  # int8 is gated on each query's ranking
    assert meta.parity["gated_on"] == {"fp32": "spearman", "int8": "ranking_ndcg@10"}
    assert meta.parity["fp32"]["max_abs_logit_diff"] < 1e-4
    assert meta.parity["fp32"]["ranking_ndcg@10"] > 0.9999


def test_export_matches_sentence_transformers_on_onnx_backend(exported_bi_encoder: Path, tiny_bi_encoder: Path) -> None:
    """The folder is in the layout sentence-transformers' own ONNX backend loads."""
    pytest.importorskip("optimum.onnxruntime")
    from sentence_transformers import SentenceTransformer

    texts = ["the heart attack risk", "iron deficiency causes anaemia in adults", "a"]
    st_onnx = SentenceTransformer(str(exported_bi_encoder), backend="onnx", device="cpu")
    st_torch = SentenceTransformer(str(tiny_bi_encoder), device="cpu")
    ours = OnnxModel(exported_bi_encoder).embed(texts, normalize=True)
    np.testing.assert_allclose(st_onnx.encode(texts), ours, atol=1e-5)
    np.testing.assert_allclose(st_torch.encode(texts), ours, atol=1e-5)


def test_failed_parity_raises_and_writes_nothing(tiny_bi_encoder: Path, tmp_path: Path) -> None:
    out = tmp_path / "never"
    with pytest.raises(ExportError, match="Parity check failed") as info:
        export_model(tiny_bi_encoder, out, fp32_min_cosine=1.01)
    assert info.value.details["fp32"]["min_cosine"] > 0.9999  # the figures travel with the error
    assert not out.exists()
    assert list(tmp_path.iterdir()) == []  # no staging folder left behind


def test_failed_forced_export_keeps_previous_output(
    exported_bi_encoder: Path, tiny_bi_encoder: Path, tmp_path: Path
) -> None:
    out = tmp_path / "kept"
    shutil.copytree(exported_bi_encoder, out)
    before = (out / "syntriever.json").read_text()
    with pytest.raises(ExportError):
        export_model(tiny_bi_encoder, out, force=True, int8_min_cosine=1.5, require_int8=True)
    assert (out / "syntriever.json").read_text() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["kept"]


def test_existing_output_needs_force(exported_bi_encoder: Path, tiny_bi_encoder: Path) -> None:
    with pytest.raises(ExportError, match="--force"):
        export_model(tiny_bi_encoder, exported_bi_encoder)


def test_force_replaces_output(tiny_bi_encoder: Path, tmp_path: Path) -> None:
    out = tmp_path / "m"
    out.mkdir()
    (out / "stale.txt").write_text("old")
    export_model(tiny_bi_encoder, out, force=True, int8=False)
    assert not (out / "stale.txt").exists()
    assert ModelMetadata.load(out).files == {"fp32": "onnx/model.onnx"}
    assert not (out / "onnx" / "model_int8.onnx").exists()


def test_source_errors_name_the_fix(tmp_path: Path, tiny_bi_encoder: Path) -> None:
    with pytest.raises(ExportError, match="does not exist"):
        inspect_source(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ExportError, match=r"config\.json"):
        inspect_source(tmp_path / "empty")
    plain = tmp_path / "plain"
    plain.mkdir()
    (plain / "config.json").write_text(json.dumps({"architectures": ["BertModel"], "model_type": "bert"}))
    with pytest.raises(ExportError, match="--kind"):
        inspect_source(plain)
    multi = tmp_path / "multi"
    multi.mkdir()
    (multi / "config.json").write_text(
        json.dumps({"architectures": ["BertForSequenceClassification"], "id2label": {"0": "a", "1": "b"}})
    )
    with pytest.raises(ExportError, match="exactly 1 relevance logit"):
        inspect_source(multi)
    with pytest.raises(ExportError, match="not a sequence-classification model"):
        inspect_source(tiny_bi_encoder, kind="cross-encoder")
    with pytest.raises(ExportError, match="max-length"):
        inspect_source(tiny_bi_encoder, max_length=100_000)


def test_source_reads_sentence_transformers_settings(tiny_bi_encoder: Path, tmp_path: Path) -> None:
    info = inspect_source(tiny_bi_encoder)
    assert (info.kind, info.pooling, info.normalize, info.max_length) == ("bi-encoder", "mean", True, 64)
    assert (info.query_prefix, info.document_prefix) == ("query: ", "")
    src = tmp_path / "cls"
    shutil.copytree(tiny_bi_encoder, src)
    (src / "1_Pooling" / "config.json").write_text(json.dumps({"pooling_mode_cls_token": True}))
    assert inspect_source(src).pooling == "cls"
    (src / "1_Pooling" / "config.json").write_text(json.dumps({"pooling_mode_weightedmean_tokens": True}))
    with pytest.raises(ExportError, match="Pooling"):
        inspect_source(src)
    modules = json.loads((src / "modules.json").read_text())
    modules.append({"idx": 3, "name": "3", "path": "3_Dense", "type": "sentence_transformers.models.Dense"})
    (src / "modules.json").write_text(json.dumps(modules))
    with pytest.raises(ExportError, match="Dense"):
        inspect_source(src)


def test_spearman_matches_scipy() -> None:
    stats = pytest.importorskip("scipy.stats")
    rng = np.random.default_rng(0)
    a = rng.normal(size=50)
    b = a + rng.normal(scale=0.5, size=50)
    b[:5] = b[5]  # ties
    assert spearman(a, b) == pytest.approx(stats.spearmanr(a, b).statistic, abs=1e-12)
    assert spearman(a, a) == pytest.approx(1.0)
    assert spearman(a, -a) == pytest.approx(-1.0)


def test_cli_export_failure_exits_non_zero(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["export", str(tmp_path / "missing"), str(tmp_path / "out")]) == 1
    assert "does not exist" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_console_script_exit_code(tmp_path: Path, subprocess_env: dict[str, str]) -> None:
    proc = subprocess.run(
        [PYTHON, "-m", "syntriever_haystack", "export", str(tmp_path / "nope"), str(tmp_path / "out")],
        capture_output=True,
        text=True,
        env=subprocess_env,
        timeout=120,
    )
    assert proc.returncode == 1
    assert "error:" in proc.stderr


def test_cli_export_writes_and_reports(
    tiny_bi_encoder: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["export", str(tiny_bi_encoder), str(tmp_path / "m"), "--max-length", "32", "--no-int8"]) == 0
    assert "parity against torch" in capsys.readouterr().out
    assert ModelMetadata.load(tmp_path / "m").max_length == 32
    assert main(["info", str(tmp_path / "m")]) == 0
    printed = capsys.readouterr()
    assert '"kind": "bi-encoder"' in printed.out
    info = json.loads(printed.out)  # stdout stays the JSON file; the lengths in words go to stderr
    assert info["parity"]["train_length"]["train_max_length"] == 64  # saved at 64, served at 32
    assert info["parity"]["long_probes"]["max_length"] == 32
    assert "max length: served at 32 tokens; the source was saved with max_seq_length 64" in printed.err
    assert "torch at its saved length 64 vs export at 32 tokens" in printed.err


def test_cli_embed_and_rerank(
    exported_bi_encoder: Path, exported_cross_encoder: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["embed", str(exported_bi_encoder), "heart attack", "paris", "--query"]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [r["text"] for r in rows] == ["heart attack", "paris"]
    assert len(rows[0]["embedding"]) == 32
    assert main(["rerank", str(exported_cross_encoder), "heart", "heart attack", "paris france"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 2
    scores = [float(line.split("\t")[0]) for line in lines]
    assert scores == sorted(scores, reverse=True)
    assert main(["embed", str(exported_cross_encoder), "x"]) == 1  # wrong kind: clear error, exit 1
    assert "SyntrieverRanker" in capsys.readouterr().err


def test_cli_export_resolves_offline_model_names(
    tiny_bi_encoder: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`syntriever export all-MiniLM-L6-v2 OUT` takes the offline package's folder, like every other command."""
    import sys
    import types

    from syntriever_haystack import models

    fake = types.ModuleType("fake_offline_model")
    fake.get_model_path = lambda: str(tiny_bi_encoder)  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "fake_offline_model", fake)
    monkeypatch.setitem(models._OFFLINE_PACKAGES, "tiny-offline-model", ("fake_offline_model", "get_model_path"))
    assert main(["export", "tiny-offline-model", str(tmp_path / "m"), "--max-length", "32", "--no-int8"]) == 0
    assert (tmp_path / "m" / "onnx" / "model.onnx").is_file()


# ---------------------------------------------------------------------------------------------- lengths
def test_long_probes_are_cut_at_the_max_length() -> None:
    texts = parity.long_probes(parity.PROBE_TEXTS, 256)
    assert len(texts) == parity.LONG_PROBES
    assert len(set(texts)) == len(texts)
    assert all(len(t.split()) > 256 for t in texts)  # more words than tokens allowed: every one is truncated
    pairs = parity.long_probe_pairs(parity.probe_pairs(), 32)
    assert len(pairs) == parity.LONG_PROBE_QUERIES * parity.LONG_PROBES
    assert all(len(p.split()) > 32 for _, p in pairs)


def test_export_records_lengths_and_long_probe_parity(exported_bi_encoder: Path, exported_cross_encoder: Path) -> None:
    meta = ModelMetadata.load(exported_bi_encoder)
    assert (meta.max_length, meta.train_max_length, meta.train_max_length_from) == (
        64,
        {"text": 64},
        "sentence_bert_config.json",
    )
    long = meta.parity["long_probes"]
    assert (long["max_length"], long["probes"]) == (64, parity.LONG_PROBES)
    assert long["fp32"]["min_cosine"] >= 0.9999
    assert long["int8"]["mean_cosine"] >= 0.99
    assert meta.parity["probes"] == len(parity.PROBE_TEXTS) + parity.LONG_PROBES  # gated with the others
    assert "train_length" not in meta.parity  # served at the length it was saved with
    ce = ModelMetadata.load(exported_cross_encoder)
    assert ce.train_max_length == {}  # a plain HF cross-encoder says nothing about its training
    assert ce.parity["long_probes"]["probes"] == parity.LONG_PROBE_QUERIES * parity.LONG_PROBES
    assert ce.parity["long_probes"]["fp32"]["spearman"] >= 0.99


def test_export_compares_the_training_length(tiny_bi_encoder: Path, tmp_path: Path) -> None:
    """Trained at 24 tokens, served at 64: the agreement on texts longer than both is measured, not gated."""
    src = tmp_path / "trained"
    shutil.copytree(tiny_bi_encoder, src)
    (src / "train_summary.json").write_text(json.dumps({"max_length": {"query": 16, "passage": 24}}))
    meta = export_model(src, tmp_path / "out", max_length=64, int8=False).metadata
    assert (meta.train_max_length, meta.train_max_length_from) == ({"query": 16, "passage": 24}, "train_summary.json")
    train = meta.parity["train_length"]
    assert (train["train_max_length"], train["served_max_length"], train["gated"]) == (24, 64, False)
    assert train["probes"] == parity.LONG_PROBES
    assert 0 < train["fp32"]["mean_cosine"] < 0.9999  # a different cut: not the same embedding
    assert ModelMetadata.load(tmp_path / "out").parity["train_length"] == train
    lines = format_report(export_model(src, tmp_path / "out", max_length=64, int8=False, force=True))
    assert "served at 64 tokens; trained at query 16, passage 24 tokens (train_summary.json)" in lines
    assert "torch at its training length 24 vs export at 64 tokens" in lines


def test_source_reads_training_lengths(tiny_bi_encoder: Path, tiny_cross_encoder: Path, tmp_path: Path) -> None:
    bi = tmp_path / "bi"
    shutil.copytree(tiny_bi_encoder, bi)
    (bi / "train_config.json").write_text(json.dumps({"query_max_length": 32, "passage_max_length": 48}))
    info = inspect_source(bi, max_length=64)
    assert (info.train_max_length, info.train_max_length_from) == ({"query": 32, "passage": 48}, "train_config.json")
    assert (info.document_train_max_length, info.max_length) == (48, 64)
    (bi / "train_summary.json").write_text(json.dumps({"max_length": {"query": 16, "passage": 40}}))
    assert inspect_source(bi).train_max_length == {"query": 16, "passage": 40}  # the summary wins
    ce = tmp_path / "ce"
    shutil.copytree(tiny_cross_encoder, ce)
    assert inspect_source(ce).train_max_length == {}
    (ce / "train_config.json").write_text(json.dumps({"max_length": 48, "group_size": 8}))
    assert inspect_source(ce).train_max_length == {"pair": 48}


def test_metadata_without_length_fields_still_loads() -> None:
    meta = ModelMetadata.from_dict({"kind": "bi-encoder", "max_length": 128, "files": {"fp32": "onnx/model.onnx"}})
    assert (meta.train_max_length, meta.train_max_length_from, meta.document_train_max_length) == ({}, "", None)
    assert "training length unknown" in length_summary(meta)[0]


# ------------------------------------------------------------------ ranking agreement, int8 drop, measured default
def _brute_ndcg(reference: list[float], variant: list[float], k: int = 10) -> float:
    """nDCG@k of the variant's order with min-max scaled reference scores as gains, written out longhand."""
    import math

    lo, hi = min(reference), max(reference)
    gains = [(r - lo) / (hi - lo) for r in reference]
    order = sorted(range(len(variant)), key=lambda i: -variant[i])
    dcg = sum(gains[i] / math.log2(rank + 2) for rank, i in enumerate(order[:k]))
    ideal = sum(g / math.log2(rank + 2) for rank, g in enumerate(sorted(gains, reverse=True)[:k]))
    return dcg / ideal


def test_ranking_agreement_matches_brute_force_per_query() -> None:
    rng = np.random.default_rng(0)
    pairs = [(f"q{q}", f"d{d}") for q in range(5) for d in range(15)]
    reference = rng.normal(size=len(pairs))
    variant = reference + rng.normal(scale=0.5, size=len(pairs))
    got = parity.ranking_agreement(reference, variant, pairs)
    assert got is not None
    blocks = [(list(reference[q * 15 : q * 15 + 15]), list(variant[q * 15 : q * 15 + 15])) for q in range(5)]
    expected = [_brute_ndcg(ref, var) for ref, var in blocks]
    assert got["ranking_ndcg@10"] == pytest.approx(np.mean(expected))
    assert got["min_ranking_ndcg@10"] == pytest.approx(min(expected))
    assert got["groups"] == 5


def test_ranking_agreement_passes_the_same_ranking_and_fails_a_different_one() -> None:
    rng = np.random.default_rng(1)
    pairs = [(f"q{q}", f"d{d}") for q in range(8) for d in range(20)]
    reference = rng.normal(size=len(pairs))
    same_order = 3.0 * reference + 1.0  # other scale and offset, same ranking: a perfect reranker variant
    assert parity.ranking_agreement(reference, same_order, pairs)["ranking_ndcg@10"] == pytest.approx(1.0)
    # a global Spearman would punish moving one query's scores against another's; the ranking gate does not
    shifted = reference + np.repeat(rng.normal(scale=5.0, size=8), 20)
    assert parity.spearman(reference, shifted) < 0.9
    assert parity.ranking_agreement(reference, shifted, pairs)["ranking_ndcg@10"] == pytest.approx(1.0)
    shuffled = rng.permutation(reference)  # ranks unrelated to the reference: fails any sensible threshold
    assert parity.ranking_agreement(reference, shuffled, pairs)["ranking_ndcg@10"] < 0.9
    assert parity.ranking_agreement(reference, reference, [(f"q{i}", "d") for i in range(len(pairs))]) is None


def test_failed_int8_is_dropped_and_fp32_export_kept(tiny_bi_encoder: Path, tmp_path: Path) -> None:
    out = tmp_path / "m"
    result = export_model(tiny_bi_encoder, out, int8_min_cosine=1.5, measure_speed=False)
    meta = ModelMetadata.load(out)
    assert meta.files == {"fp32": "onnx/model.onnx"}
    assert not (out / "onnx" / "model_int8.onnx").exists()
    assert "int8: mean cosine" in meta.export["int8"]["dropped"]
    assert "int8" in meta.parity["failed"]
    assert "int8 not written" in format_report(result)
    assert OnnxModel(out, precision="auto").precision == "fp32"


def test_export_measures_variants_and_auto_runs_the_recorded_default(tiny_bi_encoder: Path, tmp_path: Path) -> None:
    out = tmp_path / "m"
    result = export_model(tiny_bi_encoder, out)
    serving = ModelMetadata.load(out).serving
    assert set(serving["docs_per_s"]) == {"fp32", "int8"}
    assert all(v > 0 for v in serving["docs_per_s"].values())
    assert serving["default"] in ("fp32", "int8")
    assert serving["machine"]["cores"] >= 1
    assert "quantization='auto' runs" in format_report(result)
    for default in ("int8", "fp32"):  # whatever was measured, "auto" follows the record
        meta = ModelMetadata.load(out)
        meta.serving["default"] = default
        meta.save(out)
        assert OnnxModel(out, precision="auto").precision == default
    meta.serving = {"default": "bf16"}  # a variant this folder does not have: the exact fp32
    meta.save(out)
    assert OnnxModel(out, precision="auto").precision == "fp32"


def test_auto_shares_the_session_of_the_precision_it_resolves_to(exported_bi_encoder: Path) -> None:
    from syntriever_haystack.runtime.onnx_model import load_onnx_model

    # the fixture is exported without a speed record, so "auto" is fp32
    assert load_onnx_model(exported_bi_encoder, precision="auto") is load_onnx_model(exported_bi_encoder)


def test_default_variant_is_the_fastest_unless_fp32_is_within_five_percent() -> None:
    from syntriever_haystack.export.variants import choose_default

    assert choose_default({"fp32": 20.0, "int8": 31.0}) == "int8"
    assert choose_default({"fp32": 20.0, "int8": 20.9}) == "fp32"  # < 5 % faster: the exact variant
    assert choose_default({"fp32": 20.0, "int8": 12.0}) == "fp32"
    assert choose_default({"fp32": 20.0}) == "fp32"
    assert choose_default({"int8": 5.0}) == "int8"
