"""The generation tasks end to end against the scripted OpenAI-compatible server.

RetrieverDataGenerator (p+, p-, q_cot, verification), PreferenceGenerator (both orders, consistency),
RerankerDataGenerator (queries, filters, BM25 candidates, labels), resumability (rerun, failure + resume),
score judges, judge specs, and the exporters on what was generated.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import re
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
from haystack.components.generators.chat import OpenAIChatGenerator
from haystack.utils import Secret

from syntriever_haystack.data.beir import BeirDataset, load_beir
from syntriever_haystack.evaluate.systems import EmbeddingCache
from syntriever_haystack.generate import exporters
from syntriever_haystack.generate.cache import ResponseCache
from syntriever_haystack.generate.candidates import SpecRetriever
from syntriever_haystack.generate.judges import (
    JudgeSpecError,
    LLMPreferenceJudge,
    LLMRelevanceJudge,
    ScorePreferenceJudge,
    ScoreRelevanceJudge,
    preference_judge,
    relevance_judge,
)
from syntriever_haystack.generate.llm import LLMClient, LLMSettings
from syntriever_haystack.generate.preferences import CandidateSet, PreferenceGenerator
from syntriever_haystack.generate.prompts import load_prompts
from syntriever_haystack.generate.reranker_data import PassageItem, RerankerDataGenerator
from syntriever_haystack.generate.retriever_data import QueryItem, RetrieverDataGenerator
from tests.support.fake_openai import FakeOpenAIServer, Fault
from tests.support.scripted_llm import syntriever_responder
from tests.unit.test_beir_loader import write_beir

pytestmark = pytest.mark.loopback

PROMPTS = load_prompts()

CORPUS = [
    (
        "d1",
        "Iron deficiency anemia",
        "Iron deficiency anemia is caused by chronic blood loss, a diet low in iron and "
        "poor absorption of iron in the gut.",
    ),
    (
        "d2",
        "Photosynthesis",
        "Green plants use sunlight, water and carbon dioxide to make glucose and oxygen inside their chloroplasts.",
    ),
    (
        "d3",
        "Eiffel Tower",
        "The Eiffel Tower in Paris was built by the company of Gustave Eiffel for the 1889 World Fair.",
    ),
    (
        "d4",
        "Insulin",
        "Insulin is a hormone made by the pancreas that lowers blood glucose by helping cells absorb sugar.",
    ),
    (
        "d5",
        "Iron ore",
        "Iron ore is mined in Australia and Brazil and smelted with coke in a blast furnace to make steel.",
    ),
    (
        "d6",
        "The Louvre",
        "The Louvre in Paris is the most visited art museum in the world and was built as a royal palace.",
    ),
    (
        "d7",
        "Honey bees",
        "Honey bees collect nectar from flowers and make honey; plants depend on them to carry pollen.",
    ),
    (
        "d8",
        "Blood donation",
        "Donated blood is tested, separated into red cells, plasma and platelets, and stored for transfusion.",
    ),
    (
        "d9",
        "Exposition Universelle",
        "The 1900 World Fair in Paris introduced escalators, talking films and the first Paris metro line.",
    ),
    (
        "d10",
        "Volcanoes",
        "Volcanoes erupt when molten rock called magma rises through cracks in the crust of the earth.",
    ),
]
QUERIES = {
    # 6 content words: the scripted p- reuses 3 of them, so the judge finds it relevant (and it is dropped)
    "q1": "what causes iron deficiency anemia and blood loss",
    # 7-8 content words: the scripted p- is judged not relevant (kept as a negative)
    "q2": "how do green plants make glucose and oxygen from sunlight",
    "q3": "who built the eiffel tower in paris for the world fair",
}
GOLD = {"q1": "d1", "q2": "d2", "q3": "d3"}

Responder = Callable[[dict[str, Any]], Any]


# ------------------------------------------------------------------------------------------------ fixtures


@pytest.fixture(scope="module")
def beir_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_beir(
        tmp_path_factory.mktemp("beir") / "tiny",
        corpus=[{"_id": d, "title": title, "text": text} for d, title, text in CORPUS],
        queries=[{"_id": q, "text": text} for q, text in QUERIES.items()],
        qrels={"train": [(q, d, 1) for q, d in GOLD.items()]},
    )


@pytest.fixture(scope="module")
def dataset(beir_folder: Path) -> BeirDataset:
    return load_beir(beir_folder, split="train")


@pytest.fixture(scope="module")
def texts(dataset: BeirDataset) -> dict[str, str]:
    return dict(zip(dataset.doc_ids, dataset.doc_texts(), strict=True))


@pytest.fixture
def server() -> Iterator[FakeOpenAIServer]:
    with FakeOpenAIServer(syntriever_responder) as fake:
        yield fake


def make_client(server: FakeOpenAIServer, cache_path: Path, **settings: Any) -> LLMClient:
    """A new client (as a new process would build): a fresh generator on the run's persistent cache."""
    generator = OpenAIChatGenerator(
        api_key=Secret.from_token("test"), api_base_url=server.url, model="fake-model", max_retries=0, timeout=10.0
    )
    options: dict[str, Any] = {"backoff_initial_s": 0.01, "backoff_max_s": 0.05, "max_retries": 2, "concurrency": 8}
    options.update(settings)
    return LLMClient(generator, cache=ResponseCache(cache_path), settings=LLMSettings(**options))


