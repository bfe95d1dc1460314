"""The end-to-end flow (`syntriever run` / `quickstart`) on a tiny corpus, tiny local models and a scripted LLM.

One run of every step is shared by the module (a few seconds of tiny training and ONNX export); the other tests
copy its output folder and check what a second run skips, what a changed setting reruns, how a crash resumes,
and the recipe's validation and round trip.
"""

from __future__ import annotations

import dataclasses
import json
import os
import random
import shutil
import uuid
from pathlib import Path
from typing import Any

import pytest
import yaml

pytest.importorskip("torch")
pytest.importorskip("sentence_transformers")

from haystack.dataclasses import ChatMessage, ChatRole

from syntriever_haystack.cli import main
from syntriever_haystack.data.beir import load_beir, sample_corpus
from syntriever_haystack.flow import FlowRunner, RecipeError, RunSummary, dump_recipe, load_recipe, quickstart_recipe
from syntriever_haystack.flow.context import FlowError, Layout
from syntriever_haystack.flow.evaluation import Models, system_spec
from syntriever_haystack.flow.recipe import recipe_from_dict
from syntriever_haystack.flow.steps import STEP_NAMES, STEPS
from tests.conftest import ROOT, WORDS, build_tiny_bert
from tests.support.scripted_llm import answer_for

ALPHA = [w for w in WORDS if w.isalpha() and len(w) > 2]
ALL_STEPS = set(STEP_NAMES)


class ScriptedChat:
    """A chat generator answering syntriever's prompts from word overlap (tests.support.scripted_llm)."""

    model = "scripted-llm"

    def __init__(self) -> None:
        self.calls = 0

    def run(self, messages: list[ChatMessage], generation_kwargs: dict[str, Any] | None = None) -> dict[str, Any]:
        self.calls += 1
        system = next((m.text or "" for m in messages if m.role == ChatRole.SYSTEM), "")
        user = next((m.text or "" for m in reversed(messages) if m.role == ChatRole.USER), "")
        return {"replies": [ChatMessage.from_assistant(answer_for(system, user, self.calls)[1])]}


def _jsonl(path: Path, rows: list[dict[str, Any]]) -> None:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")


# What the tiny recipe evaluates: every alias whose real effect the gate's checks show.
TINY_SYSTEMS = ("bm25", "zero-shot", "trained", "hybrid-zero-shot", "hybrid-trained", "hybrid", "hybrid+rerank")


def write_tiny_beir(folder: Path, *, n_docs: int = 40, n_train: int = 16, n_test: int = 8, seed: int = 0) -> Path:
    """Documents of 16 words from the tiny vocabulary; each query is 4 words of its one relevant document."""
    rng = random.Random(seed)
    docs = {f"d{i}": " ".join(rng.choices(ALPHA, k=16)) for i in range(n_docs)}
    queries = {f"q{i}": " ".join(docs[f"d{i}"].split()[:4]) for i in range(n_train + n_test)}
    (folder / "qrels").mkdir(parents=True, exist_ok=True)
    _jsonl(folder / "corpus.jsonl", [{"_id": d, "title": "", "text": t} for d, t in docs.items()])
    _jsonl(folder / "queries.jsonl", [{"_id": q, "text": t} for q, t in queries.items()])
    header = "query-id\tcorpus-id\tscore\n"
    (folder / "qrels" / "train.tsv").write_text(header + "".join(f"q{i}\td{i}\t1\n" for i in range(n_train)))
    (folder / "qrels" / "test.tsv").write_text(
        header + "".join(f"q{i}\td{i}\t1\n" for i in range(n_train, n_train + n_test))
    )
    return folder


def tiny_recipe(dataset: Path, base: Path, **overrides: Any) -> dict[str, Any]:
    """Every step on: stage 1 + stage 2 + reranker, scripted LLM judge, tiny budgets."""
    data: dict[str, Any] = {
        "name": "tiny",
        "dataset": {"path": str(dataset)},
        "generate": {
            "judge": "llm",
            "retriever_queries": 4,
            "passages": 12,
            "queries_per_passage": 2,
            "sentence_queries": 10,
            "held_out": 0.3,
            "candidates": 6,
            "negatives": 2,
            "min_words": 3,
            "preferences": {"queries": 6, "top_k": 3, "retriever": "stage1", "judge": "embedder", "margin": 0.0},
        },
        "train": {
            "base_model": str(base),
            "retriever": {"batch_size": 8, "learning_rate": 5e-4, "query_max_length": 32, "passage_max_length": 48},
            "stage2": {"enabled": True, "batch_size": 4, "learning_rate": 5e-4},
            "reranker": {
                "enabled": True,
                "epochs": 1.0,
                "batch_size": 4,
                "group_size": 3,
                "max_length": 64,
                "learning_rate": 5e-4,
            },
        },
        "serve": {"index": f"flow-test-{uuid.uuid4().hex[:8]}", "top_k": 3},
        "evaluate": {
            "corpus_sample": 30,
            "cache": False,
            "rerank_depth": 5,
            "systems": list(TINY_SYSTEMS),
        },
    }
    for section, values in overrides.items():
        if isinstance(values, dict):
            data.setdefault(section, {}).update(values)
        else:
            data[section] = values
    return data


def run_flow(recipe: dict[str, Any], out: Path, **kwargs: Any) -> RunSummary:
    return FlowRunner(recipe_from_dict(recipe), out, generator_factory=lambda llm: ScriptedChat(), quiet=True).run(
        **kwargs
    )


def statuses(summary: RunSummary) -> dict[str, str]:
    return {record.name: record.status for record in summary.steps}


