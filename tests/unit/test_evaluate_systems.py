"""System SPECs, fusion, search, the runner (BM25 / dense / hybrid / rerank on tiny ONNX models), reports, CLI."""

from __future__ import annotations

import json
import random
import subprocess
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from syntriever_haystack.cli import main as cli_main
from syntriever_haystack.data import load_beir
from syntriever_haystack.evaluate import (
    EmbeddingCache,
    evaluate_systems,
    parse_system,
    reciprocal_rank_fusion,
    to_markdown,
    top_k_search,
    write_outputs,
)
from syntriever_haystack.evaluate.search import score_fusion, truncate_run
from syntriever_haystack.evaluate.systems import SystemSpecError, check_system
from tests.conftest import PYTHON, ROOT
from tests.unit.test_beir_loader import write_beir

CORPUS = [
    ("d1", "Anaemia", "iron deficiency causes anaemia and blood loss"),
    ("d2", "Diabetes", "insulin and glucose levels in diabetes patients"),
    ("d3", "Heart", "aspirin may reduce the risk of heart attack"),
    ("d4", "Cancer", "brain tumour treatment in children and adults"),
    ("d5", "Bone", "vitamin levels and bone fracture risk in elderly patients"),
    ("d6", "Kidney", "kidney disease and liver disease in adults"),
    ("d7", "Virus", "lung infection caused by a virus"),
    ("d8", "Paris", "paris is the capital city of france"),
]
QUERIES = [
    ("q1", "what causes anaemia"),
    ("q2", "insulin glucose diabetes"),
    ("q3", "aspirin heart attack risk"),
    ("q4", "bone fracture in the elderly"),
    ("q5", "capital of france"),
    ("q6", "the of and"),  # only stop words: BM25 returns nothing, the query must still count (as 0)
]
QRELS = [
    ("q1", "d1", 2),
    ("q2", "d2", 1),
    ("q3", "d3", 1),
    ("q4", "d5", 1),
    ("q4", "d6", 0),
    ("q5", "d8", 1),
    ("q6", "d7", 1),
]


@pytest.fixture
def tiny_dataset(tmp_path: Path) -> Path:
    return write_beir(
        tmp_path / "tiny",
        corpus=[{"_id": i, "title": t, "text": x} for i, t, x in CORPUS],
        queries=[{"_id": i, "text": x} for i, x in QUERIES],
        qrels={"test": QRELS},
    )


# --------------------------------------------------------------------------- SPEC parsing