def query_items(dataset: BeirDataset, texts: dict[str, str]) -> list[QueryItem]:
    return [
        QueryItem(qid, text, tuple((d, texts[d]) for d in dataset.qrels[qid])) for qid, text in dataset.queries.items()
    ]


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def field(text: str, name: str) -> str:
    match = re.search(rf"^{name}:\s*(.*)$", text, re.MULTILINE)
    return match.group(1).strip() if match else ""


def system_of(request: dict[str, Any]) -> str:
    return str(request["messages"][0]["content"])


def user_of(request: dict[str, Any]) -> str:
    return str(request["messages"][-1]["content"])


def overlap_scorer(query: str, passages: Sequence[str]) -> list[float]:
    """Fraction of the query's words found in each passage: a plain-python judge model."""
    words = set(re.findall(r"[a-z]+", query.lower()))
    return [len(words & set(re.findall(r"[a-z]+", p.lower()))) / max(len(words), 1) for p in passages]


def retriever_generator(client: LLMClient, judge: Any = None, **kwargs: Any) -> RetrieverDataGenerator:
    return RetrieverDataGenerator(
        client=client,
        prompts=PROMPTS,
        judge=judge or LLMRelevanceJudge(client, PROMPTS["verify"]),
        progress=False,
        **kwargs,
    )


# --------------------------------------------------------------------------------------- retriever stage 1


def test_retriever_data_records(
    server: FakeOpenAIServer, dataset: BeirDataset, texts: dict[str, str], tmp_path: Path
) -> None:
    client = make_client(server, tmp_path / "cache.sqlite")
    generator = retriever_generator(client)
    stats = asyncio.run(generator.generate(query_items(dataset, texts), tmp_path / "out" / "retriever.jsonl"))
    assert (stats.done, stats.failed, stats.records, stats.skipped) == (3, 0, 3, 0)
    # 3 generations (p+, p-, q_cot) + 2 verifications (p+, p-) per query
    assert len(server.requests) == 15
    steps = [system_of(r) for r in server.requests]
    assert sum("reference passages" in s for s in steps) == 3
    assert sum("hard negative" in s for s in steps) == 3
    assert sum("step by step" in s for s in steps) == 3
    assert sum("judge search results" in s for s in steps) == 6

    records = read_jsonl(tmp_path / "out" / "retriever.jsonl")
    assert len(records) == 3
    assert len({r["id"] for r in records}) == 3
    by_query = {r["query_id"]: r for r in records}
    assert set(by_query) == set(QUERIES)
    judge_name = f"llm:fake-model:{PROMPTS['verify'].label}"
    for qid, record in by_query.items():
        assert record["kind"] == "retriever"
        assert record["query"] == QUERIES[qid]
        sources = [p["source"] for p in record["positives"]]
        assert sources == ["gold", "llm_positive", "cot"]
        gold, positive, cot = record["positives"]
        assert gold["doc_id"] == GOLD[qid]
        assert gold["text"] == texts[GOLD[qid]]
        assert positive["judge"] == judge_name
        assert positive["label"] is True
        assert positive["doc_id"] is None
        assert cot["judge"] is None
        assert cot["text"]
        provenance = record["provenance"]
        assert provenance["model"] == "fake-model"
        assert provenance["judge"] == judge_name
        assert provenance["generator"] == "OpenAIChatGenerator"
        assert PROMPTS["positive_passage"].label in provenance["prompts"]
        assert provenance["cached"] is False
    # p- judged relevant is dropped (q1); otherwise it is a judged negative
    assert by_query["q1"]["negatives"] == []
    for qid in ("q2", "q3"):
        (negative,) = by_query[qid]["negatives"]
        assert negative["source"] == "llm_negative"
        assert negative["label"] is False
        assert negative["judge"] == judge_name
    assert client.accounting.filtered == {"positive_verified": 3, "negative_judged_relevant": 1}
    assert client.accounting.items["done"] == 3
    assert read_jsonl(tmp_path / "out" / "retriever.failures.jsonl") == []
    assert [d["id"] for d in read_jsonl(tmp_path / "out" / "retriever.done.jsonl")] != []

    # rerun: everything is done → zero requests, no duplicates
    before = (tmp_path / "out" / "retriever.jsonl").read_bytes()
    rerun = retriever_generator(make_client(server, tmp_path / "cache.sqlite"))
    stats = asyncio.run(rerun.generate(query_items(dataset, texts), tmp_path / "out" / "retriever.jsonl"))
    assert (stats.skipped, stats.done, stats.records) == (3, 0, 0)
    assert len(server.requests) == 15
    assert (tmp_path / "out" / "retriever.jsonl").read_bytes() == before

    # rerun after losing the done marks (killed before marking): answers from the cache, records skipped by id
    (tmp_path / "out" / "retriever.done.jsonl").unlink()
    again_client = make_client(server, tmp_path / "cache.sqlite")
    stats = asyncio.run(
        retriever_generator(again_client).generate(query_items(dataset, texts), tmp_path / "out" / "retriever.jsonl")
    )
    assert (stats.done, stats.records, stats.duplicates_skipped) == (3, 0, 3)
    assert len(server.requests) == 15
    assert again_client.accounting.calls == 0
    assert again_client.accounting.cache_hits == 15
    assert len(read_jsonl(tmp_path / "out" / "retriever.jsonl")) == 3