@pytest.fixture(scope="module")
def assets(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("flow")
    return {
        "root": root,
        "dataset": write_tiny_beir(root / "tiny-beir"),
        "base": build_tiny_bert(root / "tiny-base", kind="bi-encoder"),
    }


@pytest.fixture(scope="module")
def first_run(assets: dict[str, Path]) -> tuple[dict[str, Any], Path, RunSummary]:
    # every step: the label-free data and, opted in, the training split's (generate-retriever, gold pairs)
    recipe = tiny_recipe(assets["dataset"], assets["base"])
    recipe["dataset"]["use_training_labels"] = True
    out = assets["root"] / "run"
    return recipe, out, run_flow(recipe, out)


def copy_run(first_run: tuple[dict[str, Any], Path, RunSummary], tmp_path: Path) -> tuple[dict[str, Any], Path]:
    recipe, out, _ = first_run
    target = tmp_path / "run"
    shutil.copytree(out, target, symlinks=True)
    return json.loads(json.dumps(recipe)), target


# ---------------------------------------------------------------------------------------------- end to end
def test_tiny_recipe_runs_every_step_and_writes_the_outputs(first_run: tuple[dict[str, Any], Path, RunSummary]) -> None:
    _, out, summary = first_run
    assert summary.complete
    assert statuses(summary) == dict.fromkeys(STEP_NAMES, "ran")
    for model in ("base-onnx", "retriever-onnx", "reranker-onnx", "stage1-onnx"):
        assert (out / "models" / model / "syntriever.json").is_file(), model
    for pipeline in ("indexing", "query", "query-rerank"):
        assert yaml.safe_load((out / "pipelines" / f"{pipeline}.yaml").read_text())["components"]
    for data in (
        "queries/queries.jsonl",
        "mined/retriever.jsonl",
        "mined/reranker.jsonl",
        "mined/gate.jsonl",
        "retriever/retriever.jsonl",
        "preferences/preferences.jsonl",
    ):
        assert (out / "data" / data).stat().st_size > 0, data
    assert (out / "data" / "document_store.json").is_file()
    assert not list((out / "training").glob("*/checkpoints"))  # dropped once a training step is done
    for report in ("report.md", "summary.json", "gate.md", "gate.json", "results.png", "evaluation/results.json"):
        assert (out / "report" / report).is_file(), report
    assert load_recipe(out / "recipe.yaml") == recipe_from_dict(first_run[0])

    results = summary.results
    assert results["generate-retriever"]["records"] > 0
    assert results["mine"]["reranker_groups"] > 0
    assert results["mine"]["gate_queries"] > 0
    assert [c["component"] for c in results["gate"]["checks"]] == ["retriever", "reranker"]
    assert results["generate-preferences"]["records"] > 0
    assert results["train-stage2"]["steps"] > 0
    assert results["index"]["documents"] == 30  # the sampled evaluation corpus
    rows = {row["system"]: row for row in results["evaluate"]["rows"]}
    assert set(rows) == set(TINY_SYSTEMS)
    assert rows["zero-shot"]["baseline"]
    assert "nDCG@10" in rows["trained"]["delta"]
    assert results["evaluate"]["sampled_corpus"]
    assert results["evaluate"]["reused_index_embeddings"]
    answer = results["answer"]
    assert answer["query_id"] in {f"q{i}" for i in range(16, 24)}
    assert 0 < len(answer["documents"]) <= 3

    report = (out / "report" / "report.md").read_text()
    assert "Sampled corpus" in report
    assert "`hybrid+rerank`" in report
    assert "## Sample query" in report
    flow = json.loads((out / "flow.json").read_text())
    assert [s["step"] for s in flow["steps"]] == list(STEP_NAMES)
    assert flow["complete"]
    summary_json = json.loads((out / "report" / "summary.json").read_text())
    assert set(summary_json["results"]) == set(rows)
    assert summary_json["baseline"] == "zero-shot"
    assert summary_json["labels"] == "training split (opt-in)"
    assert summary_json["gate"]["checks"]
    assert set(summary_json["gate"]["real_effect"]) == {"retriever", "reranker"}


def test_the_gate_compares_the_hybrids_as_served(first_run: tuple[dict[str, Any], Path, RunSummary]) -> None:
    """The retriever check ranks the held-out queries with BM25 + each dense model fused as served (the dense models
    alone are reported beside it), recomputed here from the SPECs; the real effect is the same hybrids' rows."""
    from syntriever_haystack.data.beir import read_corpus
    from syntriever_haystack.evaluate import evaluate_systems
    from syntriever_haystack.generate.label_free import SyntheticQuery, gate_dataset

    _, out, summary = first_run
    results = summary.results
    check = results["gate"]["checks"][0]
    assert (check["component"], check["candidate"], check["incumbent"]) == (
        "retriever",
        "hybrid-trained",
        "hybrid-zero-shot",
    )
    lines = (out / "data" / "mined" / "gate.jsonl").read_text().splitlines()
    queries = [
        SyntheticQuery(r["query_id"], r["query"], r["source_doc_id"], r["query_type"]) for r in map(json.loads, lines)
    ]
    corpus = read_corpus(Path(results["data"]["path"]) / "corpus.jsonl")
    dataset = gate_dataset(queries, corpus, name=str(results["data"]["name"]))
    base = f"{(out / 'models' / 'base-onnx').resolve()}?precision={results['base-model']['precision']}"
    trained = f"{(out / 'models' / 'retriever-onnx').resolve()}?precision={results['export-retriever']['precision']}"
    fused = "&fusion=dbsf&candidates=100"
    specs = [f"hybrid:{base}{fused}", f"hybrid:{trained}{fused}", f"dense:{base}", f"dense:{trained}"]
    scored = evaluate_systems(dataset, specs, metrics=["nDCG@10"], progress=False).systems
    values = [round(s.means["nDCG@10"], 4) for s in scored]
    assert [check["incumbent_value"], check["candidate_value"]] == values[:2]
    assert [check["dense"]["incumbent_value"], check["dense"]["candidate_value"]] == values[2:]
    assert check["decision"] in ("ship", "keep zero-shot")
    rows = {row["system"]: row["means"]["nDCG@10"] for row in results["evaluate"]["rows"]}
    effect = json.loads((out / "report" / "summary.json").read_text())["gate"]["real_effect"]["retriever"]
    assert (effect["candidate"], effect["incumbent"]) == (
        round(rows["hybrid-trained"], 4),
        round(rows["hybrid-zero-shot"], 4),
    )
    assert "The dense models alone, not decided on" in (out / "report" / "gate.md").read_text()


def test_the_reused_index_embeddings_equal_what_the_evaluation_computes(
    first_run: tuple[dict[str, Any], Path, RunSummary],
) -> None:
    """The trained retriever's row is the same whether its corpus embeddings come from the index or are computed."""
    from syntriever_haystack.evaluate import evaluate_systems

    recipe, out, summary = first_run
    dataset = sample_corpus(load_beir(recipe["dataset"]["path"], "test"), 30, seed=recipe_from_dict(recipe).seed)
    precision = summary.results["export-retriever"]["precision"]
    spec = f"dense:{(out / 'models' / 'retriever-onnx').resolve()}?precision={precision}"
    fresh = evaluate_systems(dataset, [spec], metrics=["nDCG@10", "R@100", "RR@10"], progress=False)
    row = next(r for r in summary.results["evaluate"]["rows"] if r["system"] == "trained")
    assert fresh.systems[0].means == pytest.approx(row["means"], abs=1e-6)


def test_the_served_row_is_the_saved_pipeline_query_by_query(
    first_run: tuple[dict[str, Any], Path, RunSummary],
) -> None:
    """The report's served row is pipelines/query(-rerank).yaml itself: loaded here as a user would, every evaluation
    query gets the evaluation's ranking of that row (same ids, same order), and summary.json names it."""
    from syntriever_haystack.evaluate.report import slug
    from syntriever_haystack.serve.pipelines import load_pipeline, run_query

    recipe, out, summary = first_run
    evaluation = summary.results["evaluate"]
    served = evaluation["served"]
    rows = {row["system"]: row for row in evaluation["rows"]}
    assert served in ("hybrid", "hybrid+rerank")
    path = out / evaluation["served_pipeline"]
    assert path == out / "pipelines" / ("query-rerank.yaml" if served == "hybrid+rerank" else "query.yaml")
    assert summary.results["answer"]["pipeline"] == evaluation["served_pipeline"]  # the pipeline that answers
    assert rows[served]["served"]
    assert rows[served]["spec"].startswith(f"pipeline:{path.resolve()}")
    assert [name for name, row in rows.items() if row.get("pipeline")] == ["hybrid", "hybrid+rerank"]
    summary_json = json.loads((out / "report" / "summary.json").read_text())
    assert summary_json["served"] == served
    assert summary_json["results"][served] == rows[served]["means"]
    assert f"`{served}` — the saved pipeline (served)" in (out / "report" / "report.md").read_text()

    trec = out / "report" / "evaluation" / "runs" / f"{slug(served)}.trec"
    ranking: dict[str, list[tuple[int, str]]] = {}
    for line in trec.read_text().splitlines():
        query_id, _, doc_id, rank, *_ = line.split()
        ranking.setdefault(query_id, []).append((int(rank), doc_id))
    evaluated = {q: [d for _, d in sorted(ranked)] for q, ranked in ranking.items()}
    dataset = sample_corpus(load_beir(recipe["dataset"]["path"], "test"), 30, seed=recipe_from_dict(recipe).seed)
    pipeline = load_pipeline(path)
    answers = {q: [d.id for d in run_query(pipeline, text)] for q, text in dataset.queries.items()}
    assert any(answers.values())
    for query_id, answer in answers.items():  # the served top_k (3): the head of the evaluated ranking
        assert answer == evaluated.get(query_id, [])[:3], query_id
    components = dict(pipeline.walk())
    assert type(components["joiner"]).__name__ == "SyntrieverScoreFusionJoiner"  # serve.fusion: dbsf
    # each side as deep as the evaluation's hybrid systems fuse (score fusion depends on the lists' length)
    assert components["bm25_retriever"].top_k == components["embedding_retriever"].top_k == 100
    components["ranker" if "ranker" in components else "joiner"].top_k = 100  # the evaluation's depth
    for query_id, text in dataset.queries.items():  # ... and the whole ranking
        assert [d.id for d in run_query(pipeline, text)] == evaluated.get(query_id, []), query_id


def test_the_saved_reranked_pipeline_fuses_as_the_gate_scores_it(
    first_run: tuple[dict[str, Any], Path, RunSummary],
) -> None:
    """query-rerank.yaml's ranker fuses its logits with the first stage's scores (serve.rerank_first_stage_weight,
    2 by default), and its reranked head is, query by query, the library's ``+rerank:...&fuse=2`` ranking, the SPEC
    the gate's reranker check scores."""
    from syntriever_haystack.evaluate import evaluate_systems
    from syntriever_haystack.serve.pipelines import load_pipeline, run_query

    recipe, out, summary = first_run
    assert recipe_from_dict(recipe).serve.rerank_first_stage_weight == 2.0
    pipeline = load_pipeline(out / "pipelines" / "query-rerank.yaml")
    components = dict(pipeline.walk())
    assert components["ranker"].first_stage_weight == 2.0
    results = summary.results
    served = "retriever" if results["gate"]["served_retriever"] == "trained" else "base"
    dense = (out / "models" / f"{served}-onnx").resolve()
    precision = results["export-retriever" if served == "retriever" else "base-model"]["precision"]
    depth = recipe["evaluate"]["rerank_depth"]
    spec = (
        f"hybrid:{dense}?precision={precision}&fusion=dbsf&candidates=100"
        f"+rerank:{(out / 'models' / 'reranker-onnx').resolve()}?top_k={depth}"
        f"&precision={results['export-reranker']['precision']}&max_length={recipe['train']['reranker']['max_length']}"
        "&fuse=2"
    )
    dataset = sample_corpus(load_beir(recipe["dataset"]["path"], "test"), 30, seed=recipe_from_dict(recipe).seed)
    run = evaluate_systems(dataset, [spec], metrics=["nDCG@10"], progress=False).systems[0].run
    components["ranker"].top_k = depth
    compared = 0
    for query_id, text in dataset.queries.items():
        head = [d for d, _ in sorted(run.get(query_id, {}).items(), key=lambda item: -item[1])[:depth]]
        assert [d.id for d in run_query(pipeline, text)] == head, query_id
        compared += bool(head)
    assert compared > 0


def test_a_store_of_another_corpus_is_not_scored_as_the_saved_pipeline(
    first_run: tuple[dict[str, Any], Path, RunSummary], tmp_path: Path
) -> None:
    """serve.index_corpus: full with a sampled evaluation corpus: the pipelines search 40 documents, the evaluation
    30; the hybrid rows fall back to the library's fusion, and the report says why."""
    recipe, out = copy_run(first_run, tmp_path)
    recipe["serve"]["index_corpus"] = "full"
    summary = run_flow(recipe, out)
    assert summary.results["index"]["documents"] == 40
    evaluation = summary.results["evaluate"]
    assert evaluation["served"] is None
    rows = {row["system"]: row for row in evaluation["rows"]}
    assert rows["hybrid"]["spec"].startswith("hybrid:")
    assert not any(row.get("served") for row in rows.values())
    assert any("search the full corpus (40 documents" in note for note in evaluation["notes"])
    assert any("not by the saved pipelines" in warning for warning in summary.warnings)
    assert json.loads((out / "report" / "summary.json").read_text())["served"] is None
    assert "set serve.index_corpus: evaluation" in (out / "report" / "report.md").read_text()


def test_second_run_skips_every_step(first_run: tuple[dict[str, Any], Path, RunSummary], tmp_path: Path) -> None:
    recipe, out = copy_run(first_run, tmp_path)
    recipe["dataset"]["path"] = os.path.relpath(recipe["dataset"]["path"])  # the same folder, spelled differently
    summary = run_flow(recipe, out)
    assert statuses(summary) == dict.fromkeys(STEP_NAMES, "skipped")
    assert summary.results["evaluate"]["rows"] == first_run[2].results["evaluate"]["rows"]
    assert summary.seconds < 5


def test_a_changed_training_setting_reruns_training_and_downstream_only(
    first_run: tuple[dict[str, Any], Path, RunSummary], tmp_path: Path
) -> None:
    recipe, out = copy_run(first_run, tmp_path)
    recipe["train"]["retriever"]["learning_rate"] = 1e-4
    summary = run_flow(recipe, out)
    ran = {name for name, status in statuses(summary).items() if status == "ran"}
    assert ran == {
        "train-retriever",
        "export-stage1",
        "train-reranker",  # it starts from the stage-1 encoder (train.reranker.base_model: stage1)
        "export-reranker",
        "generate-preferences",
        "train-stage2",
        "export-retriever",
        "gate",
        "pipelines",
        "index",
        "evaluate",
        "answer",
    }
    assert statuses(summary)["generate-retriever"] == "skipped"
    assert statuses(summary)["generate-queries"] == statuses(summary)["mine"] == "skipped"


def test_a_crash_keeps_earlier_stamps_and_the_next_run_resumes_the_failed_step(
    first_run: tuple[dict[str, Any], Path, RunSummary], tmp_path: Path
) -> None:
    recipe, out = copy_run(first_run, tmp_path)
    recipe["evaluate"]["rerank_depth"] = 4  # evaluate (and answer) must rerun
    seen: list[bool] = []

    def crash(ctx: Any, resume: bool) -> dict[str, Any]:
        seen.append(resume)
        raise RuntimeError("killed mid-step")

    runner = FlowRunner(recipe_from_dict(recipe), out, generator_factory=lambda llm: ScriptedChat(), quiet=True)
    runner.steps = tuple(dataclasses.replace(s, run=crash) if s.name == "evaluate" else s for s in STEPS)
    with pytest.raises(RuntimeError, match="killed mid-step"):
        runner.run()
    assert seen == [False]
    stamp = json.loads((out / ".flow" / "evaluate.json").read_text())
    assert stamp["status"] == "running"
    flow = json.loads((out / "flow.json").read_text())
    assert flow["steps"][-1] == {
        "step": "evaluate",
        "status": "failed",
        "seconds": pytest.approx(0, abs=5),
        "reason": "killed mid-step",
    }
    assert json.loads((out / ".flow" / "pipelines.json").read_text())["status"] == "done"

    resumed: list[bool] = []
    original = next(s for s in STEPS if s.name == "evaluate").run

    def spy(ctx: Any, resume: bool) -> dict[str, Any]:
        resumed.append(resume)
        return original(ctx, resume)

    runner = FlowRunner(recipe_from_dict(recipe), out, generator_factory=lambda llm: ScriptedChat(), quiet=True)
    runner.steps = tuple(dataclasses.replace(s, run=spy) if s.name == "evaluate" else s for s in STEPS)
    summary = runner.run()
    assert resumed == [True]
    result = statuses(summary)
    assert result["evaluate"] == "resumed"
    assert result["answer"] == "ran"
    assert {result[name] for name in STEP_NAMES if name not in ("evaluate", "answer")} == {"skipped"}


def test_force_step_and_until(first_run: tuple[dict[str, Any], Path, RunSummary], tmp_path: Path) -> None:
    recipe, out = copy_run(first_run, tmp_path)
    summary = run_flow(recipe, out, force_steps=["index"], until="evaluate")
    result = statuses(summary)
    assert result["index"] == "ran"
    assert result["evaluate"] == "ran"
    assert "answer" not in result
    assert result["export-retriever"] == "skipped"
    assert not summary.complete
    with pytest.raises(FlowError, match="unknown step 'indexing'"):
        run_flow(recipe, out, until="indexing")


def test_steps_are_ordered_after_their_upstream_steps() -> None:
    """A dep listed after its step would silently count as ``disabled`` in the fingerprint."""
    assert len(set(STEP_NAMES)) == len(STEP_NAMES)
    for position, step in enumerate(STEPS):
        assert set(step.deps) <= set(STEP_NAMES[:position]), step.name
    assert STEP_NAMES.index("train-retriever") < STEP_NAMES.index("export-stage1")
    assert STEP_NAMES.index("export-stage1") < STEP_NAMES.index("generate-preferences")


def test_stage1_is_exported_by_its_own_step_only_for_stage2_candidates(tmp_path: Path) -> None:
    steps = {step.name: step for step in STEPS}
    export, preferences = steps["export-stage1"], steps["generate-preferences"]
    assert "export-stage1" in preferences.deps
    layout = Layout(tmp_path)
    assert export.outputs(layout) == [layout.stage1_onnx / "syntriever.json"]
    assert layout.stage1_onnx not in preferences.clean(layout)  # generate-preferences no longer owns the export
    recipe = quickstart_recipe()
    stage2 = dataclasses.replace(recipe.train.stage2, enabled=True)
    on = dataclasses.replace(recipe, train=dataclasses.replace(recipe.train, stage2=stage2))
    bm25 = dataclasses.replace(
        on,
        generate=dataclasses.replace(
            on.generate, preferences=dataclasses.replace(on.generate.preferences, retriever="bm25")
        ),
    )
    assert (export.enabled(recipe), preferences.enabled(recipe)) == (False, False)
    assert (export.enabled(on), preferences.enabled(on)) == (True, True)
    assert (export.enabled(bm25), preferences.enabled(bm25)) == (False, True)  # BM25 candidates: nothing to export


# -------------------------------------------------------------------------------------------------- recipe
def test_default_recipe_round_trips_and_matches_the_shipped_files() -> None:
    recipe = quickstart_recipe()
    assert load_recipe(None) == recipe
    assert recipe_from_dict(yaml.safe_load(dump_recipe(recipe))) == recipe
    shipped = load_recipe(ROOT / "recipes" / "quickstart.yaml")
    assert shipped == recipe
    full = load_recipe(ROOT / "recipes" / "scifact-full.yaml")
    assert full.train.stage2.enabled
    assert full.evaluate.corpus_sample is None
    assert recipe_from_dict(yaml.safe_load(dump_recipe(full))) == full
    medium = quickstart_recipe(budget="medium", llm="openai:gpt-4o-mini", opensearch_url="http://localhost:9200")
    assert medium.generate.passages > recipe.generate.passages
    assert medium.train.reranker.enabled
    assert not recipe.train.reranker.enabled
    assert not recipe.dataset.use_training_labels  # label-free by default
    assert quickstart_recipe(use_training_labels=True).dataset.use_training_labels
    assert full.dataset.use_training_labels  # the paper's setting, opted in
    assert medium.llm.spec == "openai:gpt-4o-mini"
    assert medium.serve.store == "opensearch"
    assert medium.generate.judge == "llm"
    assert recipe.generate.judge == "embedder"


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        ({"train": {"retriever": {"epochz": 2}}}, r"train\.retriever\.epochz: unknown key \(did you mean 'epochs'\?\)"),
        ({"serve": {"store": "elastic"}}, r"serve\.store: 'elastic' is not allowed; use one of: memory, opensearch"),
        ({"train": {"retriever": {"epochs": "two"}}}, r"train\.retriever\.epochs: expected a number, got 'two'"),
        ({"generate": {"use_cot": "yes"}}, r"generate\.use_cot: expected true or false"),
        ({"evaluate": {"systems": ["bm25", "dense-trained"]}}, r"evaluate\.systems: unknown system 'dense-trained'"),
        ({"evaluate": {"baseline": "hybrid", "systems": ["bm25"]}}, r"evaluate\.baseline: 'hybrid' is not in"),
        ({"serve": {"store": "opensearch"}}, r"serve\.url: the opensearch store needs a URL"),
        (
            {"train": {"stage2": {"enabled": True}, "reranker": {"enabled": False}}},
            r"generate\.preferences\.judge is 'reranker' but train\.reranker\.enabled is false",
        ),
        ({"llm": {"concurrency": 0}}, r"llm\.concurrency: must be a positive integer, got 0"),
        ([1, 2], r"a recipe is a mapping"),
    ],
)
def test_recipe_errors_name_the_key_and_the_fix(data: Any, expected: str) -> None:
    with pytest.raises(RecipeError, match=expected):
        recipe_from_dict(data)


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (
            {"train": {"retriever": {"learning_rate": -1}}},
            r"train\.retriever\.learning_rate: must be a positive number",
        ),
        ({"train": {"stage2": {"learning_rate": 0}}}, r"train\.stage2\.learning_rate: must be a positive number"),
        ({"train": {"reranker": {"learning_rate": 5}}}, r"train\.reranker\.learning_rate: .*below 1"),
        ({"llm": {"timeout": 0}}, r"llm\.timeout: must be a positive number, got 0"),
        ({"llm": {"requests_per_minute": -5}}, r"llm\.requests_per_minute: must be a positive number or null"),
        ({"llm": {"parse_retries": -1}}, r"llm\.parse_retries: must be 0 or more"),
        ({"llm": {"api_key_env": "MY KEY"}}, r"llm\.api_key_env: 'MY KEY' is not an environment variable name"),
        ({"llm": {"api_base_url": "localhost:8000"}}, r"llm\.api_base_url: 'localhost:8000' is not an http\(s\) URL"),
        (
            {"generate": {"threshold": 7}},
            r"generate\.threshold: 7\.0 is outside the embedder judge's cosine range \[-1, 1\]",
        ),
        (
            {"generate": {"judge": "reranker", "threshold": -0.5}, "train": {"reranker": {"enabled": True}}},
            r"generate\.threshold: -0\.5 is outside the ranker judge's sigmoid range \[0, 1\]",
        ),
        ({"generate": {"judge": "ranker:models/ce?threshold=3"}}, r"generate\.judge threshold: 3\.0 is outside"),
        ({"generate": {"preferences": {"margin": -0.1}}}, r"generate\.preferences\.margin: a score gap must be 0"),
        ({"generate": {"min_words": -3}}, r"generate\.min_words: must be 0 or more"),
        ({"train": {"retriever": {"query_max_length": 0}}}, r"train\.retriever\.query_max_length: tokens per input"),
        ({"train": {"reranker": {"max_length": 100000}}}, r"train\.reranker\.max_length: tokens per input"),
        (
            {"train": {"retriever": {"dev_fraction": 1.5}}},
            r"train\.retriever\.dev_fraction: use a fraction in \[0, 1\)",
        ),
        ({"train": {"stage2": {"kl_weight": -1}}}, r"train\.stage2\.kl_weight: must be 0 or more"),
        ({"train": {"seed": -1}}, r"train\.seed: must be an integer from 0 to"),
        ({"seed": 2**40}, r"seed: must be an integer from 0 to"),
        ({"name": "../elsewhere"}, r"name: '\.\./elsewhere' names the folder runs/<name>"),
        ({"dataset": {"eval_split": ""}}, r"dataset\.eval_split: '' is not a split name"),
        ({"serve": {"store": "opensearch", "url": "http://h:9200", "index": "My Index"}}, r"serve\.index: 'My Index'"),
        ({"evaluate": {"metrics": ["nDCG@10", "bogus@3"]}}, r"evaluate\.metrics: unknown metric 'bogus@3'"),
        ({"sample_query": "  "}, r"sample_query: empty"),
        ({"generate": {"held_out": 1.0}}, r"generate\.held_out: use a fraction in \[0, 1\)"),
        ({"generate": {"guard": -0.1}}, r"generate\.guard: use a fraction"),
        ({"generate": {"candidates": 5, "skip_top": 5}}, r"generate\.skip_top: 5 skips every one"),
        ({"generate": {"round_trip": 0}}, r"generate\.round_trip: must be a positive integer or null"),
        ({"generate": {"passages": 0, "sentence_queries": 0}}, r"stage 1 has nothing to train on"),
        ({"train": {"retriever": {"interpolation": 0}}}, r"train\.retriever\.interpolation: .* \(0, 1\]"),
        ({"train": {"retriever": {"margin_mse_weight": -1}}}, r"train\.retriever\.margin_mse_weight: must be 0"),
        ({"train": {"reranker": {"add_gold_groups": True}}}, r"add_gold_groups reads training judgments"),
        ({"gate": {"max_p": 0}}, r"gate\.max_p: use a p-value in \(0, 1\]"),
        ({"gate": {"metric": "bogus@3"}}, r"gate\.metric: unknown metric 'bogus@3'"),
    ],
)
def test_recipe_values_out_of_range_fail_on_load(data: Any, expected: str) -> None:
    """Every numeric / enum value is checked before any work: a run does not fail minutes later in training."""
    with pytest.raises(RecipeError, match=expected):
        recipe_from_dict(data)


