"""The crash-safe JSONL store of generated records, and the exporters to training / BEIR formats."""

from __future__ import annotations

import json
import math
import os
import re
import signal
import subprocess
import textwrap
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from syntriever_haystack.data import Passage, load_beir
from syntriever_haystack.generate.exporters import to_beir, to_flagembedding, to_sentence_transformers
from syntriever_haystack.generate.records import (
    JsonlStore,
    JsonlStoreError,
    PreferenceTriple,
    RecordsError,
    RerankerGroup,
    RetrieverExample,
    stable_id,
    utc_now,
)
from tests.conftest import PYTHON

# ------------------------------------------------------------------------------------------------------- helpers


def test_stable_id_and_utc_now() -> None:
    assert stable_id("a", "b") == stable_id("a", "b")
    assert re.fullmatch(r"[0-9a-f]{16}", stable_id("a", "b"))
    assert stable_id("a", "b") != stable_id("ab")  # parts are separated
    assert stable_id("a\x1fb") == stable_id("a", "b")  # (the separator is the unit separator)
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", utc_now())


# --------------------------------------------------------------------------------------------------------- store


def _lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def test_store_appends_reopens_and_skips_duplicate_ids(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "records.jsonl"
    with JsonlStore(path) as store:
        assert store.ids == set()
        assert store.append({"id": "a", "text": "café ☕", "n": 1})
        assert store.append({"id": "b", "z": 1, "a": 2})
        assert not store.append({"id": "a", "text": "other"})
        assert store.duplicates_skipped == 1
        assert store.ids == {"a", "b"}
        assert [r["id"] for r in store.records()] == ["a", "b"]
    raw = path.read_bytes()
    assert "café ☕".encode() in raw  # ensure_ascii=False
    assert raw.index(b'"z"') < raw.index(b'"a": 2')  # keys keep the record's order
    assert store.closed

    with JsonlStore(path) as resumed:  # a resumed run: knows its ids, never writes one twice
        assert resumed.ids == {"a", "b"}
        assert "a" in resumed
        assert len(resumed) == 2
        assert not resumed.append({"id": "b"})
        assert resumed.append({"id": "c"})
        assert [r["id"] for r in resumed] == ["a", "b", "c"]
    assert [r["id"] for r in _lines(path)] == ["a", "b", "c"]


def test_store_rejects_bad_records_and_use_when_closed(tmp_path: Path) -> None:
    store = JsonlStore(tmp_path / "r.jsonl")
    with pytest.raises(JsonlStoreError, match="not open"):
        store.append({"id": "a"})
    with store:
        with pytest.raises(JsonlStoreError, match='"id"'):
            store.append({"text": "no id"})
        with pytest.raises(JsonlStoreError, match='"id"'):
            store.append({"id": 3})
        with pytest.raises(JsonlStoreError, match="NaN"):
            store.append({"id": "x", "score": math.nan})
        with pytest.raises(JsonlStoreError, match="JSON"):
            store.append({"id": "y", "value": {1, 2}})
        assert store.ids == set()
    assert (tmp_path / "r.jsonl").read_bytes() == b""


def test_store_repairs_a_torn_final_line(tmp_path: Path) -> None:
    path = tmp_path / "r.jsonl"
    good = b'{"id": "a", "text": "one"}\n{"id": "b", "text": "two"}\n'
    path.write_bytes(good + b'{"id": "c", "text": "thr')
    with JsonlStore(path) as store:
        assert store.ids == {"a", "b"}
        assert store.repaired_bytes == len(b'{"id": "c", "text": "thr')
        assert path.read_bytes() == good
        assert store.append({"id": "c", "text": "three"})
    assert [r["id"] for r in _lines(path)] == ["a", "b", "c"]


def test_store_keeps_a_complete_final_record_missing_its_newline(tmp_path: Path) -> None:
    path = tmp_path / "r.jsonl"
    path.write_bytes(b'{"id": "a"}\n{"id": "b"}')
    with JsonlStore(path) as store:
        assert store.ids == {"a", "b"}
        assert store.repaired_bytes == 0
        store.append({"id": "c"})
    assert path.read_bytes() == b'{"id": "a"}\n{"id": "b"}\n{"id": "c"}\n'


def test_store_repairs_a_cut_at_every_byte(tmp_path: Path) -> None:
    records = [{"id": f"r{i}", "text": "é" * i + "x"} for i in range(4)]
    full = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records).encode("utf-8")
    ends = [i + 1 for i, byte in enumerate(full) if byte == ord("\n")]
    path = tmp_path / "r.jsonl"
    for cut in range(len(full) + 1):
        path.write_bytes(full[:cut])
        with JsonlStore(path, fsync=False) as store:
            complete = sum(end <= cut for end in ends)
            # A record cut exactly before its newline is complete and kept; any other cut loses the torn record.
            expected = complete + int(cut + 1 in ends)
            assert [r["id"] for r in store.records()] == [f"r{i}" for i in range(expected)], cut
        data = path.read_bytes()
        assert data == full[: ends[expected - 1]] if expected else data == b""


