"""`syntriever generate` as a user runs it: a subprocess against the fake OpenAI server in another process.

Reranker data end to end, a SIGKILL in the middle of `generate retriever` followed by a resume (no duplicates,
nothing lost, at most the in-flight requests paid twice), a third run with zero calls, and `generate export`.
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import signal
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from syntriever_haystack.data.beir import load_beir
from tests.conftest import PYTHON, ROOT
from tests.unit.test_beir_loader import write_beir
from tests.unit.test_generate_tasks import CORPUS  # 10 short passages on distinct topics

pytestmark = pytest.mark.integration

FAKE_SERVER = ROOT / "tests" / "support" / "fake_openai.py"
RESPONDER = "tests.support.scripted_llm:syntriever_responder"

QUERIES = {
    "q01": ("what causes iron deficiency anemia", "d1"),
    "q02": ("how do plants make glucose from sunlight", "d2"),
    "q03": ("who built the eiffel tower in paris", "d3"),
    "q04": ("which organ makes insulin to lower blood sugar", "d4"),
    "q05": ("where is iron ore mined and smelted", "d5"),
    "q06": ("most visited art museum in paris", "d6"),
    "q07": ("how do honey bees make honey from nectar", "d7"),
    "q08": ("what happens to donated blood after testing", "d8"),
    "q09": ("what did the 1900 world fair introduce", "d9"),
    "q10": ("why do volcanoes erupt magma", "d10"),
    "q11": ("red cells plasma and platelets storage", "d8"),
    "q12": ("royal palace turned into a museum", "d6"),
}
REQUESTS_PER_QUERY = 4  # p+, p- (no q_cot), and the verification of each


@dataclass
class Server:
    port: int

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def stats(self) -> dict[str, int]:
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        with opener.open(f"{self.url}/_fake/stats", timeout=10) as response:
            return dict(json.load(response))


@contextlib.contextmanager
def fake_server(env: dict[str, str], latency_ms: float) -> Iterator[Server]:
    process = subprocess.Popen(
        [PYTHON, str(FAKE_SERVER), "--port", "0", "--latency-ms", str(latency_ms), "--responder", RESPONDER],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert process.stdout is not None
        ready, _, _ = select.select([process.stdout], [], [], 30)
        assert ready, "the fake server did not start within 30 s"
        line = process.stdout.readline().strip()
        assert line.startswith("PORT="), line
        yield Server(int(line.removeprefix("PORT=")))
    finally:
        process.terminate()
        process.wait(timeout=10)
        if process.stdout is not None:
            process.stdout.close()


@pytest.fixture(scope="module")
def env(subprocess_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    environment = {k: v for k, v in subprocess_env.items() if k not in ("OPENAI_API_KEY",)}
    environment["SYNTRIEVER_CACHE"] = str(tmp_path_factory.mktemp("syntriever-cache"))
    environment["NO_PROXY"] = environment["no_proxy"] = "127.0.0.1,localhost"
    return environment


@pytest.fixture(scope="module")
def beir_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_beir(
        tmp_path_factory.mktemp("beir") / "tiny",
        corpus=[{"_id": d, "title": title, "text": text} for d, title, text in CORPUS],
        queries=[{"_id": q, "text": text} for q, (text, _) in QUERIES.items()],
        qrels={"train": [(q, d, 1) for q, (_, d) in QUERIES.items()]},
    )


def cli(*args: str) -> list[str]:
    return [PYTHON, "-m", "syntriever_haystack.cli", "generate", *args]


def run_cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(cli(*args), cwd=ROOT, env=env, capture_output=True, text=True, timeout=180)
    assert result.returncode == 0, f"exit {result.returncode}\nstdout:\n{result.stdout}\nstderr:\n{result.stderr}"
    return result


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def summary(folder: Path) -> dict[str, Any]:
    return dict(json.loads((folder / "summary.json").read_text(encoding="utf-8")))


def count_lines(path: Path) -> int:
    try:
        return path.read_bytes().count(b"\n")
    except FileNotFoundError:
        return 0


# ------------------------------------------------------------------------------------------------ reranker


def test_generate_reranker_and_export(env: dict[str, str], beir_folder: Path, tmp_path: Path) -> None:
    out = tmp_path / "reranker"
    args = [
        "reranker",
        "--dataset", str(beir_folder),
        "--llm", "openai:fake-model",
        "--out", str(out),
        "--passages", "6",
        "--candidates", "4",
        "--min-words", "5",
        "--quiet",
    ]  # fmt: skip
    with fake_server(env, latency_ms=5) as server:
        result = run_cli(env, *args, "--api-base-url", server.url)
        assert "syntriever generate reranker" in result.stdout
        requests = server.stats()["chat_requests"]
        data = summary(out)
        assert data["task"] == "reranker"
        assert data["calls"] == requests > 6 * 3  # 3 queries per passage, then the labels
        assert data["steps"]["queries"]["calls"] == 6 * 3
        assert data["steps"]["relevance"]["calls"] == requests - 6 * 3
        assert data["failures"] == {}
        assert data["passages"] == 6
        assert data["judge"].startswith("llm:fake-model:relevance@1#")
        assert data["config"]["llm"] == "openai:fake-model"
        assert (out / "summary.md").read_text().startswith("## ")
        assert (out / "llm-cache.sqlite").is_file()

        queries = read_jsonl(out / "queries.jsonl")
        assert len(queries) == 18
        assert len({q["id"] for q in queries}) == 18
        accepted = {q["id"] for q in queries if not q["rejected"]}
        assert {c["id"] for c in read_jsonl(out / "candidates.jsonl")} == accepted
        groups = read_jsonl(out / "reranker.jsonl")
        assert groups
        assert len({g["id"] for g in groups}) == len(groups)
        assert all(g["query_id"] in accepted and g["negatives"] for g in groups)
        assert data["stats"]["groups"]["written"] == len(groups)

        # rerun: zero calls, same files
        before = (out / "reranker.jsonl").read_bytes()
        run_cli(env, *args, "--api-base-url", server.url)
        assert server.stats()["chat_requests"] == requests
        assert summary(out)["calls"] == 0
        assert (out / "reranker.jsonl").read_bytes() == before

    # export the groups from the command line
    beir_args = ["--format", "beir", "--out", str(tmp_path / "beir"), "--dataset", str(beir_folder)]
    run_cli(env, "export", str(out / "reranker.jsonl"), *beir_args)
    exported = load_beir(tmp_path / "beir", split="train")
    assert set(exported.queries) == {g["query_id"] for g in groups}
    assert {d for d, _, _ in CORPUS} <= set(exported.corpus)
    flag_args = ["--format", "flagembedding", "--out", str(tmp_path / "flag.jsonl")]
    result = run_cli(env, "export", str(out / "reranker.jsonl"), *flag_args)
    lines = read_jsonl(tmp_path / "flag.jsonl")
    assert f"wrote {len(lines)} rows" in result.stdout
    assert len(lines) == len(groups)
    assert all(set(line) == {"query", "pos", "neg"} and line["neg"] for line in lines)


# -------------------------------------------------------------------------------------------- kill + resume


def test_sigkill_then_resume_has_no_duplicates_and_pays_at_most_the_in_flight_requests(
    env: dict[str, str], beir_folder: Path, tmp_path: Path
) -> None:
    out = tmp_path / "retriever"
    records_file = out / "retriever.jsonl"
    concurrency = 2
    args = [
        "retriever",
        "--dataset", str(beir_folder),
        "--split", "train",
        "--llm", "openai:fake-model",
        "--out", str(out),
        "--concurrency", str(concurrency),
        "--no-cot",
        "--quiet",
    ]  # fmt: skip
    clean_requests = REQUESTS_PER_QUERY * len(QUERIES)
    with fake_server(env, latency_ms=300) as server:
        args += ["--api-base-url", server.url]
        process = subprocess.Popen(
            cli(*args), cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
        )
        try:
            deadline = time.monotonic() + 120
            while count_lines(records_file) < 2:
                assert process.poll() is None, f"the run ended before it could be killed: {process.communicate()[1]}"
                assert time.monotonic() < deadline, "no records after 120 s"
                time.sleep(0.02)
            os.kill(process.pid, signal.SIGKILL)
        finally:
            process.wait(timeout=30)
            if process.stderr is not None:
                process.stderr.close()
        assert process.returncode == -signal.SIGKILL
        killed_requests = server.stats()["chat_requests"]
        written = count_lines(records_file)
        assert 2 <= written < len(QUERIES), "killed mid-run"
        assert killed_requests < clean_requests
        assert not (out / "summary.json").exists()  # the killed run never finished

        # resume to completion
        run_cli(env, *args)
        resumed = summary(out)
        total = server.stats()["chat_requests"]
        assert resumed["calls"] == total - killed_requests
        assert resumed["cache_hits"] >= 0
        assert resumed["failures"] == {}
        assert resumed["records"] + written >= len(QUERIES)
        # every request was needed once; only those in flight at the kill (≤ concurrency) were paid twice
        assert clean_requests <= total <= clean_requests + 2 * concurrency

        lines = records_file.read_text(encoding="utf-8").splitlines()
        records = [json.loads(line) for line in lines]  # valid JSON on every line (a torn line was repaired)
        assert len({r["id"] for r in records}) == len(records)
        assert sorted(r["query_id"] for r in records) == sorted(QUERIES)
        assert {d["id"] for d in read_jsonl(out / "retriever.done.jsonl")} == set(QUERIES)
        for record in records:
            assert record["positives"][0]["doc_id"] == QUERIES[record["query_id"]][1]

        # a third run: nothing left to do, zero calls
        run_cli(env, *args)
        assert summary(out)["calls"] == 0
        assert server.stats()["chat_requests"] == total
        assert len(read_jsonl(records_file)) == len(QUERIES)

    # the generated examples export from the command line
    beir_args = ["--format", "beir", "--out", str(tmp_path / "beir"), "--dataset", str(beir_folder)]
    run_cli(env, "export", str(records_file), *beir_args)
    exported = load_beir(tmp_path / "beir", split="train")
    assert set(exported.queries) == set(QUERIES)
    for qid, (_, gold) in QUERIES.items():
        assert exported.qrels[qid][gold] == 1