def test_rejected_positive_becomes_a_negative(dataset: BeirDataset, texts: dict[str, str], tmp_path: Path) -> None:
    def strict_judge(request: dict[str, Any]) -> Any:
        if "judge search results" in system_of(request) and field(user_of(request), "Passage").startswith(
            "This passage explains"
        ):
            return "no"  # the judge rejects every generated p+
        return syntriever_responder(request)

    with FakeOpenAIServer(strict_judge) as fake:
        client = make_client(fake, tmp_path / "cache.sqlite")
        asyncio.run(
            retriever_generator(client, use_cot=False).generate(query_items(dataset, texts), tmp_path / "r.jsonl")
        )
        assert len(fake.requests) == 3 * 4  # no q_cot
    records = {r["query_id"]: r for r in read_jsonl(tmp_path / "r.jsonl")}
    for qid, record in records.items():
        assert [p["source"] for p in record["positives"]] == ["gold"]  # no p+, no q_cot
        rejected = [n for n in record["negatives"] if n["source"] == "rejected_positive"]
        assert len(rejected) == 1
        assert rejected[0]["label"] is False
        assert rejected[0]["text"].startswith("This passage explains")
        sources = sorted(n["source"] for n in record["negatives"])
        assert sources == (["rejected_positive"] if qid == "q1" else ["llm_negative", "rejected_positive"])
    assert client.accounting.filtered["positive_rejected"] == 3


def test_failed_item_is_not_done_and_a_rerun_sends_only_the_missing_requests(
    server: FakeOpenAIServer, dataset: BeirDataset, texts: dict[str, str], tmp_path: Path
) -> None:
    out = tmp_path / "out" / "retriever.jsonl"
    items = query_items(dataset, texts)
    server.inject(Fault("status", status=400))  # the first request of the run fails for good (not retryable)
    client = make_client(server, tmp_path / "cache.sqlite")
    stats = asyncio.run(retriever_generator(client).generate(items, out))
    assert (stats.done, stats.failed, stats.records) == (2, 1, 2)
    first_requests = len(server.requests)
    assert first_requests == 2 * 5 + 3  # two full items; the failed one stops before verification
    failures = read_jsonl(tmp_path / "out" / "retriever.failures.jsonl")
    assert len(failures) == 1
    failed_item = failures[0]["item"]
    assert failures[0]["cause"] == "http_400"
    assert failures[0]["step"].split("@")[0] in {"positive_passage", "negative_passage", "cot"}
    assert failed_item not in {d["id"] for d in read_jsonl(tmp_path / "out" / "retriever.done.jsonl")}
    assert failed_item not in {r["query_id"] for r in read_jsonl(out)}
    assert client.accounting.failures == {"http_400": 1}

    rerun_client = make_client(server, tmp_path / "cache.sqlite")
    stats = asyncio.run(retriever_generator(rerun_client).generate(items, out))
    assert (stats.skipped, stats.done, stats.failed, stats.records) == (2, 1, 0, 1)
    # only the failed generation + the two verifications of that item
    assert len(server.requests) - first_requests == 3
    assert rerun_client.accounting.calls == 3
    assert rerun_client.accounting.cache_hits == 2
    records = read_jsonl(out)
    assert sorted(r["query_id"] for r in records) == sorted(QUERIES)
    assert len({r["id"] for r in records}) == 3
    assert read_jsonl(tmp_path / "out" / "retriever.failures.jsonl") == []
    assert len(read_jsonl(tmp_path / "out" / "retriever.done.jsonl")) == 3


# --------------------------------------------------------------------------------------- retriever stage 2


def candidate_sets(dataset: BeirDataset, texts: dict[str, str], top_k: int = 3) -> list[CandidateSet]:
    retriever = SpecRetriever("bm25", dataset.corpus, cache=EmbeddingCache(None), progress=False)
    ranked = retriever.retrieve(dataset.queries, top_k)
    sets = [
        CandidateSet(qid, text, tuple((d, texts[d]) for d, _ in ranked[qid][:top_k]))
        for qid, text in dataset.queries.items()
    ]
    for item in sets:
        assert len(item.candidates) == top_k, "the tiny corpus gives every query top_k BM25 candidates"
        assert item.candidates[0][0] == GOLD[item.query_id]
    return sets


def test_preferences_ask_both_orders_and_keep_consistent_verdicts(
    server: FakeOpenAIServer, dataset: BeirDataset, texts: dict[str, str], tmp_path: Path
) -> None:
    items = candidate_sets(dataset, texts)
    pairs = sum(len(list(itertools.combinations(item.candidates, 2))) for item in items)
    assert pairs == 9
    client = make_client(server, tmp_path / "cache.sqlite")
    judge = LLMPreferenceJudge(client, PROMPTS["preference"])
    generator = PreferenceGenerator(judge=judge, client=client, retriever="bm25", progress=False)
    stats = asyncio.run(generator.generate(items, tmp_path / "preferences.jsonl"))
    assert stats.done == 3
    assert stats.failed == 0
    assert len(server.requests) == 2 * pairs  # both orders of every pair
    asked = {
        (field(user_of(r), "Query"), field(user_of(r), "Passage 1"), field(user_of(r), "Passage 2"))
        for r in server.requests
    }
    assert len(asked) == 2 * pairs
    assert all((q, b, a) in asked for q, a, b in asked)  # every order has its swapped twin

    records = read_jsonl(tmp_path / "preferences.jsonl")
    assert len({r["id"] for r in records}) == len(records) == stats.records
    inconsistent = client.accounting.filtered.get("pair_inconsistent", 0)
    assert len(records) + inconsistent == pairs
    assert len(records) >= 3
    for record in records:
        assert record["kind"] == "preference"
        assert record["judge"] == judge.name
        assert judge.name.endswith(":both-orders")
        assert set(record["votes"]) == {"ab", "ba"}
        assert record["votes"]["ab"] != record["votes"]["ba"]  # consistent: the same passage won both times
        assert record["preferred"]["doc_id"] != record["rejected"]["doc_id"]
        assert record["provenance"]["retriever"] == "bm25"
    # the gold passage (BM25 rank 1, most word overlap) is never rejected
    assert not any(r["rejected"]["doc_id"] == GOLD[r["query_id"]] for r in records)
    assert {r["query_id"] for r in records if r["preferred"]["doc_id"] == GOLD[r["query_id"]]} == set(QUERIES)

    # rerun: nothing new
    rerun = PreferenceGenerator(
        judge=LLMPreferenceJudge(make_client(server, tmp_path / "cache.sqlite"), PROMPTS["preference"]),
        retriever="bm25",
        progress=False,
    )
    asyncio.run(rerun.generate(items, tmp_path / "preferences.jsonl"))
    assert len(server.requests) == 2 * pairs
    assert len(read_jsonl(tmp_path / "preferences.jsonl")) == len(records)


