"""The strict BEIR reader: malformed input is an error naming file and line, or a counted warning."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from syntriever_haystack.data import DatasetError, load_beir


def write_beir(
    folder: Path,
    corpus: list[dict] | None = None,
    queries: list[dict] | None = None,
    qrels: dict[str, list[tuple[str, str, int]]] | None = None,
) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    corpus = (
        corpus if corpus is not None else [{"_id": "d1", "title": "T1", "text": "one"}, {"_id": "d2", "text": "two"}]
    )
    queries = queries if queries is not None else [{"_id": "q1", "text": "first"}, {"_id": "q2", "text": "second"}]
    qrels = qrels if qrels is not None else {"test": [("q1", "d1", 1), ("q2", "d2", 2)]}
    (folder / "corpus.jsonl").write_text("".join(json.dumps(r) + "\n" for r in corpus), encoding="utf-8")
    (folder / "queries.jsonl").write_text("".join(json.dumps(r) + "\n" for r in queries), encoding="utf-8")
    (folder / "qrels").mkdir(exist_ok=True)
    for split, rows in qrels.items():
        text = "query-id\tcorpus-id\tscore\n" + "".join(f"{q}\t{d}\t{s}\n" for q, d, s in rows)
        (folder / "qrels" / f"{split}.tsv").write_text(text, encoding="utf-8")
    return folder


def test_loads_split_with_titles_and_fingerprint(tmp_path: Path) -> None:
    ds = load_beir(write_beir(tmp_path / "ds"), "test")
    assert ds.name == "ds"
    assert ds.split == "test"
    assert ds.doc_ids == ["d1", "d2"]
    assert ds.doc_texts() == ["T1 one", "two"]
    assert ds.doc_texts(include_title=False) == ["one", "two"]
    assert ds.queries == {"q1": "first", "q2": "second"}
    assert ds.qrels == {"q1": {"d1": 1}, "q2": {"d2": 2}}
    assert ds.warnings == []
    assert ds.fingerprint() == load_beir(tmp_path / "ds", "test").fingerprint()
    other = load_beir(
        write_beir(tmp_path / "other", corpus=[{"_id": "d1", "text": "one!"}, {"_id": "d2", "text": "two"}])
    )
    assert other.fingerprint() != ds.fingerprint()
    docs = ds.documents()
    assert docs[0].id == "d1"
    assert docs[0].meta["title"] == "T1"


def test_only_judged_queries_are_kept(tmp_path: Path) -> None:
    folder = write_beir(tmp_path / "ds", qrels={"test": [("q2", "d1", 1)], "train": [("q1", "d1", 1)]})
    assert list(load_beir(folder, "test").queries) == ["q2"]
    assert list(load_beir(folder, "train").queries) == ["q1"]


def test_bad_json_line_names_file_and_line(tmp_path: Path) -> None:
    folder = write_beir(tmp_path / "ds")
    with (folder / "corpus.jsonl").open("a", encoding="utf-8") as handle:
        handle.write('{"_id": "d3", "text": "broken"\n')
    with pytest.raises(DatasetError, match=r"corpus\.jsonl:3: invalid JSON"):
        load_beir(folder)


def test_record_without_id_and_duplicate_document(tmp_path: Path) -> None:
    folder = write_beir(tmp_path / "a", corpus=[{"_id": "d1", "text": "x"}, {"text": "no id"}])
    with pytest.raises(DatasetError, match=r"corpus\.jsonl:2: record has no \"_id\""):
        load_beir(folder)
    folder = write_beir(tmp_path / "b", corpus=[{"_id": "d1", "text": "x"}, {"_id": "d1", "text": "y"}])
    with pytest.raises(DatasetError, match=r"corpus\.jsonl:2: duplicate document id 'd1' \(first seen on line 1\)"):
        load_beir(folder)


def test_missing_split_lists_available_ones(tmp_path: Path) -> None:
    folder = write_beir(tmp_path / "ds", qrels={"train": [("q1", "d1", 1)], "dev": [("q2", "d2", 1)]})
    with pytest.raises(DatasetError, match=r"split 'test' does not exist \(available splits: dev, train\)"):
        load_beir(folder, "test")


def test_missing_folder_names_the_option(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="--dataset PATH"):
        load_beir(tmp_path / "nope")


def test_empty_corpus_is_an_error(tmp_path: Path) -> None:
    folder = write_beir(tmp_path / "ds", corpus=[])
    with pytest.raises(DatasetError, match=r"corpus\.jsonl is empty"):
        load_beir(folder)


def test_bad_qrels_rows(tmp_path: Path) -> None:
    folder = write_beir(tmp_path / "ds")
    (folder / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\nq1\td1\n", encoding="utf-8")
    with pytest.raises(DatasetError, match=r"test\.tsv:2: expected 3 tab-separated columns"):
        load_beir(folder)
    (folder / "qrels" / "test.tsv").write_text("q1\td1\thigh\n", encoding="utf-8")
    with pytest.raises(DatasetError, match=r"test\.tsv:1: relevance 'high' is not a number"):
        load_beir(folder)


def test_unknown_ids_in_qrels_are_counted_warnings(tmp_path: Path) -> None:
    rows = [("q1", "d1", 1), ("q1", "ghost", 1), ("q1", "ghost2", 0), ("q9", "d1", 1)]
    ds = load_beir(write_beir(tmp_path / "ds", qrels={"test": rows}))
    assert ds.qrels == {"q1": {"d1": 1}}
    joined = " | ".join(ds.warnings)
    assert "skipped 2 judgment(s) of 2 document id(s) not found in corpus.jsonl" in joined
    assert "1 query id(s) not found in queries.jsonl" in joined


def test_qrels_matching_nothing_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="none of its judgments match"):
        load_beir(write_beir(tmp_path / "ds", qrels={"test": [("q7", "d7", 1)]}))


def test_repeated_rows_keep_highest_grade_and_ambiguous_queries_are_dropped(tmp_path: Path) -> None:
    queries = [{"_id": "q1", "text": "a"}, {"_id": "q2", "text": "b"}, {"_id": "q2", "text": "other"}]
    rows = [("q1", "d1", 1), ("q1", "d1", 3), ("q2", "d2", 1)]
    ds = load_beir(write_beir(tmp_path / "ds", queries=queries, qrels={"test": rows}))
    assert ds.qrels == {"q1": {"d1": 3}}
    assert any("1 repeated query/document row(s) merged (1 with a different grade" in w for w in ds.warnings)
    assert any("left out because their judgments cannot be attributed" in w for w in ds.warnings)


def test_trec_format_qrels_and_sampling(tmp_path: Path) -> None:
    folder = write_beir(tmp_path / "ds")
    (folder / "qrels" / "test.tsv").write_text("q1 0 d1 1\nq2 0 d2 0\nq2 0 d1 1\n", encoding="utf-8")
    ds = load_beir(folder)
    assert ds.qrels == {"q1": {"d1": 1}, "q2": {"d2": 0, "d1": 1}}
    sample = ds.sample_queries(1, seed=3)
    assert len(sample.qrels) == 1
    assert set(sample.queries) == set(sample.qrels)
    assert sample.sample_queries(5).qrels == sample.qrels