def test_store_reports_a_corrupted_middle_line(tmp_path: Path) -> None:
    path = tmp_path / "r.jsonl"
    path.write_text('{"id": "a"}\n{"id": "b", oops}\n{"id": "c"}\n', encoding="utf-8")
    with pytest.raises(JsonlStoreError, match=re.escape(f"{path}:2: invalid JSON")):
        JsonlStore(path).open()
    path.write_text('{"id": "a"}\n{"id": "a"}\n', encoding="utf-8")
    with pytest.raises(JsonlStoreError, match=r":2: duplicate record id 'a' \(first on line 1\)"):
        JsonlStore(path).open()
    path.write_text('{"id": "a"}\n["not", "an", "object"]\n{"id": "c"}\n', encoding="utf-8")
    with pytest.raises(JsonlStoreError, match=":2: expected a JSON object"):
        JsonlStore(path).open()
    path.write_text('{"id": "a"}\n{"text": "no id"}\n', encoding="utf-8")
    with pytest.raises(JsonlStoreError, match=':2: record has no string "id"'):
        JsonlStore(path).open()
    path.write_bytes(b'{"id": "a"}\n{"id": "\xff"}\n')
    with pytest.raises(JsonlStoreError, match=":2: not valid UTF-8"):
        JsonlStore(path).open()


def test_store_refuses_a_second_writer(tmp_path: Path) -> None:
    path = tmp_path / "r.jsonl"
    with JsonlStore(path) as first:
        first.append({"id": "a"})
        with pytest.raises(JsonlStoreError, match="already open"):
            JsonlStore(path).open()
    with JsonlStore(path) as second:  # released on close
        assert second.ids == {"a"}