def test_position_biased_judge_gives_no_triples(dataset: BeirDataset, texts: dict[str, str], tmp_path: Path) -> None:
    items = candidate_sets(dataset, texts)
    with FakeOpenAIServer(lambda request: "1") as biased:
        client = make_client(biased, tmp_path / "cache.sqlite")
        generator = PreferenceGenerator(
            judge=LLMPreferenceJudge(client, PROMPTS["preference"]), client=client, progress=False
        )
        stats = asyncio.run(generator.generate(items, tmp_path / "preferences.jsonl"))
        assert len(biased.requests) == 18
        assert stats.records == 0
        assert stats.done == 3
        assert read_jsonl(tmp_path / "preferences.jsonl") == []
        assert client.accounting.filtered == {"pair_inconsistent": 9}
        # with a single order the bias goes through unchecked: every pair prefers the first passage shown
        single = make_client(biased, tmp_path / "cache2.sqlite")
        generator = PreferenceGenerator(
            judge=LLMPreferenceJudge(single, PROMPTS["preference"], both_orders=False), client=single, progress=False
        )
        stats = asyncio.run(generator.generate(items, tmp_path / "single.jsonl"))
        assert len(biased.requests) == 18 + 9
    records = read_jsonl(tmp_path / "single.jsonl")
    assert len(records) == 9
    assert all(r["preferred"]["rank"] < r["rejected"]["rank"] for r in records)
    assert all(set(r["votes"]) == {"ab"} for r in records)


# ----------------------------------------------------------------------------------------------- reranker


def copying_responder(request: dict[str, Any]) -> Any:
    """The scripted LLM, except that 'claim' queries copy the start of the passage verbatim."""
    if "search queries that a passage answers" in system_of(request) and field(user_of(request), "Type") == "claim":
        return " ".join(field(user_of(request), "Passage").split()[:9])
    return syntriever_responder(request)


def reranker_generator(client: LLMClient, dataset: BeirDataset, **kwargs: Any) -> RerankerDataGenerator:
    return RerankerDataGenerator(
        client=client,
        prompts=PROMPTS,
        judge=LLMRelevanceJudge(client, PROMPTS["relevance"]),
        retriever=SpecRetriever("bm25", dataset.corpus, cache=EmbeddingCache(None), progress=False),
        corpus=dataset.corpus,
        candidates=4,
        progress=False,
        **kwargs,
    )


def test_reranker_data(dataset: BeirDataset, texts: dict[str, str], tmp_path: Path) -> None:
    passages = [PassageItem(d, texts[d]) for d in ("d1", "d2", "d3", "d4", "d6")]
    out = tmp_path / "reranker"
    with FakeOpenAIServer(copying_responder) as fake:
        client = make_client(fake, tmp_path / "cache.sqlite")
        stats = asyncio.run(reranker_generator(client, dataset).generate(passages, out))
        query_requests = [r for r in fake.requests if "search queries" in system_of(r)]
        label_requests = [r for r in fake.requests if "label search results" in system_of(r)]
        assert len(query_requests) == 3 * len(passages)
        assert len(query_requests) + len(label_requests) == len(fake.requests)

        queries = read_jsonl(out / "queries.jsonl")
        assert len(queries) == 15
        assert len({q["id"] for q in queries}) == 15
        assert {q["query_type"] for q in queries} == {"question", "keywords", "claim"}
        claims = [q for q in queries if q["query_type"] == "claim"]
        assert all(q["rejected"] == "copies_passage" for q in claims)  # kept in the file, with the reason
        accepted = [q for q in queries if not q["rejected"]]
        assert stats["queries"]["accepted"] == len(accepted) >= 5
        assert client.accounting.filtered["copies_passage"] >= len(claims)

        candidates = read_jsonl(out / "candidates.jsonl")
        assert {c["id"] for c in candidates} == {q["id"] for q in accepted}  # rejected queries are not retrieved
        assert all(c["retriever"] == "bm25" and 1 <= len(c["candidates"]) <= 4 for c in candidates)
        # one relevance request per (query, candidate): the source passage + the other candidates
        source_of = {q["id"]: q["source_doc_id"] for q in accepted}
        expected_labels = sum(1 + sum(d != source_of[c["id"]] for d, _ in c["candidates"]) for c in candidates)
        assert len(label_requests) == expected_labels

        groups = read_jsonl(out / "reranker.jsonl")
        assert groups, "some query has a BM25 candidate judged not relevant"
        assert len({g["id"] for g in groups}) == len(groups) == stats["groups"]["written"]
        by_query = {q["id"]: q for q in accepted}
        judge_name = f"llm:fake-model:{PROMPTS['relevance'].label}"
        for group in groups:
            query = by_query[group["query_id"]]
            assert group["kind"] == "reranker"
            assert group["query"] == query["query"]
            assert group["source_doc_id"] == query["source_doc_id"]
            assert group["positive"]["doc_id"] == query["source_doc_id"]
            assert group["positive"]["label"] is True
            assert group["positive"]["judge"] == judge_name
            assert len(group["negatives"]) >= 1
            for negative in group["negatives"]:
                assert negative["label"] is False
                assert negative["judge"] == judge_name
                assert negative["doc_id"] != group["source_doc_id"]
                assert negative["text"] == texts[negative["doc_id"]]
            assert group["provenance"]["retriever"] == "bm25"
        filtered = client.accounting.filtered
        assert len(groups) + filtered.get("no_negatives", 0) + filtered.get("source_rejected", 0) == len(accepted)

        # rerun: every phase resumes from its files and the cache → zero requests, same files
        before = {name: (out / name).read_bytes() for name in ("queries.jsonl", "reranker.jsonl")}
        n_requests = len(fake.requests)
        rerun_client = make_client(fake, tmp_path / "cache.sqlite")
        stats2 = asyncio.run(reranker_generator(rerun_client, dataset).generate(passages, out))
        assert len(fake.requests) == n_requests
        assert rerun_client.accounting.calls == 0
        assert stats2["queries"]["accepted"] == len(accepted)
        assert {name: (out / name).read_bytes() for name in before} == before

    # exporters on the generated groups
    count = exporters.to_beir(groups, tmp_path / "beir-rr", corpus=dataset.corpus)
    exported = load_beir(tmp_path / "beir-rr", split="train")
    assert set(exported.queries) == {g["query_id"] for g in groups}
    assert count == sum(len(rows) for rows in exported.qrels.values())
    for group in groups:
        assert exported.qrels[group["query_id"]][group["source_doc_id"]] == 1
    n = exporters.to_flagembedding(groups, tmp_path / "rr-flag.jsonl")
    lines = read_jsonl(tmp_path / "rr-flag.jsonl")
    assert n == len(lines) == len(groups)
    assert all(len(line["pos"]) == 1 and line["neg"] for line in lines)


