"""The generation components in Haystack pipelines, against the scripted OpenAI-compatible server."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest
from haystack import Document, Pipeline
from haystack.components.generators.chat import OpenAIChatGenerator
from haystack.utils import Secret

from haystack_integrations.components.generators.syntriever import (
    SyntrieverPreferenceJudge,
    SyntrieverQueryGenerator,
    SyntrieverRelevanceLabeler,
    SyntrieverTrainingExampleGenerator,
)
from tests.support.fake_openai import FakeOpenAIServer
from tests.support.scripted_llm import syntriever_responder

pytestmark = pytest.mark.loopback

DOCS = [
    Document(id="iron", content="Iron deficiency anemia is caused by blood loss, low dietary iron and pregnancy."),
    Document(id="tower", content="The Eiffel tower in Paris was built for the world fair of 1889 by Gustave Eiffel."),
]


@pytest.fixture
def server() -> Iterator[FakeOpenAIServer]:
    with FakeOpenAIServer(syntriever_responder) as fake:
        yield fake


@pytest.fixture
def chat(server: FakeOpenAIServer, monkeypatch: pytest.MonkeyPatch) -> OpenAIChatGenerator:
    monkeypatch.setenv("FAKE_OPENAI_KEY", "test-key")
    return OpenAIChatGenerator(
        api_key=Secret.from_env_var("FAKE_OPENAI_KEY"), api_base_url=server.url, model="fake-model", max_retries=0
    )


def test_query_generator_in_a_pipeline_and_cached(chat, server, tmp_path) -> None:
    cache = str(tmp_path / "cache.sqlite")
    pipeline = Pipeline()
    pipeline.add_component("queries", SyntrieverQueryGenerator(chat_generator=chat, cache_path=cache))
    result = pipeline.run({"queries": {"documents": DOCS}})["queries"]
    assert len(server.requests) == 6  # 2 documents × 3 query types
    assert {q["query_type"] for q in result["queries"]} <= {"question", "keywords", "claim"}
    assert all(q["source_id"] in {"iron", "tower"} for q in result["queries"])
    for original, document in zip(DOCS, result["documents"], strict=True):
        assert "synthetic_queries" not in original.meta  # inputs are not mutated
        assert len(document.meta["synthetic_queries"]) == 3
    assert result["failures"] == []
    # a second component over the same cache makes no request
    again = SyntrieverQueryGenerator(chat_generator=chat, cache_path=cache).run(documents=DOCS)
    assert len(server.requests) == 6
    assert again["queries"] == result["queries"]


def test_pipeline_yaml_round_trip_keeps_secrets_as_env_references(chat, tmp_path) -> None:
    pipeline = Pipeline()
    pipeline.add_component("queries", SyntrieverQueryGenerator(chat_generator=chat, queries_per_document=2))
    pipeline.add_component("labels", SyntrieverRelevanceLabeler(chat_generator=chat))
    pipeline.add_component("prefs", SyntrieverPreferenceJudge(chat_generator=chat, both_orders=False))
    pipeline.add_component("examples", SyntrieverTrainingExampleGenerator(chat_generator=chat, use_cot=False))
    text = pipeline.dumps()
    assert "test-key" not in text
    assert "FAKE_OPENAI_KEY" in text
    loaded = Pipeline.loads(text)
    component = loaded.get_component("queries")
    assert isinstance(component, SyntrieverQueryGenerator)
    assert component.queries_per_document == 2
    assert loaded.get_component("prefs").both_orders is False  # type: ignore[attr-defined]


def test_relevance_labeler_records_the_judge(chat, server) -> None:
    labeler = SyntrieverRelevanceLabeler(chat_generator=chat)
    documents = labeler.run(query="iron deficiency anemia blood loss", documents=DOCS)["documents"]
    assert [d.meta["relevance_label"] for d in documents] == [True, False]
    assert all(d.meta["relevance_judge"].startswith("llm:fake-model:relevance@1#") for d in documents)
    assert "relevance_label" not in DOCS[0].meta


def test_preference_judge_asks_both_orders(chat, server) -> None:
    judge = SyntrieverPreferenceJudge(chat_generator=chat)
    result = judge.run(query="iron deficiency anemia", documents=[DOCS[1], DOCS[0]])
    assert len(server.requests) == 2  # one pair, both orders
    assert result["preferences"] == [
        {
            "preferred_id": "iron",
            "rejected_id": "tower",
            "preferred_rank": 2,
            "rejected_rank": 1,
            "judge": result["preferences"][0]["judge"],
            "votes": {"ab": 2, "ba": 1},
        }
    ]


def test_training_example_generator_and_run_async(chat, server) -> None:
    generator = SyntrieverTrainingExampleGenerator(chat_generator=chat)
    gold = [[DOCS[0]]]
    result = asyncio.run(generator.run_async(queries=["iron deficiency anemia causes"], gold_documents=gold))
    (example,) = result["examples"]
    sources = [p["source"] for p in example["positives"]]
    assert sources[0] == "gold"
    assert "cot" in sources
    assert {n["source"] for n in example["negatives"]} <= {"llm_negative", "rejected_positive"}
    # the synchronous run works twice in a row (each run has its own event loop)
    assert generator.run(queries=["iron deficiency anemia causes"])["examples"]
    assert generator.run(queries=["eiffel tower paris"])["examples"]


def test_score_judge_needs_no_chat_generator() -> None:
    with pytest.raises(ValueError, match="needs a chat_generator"):
        SyntrieverRelevanceLabeler(judge="llm")
    labeler = SyntrieverRelevanceLabeler(judge="embedder:/does/not/exist?threshold=0.5")
    from syntriever_haystack.generate.judges import JudgeSpecError

    with pytest.raises(JudgeSpecError, match="syntriever export"):
        labeler.warm_up()
    data = labeler.to_dict()
    assert data["init_parameters"]["chat_generator"] is None
    assert SyntrieverRelevanceLabeler.from_dict(data).judge.startswith("embedder:")


def test_a_repeated_few_shot_answer_is_rejected(monkeypatch: pytest.MonkeyPatch) -> None:
    """Small models sometimes answer with a demonstration's output verbatim: that is not a query of the passage."""
    monkeypatch.setenv("FAKE_OPENAI_KEY", "test-key")
    with FakeOpenAIServer(lambda request: "Why do people become iron deficient and anemic?") as fake:
        chat = OpenAIChatGenerator(
            api_key=Secret.from_env_var("FAKE_OPENAI_KEY"), api_base_url=fake.url, model="fake-model", max_retries=0
        )
        result = SyntrieverQueryGenerator(chat_generator=chat, query_types=["question"]).run(documents=DOCS[:1])
    assert result["queries"] == []
    reasons = {q["rejected"] for q in result["documents"][0].meta["synthetic_queries"]}
    assert reasons <= {"copies_example", "duplicate"}
    assert "copies_example" in reasons