def test_parse_system_specs() -> None:
    bm25 = parse_system("bm25?k1=0.9&b=0.4")
    assert bm25.first_stage.kind == "bm25"
    assert bm25.first_stage.options == {"k1": "0.9", "b": "0.4"}
    dense = parse_system("dense:models/x?precision=int8+rerank:models/ce?top_k=50")
    assert dense.first_stage.kind == "dense"
    assert dense.first_stage.target == "models/x"
    assert dense.rerankers[0].target == "models/ce"
    assert dense.rerankers[0].options == {"top_k": "50"}
    assert dense.prefixes() == [
        "dense:models/x?precision=int8",
        "dense:models/x?precision=int8+rerank:models/ce?top_k=50",
    ]
    hybrid = parse_system("hybrid:models/x?k=60&precision=int8")
    assert hybrid.first_stage.options == {"k": "60", "fusion": "rrf"}  # k names RRF
    assert "fusion" not in parse_system("hybrid:models/x").first_stage.options  # the default: dbsf
    assert hybrid.first_stage.inner is not None
    assert hybrid.first_stage.inner.options == {"precision": "int8"}
    st_hybrid = parse_system("hybrid:st:all-MiniLM-L6-v2")
    assert st_hybrid.first_stage.inner is not None
    assert st_hybrid.first_stage.inner.kind == "st"
    pipeline = parse_system("pipeline:runs/x/pipelines/query.yaml?top_k=100+rerank:models/ce?top_k=20")
    assert (pipeline.first_stage.kind, pipeline.first_stage.target) == ("pipeline", "runs/x/pipelines/query.yaml")
    assert pipeline.first_stage.int_option("top_k") == 100
    assert pipeline.rerankers[0].target == "models/ce"
    assert pipeline.prefixes()[0] == "pipeline:runs/x/pipelines/query.yaml?top_k=100"


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("", "empty system"),
        ("tfidf", "cannot parse system"),
        ("splade:foo", "unknown system kind 'splade'"),
        ("bm25?k3=1", "unknown parameter 'k3' for bm25"),
        ("dense:x?precision", "bad parameter 'precision'"),
        ("bm25+rerank:", "needs an exported ranker folder"),
        ("bm25+rerank:ce?temperature=2", "unknown parameter 'temperature' for rerank"),
        ("hybrid:x?k=10&fusion=rrf", "DocumentJoiner .* fixed at k=60"),
        ("hybrid:x?k=60&fusion=dbsf", "k is reciprocal rank fusion's constant; use fusion=rrf"),
        ("hybrid:x?fusion=max", "fusion=max .* use one of dbsf, rrf"),
        ("pipeline:", "cannot parse system"),
        ("pipeline:?top_k=3", "needs the query pipeline's YAML"),
        ("pipeline:q.yaml?top_k=0", "must be a positive integer"),
        ("pipeline:q.yaml?depth=3", "unknown parameter 'depth' for pipeline"),
    ],
)
def test_bad_specs_say_what_is_wrong(spec: str, message: str) -> None:
    with pytest.raises(SystemSpecError, match=message):
        parse_system(spec)


def test_check_system_catches_wrong_kind_and_missing_folder(
    exported_bi_encoder: Path, exported_cross_encoder: Path, tmp_path: Path
) -> None:
    check_system(parse_system(f"dense:{exported_bi_encoder}+rerank:{exported_cross_encoder}"))
    with pytest.raises(SystemSpecError, match=r"is a cross-encoder, but dense needs a bi-encoder; use it as \+rerank:"):
        check_system(parse_system(f"dense:{exported_cross_encoder}"))
    with pytest.raises(SystemSpecError, match="is a bi-encoder, but rerank needs a cross-encoder"):
        check_system(parse_system(f"bm25+rerank:{exported_bi_encoder}"))
    with pytest.raises(ValueError, match="syntriever export"):
        check_system(parse_system(f"dense:{tmp_path / 'missing'}"))
    with pytest.raises(SystemSpecError, match=r"pipeline file .*missing\.yaml .* does not exist"):
        check_system(parse_system(f"pipeline:{tmp_path / 'missing.yaml'}"))


# --------------------------------------------------------------------------- search and fusion


def test_top_k_search_equals_brute_force() -> None:
    rng = np.random.default_rng(0)
    q, d = rng.normal(size=(37, 8)).astype(np.float32), rng.normal(size=(300, 8)).astype(np.float32)
    idx, scores = top_k_search(q, d, 15, block=10)
    sims = q @ d.T
    expected = np.argsort(-sims, axis=1, kind="stable")[:, :15]
    assert np.array_equal(idx, expected)
    assert np.allclose(scores, np.take_along_axis(sims, expected, axis=1))
    idx_all, _ = top_k_search(q, d[:5], 15)  # k larger than the corpus
    assert idx_all.shape == (37, 5)
    assert np.array_equal(idx_all, np.argsort(-(q @ d[:5].T), axis=1, kind="stable"))