# ---------------------------------------------------------------------------------------------- score judges


def test_score_relevance_judge_threshold() -> None:
    judge = ScoreRelevanceJudge(overlap_scorer, threshold=0.5, name="overlap@0.5")
    verdicts = asyncio.run(judge.judge("iron blood loss anemia", ["iron blood", "iron", "iron blood loss", "music"]))
    assert [v.label for v in verdicts] == [True, False, True, False]  # 0.5 reaches the threshold
    assert [v.score for v in verdicts] == [0.5, 0.25, 0.75, 0.0]
    assert {v.judge for v in verdicts} == {"overlap@0.5"}
    assert all(v.failure is None for v in verdicts)
    assert asyncio.run(judge.judge("q", [])) == []


def test_score_preference_judge_margin_and_ties() -> None:
    judge = ScorePreferenceJudge(overlap_scorer, margin=0.1, name="overlap~0.1")
    query = "iron blood loss anemia"
    assert asyncio.run(judge.compare(query, "iron blood loss", "iron")).winner == 0
    second = asyncio.run(judge.compare(query, "music", "anemia iron"))
    assert second.winner == 1
    assert second.votes == {"scores": [0.0, 0.5]}
    assert second.judge == "overlap~0.1"
    tie = asyncio.run(judge.compare(query, "iron", "blood"))
    assert (tie.winner, tie.reason) == (None, "tie")
    within_margin = ScorePreferenceJudge(overlap_scorer, margin=0.3, name="m")
    assert asyncio.run(within_margin.compare(query, "iron blood", "iron")).reason == "tie"  # 0.25 apart


def test_generators_with_score_judges_record_the_judge(
    server: FakeOpenAIServer, dataset: BeirDataset, texts: dict[str, str], tmp_path: Path
) -> None:
    client = make_client(server, tmp_path / "cache.sqlite")
    judge = ScoreRelevanceJudge(overlap_scorer, threshold=0.5, name="overlap@0.5")
    asyncio.run(retriever_generator(client, judge).generate(query_items(dataset, texts), tmp_path / "r.jsonl"))
    assert len(server.requests) == 9  # generations only: the score judge makes no LLM call
    for record in read_jsonl(tmp_path / "r.jsonl"):
        assert record["provenance"]["judge"] == "overlap@0.5"
        judged = [p for p in record["positives"] + record["negatives"] if p["judge"] is not None]
        assert judged
        assert all(p["judge"] == "overlap@0.5" and isinstance(p["score"], float) for p in judged)
        for entry in judged:
            assert entry["label"] is (entry["score"] >= 0.5)

    items = candidate_sets(dataset, texts)
    preference = ScorePreferenceJudge(overlap_scorer, margin=0.0, name="overlap~0")
    generator = PreferenceGenerator(judge=preference, retriever="bm25", progress=False)
    stats = asyncio.run(generator.generate(items, tmp_path / "p.jsonl"))
    assert len(server.requests) == 9  # still no LLM call
    records = read_jsonl(tmp_path / "p.jsonl")
    assert stats.records == len(records) >= 3
    for record in records:
        assert record["judge"] == "overlap~0"
        assert record["provenance"]["judge"] == "overlap~0"
        preferred, rejected = record["votes"]["scores"]
        assert "model" not in record["provenance"]  # no LLM involved
        scores = overlap_scorer(record["query"], [record["preferred"]["text"], record["rejected"]["text"]])
        assert scores[0] > scores[1]
        assert {preferred, rejected} == set(scores)


