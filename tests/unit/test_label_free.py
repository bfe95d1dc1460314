"""Label-free training data (generate/label_free.py): held-out split, sentence queries, guarded negatives."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from syntriever_haystack.data.beir import Passage
from syntriever_haystack.generate import label_free as lf

CORPUS = {
    "a": Passage("Iron", "Iron deficiency causes anemia. Blood loss is a common cause of it. Diet matters too.", {}),
    "b": Passage("Heart", "The heart pumps blood. Exercise strengthens the heart muscle over many weeks.", {}),
    "c": Passage("", "One sentence only without an end", {}),
    "d": Passage("Sugar", "Insulin lowers glucose in the blood. Diabetes changes how insulin works in cells.", {}),
}


def test_held_out_passages_are_stable_when_the_corpus_grows() -> None:
    ids = [f"d{i}" for i in range(2000)]
    small = lf.held_out_passages(ids[:1000], 0.2, seed=7)
    big = lf.held_out_passages(ids, 0.2, seed=7)
    assert small == {d for d in big if d in set(ids[:1000])}  # a document never changes side
    assert 0.15 < len(big) / len(ids) < 0.25
    assert lf.held_out_passages(ids, 0.2, seed=8) != big
    assert lf.held_out_passages(ids, 0.0, seed=7) == set()
    with pytest.raises(ValueError, match="held-out fraction"):
        lf.held_out_passages(ids, 1.0, seed=7)


def test_sentence_queries_cut_one_sentence_out_of_its_passage() -> None:
    queries = lf.sentence_queries(CORPUS, list(CORPUS), seed=1, min_words=3, keep_sentence=0.0)
    by_doc = {q.source_doc_id: q for q in queries}
    assert set(by_doc) == {"a", "b", "d"}  # "c" has a single sentence
    for doc_id, query in by_doc.items():
        assert query.query_type == "sentence"
        assert query.query in CORPUS[doc_id].text
        assert query.positive_text is not None
        assert query.query not in query.positive_text
        assert query.positive_text.startswith(CORPUS[doc_id].title)
    again = lf.sentence_queries(CORPUS, list(CORPUS), seed=1, min_words=3, keep_sentence=0.0)
    assert again == queries  # seeded
    kept = lf.sentence_queries(CORPUS, ["a"], seed=1, min_words=3, keep_sentence=1.0)
    assert kept[0].query in str(kept[0].positive_text)


def _query(qid: str = "q1", source: str = "a") -> lf.SyntheticQuery:
    return lf.SyntheticQuery(qid, "iron anemia", source, "keywords")


def test_stage1_records_take_guarded_hard_negatives_in_rank_order() -> None:
    candidates = {"q1": [("b", 9.0), ("a", 10.0), ("d", 5.0), ("c", 1.0)]}
    (record,) = lf.stage1_records([_query()], candidates, CORPUS, negatives=2)
    assert [n["doc_id"] for n in record["negatives"]] == ["b", "d"]  # the source is never a negative
    assert record["positives"][0]["doc_id"] == "a"
    assert record["positives"][0]["text"].startswith("Iron ")
    assert record["kind"] == "retriever"
    assert record["query"] == "iron anemia"
    (guarded,) = lf.stage1_records([_query()], candidates, CORPUS, negatives=2, guard=0.2)
    assert [n["doc_id"] for n in guarded["negatives"]] == ["d", "c"]  # b scores 9 ≥ 0.8 × 10: maybe relevant
    (skipped,) = lf.stage1_records([_query()], candidates, CORPUS, negatives=5, skip_top=3)
    assert [n["doc_id"] for n in skipped["negatives"]] == ["c"]
    (accepted,) = lf.stage1_records([_query()], candidates, CORPUS, negatives=5, accepted={"q1": ["d"]})
    assert [n["doc_id"] for n in accepted["negatives"]] == ["b", "c"]


def test_teacher_scores_are_written_where_known_and_load_as_margins(tmp_path: Path) -> None:
    from syntriever_haystack.train.data import load_stage1_examples

    candidates = {"q1": [("b", 9.0), ("d", 5.0)]}
    teacher = {"q1": {"a": 0.9, "b": 0.4}}
    (record,) = lf.stage1_records([_query()], candidates, CORPUS, negatives=2, teacher=teacher)
    assert record["positives"][0]["teacher_score"] == 0.9
    assert [n.get("teacher_score") for n in record["negatives"]] == [0.4, None]
    path = tmp_path / "retriever.jsonl"
    assert lf.write_jsonl(path, [record]) == 1
    (example,) = load_stage1_examples(path)
    assert example.positive_scores == (0.9,)
    assert example.negative_scores == (0.4, None)


def test_reranker_records_and_the_gate_dataset() -> None:
    candidates = {"q1": [("a", 10.0), ("b", 9.0), ("d", 5.0)], "q2": [("d", 3.0)]}
    groups = lf.reranker_records([_query(), _query("q2", "d")], candidates, CORPUS, negatives=5)
    assert len(groups) == 1  # q2 has no negative
    assert groups[0]["positive"]["doc_id"] == "a"
    assert [n["doc_id"] for n in groups[0]["negatives"]] == ["b", "d"]
    gate = lf.gate_dataset([_query(), _query("q3", "zzz")], CORPUS, name="tiny")
    assert gate.queries == {"q1": "iron anemia"}
    assert gate.qrels == {"q1": {"a": 1}}
    assert len(gate.corpus) == len(CORPUS)


def test_read_synthetic_queries_skips_rejected_ones(tmp_path: Path) -> None:
    path = tmp_path / "queries.jsonl"
    rows = [
        {"id": "x", "query": "iron", "source_doc_id": "a", "query_type": "keywords", "rejected": None},
        {"id": "y", "query": "copy", "source_doc_id": "b", "query_type": "claim", "rejected": "copies_passage"},
    ]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows) + "\n")
    assert [q.query_id for q in lf.read_synthetic_queries(path)] == ["x"]
