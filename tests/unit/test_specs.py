"""Typed specs: parsed once where text enters, errors that name the value and the fix, canonical text back."""

from __future__ import annotations

from pathlib import Path

import pytest

from syntriever_haystack.data.beir import BeirDataset, Passage
from syntriever_haystack.errors import SyntrieverError
from syntriever_haystack.flow import RecipeError, load_recipe
from syntriever_haystack.generate import tasks
from syntriever_haystack.specs import (
    JudgeSpec,
    JudgeSpecError,
    LLMSpec,
    LLMSpecError,
    SpecError,
    SystemSpec,
    SystemSpecError,
    parse_precision,
)

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(
    ("text", "kind", "model", "options"),
    [
        ("local", "local", "gemma3-270m", {}),
        ("local?backend=transformers", "local", "gemma3-270m", {"backend": "transformers"}),
        (
            "local:smollm2-135m?backend=transformers&n_threads=2",
            "local",
            "smollm2-135m",
            {"backend": "transformers", "n_threads": 2},
        ),
        ("openai:gpt-4o-mini", "openai", "gpt-4o-mini", {}),
        ("llama3", "openai", "llama3", {}),
    ],
)
def test_llm_spec_parses(text: str, kind: str, model: str, options: dict[str, object]) -> None:
    spec = LLMSpec.parse(text, api_base_url="http://localhost:8000/v1", timeout_s=5.0)
    assert (spec.kind, spec.model, spec.local_options()) == (kind, model, options)
    assert (spec.api_base_url, spec.timeout_s) == ("http://localhost:8000/v1", 5.0)
    assert LLMSpec.parse(str(spec), api_base_url=spec.api_base_url, timeout_s=5.0) == spec


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("local:gemma3-270m?temperature=1", "options after '?'"),
        ("local:gemma3-270m?n_threads=two", "n_threads must be a positive integer"),
        ("local:gemma3-270m?backend", "must be name=value"),
        ("openai:", "needs a model name"),
    ],
)
def test_llm_spec_errors_name_the_fix(text: str, message: str) -> None:
    with pytest.raises(LLMSpecError, match=message):
        LLMSpec.parse(text)


def test_judge_spec_round_trip_and_defaults(tmp_path: Path) -> None:
    relevance = JudgeSpec.parse(f"ranker:{tmp_path}?threshold=0.7&precision=int8")
    assert (relevance.kind, relevance.model, relevance.threshold, relevance.precision) == (
        "ranker",
        tmp_path,
        0.7,
        "int8",
    )
    assert JudgeSpec.parse(str(relevance)) == relevance
    preference = JudgeSpec.parse(f"embedder:{tmp_path}?margin=0.05", purpose="preference")
    assert (preference.margin, preference.threshold, preference.precision) == (0.05, None, "fp32")
    assert JudgeSpec.parse("llm").is_llm
    assert JudgeSpec.coerce(relevance) is relevance
    with pytest.raises(JudgeSpecError, match="is not a folder"):
        JudgeSpec.parse(f"ranker:{tmp_path / 'nope'}").check()


def test_judge_spec_check_model_kind(exported_bi_encoder: Path, exported_cross_encoder: Path) -> None:
    """check() needs an exported model of the judge's kind: embedder a bi-encoder, ranker a cross-encoder."""
    JudgeSpec.parse(f"ranker:{exported_cross_encoder}?threshold=0.5").check()
    JudgeSpec.parse(f"embedder:{exported_bi_encoder}?margin=0.1", purpose="preference").check()
    with pytest.raises(JudgeSpecError, match="is a cross-encoder, but the embedder judge needs a bi-encoder"):
        JudgeSpec.parse(f"embedder:{exported_cross_encoder}").check()
    with pytest.raises(JudgeSpecError, match="is a bi-encoder, but the ranker judge needs a cross-encoder"):
        JudgeSpec.parse(f"ranker:{exported_bi_encoder}").check()
    with pytest.raises(SyntrieverError, match=r"syntriever\.json"):
        JudgeSpec.parse(f"ranker:{exported_cross_encoder.parent}").check()


@pytest.mark.parametrize(
    ("text", "purpose", "message"),
    [
        ("ranker:x?threshold=nan", "relevance", r"threshold must be a number in \[0, 1\]"),
        ("ranker:x?threshold=7", "relevance", r"threshold must be a number in \[0, 1\]"),
        ("ranker:x?threshold=-0.1", "relevance", r"threshold must be a number in \[0, 1\]"),
        ("embedder:x?threshold=-1.5", "relevance", r"threshold must be a number in \[-1, 1\]"),
        ("embedder:x?threshold=inf", "relevance", r"threshold must be a number in \[-1, 1\]"),
        ("embedder:x?margin=nan", "preference", r"margin must be a finite number >= 0"),
        ("ranker:x?margin=-1", "preference", r"margin must be a finite number >= 0"),
    ],
)
def test_judge_spec_score_ranges(text: str, purpose: str, message: str) -> None:
    spec = JudgeSpec.parse(text, purpose=purpose)  # type: ignore[arg-type]
    with pytest.raises(JudgeSpecError, match=message):
        spec.check()  # the range is checked before the model folder (x does not exist)