def test_judge_specs(server: FakeOpenAIServer, tmp_path: Path) -> None:
    with pytest.raises(JudgeSpecError, match=r"syntriever export"):
        relevance_judge(f"embedder:{tmp_path / 'missing'}?threshold=0.7")
    with pytest.raises(JudgeSpecError, match=r"syntriever export"):
        preference_judge(f"ranker:{tmp_path / 'missing'}")
    with pytest.raises(JudgeSpecError, match=r"needs a model folder"):
        relevance_judge("embedder:")
    with pytest.raises(JudgeSpecError, match=r"unknown parameters \['margin'\]"):
        relevance_judge(f"ranker:{tmp_path}?margin=0.1")
    with pytest.raises(JudgeSpecError, match=r"must be name=value"):
        relevance_judge(f"ranker:{tmp_path}?threshold")
    with pytest.raises(JudgeSpecError, match=r"Unknown judge 'gpt'"):
        relevance_judge("gpt")
    with pytest.raises(JudgeSpecError, match=r"Unknown judge"):
        preference_judge("cross-encoder:x")
    with pytest.raises(JudgeSpecError, match=r"--llm"):
        relevance_judge("llm")
    client = make_client(server, tmp_path / "cache.sqlite")
    judge = relevance_judge("llm", client=client, prompt=PROMPTS["verify"])
    assert isinstance(judge, LLMRelevanceJudge)
    assert judge.name == f"llm:fake-model:{PROMPTS['verify'].label}"
    pref = preference_judge("llm", client=client, prompt=PROMPTS["preference"], both_orders=False)
    assert isinstance(pref, LLMPreferenceJudge)
    assert not pref.name.endswith("both-orders")


# ----------------------------------------------------------------------------------------------- exporters


def test_exporters_on_generated_retriever_records(
    server: FakeOpenAIServer, dataset: BeirDataset, texts: dict[str, str], tmp_path: Path
) -> None:
    client = make_client(server, tmp_path / "cache.sqlite")
    asyncio.run(retriever_generator(client).generate(query_items(dataset, texts), tmp_path / "r.jsonl"))
    records = read_jsonl(tmp_path / "r.jsonl")

    rows = exporters.to_beir(records, tmp_path / "beir", corpus=dataset.corpus)
    exported = load_beir(tmp_path / "beir", split="train")
    assert set(exported.queries) == set(QUERIES)
    assert rows == 3 * 3  # gold + verified p+ + q_cot per query
    assert set(dataset.corpus) <= set(exported.corpus)  # the source corpus serves as distractors
    for qid in QUERIES:
        judged = exported.qrels[qid]
        assert judged[GOLD[qid]] == 1
        generated = [d for d in judged if d.startswith("gen-")]
        assert len(generated) == 2
        assert all(exported.corpus[d].metadata.get("generated") is True for d in generated)

    n = exporters.to_flagembedding(records, tmp_path / "flag.jsonl")
    lines = read_jsonl(tmp_path / "flag.jsonl")
    with_negatives = [r for r in records if r["negatives"]]
    assert n == len(lines) == len(with_negatives) == 2  # q1's only negative was judged relevant and dropped
    for line in lines:
        assert set(line) == {"query", "pos", "neg"}
        assert len(line["pos"]) == 3
        assert len(line["neg"]) == 1
        assert line["query"] in QUERIES.values()


def test_query_types_cover_every_type_when_n_is_not_a_multiple() -> None:
    from collections import Counter

    from syntriever_haystack.generate.reranker_data import query_types_for

    types = ["question", "keywords", "claim"]
    assert query_types_for("any", types, 3) == types  # a multiple: plain cycle, unchanged
    assert query_types_for("any", types, 6) == types * 2
    seen = Counter(t for i in range(60) for t in query_types_for(f"doc{i}", types, 2))
    assert set(seen) == set(types)
    assert min(seen.values()) > 20  # roughly balanced across passages
    assert query_types_for("doc7", types, 2) == query_types_for("doc7", types, 2)  # stable per passage


def test_passages_are_grouped_by_their_prompt_prefix() -> None:
    """Consecutive prompts of one query type share the few-shot prefix an LLM server can reuse; the grouping is
    stable (the hash order inside a type is kept) and loses no passage."""
    from syntriever_haystack.generate.reranker_data import PassageItem, by_prompt_prefix, query_types_for

    types = ["question", "keywords", "claim"]
    passages = [PassageItem(f"doc{i}", f"text {i}") for i in range(30)]
    for n in (1, 2):
        ordered = by_prompt_prefix(passages, types, n)
        firsts = [query_types_for(p.doc_id, types, n)[0] for p in ordered]
        assert sorted(p.doc_id for p in ordered) == sorted(p.doc_id for p in passages)
        assert sum(a != b for a, b in itertools.pairwise(firsts)) == len(set(firsts)) - 1  # one run per type
        for t in set(firsts):
            inside = [p.doc_id for p in ordered if query_types_for(p.doc_id, types, n)[0] == t]
            assert inside == [p.doc_id for p in passages if query_types_for(p.doc_id, types, n)[0] == t]
    assert by_prompt_prefix(passages, types, 3) == passages  # every passage starts with the first type: unchanged


# ------------------------------------------------------------------------------- filters in the reranker task