def test_store_concurrent_appends_from_threads(tmp_path: Path) -> None:
    path = tmp_path / "r.jsonl"
    n_threads, per_thread = 8, 150
    with JsonlStore(path, fsync=False) as store:

        def work(t: int) -> None:
            for i in range(per_thread):
                store.append({"id": f"{t}-{i}", "payload": "x" * (i * 37 % 500)})
                store.append({"id": f"{(t + 1) % n_threads}-{i}", "payload": "dup"})  # races with another thread

        threads = [threading.Thread(target=work, args=(t,)) for t in range(n_threads)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert len(store.ids) == n_threads * per_thread
        assert store.duplicates_skipped == n_threads * per_thread
    records = _lines(path)  # every line is valid JSON
    assert len(records) == n_threads * per_thread
    assert len({r["id"] for r in records}) == len(records)
    with JsonlStore(path) as reopened:
        assert len(reopened) == n_threads * per_thread


_WRITER = textwrap.dedent(
    """
    import sys
    from syntriever_haystack.generate.records import JsonlStore

    store = JsonlStore(sys.argv[1], fsync=False).open()
    i = len(store.ids)
    while True:
        store.append({"id": f"r{i}", "i": i, "payload": "é" * (50_000 + 7919 * i % 200_000)})
        i += 1
    """
)


def test_store_survives_sigkill_mid_write(tmp_path: Path, subprocess_env: dict[str, str]) -> None:
    path = tmp_path / "killed.jsonl"
    total = 0
    for round_ in range(3):  # kill, repair, resume, kill again
        proc = subprocess.Popen([PYTHON, "-c", _WRITER, str(path)], env=subprocess_env, stderr=subprocess.PIPE)
        try:
            deadline = time.monotonic() + 20
            start = path.stat().st_size if path.exists() else 0
            while time.monotonic() < deadline and (not path.exists() or path.stat().st_size < start + 2_000_000):
                assert proc.poll() is None, proc.stderr.read().decode() if proc.stderr else ""
                time.sleep(0.01)
            time.sleep(0.013 * (round_ + 1))
        finally:
            proc.send_signal(signal.SIGKILL)
            proc.wait()
        assert proc.returncode == -signal.SIGKILL
        with JsonlStore(path) as store:
            records = list(store.records())
            assert len(records) > total  # the resumed writer added records
            assert [r["id"] for r in records] == [f"r{i}" for i in range(len(records))]  # no gap, no partial
            assert all(r["payload"] == "é" * (50_000 + 7919 * r["i"] % 200_000) for r in records)
            total = len(records)
        assert path.read_bytes().endswith(b"\n")
        assert len(_lines(path)) == total


# ------------------------------------------------------------------------------------------------------ exporters

CORPUS = {
    "d1": Passage("Anaemia", "Iron deficiency is the most common cause of anaemia.", {"url": "x"}),
    "d2": Passage("", "Aspirin is not recommended in late pregnancy.", {}),
    "d3": Passage("", "Aspirin reduces the risk of a second heart attack.", {}),
    "d4": Passage("", "Paracetamol is the usual painkiller in pregnancy.", {}),
    "d5": Passage("", "Anaemia can also follow vitamin B12 deficiency.", {}),
}


def _retriever() -> RetrieverExample:
    return {
        "id": stable_id("retriever", "q1"),
        "kind": "retriever",
        "query_id": "q1",
        "query": "what causes anaemia",
        "positives": [
            {"text": CORPUS["d1"].text, "source": "gold", "doc_id": "d1", "judge": None, "label": None},
            {"text": "Blood loss and low iron intake.", "source": "llm_positive", "doc_id": None, "judge": "llm:t",
             "label": True},
            {"text": "Step 1: anaemia is ...", "source": "cot", "doc_id": None, "judge": None, "label": None},
        ],
        "negatives": [
            {"text": "Anaemia is a word of Greek origin.", "source": "llm_negative", "doc_id": None, "judge": "llm:t",
             "label": False},
            {"text": "Anaemia is common.", "source": "rejected_positive", "doc_id": None, "judge": "llm:t",
             "label": False},
        ],
        "provenance": {"llm": "test", "created": utc_now()},
    }  # fmt: skip


def _reranker() -> RerankerGroup:
    return {
        "id": stable_id("reranker", "s1"),
        "kind": "reranker",
        "query_id": "s1",
        "query": "aspirin pregnancy",
        "query_type": "keywords",
        "source_doc_id": "d2",
        "positive": {"doc_id": "d2", "text": CORPUS["d2"].text, "label": 2, "score": 0.9, "judge": "ce:tiny"},
        "negatives": [
            {"doc_id": "d3", "text": CORPUS["d3"].text, "label": False, "score": 0.1, "judge": "ce:tiny", "rank": 1},
            {"doc_id": "d4", "text": CORPUS["d4"].text, "label": 0, "score": 0.3, "judge": "ce:tiny", "rank": 2},
            # judged relevant: contradicts being a negative, left out
            {"doc_id": "d1", "text": CORPUS["d1"].text, "label": True, "score": 0.8, "judge": "ce:tiny", "rank": 3},
        ],
        "provenance": {},
    }


def _preference() -> PreferenceTriple:
    return {
        "id": stable_id("preference", "q1", "d1", "d5"),
        "kind": "preference",
        "query_id": "q1",
        "query": "what causes anaemia",
        "preferred": {"doc_id": "d1", "text": CORPUS["d1"].text, "rank": 2},
        "rejected": {"doc_id": "d5", "text": CORPUS["d5"].text, "rank": 1},
        "votes": {"ab": "a", "ba": "a", "consistent": True},
        "judge": "llm:t",
        "provenance": {},
    }


def _records() -> list[dict[str, Any]]:
    return [dict(_retriever()), dict(_reranker()), dict(_preference())]


def test_records_round_trip_through_the_store(tmp_path: Path) -> None:
    records = _records()
    with JsonlStore(tmp_path / "gen.jsonl") as store:
        for record in records:
            store.append(record)
        stored = list(store.records())
    assert stored == records
    assert to_flagembedding(stored, tmp_path / "fe.jsonl") == 3


def test_to_sentence_transformers(tmp_path: Path) -> None:
    path = tmp_path / "st" / "triplets.jsonl"
    assert to_sentence_transformers(_records(), path) == 3 + 2 + 1
    rows = _lines(path)
    assert all(set(r) == {"anchor", "positive", "negative"} for r in rows)
    retriever_rows = [r for r in rows if r["anchor"] == "what causes anaemia"][:3]
    # max(P=3, N=2) rows; positive i with negative i mod N.
    assert [r["positive"] for r in retriever_rows] == [p["text"] for p in _retriever()["positives"]]
    negs = [n["text"] for n in _retriever()["negatives"]]
    assert [r["negative"] for r in retriever_rows] == [negs[0], negs[1], negs[0]]
    reranker_rows = [r for r in rows if r["anchor"] == "aspirin pregnancy"]
    assert [r["negative"] for r in reranker_rows] == [CORPUS["d3"].text, CORPUS["d4"].text]
    assert rows[-1] == {"anchor": "what causes anaemia", "positive": CORPUS["d1"].text, "negative": CORPUS["d5"].text}

    pairs = tmp_path / "pairs.jsonl"
    assert to_sentence_transformers(_records(), pairs, format="pairs") == 3 + 1 + 1
    assert all(set(r) == {"anchor", "positive"} for r in _lines(pairs))
    with pytest.raises(ValueError, match="format"):
        to_sentence_transformers(_records(), pairs, format="quads")  # type: ignore[arg-type]


def test_to_flagembedding(tmp_path: Path) -> None:
    path = tmp_path / "fe.jsonl"
    no_negatives = dict(_retriever(), id="x", negatives=[])
    assert to_flagembedding([*_records(), no_negatives], path) == 3
    rows = _lines(path)
    assert all(set(r) == {"query", "pos", "neg"} for r in rows)
    assert rows[0]["pos"] == [p["text"] for p in _retriever()["positives"]]
    assert rows[0]["neg"] == [n["text"] for n in _retriever()["negatives"]]
    assert rows[1] == {
        "query": "aspirin pregnancy",
        "pos": [CORPUS["d2"].text],
        "neg": [CORPUS["d3"].text, CORPUS["d4"].text],
    }
    assert rows[2] == {"query": "what causes anaemia", "pos": [CORPUS["d1"].text], "neg": [CORPUS["d5"].text]}


def test_exporters_skip_contradicting_judgments(tmp_path: Path) -> None:
    record = _retriever()
    record["positives"][1]["label"] = False  # a p+ the judge rejected but left among the positives
    path = tmp_path / "fe.jsonl"
    assert to_flagembedding([dict(record)], path) == 1
    assert "Blood loss and low iron intake." not in _lines(path)[0]["pos"]


def test_to_beir_loads_with_load_beir(tmp_path: Path) -> None:
    out = tmp_path / "beir"
    assert to_beir(_records(), out, corpus=CORPUS) == 3 + 1
    ds = load_beir(out, split="train")
    assert ds.warnings == []
    assert ds.queries == {"q1": "what causes anaemia", "s1": "aspirin pregnancy"}
    generated = {doc_id: p for doc_id, p in ds.corpus.items() if doc_id.startswith("gen-")}
    assert set(ds.corpus) == set(CORPUS) | set(generated)
    assert len(generated) == 4  # p+, q_cot, p-, rejected p+ (negatives are distractors)
    assert ds.corpus["d1"] == CORPUS["d1"]  # the real corpus entry (title, metadata) is kept
    by_text = {p.text: doc_id for doc_id, p in generated.items()}
    p_plus = by_text["Blood loss and low iron intake."]
    assert generated[p_plus].metadata == {"generated": True, "source": "llm_positive"}
    assert p_plus == "gen-" + stable_id("Blood loss and low iron intake.")
    assert ds.qrels == {
        "q1": {"d1": 1, p_plus: 1, by_text["Step 1: anaemia is ..."]: 1},
        "s1": {"d2": 2},  # graded label kept
    }
    assert (out / "qrels" / "train.tsv").read_text().splitlines()[0] == "query-id\tcorpus-id\tscore"
    assert not [p for p in out.rglob("*") if p.name.endswith(".tmp")]


def test_to_beir_with_negatives_and_without_a_corpus(tmp_path: Path) -> None:
    out = tmp_path / "beir"
    assert to_beir(_records(), out, include_negatives=True, split="synthetic") == 4 + 2 + 2
    ds = load_beir(out, split="synthetic")
    assert ds.qrels["s1"] == {"d2": 2, "d3": 0, "d4": 0}
    assert sorted(ds.qrels["q1"].values()) == [0, 0, 1, 1, 1]
    # Without a corpus, the records' own texts define the documents they name.
    assert ds.corpus["d2"].text == CORPUS["d2"].text
    assert "d5" in ds.corpus  # from the preference triple: in the corpus, not judged
    assert all("d5" not in judged for judged in ds.qrels.values())


def test_to_beir_judges_other_positives_of_reranker_groups(tmp_path: Path) -> None:
    group = dict(_reranker())
    group["other_positives"] = [
        {"doc_id": "d4", "text": CORPUS["d4"].text, "label": True, "score": 0.7, "judge": "ce:tiny", "rank": 4},
        {"doc_id": "d5", "text": CORPUS["d5"].text, "label": 3, "score": 0.9, "judge": "ce:tiny", "rank": 5},
    ]
    assert to_beir([group], tmp_path / "beir", corpus=CORPUS) == 3
    assert load_beir(tmp_path / "beir", split="train").qrels == {"s1": {"d2": 2, "d4": 1, "d5": 3}}
    assert to_flagembedding([group], tmp_path / "fe.jsonl") == 1
    assert _lines(tmp_path / "fe.jsonl")[0]["pos"] == [CORPUS["d2"].text]  # training formats: `positive` only


def test_to_beir_errors(tmp_path: Path) -> None:
    with pytest.raises(RecordsError, match="at least one relevance judgment"):
        to_beir([_preference()], tmp_path / "a")  # type: ignore[list-item]
    conflicting = dict(_reranker(), id="other", query_id="q1")
    with pytest.raises(RecordsError, match="two different texts"):
        to_beir([_retriever(), conflicting], tmp_path / "b")  # type: ignore[list-item]
    with pytest.raises(RecordsError, match="unknown kind 'mystery'"):
        to_beir([{"id": "x", "kind": "mystery"}], tmp_path / "c")
    with pytest.raises(RecordsError, match="tab"):
        to_beir([dict(_reranker(), query_id="s\t1")], tmp_path / "d")
    with pytest.raises(RecordsError, match=r"record '.*' positive: field 'text' must be str"):
        to_flagembedding([dict(_reranker(), positive={"doc_id": "d2"})], tmp_path / "e.jsonl")
    bad_label = _reranker()
    bad_label["negatives"][0]["label"] = 0.2  # type: ignore[typeddict-item]
    with pytest.raises(RecordsError, match="score field"):
        to_flagembedding([dict(bad_label)], tmp_path / "f.jsonl")
    assert not (tmp_path / "a").exists()


def test_exporters_write_atomically(tmp_path: Path) -> None:
    path = tmp_path / "fe.jsonl"
    path.write_text("old content\n")
    with pytest.raises(RecordsError):
        to_flagembedding([*_records(), {"id": "x", "kind": "mystery"}], path)
    assert path.read_text() == "old content\n"  # a failure leaves the previous file untouched
    assert to_flagembedding(_records(), path) == 3
    assert os.listdir(tmp_path) == ["fe.jsonl"]