def test_judge_spec_score_ranges_accept_bounds(tmp_path: Path) -> None:
    for text, purpose in [
        ("embedder:{d}?threshold=-1", "relevance"),
        ("ranker:{d}?threshold=1", "relevance"),
        ("ranker:{d}?margin=0", "preference"),
    ]:
        with pytest.raises(JudgeSpecError, match="is not a folder"):  # past the range check
            JudgeSpec.parse(text.format(d=tmp_path / "nope"), purpose=purpose).check()  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("text", "purpose", "message"),
    [
        ("ranker:x?margin=0.1", "relevance", r"unknown parameters \['margin'\]"),
        ("ranker:x?threshold=0.1", "preference", r"unknown parameters \['threshold'\]; use margin="),
        ("ranker:x?threshold=high", "relevance", "threshold must be a number"),
        ("ranker:x?precision=int4", "relevance", "must be one of fp32, int8, got 'int4'"),
        ("embedder:", "relevance", "needs a model folder"),
        ("gpt", "relevance", "Unknown judge 'gpt'"),
    ],
)
def test_judge_spec_errors(text: str, purpose: str, message: str) -> None:
    with pytest.raises(JudgeSpecError, match=message):
        JudgeSpec.parse(text, purpose=purpose)  # type: ignore[arg-type]


def test_missing_judge_model_fails_before_any_call(tmp_path: Path) -> None:
    with pytest.raises(JudgeSpecError, match="syntriever export"):
        JudgeSpec.parse(f"embedder:{tmp_path / 'missing'}").check()


def test_system_spec_and_precision() -> None:
    system = SystemSpec.parse("hybrid:models/x?k=60&precision=int8+rerank:models/ce?top_k=50")
    assert system.first_stage.inner is not None
    assert system.first_stage.inner.precision == "int8"
    assert system.rerankers[0].int_option("top_k") == 50
    assert [s.kind for s in system.stages()] == ["hybrid", "rerank", "dense"]
    with pytest.raises(SystemSpecError, match="must be an integer"):
        SystemSpec.parse("bm25+rerank:ce?top_k=many").rerankers[0].int_option("top_k")
    assert parse_precision("fp32") == "fp32"
    with pytest.raises(SpecError, match=r"export.precision: must be one of fp32, int8, got 'bf16'"):
        parse_precision("bf16", key="export.precision")


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"llm": {"spec": "local:gemma3-270m?temperature=1"}}, r"llm.spec: .*options after '\?'"),
        ({"generate": {"judge": "ranker:x?margin=1"}}, r"generate.judge: .*unknown parameters \['margin'\]"),
        ({"generate": {"candidate_retriever": "splade:x"}}, "generate.candidate_retriever: unknown system kind"),
        ({"generate": {"preferences": {"judge": "gpt"}}}, "generate.preferences.judge: Unknown judge 'gpt'"),
        ({"evaluate": {"systems": ["bm25", "dense:x?precision=int4"], "baseline": "bm25"}}, "evaluate.systems: "),
    ],
)
def test_recipe_parses_its_specs_before_anything_runs(overrides: dict[str, object], message: str) -> None:
    with pytest.raises(RecipeError, match=message):
        load_recipe(None, overrides=overrides)


# --------------------------------------------------------------------------------------- generation task items
def _dataset() -> BeirDataset:
    corpus = {
        "d1": Passage("Iron", "Iron deficiency causes anaemia in many patients worldwide.", {}),
        "d2": Passage("", "Short.", {}),
        "d3": Passage("Vitamin", "Vitamin D is made in the skin under sunlight exposure.", {}),
    }
    return BeirDataset(
        name="tiny",
        path=None,
        split="train",
        corpus=corpus,
        queries={"q1": "what causes anaemia", "q2": "vitamin d source"},
        qrels={"q1": {"d1": 1, "d2": 0}, "q2": {"d3": 2, "missing": 1}},
    )


def test_split_query_items_keep_judged_relevant_passages_only() -> None:
    items = tasks.split_query_items(_dataset(), include_title=True)
    assert [(i.query_id, [d for d, _ in i.gold]) for i in items] == [("q1", ["d1"]), ("q2", ["d3"])]
    assert items[0].gold[0][1].startswith("Iron Iron deficiency")
    untitled = tasks.split_query_items(_dataset(), include_title=False)
    assert untitled[0].gold[0][1].startswith("Iron deficiency")


def test_sample_passages_is_seeded_and_names_the_key() -> None:
    corpus = _dataset().corpus
    first = tasks.sample_passages(corpus, 5, min_words=3, seed=1, include_title=False)
    assert sorted(p.doc_id for p in first) == ["d1", "d3"]
    assert tasks.sample_passages(corpus, 1, min_words=3, seed=1, include_title=False) == tasks.sample_passages(
        corpus, 1, min_words=3, seed=1, include_title=False
    )
    with pytest.raises(SyntrieverError, match=r"generate\.min_words: no passage has at least 99 words"):
        tasks.sample_passages(corpus, 5, min_words=99, seed=1, include_title=False, key="generate.min_words")


def test_synthetic_query_items_take_the_source_passage_as_gold(tmp_path: Path) -> None:
    path = tmp_path / "queries.jsonl"
    path.write_text(
        '{"id": "s1", "kind": "query", "query": "anaemia cause", "source_doc_id": "d1"}\n'
        '{"id": "s2", "kind": "query", "query": "copy", "source_doc_id": "d1", "rejected": "copies_passage"}\n',
        encoding="utf-8",
    )
    items = tasks.synthetic_query_items(path, _dataset().corpus, include_title=False)
    assert [(i.query_id, i.gold[0][0]) for i in items] == [("s1", "d1")]
    path.write_text('{"id": "g1", "kind": "group"}\n', encoding="utf-8")
    with pytest.raises(SyntrieverError, match=r"--queries-file: .* holds 'group' records"):
        tasks.synthetic_query_items(path, _dataset().corpus, include_title=False)