def variant_responder(request: dict[str, Any]) -> Any:
    """Queries that repeat themselves across samples (exactly, then nearly); the Louvre passage gets a query
    about the Eiffel tower, which BM25 ranks above its source passage (a round-trip failure)."""
    if "search queries that a passage answers" not in system_of(request):
        return syntriever_responder(request)
    passage = field(user_of(request), "Passage")
    if "Louvre" in passage:
        return "which company built the eiffel tower for the world fair"
    words = [w for w in re.findall(r"[a-z]+", passage.lower()) if w not in {"the", "a", "an", "of", "in", "is"}]
    base = "what is known about " + " ".join(list(dict.fromkeys(words))[:3])
    seed = int(request.get("seed") or 0)
    return [f"{base}?", base.capitalize(), f"{base}s?"][seed % 3]


def test_reranker_duplicates_near_duplicates_and_round_trip(
    dataset: BeirDataset, texts: dict[str, str], tmp_path: Path
) -> None:
    passages = [PassageItem(d, texts[d]) for d in ("d1", "d3", "d6")]
    out = tmp_path / "reranker"
    with FakeOpenAIServer(variant_responder) as fake:
        client = make_client(fake, tmp_path / "cache.sqlite")
        generator = reranker_generator(client, dataset, query_types=("question",), round_trip_k=1)
        stats = asyncio.run(generator.generate(passages, out))

    queries = read_jsonl(out / "queries.jsonl")
    reasons: dict[str, list[str | None]] = {}
    for query in sorted(queries, key=lambda q: q["id"]):
        reasons.setdefault(query["source_doc_id"], []).append(query["rejected"])
    assert sorted(reasons) == ["d1", "d3", "d6"]
    for doc_id in ("d1", "d3"):  # the sample order decides: the first is kept, then "Q" and "Qs" are rejected
        assert sorted(reasons[doc_id], key=str) == sorted([None, "duplicate", "near_duplicate"], key=str)
    assert sorted(reasons["d6"], key=str) == sorted([None, "duplicate", "duplicate"], key=str)
    filtered = client.accounting.filtered
    assert (filtered["duplicate"], filtered["near_duplicate"]) == (4, 2)

    # round trip with k=1: the Louvre passage's query finds the Eiffel tower first, so it is dropped
    candidates = {c["id"]: c for c in read_jsonl(out / "candidates.jsonl")}
    source_of = {q["id"]: q["source_doc_id"] for q in queries if not q["rejected"]}
    assert set(candidates) == set(source_of)
    for query_id, candidate in candidates.items():
        if source_of[query_id] == "d6":
            assert candidate["kept"] is False
            assert candidate["source_rank"] != 1
        else:
            assert candidate["kept"] is True
            assert candidate["source_rank"] == 1
    assert filtered["round_trip"] == 1
    assert stats["round_trip"] == {"k": 1, "dropped": 1, "kept": 2}
    groups = read_jsonl(out / "reranker.jsonl")
    assert {g["query_id"] for g in groups} <= {q for q, d in source_of.items() if d != "d6"}
    for group in groups:  # provenance: when the record was made, and the judge's prompt with its parameters
        provenance = group["provenance"]
        assert PROMPTS["relevance"].label in provenance["prompts"]
        assert provenance["parameters"]["relevance"] == {"temperature": 0.0, "max_tokens": 8}
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT.*", provenance["created"])


# --------------------------------------------------------------------------------------------- the CLI, secrets