def test_recipe_range_problems_are_reported_together(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "ranges.yaml"
    bad.write_text("llm:\n  timeout: 0\ngenerate:\n  threshold: 7\ntrain:\n  retriever:\n    learning_rate: -1\n")
    assert main(["recipe", "check", str(bad)]) == 1
    err = capsys.readouterr().err
    assert f"{bad}: 3 problems in the recipe" in err
    for key in ("llm.timeout", "generate.threshold", "train.retriever.learning_rate"):
        assert f"- {key}: " in err
    assert "Traceback" not in err


def test_recipe_file_that_is_not_utf8_names_the_file(tmp_path: Path) -> None:
    bad = tmp_path / "latin1.yaml"
    bad.write_bytes("name: caf\xe9\n".encode("latin-1"))
    with pytest.raises(RecipeError, match=rf"{bad}: not UTF-8 text .*iconv"):
        load_recipe(bad)


def test_recipe_errors_are_all_reported_at_once(tmp_path: Path) -> None:
    """An unknown key, a wrong type and an inconsistency: one error lists the three, one line each."""
    bad = tmp_path / "three.yaml"
    bad.write_text(
        "train:\n  retriever:\n    epochz: 2\n"  # unknown key
        "generate:\n  use_cot: 'yes'\n"  # wrong type
        "serve:\n  store: opensearch\n"  # needs serve.url
    )
    with pytest.raises(RecipeError) as info:
        load_recipe(bad)
    lines = str(info.value).splitlines()
    assert lines[0] == f"{bad}: 3 problems in the recipe, fix them all:"
    assert len(lines) == 4
    assert all(line.startswith("- ") for line in lines[1:])
    assert [line.split(":", 1)[0] for line in lines[1:]] == [
        "- train.retriever.epochz",
        "- generate.use_cot",
        "- serve.url",
    ]
    assert "epochz: unknown key (did you mean 'epochs'?)" in lines[1]
    assert "expected true or false, got 'yes'" in lines[2]
    assert "the opensearch store needs a URL" in lines[3]
    assert len(info.value.problems) == 3
    # a key with a bad value is reported once: its default is not checked against the other settings
    with pytest.raises(RecipeError) as info:
        recipe_from_dict({"evaluate": {"baseline": ["bm25"], "systems": ["bm25"]}})
    assert info.value.problems == ["evaluate.baseline: expected a string, got ['bm25']"]


def test_recipe_file_errors_name_the_file(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("dataset:\n  pth: x\n")
    with pytest.raises(RecipeError, match=r"bad\.yaml: dataset\.pth: unknown key .*allowed keys here: path"):
        load_recipe(bad)
    with pytest.raises(RecipeError, match="not found"):
        load_recipe(tmp_path / "missing.yaml")


def test_cli_recipe_dump_check_and_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["recipe", "dump", "--dataset", "nfcorpus"]) == 0
    dumped = capsys.readouterr().out
    recipe = recipe_from_dict(yaml.safe_load(dumped))
    assert recipe.dataset.path == "nfcorpus"
    assert recipe == quickstart_recipe(dataset="nfcorpus")
    path = tmp_path / "r.yaml"
    path.write_text(dumped)
    assert main(["recipe", "check", str(path)]) == 0
    path.write_text("evaluate:\n  test: z-test\n")
    assert main(["run", str(path), "--out", str(tmp_path / "out")]) == 1
    assert (
        "evaluate.test: 'z-test' is not allowed; use one of: t-test, permutation, bootstrap" in capsys.readouterr().err
    )
    path.write_text("serve:\n  fusion: max\n")
    assert main(["run", str(path), "--out", str(tmp_path / "out")]) == 1
    assert "serve.fusion: 'max' is not allowed; use one of: dbsf, rrf" in capsys.readouterr().err
    assert recipe_from_dict({"serve": {"fusion": "rrf"}}).serve.fusion == "rrf"
    assert recipe.serve.fusion == "dbsf"  # the default
    from syntriever_haystack.flow.steps.gate import GATE

    rrf = recipe_from_dict({"serve": {"fusion": "rrf"}})
    assert GATE.config(rrf) != GATE.config(recipe)  # the gate's reranker check runs on the served fusion: re-run it
    alone = recipe_from_dict({"serve": {"rerank_first_stage_weight": 0}})
    assert GATE.config(alone) != GATE.config(recipe)  # ... and reranks as served
    from syntriever_haystack.flow.steps.evaluation import EVALUATE
    from syntriever_haystack.flow.steps.serving import PIPELINES

    assert EVALUATE.config(alone) != EVALUATE.config(recipe)  # the library's hybrid+rerank fuses as served
    assert PIPELINES.config(alone) != PIPELINES.config(recipe)  # the saved ranker's weight
    path.write_text("evaluate:\n  rerank_depth: 150\n")
    assert main(["run", str(path), "--out", str(tmp_path / "out")]) == 1
    assert "evaluate.rerank_depth: at most 100 (the hybrid's depth in the gate and the evaluation), got 150" in (
        capsys.readouterr().err
    )
    path.write_text("serve:\n  rerank_first_stage_weight: -1\n")
    assert main(["run", str(path), "--out", str(tmp_path / "out")]) == 1
    assert "serve.rerank_first_stage_weight: must be 0 or more, got -1" in capsys.readouterr().err


# ---------------------------------------------------------------------------------------------- evaluation
def test_sampled_corpus_keeps_every_relevant_document(assets: dict[str, Path]) -> None:
    dataset = load_beir(assets["dataset"], "test")
    sampled = sample_corpus(dataset, 20, seed=1)
    relevant = {d for judged in dataset.qrels.values() for d in judged}
    assert len(sampled.corpus) == 20
    assert relevant <= set(sampled.corpus)
    assert list(sampled.corpus) == [d for d in dataset.corpus if d in sampled.corpus]  # corpus order kept
    assert sample_corpus(dataset, 20, seed=1).corpus.keys() == sampled.corpus.keys()
    assert "sampled corpus: 20 of 40 documents" in sampled.warnings[-1]
    assert sample_corpus(dataset, 1000, seed=1) is dataset


def test_system_aliases_become_specs() -> None:
    models = Models(Path("/m/base"), Path("/m/ret"), Path("/m/rr"), "int8", "fp32", "int8", 192, 20)
    assert system_spec("bm25", models) == "bm25"
    assert system_spec("zero-shot", models) == "dense:/m/base?precision=int8"
    assert system_spec("trained", models) == "dense:/m/ret?precision=fp32"
    assert system_spec("hybrid+rerank", models) == (
        "hybrid:/m/ret?precision=fp32&fusion=dbsf&candidates=100+rerank:/m/rr?top_k=20&precision=int8&max_length=192"
    )
    assert system_spec("hybrid-zero-shot", models) == "hybrid:/m/base?precision=int8&fusion=dbsf&candidates=100"
    fused = dataclasses.replace(models, rerank_first_stage_weight=2.0)  # serve.rerank_first_stage_weight
    assert system_spec("hybrid+rerank", fused) == system_spec("hybrid+rerank", models) + "&fuse=2"
    rrf = dataclasses.replace(models, fusion="rrf")  # serve.fusion: rrf
    assert system_spec("hybrid-zero-shot", rrf) == "hybrid:/m/base?precision=int8&fusion=rrf&candidates=100"
    assert system_spec("dense:/x?precision=int8", models) == "dense:/x?precision=int8"
    assert system_spec("bm25+rerank:/x", models) == "bm25+rerank:/x"
    served = dataclasses.replace(models, query_pipeline=Path("/r/query.yaml"), query_rerank_pipeline=Path("/r/qr.yaml"))
    assert system_spec("hybrid", served) == "pipeline:/r/query.yaml?top_k=100"
    assert system_spec("hybrid+rerank", served) == "pipeline:/r/qr.yaml?top_k=100"
    assert system_spec("trained+rerank", served).startswith("dense:/m/ret?precision=fp32+rerank:")


@pytest.mark.loopback
def test_an_openai_compatible_llm_serves_both_generation_steps(
    assets: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`--llm openai:MODEL --api-base-url URL`: one OpenAI generator shared by two steps (two event loops)."""
    from tests.support.fake_openai import FakeOpenAIServer
    from tests.support.scripted_llm import syntriever_responder

    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    with FakeOpenAIServer(syntriever_responder) as server:
        recipe = tiny_recipe(
            assets["dataset"], assets["base"], llm={"spec": "openai:fake-model", "api_base_url": server.url}
        )
        recipe["dataset"]["use_training_labels"] = True
        summary = FlowRunner(recipe_from_dict(recipe), tmp_path / "run", quiet=True).run(until="generate-retriever")
    assert summary.results["generate-retriever"]["records"] == 4
    assert summary.results["generate-queries"]["queries"] > 0
    assert summary.results["generate-queries"]["llm"] == "fake-model"
    assert summary.results["generate-retriever"]["llm"] == "fake-model"


# ------------------------------------------------------------------------------------------------ label-free
def _label_free_recipe(dataset: Path, base: Path) -> dict[str, Any]:
    recipe = tiny_recipe(dataset, base)
    recipe["train"]["stage2"]["enabled"] = False
    recipe["train"]["reranker"]["enabled"] = False
    recipe["evaluate"]["systems"] = ["bm25", "zero-shot", "trained", "hybrid-zero-shot", "hybrid"]
    return recipe


def test_the_default_run_reads_no_training_query_and_no_judgment_but_the_evaluation_split(
    assets: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Label-free by default: only the evaluation split's judgments are read (to evaluate), never `train`."""
    import syntriever_haystack.data.beir as beir

    read: list[str] = []
    original = beir.read_qrels

    def recording(path: Any, **kwargs: Any) -> Any:
        read.append(Path(path).stem)
        return original(path, **kwargs)

    monkeypatch.setattr(beir, "read_qrels", recording)
    summary = run_flow(_label_free_recipe(assets["dataset"], assets["base"]), tmp_path / "run")
    assert summary.complete
    assert set(read) == {"test"}
    assert statuses(summary)["generate-retriever"] == "disabled"
    assert summary.results["data"]["labels"] == "none (label-free)"
    assert summary.results["mine"]["train_queries"] > 0
    assert summary.results["gate"]["checks"]
    report = (tmp_path / "run" / "report" / "report.md").read_text()
    assert "**label-free**" in report
    assert "## Ship gate" in report
    summary_json = json.loads((tmp_path / "run" / "report" / "summary.json").read_text())
    assert summary_json["labels"] == "none"
    assert {"bm25", "zero-shot", "trained", "hybrid-zero-shot", "hybrid"} <= set(summary_json["results"])
    assert summary_json["served"] == "hybrid"
    assert summary_json["gate"]["checks"][0]["component"] == "retriever"


def test_a_folder_of_documents_runs_end_to_end_without_an_evaluation(assets: dict[str, Path], tmp_path: Path) -> None:
    """`quickstart --dataset ./my_docs`: converted into passages, trained, gated, served; nothing to evaluate."""
    rng = random.Random(3)
    docs = tmp_path / "my_docs"
    (docs / "sub").mkdir(parents=True)
    for i in range(14):
        sentences = [" ".join(rng.choices(ALPHA, k=9)).capitalize() + "." for _ in range(4)]
        (docs / ("sub" if i % 2 else "") / f"note{i}.{'md' if i % 3 == 0 else 'txt'}").write_text(" ".join(sentences))
    recipe = _label_free_recipe(docs, assets["base"])
    recipe["evaluate"]["corpus_sample"] = None
    summary = run_flow(recipe, tmp_path / "run")
    assert summary.complete
    results = summary.results
    assert results["data"]["source"] == "documents"
    assert results["data"]["eval_split"] is None
    assert results["data"]["documents"] == 14
    assert results["mine"]["sentence_queries"] > 0
    assert results["evaluate"]["skipped"].startswith("no evaluation split")
    assert results["index"]["documents"] == 14
    assert results["answer"]["documents"]  # a held-out synthetic query, answered by the saved pipeline
    report = (tmp_path / "run" / "report" / "report.md").read_text()
    assert "no evaluation split" in report
    assert "## Ship gate" in report
    summary_json = json.loads((tmp_path / "run" / "report" / "summary.json").read_text())
    assert summary_json["results"] == {}
    assert summary_json["gate"]["checks"]


def test_a_beir_folder_without_a_train_split_is_label_free_and_opting_in_names_the_split(
    assets: dict[str, Path], tmp_path: Path
) -> None:
    folder = tmp_path / "no-train"
    shutil.copytree(assets["dataset"], folder)
    (folder / "qrels" / "train.tsv").unlink()
    recipe = recipe_from_dict(_label_free_recipe(folder, assets["base"]))
    runner = FlowRunner(recipe, tmp_path / "run", generator_factory=lambda llm: ScriptedChat(), quiet=True)
    assert statuses(runner.run(until="data"))["data"] == "ran"
    opted = _label_free_recipe(folder, assets["base"])
    opted["dataset"]["use_training_labels"] = True
    with pytest.raises(FlowError, match=r"dataset\.train_split: .* has no split 'train'.*drop --use-training-labels"):
        run_flow(opted, tmp_path / "run2", until="data")


def test_a_component_that_does_not_beat_what_it_replaces_is_not_served(
    first_run: tuple[dict[str, Any], Path, RunSummary], tmp_path: Path
) -> None:
    """The gate at an unreachable margin: the query pipeline embeds with the base model, no reranker is served."""
    recipe, out = copy_run(first_run, tmp_path)
    recipe["gate"] = {"min_delta": 0.99}
    summary = run_flow(recipe, out)
    gate = summary.results["gate"]
    assert [c["ships"] for c in gate["checks"]] == [False, False]
    assert gate["served_retriever"] == "zero-shot"
    assert not gate["served_reranker"]
    query = yaml.safe_load((out / "pipelines" / "query.yaml").read_text())
    embedder = query["components"]["text_embedder"]["init_parameters"]
    assert Path(embedder["model"]).name == "base-onnx"
    assert summary.results["evaluate"]["served"] == "hybrid"
    assert summary.results["answer"]["pipeline"].endswith("query.yaml")


def test_the_real_effect_is_the_checks_own_comparison_or_says_which_it_is() -> None:
    """The retriever's real effect compares the check's hybrids when evaluated, else the dense models, and names
    the systems compared; the reranker's is always the reranked pipeline against the first stage."""
    from syntriever_haystack.flow.report import real_effects

    gate = {
        "metric": "nDCG@10",
        "checks": [
            {"component": "retriever", "candidate": "hybrid-trained", "incumbent": "hybrid-zero-shot"},
            {"component": "reranker", "candidate": "hybrid+rerank", "incumbent": "hybrid"},
        ],
    }

    def rows(values: dict[str, float]) -> dict[str, Any]:
        return {"rows": [{"system": k, "means": {"nDCG@10": v}} for k, v in values.items()]}

    dense = {"trained": 0.61, "zero-shot": 0.6, "hybrid": 0.7, "hybrid+rerank": 0.69}
    both = real_effects(gate, rows({**dense, "hybrid-trained": 0.74, "hybrid-zero-shot": 0.73}))
    assert both["retriever"] == {
        "candidate": 0.74,
        "incumbent": 0.73,
        "delta": 0.01,
        "systems": "hybrid-trained vs hybrid-zero-shot",
    }
    assert both["reranker"]["systems"] == "hybrid+rerank vs hybrid"
    fallback = real_effects(gate, rows(dense))["retriever"]
    assert (fallback["systems"], fallback["delta"]) == ("trained vs zero-shot", 0.01)
    assert real_effects(gate, None) == {}