def test_reciprocal_rank_fusion_by_hand() -> None:
    """Haystack's DocumentJoiner RRF: Σ 1/(61 + rank0) × 61 / len(runs); equal scores keep their arrival order."""
    a = {"q": {"x": 3.0, "y": 2.0, "z": 1.0}}
    b = {"q": {"y": 9.0, "w": 5.0}}
    fused = reciprocal_rank_fusion([a, b], k=60, depth=3)["q"]
    assert fused["y"] == pytest.approx((1 / 62 + 1 / 61) * 61 / 2)
    assert fused["x"] == pytest.approx(0.5)
    assert list(fused) == ["y", "x", "w"]  # z (1/63) falls below the depth
    assert fused["w"] < fused["x"]  # a tie (both 1/62), ranked in arrival order: the first run's document first
    with pytest.raises(SystemSpecError, match="fixes k=60"):
        reciprocal_rank_fusion([a, b], k=10)


def _random_run(rng: random.Random, pool: list[str], n: int, *, ties: bool) -> dict[str, float]:
    docs = rng.sample(pool, n)
    return {d: float(rng.randint(0, 3)) if ties else rng.random() for d in docs}


@pytest.mark.parametrize("seed", range(5))
def test_fusion_equals_haystacks_document_joiner(seed: int) -> None:
    """For random ranked lists (with tied input scores and many tied fused scores), the evaluation's fused ranking
    is DocumentJoiner(join_mode="reciprocal_rank_fusion")'s, document for document."""
    from haystack import Document
    from haystack.components.joiners import DocumentJoiner

    from syntriever_haystack.evaluate.metrics import rank_documents

    rng = random.Random(seed)
    pool = [f"d{i}" for i in range(60)]
    queries = [f"q{i}" for i in range(40)]
    bm25 = {q: _random_run(rng, pool, rng.randint(0, 30), ties=True) for q in queries}
    dense = {q: _random_run(rng, pool, rng.randint(1, 30), ties=False) for q in queries[:-3]}  # 3 queries: nothing
    depth = rng.choice([5, 20, 100])
    fused = reciprocal_rank_fusion([bm25, dense], depth=depth)
    joiner = DocumentJoiner(join_mode="reciprocal_rank_fusion", top_k=depth)
    tied = 0
    for q in queries:
        lists = [[Document(id=d, score=s) for d, s in rank_documents(run.get(q, {}))] for run in (bm25, dense)]
        expected = joiner.run(documents=lists)["documents"]
        assert [d for d, _ in rank_documents(fused[q])] == [d.id for d in expected], q
        assert [fused[q][d.id] for d in expected] == pytest.approx([d.score for d in expected], rel=1e-12)
        tied += len(expected) - len({d.score for d in expected})
    assert tied > 0  # the tie order was exercised


def test_ranked_scores_keep_the_list_order() -> None:
    from syntriever_haystack.evaluate.metrics import rank_documents
    from syntriever_haystack.evaluate.search import ranked_scores

    ranked = [("a", 0.5), ("z", 0.5), ("b", 0.5), ("c", None), ("a", 0.1), ("d", 0.2)]
    scores = ranked_scores(ranked)
    assert [d for d, _ in rank_documents(scores)] == ["a", "z", "b", "c", "d"]  # not z first by the id tie-break
    assert scores["a"] == 0.5
    assert scores["z"] == pytest.approx(0.5)
    assert scores["d"] < scores["c"]


# --------------------------------------------------------------------------- the runner