def test_the_api_key_is_never_written_to_outputs(
    server: FakeOpenAIServer,
    beir_folder: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """`syntriever generate` in-process, live and with the Batch API: no file it writes holds the key."""
    import argparse

    from syntriever_haystack.errors import SyntrieverError
    from syntriever_haystack.generate.cli import register

    secret = "sk-test-never-written-0123456789abcdef"
    monkeypatch.setenv("OPENAI_API_KEY", secret)
    parser = argparse.ArgumentParser()
    register(parser.add_subparsers(dest="command"))

    def cli(*argv: str) -> int:
        args = parser.parse_args(["generate", *argv])
        return int(args.func(args))

    common = ["retriever", "--dataset", str(beir_folder), "--llm", "openai:fake-model", "--no-cot", "--quiet"]
    common += ["--api-base-url", server.url, "--timeout", "10"]
    assert cli(*common, "--out", str(tmp_path / "live")) == 0
    assert cli(*common, "--out", str(tmp_path / "batch"), "--batch", "--batch-poll", "0") == 0
    assert len(server.requests) == 4 * len(QUERIES)  # the live run; the batch run used the batch endpoints
    assert server.batch_requests_answered == 4 * len(QUERIES)
    for folder in ("live", "batch"):
        summary = json.loads((tmp_path / folder / "summary.json").read_text(encoding="utf-8"))
        assert summary["failures"] == {}
        assert summary["config"]["api_key_env"] == "OPENAI_API_KEY"  # the variable's name, not its value
        records = read_jsonl(tmp_path / folder / "retriever.jsonl")
        assert len(records) == len(QUERIES)
        assert all(r["provenance"]["parameters"]["verify"]["max_tokens"] == 8 for r in records)
    written = [path for path in tmp_path.rglob("*") if path.is_file()]
    assert any(path.name == "batches.json" for path in written)
    assert any(path.name.startswith("requests-") for path in written)
    for path in written:
        assert secret.encode() not in path.read_bytes(), path
    output = capsys.readouterr()
    assert secret not in output.out + output.err

    # structured output needs a backend with a JSON-schema mode: refused up front for the local model
    with pytest.raises(SyntrieverError, match="structured-output"):
        cli(*common[:3], "--llm", "local", "--structured-output", "--out", str(tmp_path / "local"))
    assert not (tmp_path / "local").exists()  # refused before anything was written


# ------------------------------------------------------------------------------- any Haystack retriever


def test_any_haystack_retriever_supplies_the_candidates(dataset: BeirDataset, texts: dict[str, str]) -> None:
    from haystack import Document
    from haystack.components.retrievers.in_memory import InMemoryBM25Retriever, InMemoryEmbeddingRetriever
    from haystack.document_stores.in_memory import InMemoryDocumentStore

    from syntriever_haystack.generate.candidates import HaystackRetriever

    store = InMemoryDocumentStore()
    store.write_documents([Document(id=d, content=t, meta={"corpus_id": d}) for d, t in texts.items()])
    queries = {"q2": QUERIES["q2"], "q3": QUERIES["q3"]}
    retriever = HaystackRetriever(InMemoryBM25Retriever(store))
    assert retriever.name == "haystack:InMemoryBM25Retriever"
    ranked = retriever.retrieve(queries, 3)
    assert [ranked[q][0][0] for q in ("q2", "q3")] == ["d2", "d3"]
    assert all(len(hits) == 3 and hits[0][1] >= hits[1][1] >= hits[2][1] for hits in ranked.values())
    assert HaystackRetriever(InMemoryBM25Retriever(store), id_field="corpus_id").retrieve(queries, 3) == ranked

    # an embedding retriever behind a text embedder (bag of words over a fixed vocabulary)
    vocabulary = sorted({w for t in texts.values() for w in re.findall(r"[a-z]+", t.lower())})

    def embed(text: str) -> list[float]:
        words = set(re.findall(r"[a-z]+", text.lower()))
        return [1.0 if w in words else 0.0 for w in vocabulary]

    class BagOfWordsEmbedder:
        def run(self, text: str) -> dict[str, list[float]]:
            return {"embedding": embed(text)}

    dense_store = InMemoryDocumentStore(embedding_similarity_function="cosine")
    dense_store.write_documents([Document(id=d, content=t, embedding=embed(t)) for d, t in texts.items()])
    dense = HaystackRetriever(InMemoryEmbeddingRetriever(dense_store), text_embedder=BagOfWordsEmbedder())
    assert [dense.retrieve(queries, 2)[q][0][0] for q in ("q2", "q3")] == ["d2", "d3"]


# ------------------------------------------------------------------------- score judges over exported models


def test_score_judges_over_our_exported_embedder_and_ranker(
    exported_bi_encoder: Path, exported_cross_encoder: Path
) -> None:
    query = "what causes iron deficiency anemia"
    passages = ["iron deficiency anemia is caused by blood loss", "the eiffel tower in paris was built in 1889"]
    for kind, model in (("embedder", exported_bi_encoder), ("ranker", exported_cross_encoder)):
        judge = relevance_judge(f"{kind}:{model}?threshold=0.5")
        assert isinstance(judge, ScoreRelevanceJudge)
        assert judge.name == f"{kind}:{model}@0.5"
        verdicts = asyncio.run(judge.judge(query, passages))
        assert len(verdicts) == 2
        for verdict in verdicts:
            assert verdict.judge == judge.name
            assert isinstance(verdict.score, float)
            assert verdict.label is (verdict.score >= 0.5)
            if kind == "ranker":
                assert 0.0 <= verdict.score <= 1.0  # sigmoid of the logit
            else:
                assert -1.0 - 1e-6 <= verdict.score <= 1.0 + 1e-6  # cosine
        scores = [float(v.score or 0.0) for v in verdicts]
        swapped = asyncio.run(judge.judge(query, list(reversed(passages))))  # a score belongs to its passage
        assert [v.score for v in swapped] == pytest.approx(list(reversed(scores)), abs=1e-5)
        preference = preference_judge(f"{kind}:{model}?margin=0")
        assert isinstance(preference, ScorePreferenceJudge)
        pair = asyncio.run(preference.compare(query, passages[0], passages[1]))
        assert pair.judge == f"{kind}:{model}~0"
        assert pair.votes["scores"] == pytest.approx(scores, abs=1e-5)
        assert pair.winner == (None if scores[0] == scores[1] else 0 if scores[0] > scores[1] else 1)


def test_a_redone_passage_keeps_the_filter_decisions_of_the_first_run(
    dataset: BeirDataset, texts: dict[str, str], tmp_path: Path
) -> None:
    """A passage with a failed sample is redone by the next run: its queries already written are not checked
    again (they would be rejected as duplicates of themselves and counted twice); only the new one is."""
    passages = [PassageItem(d, texts[d]) for d in ("d1", "d2", "d3")]
    out = tmp_path / "reranker"
    with FakeOpenAIServer(syntriever_responder) as fake:
        fake.inject(Fault("status", status=400))  # one query request fails for good: its passage is not done
        first = reranker_generator(make_client(fake, tmp_path / "cache.sqlite"), dataset)
        asyncio.run(first.generate(passages, out))
        written = read_jsonl(out / "queries.jsonl")
        assert len(written) == 3 * len(passages) - 1
        assert sum(first.query_filter.counts.values()) == len(written)

        rerun_client = make_client(fake, tmp_path / "cache.sqlite")
        second = reranker_generator(rerun_client, dataset)
        asyncio.run(second.generate(passages, out))
    queries = read_jsonl(out / "queries.jsonl")
    assert len(queries) == len({q["id"] for q in queries}) == 3 * len(passages)
    assert queries[: len(written)] == written  # earlier decisions stand
    assert sum(second.query_filter.counts.values()) == 1  # only the query that failed before was checked
    duplicates = {k: v for k, v in rerun_client.accounting.filtered.items() if k in ("duplicate", "near_duplicate")}
    assert sum(duplicates.values()) == (1 if queries[-1]["rejected"] in ("duplicate", "near_duplicate") else 0)
