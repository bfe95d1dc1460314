"""`syntriever generate` in-process against the scripted server: a run that produced nothing fails loudly, reading
never creates files, and option values out of range are refused by the argument parser."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from syntriever_haystack.cli import main
from syntriever_haystack.generate.records import JsonlStoreError, read_records
from tests.support.fake_openai import FakeOpenAIServer, Fault
from tests.support.scripted_llm import syntriever_responder
from tests.unit.test_beir_loader import write_beir
from tests.unit.test_generate_tasks import CORPUS

pytestmark = pytest.mark.loopback

QUERIES = {f"q{i}": (text, doc) for i, (doc, _, text) in enumerate(CORPUS[:5])}


@pytest.fixture
def beir(tmp_path: Path) -> Path:
    return write_beir(
        tmp_path / "beir",
        corpus=[{"_id": d, "title": title, "text": text} for d, title, text in CORPUS],
        queries=[{"_id": q, "text": text[:40]} for q, (text, _) in QUERIES.items()],
        qrels={"train": [(q, d, 1) for q, (_, d) in QUERIES.items()]},
    )


@pytest.fixture
def server(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeOpenAIServer]:
    monkeypatch.setenv("OPENAI_API_KEY", "test")
    with FakeOpenAIServer(syntriever_responder) as fake:
        yield fake


def _retriever(beir: Path, out: Path, url: str, *extra: str) -> list[str]:
    return [
        "generate", "retriever", "--dataset", str(beir), "--llm", "openai:fake-model", "--out", str(out),
        "--api-base-url", url, "--no-cot", "--quiet", "--concurrency", "2", *extra,
    ]  # fmt: skip


@pytest.mark.parametrize(
    ("status", "hint"),
    [(401, "OPENAI_API_KEY"), (403, "--api-key-env"), (404, "check the model name (--llm openai:fake-model)")],
)
def test_every_call_refused_exits_non_zero_naming_the_cause_and_stops_early(
    beir: Path,
    tmp_path: Path,
    server: FakeOpenAIServer,
    capsys: pytest.CaptureFixture[str],
    status: int,
    hint: str,
) -> None:
    server.inject(*[Fault("status", status=status)] * 100)
    out = tmp_path / "out"
    code = main(_retriever(beir, out, server.url))
    err = capsys.readouterr().err
    assert code == 1
    assert f"http_{status}" in err
    assert "stopped early" in err
    assert hint in err
    assert len(server.requests) <= 2  # the first refusal stopped the run (2 requests may already be in flight)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["stopped"]["cause"] == f"http_{status}"
    assert summary["failures"] == {f"http_{status}": summary["not_sent"] + len(server.requests)}


def test_an_unreachable_server_exits_non_zero(beir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with FakeOpenAIServer() as fake:
        url = fake.url  # nothing listens there any more
    code = main(_retriever(beir, tmp_path / "out", url, "--max-retries", "0"))
    err = capsys.readouterr().err
    assert code == 1
    assert "connection" in err
    assert "--api-base-url" in err


def test_every_answer_unusable_exits_non_zero(
    beir: Path, tmp_path: Path, server: FakeOpenAIServer, capsys: pytest.CaptureFixture[str]
) -> None:
    server.responder = lambda request: ""  # every answer empty
    code = main(_retriever(beir, tmp_path / "out", server.url, "--parse-retries", "0"))
    err = capsys.readouterr().err
    assert code == 1
    assert "no item succeeded" in err
    assert "--parse-retries" in err


def test_a_good_run_and_its_rerun_exit_zero_and_keep_both_runs_accounting(
    beir: Path, tmp_path: Path, server: FakeOpenAIServer
) -> None:
    out = tmp_path / "out"
    assert main(_retriever(beir, out, server.url)) == 0
    calls = len(server.requests)
    assert main(_retriever(beir, out, server.url)) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["calls"] == 0
    assert [r["calls"] for r in summary["runs"]] == [calls, 0]
    assert summary["total"]["calls"] == calls


def test_export_of_a_missing_file_creates_nothing(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    missing = tmp_path / "typo" / "retriever.jsonl"
    code = main(["generate", "export", str(missing), "--format", "flagembedding", "--out", str(tmp_path / "f.jsonl")])
    assert code == 1
    err = capsys.readouterr().err
    assert str(missing) in err
    assert "does not exist" in err
    assert not (tmp_path / "typo").exists()
    assert not (tmp_path / "f.jsonl").exists()


def test_a_missing_queries_file_creates_nothing(beir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    missing = tmp_path / "typo" / "queries.jsonl"
    out = tmp_path / "out"
    code = main([*_retriever(beir, out, "http://127.0.0.1:9/v1"), "--queries-file", str(missing)])
    assert code == 1
    assert f"--queries-file {missing} does not exist" in capsys.readouterr().err
    assert not (tmp_path / "typo").exists()
    assert not out.exists()


def test_read_records_reads_without_creating_or_repairing(tmp_path: Path) -> None:
    path = tmp_path / "r.jsonl"
    content = b'{"id": "a", "kind": "x"}\n{"id": "b"'  # a torn final line
    path.write_bytes(content)
    assert [r["id"] for r in read_records(path)] == ["a"]
    assert path.read_bytes() == content  # not truncated
    with pytest.raises(JsonlStoreError, match="does not exist"):
        read_records(tmp_path / "nope" / "r.jsonl")
    assert not (tmp_path / "nope").exists()
    with pytest.raises(JsonlStoreError, match="is a folder"):
        read_records(tmp_path)


@pytest.mark.parametrize(
    ("option", "value", "message"),
    [
        ("--max-retries", "-1", "argument --max-retries: must be an integer >= 0, got '-1'"),
        ("--rpm", "0", "argument --rpm: must be a number > 0, got '0'"),
        ("--rpm", "-5", "argument --rpm: must be a number > 0, got '-5'"),
        ("--tpm", "nan", "argument --tpm: must be a number > 0, got 'nan'"),
        ("--timeout", "0", "argument --timeout: must be a number > 0, got '0'"),
        ("--parse-retries", "-1", "argument --parse-retries: must be an integer >= 0, got '-1'"),
        ("--concurrency", "0", "argument --concurrency: must be an integer >= 1, got '0'"),
        ("--max-queries", "0", "argument --max-queries: must be an integer >= 1, got '0'"),
        ("--concurrency", "two", "argument --concurrency: must be an integer >= 1, got 'two'"),
    ],
)
def test_out_of_range_options_are_refused_by_the_parser(
    beir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], option: str, value: str, message: str
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main([*_retriever(beir, tmp_path / "out", "http://127.0.0.1:9/v1"), option, value])
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "out").exists()