def test_evaluate_all_system_kinds_with_cache_and_outputs(
    tiny_dataset: Path, exported_bi_encoder: Path, exported_cross_encoder: Path, tmp_path: Path
) -> None:
    dataset = load_beir(tiny_dataset, "test")
    bi, ce = exported_bi_encoder, exported_cross_encoder
    systems = [
        "bm25",
        f"dense:{bi}",
        f"hybrid:{bi}",
        f"bm25+rerank:{ce}?top_k=3",
        f"dense:{bi}?precision=int8",
        "bm25?backend=haystack",
    ]
    cache = EmbeddingCache(tmp_path / "cache")
    report = evaluate_systems(dataset, systems, cache=cache, progress=False)
    assert [r.spec for r in report.systems] == systems
    assert report.query_ids == ["q1", "q2", "q3", "q4", "q5", "q6"]
    bm25 = report.system("bm25")
    assert bm25.scores.missing == ["q6"]  # only stop words -> no results -> scores 0 but counts
    assert bm25.scores.per_query["nDCG@10"][5] == 0.0
    assert bm25.means["nDCG@10"] == pytest.approx(bm25.scores.per_query["nDCG@10"].sum() / 6)
    assert bm25.scores.per_query["RR@10"][:5].tolist() == [1.0] * 5  # BM25 nails the keyword queries
    # the dense run covers the whole (tiny) corpus for every query
    assert all(len(docs) == len(CORPUS) for docs in report.system(f"dense:{bi}").run.values())
    # reranking reorders only the top 3, then keeps BM25's order below every reranked document
    reranked = report.system(f"bm25+rerank:{ce}?top_k=3").run
    for qid, docs in bm25.run.items():
        first = sorted(docs, key=lambda d: -docs[d])
        new = sorted(reranked[qid], key=lambda d: -reranked[qid][d])
        assert set(new[:3]) == set(first[:3])
        assert new[3:] == first[3:]
    # significance against the first system, for every other system and metric
    assert report.baseline == "bm25"
    assert set(report.system(f"dense:{bi}").significance) == set(report.metrics)
    assert not report.system("bm25").significance
    # corpus embeddings: fp32 computed once (dense and hybrid share it), int8 separately
    assert cache.misses == 2
    assert len(list((tmp_path / "cache").glob("*.npy"))) == 2
    second_cache = EmbeddingCache(tmp_path / "cache")
    again = evaluate_systems(dataset, [f"dense:{bi}"], cache=second_cache, progress=False)
    assert second_cache.hits == 1
    assert second_cache.misses == 0
    assert again.system(f"dense:{bi}").timings[0].cached
    assert again.summary()[f"dense:{bi}"] == report.summary()[f"dense:{bi}"]

    markdown = to_markdown(report)
    assert "| system | nDCG@10 | R@100 | RR@10 | Judged@10 | time (s) |" in markdown
    assert "`bm25 (baseline)`" in markdown
    written = write_outputs(report, tmp_path / "out")
    assert (tmp_path / "out" / "results.png").stat().st_size > 1000
    full = json.loads((tmp_path / "out" / "results.json").read_text())
    assert full["systems"]["bm25"]["per_query"]["nDCG@10"]["q6"] == 0.0
    assert full["summary"] == report.summary()
    trec = written["run:bm25"].read_text().splitlines()
    assert trec[0].split()[:4] == ["q1", "Q0", "d1", "1"]


def test_embedding_cache_detects_changed_corpus(tiny_dataset: Path, exported_bi_encoder: Path, tmp_path: Path) -> None:
    cache_dir = tmp_path / "cache"
    evaluate_systems(
        load_beir(tiny_dataset), [f"dense:{exported_bi_encoder}"], cache=EmbeddingCache(cache_dir), progress=False
    )
    corpus = tiny_dataset / "corpus.jsonl"
    corpus.write_text(corpus.read_text().replace("iron deficiency", "iron"), encoding="utf-8")
    cache = EmbeddingCache(cache_dir)
    evaluate_systems(load_beir(tiny_dataset), [f"dense:{exported_bi_encoder}"], cache=cache, progress=False)
    assert cache.misses == 1
    assert len(list(cache_dir.glob("*.npy"))) == 2


def test_errors_before_any_work(tiny_dataset: Path, exported_bi_encoder: Path) -> None:
    from syntriever_haystack.errors import SyntrieverError

    dataset = load_beir(tiny_dataset)
    with pytest.raises(SyntrieverError, match="listed twice"):
        evaluate_systems(dataset, ["bm25", "bm25"], progress=False)
    with pytest.raises(SyntrieverError, match="--baseline 'dense' is not one of the evaluated systems"):
        evaluate_systems(dataset, ["bm25"], baseline="dense", progress=False)
    with pytest.raises(SyntrieverError, match="must be one of auto, fp32, int8, got 'int4'"):
        evaluate_systems(dataset, [f"dense:{exported_bi_encoder}?precision=int4"], progress=False)


def test_precision_auto_evaluates_what_the_components_default_runs(exported_bi_encoder: Path) -> None:
    """``?precision=auto`` resolves through the export's record, as ``quantization="auto"`` does."""
    from syntriever_haystack.runtime.metadata import ModelMetadata
    from syntriever_haystack.specs import SystemSpec

    stage = SystemSpec.parse(f"dense:{exported_bi_encoder}?precision=auto").first_stage
    assert stage.precision == ModelMetadata.load(exported_bi_encoder).resolve_quantization("auto") == "fp32"


def test_cli_evaluate_writes_stable_json(
    tiny_dataset: Path, exported_bi_encoder: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "summary.json"
    code = cli_main(
        [
            "evaluate", "--dataset", str(tiny_dataset), "--split", "test",
            "--system", "bm25", "--system", f"hybrid:{exported_bi_encoder}",
            "--metric", "nDCG@10", "--metric", "MRR@10", "--metric", "R@100",
            "--json", str(out), "--output-dir", str(tmp_path / "report"), "--cache-dir", str(tmp_path / "c"), "--quiet",
        ]
    )  # fmt: skip
    assert code == 0
    summary = json.loads(out.read_text())
    assert list(summary) == ["bm25", f"hybrid:{exported_bi_encoder}"]
    assert set(summary["bm25"]) == {"nDCG@10", "RR@10", "R@100"}
    assert all(isinstance(v, float) for metrics in summary.values() for v in metrics.values())
    assert "| system | nDCG@10 | RR@10 | R@100 |" in capsys.readouterr().out
    assert len(list((tmp_path / "report" / "runs").glob("bm25-*.trec"))) == 1


def test_cli_errors_name_the_fix(tiny_dataset: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli_main(["evaluate", "--dataset", str(tiny_dataset), "--split", "dev", "--system", "bm25"]) == 1
    assert "available splits: test" in capsys.readouterr().err
    assert cli_main(["evaluate", "--dataset", str(tmp_path / "nowhere"), "--system", "bm25"]) == 1
    assert "--dataset PATH" in capsys.readouterr().err
    assert cli_main(["evaluate", "--dataset", str(tiny_dataset), "--system", "bm42"]) == 1
    assert "SPEC is one of" in capsys.readouterr().err


def test_cli_runs_as_a_console_script(tiny_dataset: Path, subprocess_env: dict[str, str], tmp_path: Path) -> None:
    result = subprocess.run(
        [PYTHON, "-m", "syntriever_haystack", "evaluate", "--dataset", str(tiny_dataset), "--system", "bm25",
         "--json", str(tmp_path / "s.json"), "--no-cache", "--quiet"],
        capture_output=True, text=True, env=subprocess_env, cwd=ROOT, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert json.loads((tmp_path / "s.json").read_text())["bm25"]["nDCG@10"] > 0.5


def test_trec_file_reproduces_the_in_memory_numbers(tmp_path: Path) -> None:
    import ir_measures

    from syntriever_haystack.evaluate import score_run, write_trec_run

    run = {"q": {"a": 0.8000001, "z": 0.8, "m": 0.5}}
    qrels = {"q": {"a": 1, "m": 1}}
    path = write_trec_run(run, tmp_path / "run.trec")
    reread = {}
    for row in ir_measures.read_trec_run(str(path)):
        reread.setdefault(row.query_id, {})[row.doc_id] = row.score
    assert score_run(reread, qrels).means == score_run(run, qrels).means
    assert score_run(run, qrels, ["P@1"]).means["P@1"] == 1.0


def test_run_file_names_do_not_collide() -> None:
    from syntriever_haystack.evaluate.report import slug

    specs = ["dense:models/a-b", "dense:models/a_b", "dense:models/a b", "dense:" + "x" * 200 + "?precision=int8"]
    names = {slug(s) for s in [*specs, specs[-1].replace("int8", "fp32")]}
    assert len(names) == 5


def test_haystack_bm25_gives_no_credit_for_zero_scores(tiny_dataset: Path) -> None:
    from syntriever_haystack.evaluate import SystemRunner

    dataset = load_beir(tiny_dataset)
    dataset.queries["q6"] = "zzzz qqqq"  # no term of the corpus
    runner = SystemRunner(dataset, progress=False)
    run, _ = runner.run(parse_system("bm25?backend=haystack"))
    assert all(score > 0 for docs in run.values() for score in docs.values())
    assert run["q6"] == {}  # nothing matches, nothing is credited


def test_hybrid_fuses_only_the_requested_candidates(tiny_dataset: Path, exported_bi_encoder: Path) -> None:
    from syntriever_haystack.evaluate import SystemRunner

    runner = SystemRunner(load_beir(tiny_dataset), progress=False)
    run, _ = runner.run(parse_system(f"hybrid:{exported_bi_encoder}?candidates=2"))
    assert all(len(docs) <= 4 for docs in run.values())  # at most 2 from each side


def test_hybrid_fusion_is_the_served_joiners(tiny_dataset: Path, exported_bi_encoder: Path) -> None:
    """``hybrid:`` fuses by score fusion unless ``fusion=rrf``; each equals its fusion of the two first stages."""
    from syntriever_haystack.evaluate import SystemRunner

    runner = SystemRunner(load_beir(tiny_dataset), progress=False)
    bm25, _ = runner.run(parse_system("bm25"))
    dense, _ = runner.run(parse_system(f"dense:{exported_bi_encoder}"))
    default, timings = runner.run(parse_system(f"hybrid:{exported_bi_encoder}"))
    rrf, _ = runner.run(parse_system(f"hybrid:{exported_bi_encoder}?fusion=rrf"))
    runs = [truncate_run(bm25, 100), truncate_run(dense, 100)]
    assert default == score_fusion(runs, depth=runner.depth)
    assert rrf == reciprocal_rank_fusion(runs, depth=runner.depth)
    assert default != rrf
    assert timings[-1].stage == "dbsf"


def test_depth_below_a_cutoff_is_refused(tiny_dataset: Path) -> None:
    from syntriever_haystack.errors import SyntrieverError

    with pytest.raises(SyntrieverError, match="--depth 10 is below the largest metric cut-off"):
        evaluate_systems(load_beir(tiny_dataset), ["bm25"], depth=10, progress=False)


def test_reranker_scores_each_pair_once_across_systems(
    tiny_dataset: Path, exported_bi_encoder: Path, exported_cross_encoder: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two first stages reranked by one model: a (query, document) pair in both top lists is scored once."""
    from syntriever_haystack.evaluate import rerank

    scored: list[tuple[str, str]] = []  # (query, document text): every text of the tiny corpus is distinct
    original = rerank.score_documents

    def counting_score(model: Any, query: str, texts: list[str], **kwargs: Any) -> Any:
        scored.extend((query, t) for t in texts)
        return original(model, query, texts, **kwargs)

    monkeypatch.setattr(rerank, "score_documents", counting_score)
    dataset = load_beir(tiny_dataset, "test")
    ce = exported_cross_encoder
    systems = [
        "bm25",
        f"dense:{exported_bi_encoder}",
        f"bm25+rerank:{ce}?top_k=4",
        f"dense:{exported_bi_encoder}+rerank:{ce}?top_k=4",
    ]
    report = evaluate_systems(dataset, systems, progress=False)
    assert len(scored) == len(set(scored))  # no pair twice
    bm25_run = report.system("bm25").run
    bm25_pairs = {(q, d) for q, docs in bm25_run.items() for d in sorted(docs, key=lambda d: -docs[d])[:4]}
    dense_run = report.system(f"dense:{exported_bi_encoder}").run
    dense_pairs = {(q, d) for q, docs in dense_run.items() for d in sorted(docs, key=lambda d: -docs[d])[:4]}
    assert len(scored) == len(bm25_pairs | dense_pairs) < len(bm25_pairs) + len(dense_pairs)


def test_fused_rerank_equals_brute_force_dbsf(
    tiny_dataset: Path, exported_bi_encoder: Path, exported_cross_encoder: Path
) -> None:
    """``+rerank:DIR?fuse=W``: the top_k's cross-encoder scores and first-stage scores, each normalised by its own
    list's mean and std, summed with weights 1 and W (by hand here); the rest stays below, in its order."""
    import math

    from syntriever_haystack.evaluate.search import rank_documents
    from syntriever_haystack.evaluate.systems import SystemRunner

    dataset = load_beir(tiny_dataset, "test")
    runner = SystemRunner(dataset, depth=100, include_title=True, cache=None, progress=False)
    first, _ = runner.run(parse_system(f"dense:{exported_bi_encoder}"))
    plain, _ = runner.run(parse_system(f"dense:{exported_bi_encoder}+rerank:{exported_cross_encoder}?top_k=4"))
    weight = 0.7
    fused, _ = runner.run(
        parse_system(f"dense:{exported_bi_encoder}+rerank:{exported_cross_encoder}?top_k=4&fuse={weight}")
    )

    def normalised(scores: dict[str, float]) -> dict[str, float]:
        values = list(scores.values())
        mean = sum(values) / len(values)
        std = math.sqrt(sum((v - mean) ** 2 for v in values) / len(values))
        return {d: 0.5 if std == 0 else (v - mean + 3 * std) / (6 * std) for d, v in scores.items()}

    checked = 0
    for query_id, scores in first.items():
        head = [d for d, _ in rank_documents(scores)[:4]]
        cross = {d: plain[query_id][d] for d in head}
        stage = normalised({d: scores[d] for d in head})
        expected = {d: weight * stage[d] + v for d, v in normalised(cross).items()}
        got = [d for d, _ in rank_documents(fused[query_id])]
        assert got[:4] == sorted(head, key=lambda d: -expected[d])
        assert all(math.isclose(fused[query_id][d], expected[d], abs_tol=1e-9) for d in head)
        assert got[4:] == [d for d, _ in rank_documents(scores)[4:]]
        checked += 1
    assert checked == len(dataset.queries)
    for bad in ("-1", "nan", "inf", "abc"):  # refused when the SPEC is parsed, before any first stage runs
        with pytest.raises(SystemSpecError, match=rf"fuse='{bad}'.*must be a number >= 0"):
            parse_system(f"dense:{exported_bi_encoder}+rerank:{exported_cross_encoder}?fuse={bad}")


# --------------------------------------------------------------------------- saved pipelines (pipeline:PATH)


def _saved_query_pipeline(dataset_dir: Path, bi_encoder: Path, folder: Path, *, top_k: int = 3) -> Path:
    """The tiny corpus indexed (BEIR ids, title + text) into a shared in-memory store; its query pipeline saved."""
    import uuid

    from haystack import Document

    from syntriever_haystack.runtime.metadata import ModelMetadata
    from syntriever_haystack.serve.memory_store import memory_document_store
    from syntriever_haystack.serve.pipelines import indexing_inputs, indexing_pipeline, query_pipeline, save_pipeline

    dataset = load_beir(dataset_dir, "test")
    store = memory_document_store(ModelMetadata.load(bi_encoder), index=f"eval-pipeline-{uuid.uuid4().hex[:8]}")
    documents = [
        Document(id=d, content=t) for d, t in zip(dataset.doc_ids, dataset.doc_texts(include_title=True), strict=True)
    ]
    indexing = indexing_pipeline(store, bi_encoder, split_by=None)
    indexing.run(indexing_inputs(indexing, documents))
    return save_pipeline(query_pipeline(store, bi_encoder, top_k=top_k), folder / "query.yaml")


def _trec_rankings(path: Path) -> dict[str, list[str]]:
    rows: dict[str, list[tuple[int, str]]] = {}
    for line in path.read_text().splitlines():
        query_id, _, doc_id, rank, *_ = line.split()
        rows.setdefault(query_id, []).append((int(rank), doc_id))
    return {q: [d for _, d in sorted(ranked)] for q, ranked in rows.items()}


def test_cli_evaluates_a_saved_pipeline(
    tiny_dataset: Path, exported_bi_encoder: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`syntriever evaluate --system pipeline:PATH`: the run is the saved pipeline's answers, query by query."""
    from syntriever_haystack.evaluate.report import slug
    from syntriever_haystack.serve.pipelines import load_pipeline, run_query

    path = _saved_query_pipeline(tiny_dataset, exported_bi_encoder, tmp_path / "pipelines")
    deep, saved = f"pipeline:{path}?top_k=8", f"pipeline:{path}"
    out = tmp_path / "summary.json"
    code = cli_main(
        [
            "evaluate", "--dataset", str(tiny_dataset), "--split", "test", "--system", deep, "--system", saved,
            "--metric", "nDCG@10", "--metric", "R@100", "--json", str(out), "--output-dir", str(tmp_path / "report"),
            "--no-cache", "--quiet",
        ]
    )  # fmt: skip
    assert code == 0, capsys.readouterr().err
    summary = json.loads(out.read_text())
    assert list(summary) == [deep, saved]
    assert summary[deep]["nDCG@10"] > 0.5
    assert f"`{deep} (baseline)`" in capsys.readouterr().out
    runs = {spec: _trec_rankings(tmp_path / "report" / "runs" / f"{slug(spec)}.trec") for spec in (deep, saved)}
    dataset = load_beir(tiny_dataset, "test")
    pipeline = load_pipeline(path)  # as a user loads it: answers top_k=3
    for query_id, query in dataset.queries.items():
        answer = [document.id for document in run_query(pipeline, query)]
        assert runs[saved].get(query_id, []) == answer, query_id
        assert runs[deep].get(query_id, [])[: len(answer)] == answer  # a raised top_k keeps the order
        assert len(runs[deep].get(query_id, [])) <= 8


def test_a_pipeline_system_needs_a_runner(
    tiny_dataset: Path, exported_bi_encoder: Path, exported_cross_encoder: Path, tmp_path: Path
) -> None:
    from syntriever_haystack.evaluate import SystemRunner
    from syntriever_haystack.flow.evaluation import saved_pipeline_runner

    path = _saved_query_pipeline(tiny_dataset, exported_bi_encoder, tmp_path)
    dataset = load_beir(tiny_dataset, "test")
    with pytest.raises(SystemSpecError, match=r"pass pipeline_runner=.*saved_pipeline_runner"):
        evaluate_systems(dataset, ["bm25", f"pipeline:{path}"], progress=False)
    with pytest.raises(SystemSpecError, match="pipeline_runner="):
        SystemRunner(dataset, progress=False).run(parse_system(f"pipeline:{path}"))
    calls: list[tuple[str, int | None]] = []

    def runner(target: str, *, top_k: int | None = None) -> Any:
        calls.append((target, top_k))
        return saved_pipeline_runner(target, top_k=top_k)

    first, reranked = f"pipeline:{path}?top_k=5", f"pipeline:{path}?top_k=5+rerank:{exported_cross_encoder}?top_k=2"
    report = evaluate_systems(dataset, [first, reranked], progress=False, pipeline_runner=runner)
    assert calls == [(str(path), 5)]  # loaded once, shared by both systems
    for query_id, docs in report.system(first).run.items():
        assert len(docs) <= 5
        after = report.system(reranked).run[query_id]
        assert set(after) == set(docs)
        assert sorted(after, key=lambda d: -after[d])[2:] == sorted(docs, key=lambda d: -docs[d])[2:]
