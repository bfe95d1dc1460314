"""Load test of the HTTP search API: `syntriever serve` on loopback, concurrent clients, latency and memory.

Starts `syntriever serve RUN_DIR` (Hayhooks, the same wrapper as the Docker image) on 127.0.0.1, waits until
`GET /status/search` answers, sends a few warm-up queries, then N concurrent clients (threads with one keep-alive
connection each) send Q queries each to `POST /search/run`. Prints and writes (JSON + Markdown next to each other)
latency p50/p95/p99, throughput, errors and the server process's peak RSS (VmHWM from /proc/PID/status).
Numbers only: nothing here asserts a time.

    python benchmarks/serving_load.py --run runs/quickstart [--rerank] [--dataset ../shared/datasets/scifact]
    python benchmarks/serving_load.py --tiny      # a fresh machine: builds a tiny run folder first (needs torch)

Queries come from the dataset's queries.jsonl with --dataset, else synthetic ones.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import platform
import random
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))  # tests.support builds the --tiny run folder

SYNTHETIC_WORDS = (
    "what causes iron deficiency anaemia blood loss heart attack aspirin risk treatment patients disease cancer "
    "brain tumour children protein gene study trial vitamin bone fracture elderly kidney liver lung virus infection "
    "capital city paris france berlin germany river tower search engine ranking document query"
).split()


def build_tiny_run(folder: Path, documents: int) -> Path:
    """A run folder with tiny exported models (2-layer BERTs) and ``documents`` synthetic documents."""
    from syntriever_haystack.export import export_model
    from tests.conftest import build_tiny_bert, write_probe_file
    from tests.support.serving_run import build_run_folder, serving_documents

    src = folder / "src"
    bi = export_model(build_tiny_bert(src / "bi", kind="bi-encoder"), src / "bi-onnx").output_dir
    probes = write_probe_file(src / "pairs.tsv", kind="cross-encoder")
    ce_source = build_tiny_bert(src / "ce", kind="cross-encoder")
    ce = export_model(ce_source, src / "ce-onnx", probe_file=probes).output_dir
    return build_run_folder(folder / "run", bi, ce, serving_documents(max(0, documents - 5)), top_k=10)


def load_queries(dataset: Path | None, n: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    if dataset is not None:
        texts = [
            json.loads(line)["text"]
            for line in (dataset / "queries.jsonl").read_text(encoding="utf-8").splitlines()
            if line.strip()
        ]
        return [texts[i % len(texts)] for i in rng.sample(range(max(n, len(texts))), n)]
    return [" ".join(rng.choices(SYNTHETIC_WORDS, k=rng.randint(3, 9))) for _ in range(n)]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def wait_until_up(process: subprocess.Popen[bytes], base: str, log: Path, timeout: float) -> float:
    start = time.perf_counter()
    while time.perf_counter() - start < timeout:
        if process.poll() is not None:
            raise SystemExit(f"the server exited with {process.returncode}:\n{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(f"{base}/status/search", timeout=2) as answer:
                if answer.status == 200:
                    return time.perf_counter() - start
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        time.sleep(0.2)
    raise SystemExit(f"the server did not answer within {timeout:.0f} s:\n{log.read_text()[-3000:]}")


def peak_rss_mb(pid: int) -> float | None:
    """VmHWM (peak resident set) of ``pid`` in MiB, Linux only."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def client(port: int, queries: list[str], top_k: int, latencies: list[float], errors: list[str]) -> None:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    headers = {"Content-Type": "application/json"}
    for query in queries:
        body = json.dumps({"query": query, "top_k": top_k})
        start = time.perf_counter()
        try:
            connection.request("POST", "/search/run", body=body, headers=headers)
            answer = connection.getresponse()
            data = answer.read()
            elapsed = time.perf_counter() - start
            if answer.status != 200 or "result" not in json.loads(data):
                errors.append(f"HTTP {answer.status}: {data[:200]!r}")
                continue
            latencies.append(elapsed)
        except (OSError, http.client.HTTPException, ValueError) as exc:
            errors.append(f"{type(exc).__name__}: {exc}")
            connection.close()
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    connection.close()


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    rank = q / 100 * (len(ordered) - 1)
    low, high = int(rank), min(int(rank) + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def to_markdown(result: dict[str, Any]) -> str:
    c, r = result["config"], result["results"]
    rss = "n/a" if r["server_peak_rss_mb"] is None else f"{r['server_peak_rss_mb']:.0f} MiB"
    return "\n".join(
        [
            "# Serving load test (`POST /search/run`, Hayhooks, loopback)",
            "",
            f"- pipeline: `{c['pipeline']}` ({c['documents']} documents{', tiny models' if c['tiny'] else ''})",
            f"- {c['clients']} concurrent clients x {c['queries_per_client']} queries (top_k {c['top_k']}, "
            f"{c['query_source']} queries), after {c['warmup']} warm-up queries",
            f"- machine: {c['machine']}, {c['cpus']} CPUs, Python {c['python']}",
            "",
            "| metric | value |",
            "|---|---|",
            f"| requests | {r['requests']} |",
            f"| errors | {r['errors']} |",
            f"| latency p50 | {r['latency_ms']['p50']:.1f} ms |",
            f"| latency p95 | {r['latency_ms']['p95']:.1f} ms |",
            f"| latency p99 | {r['latency_ms']['p99']:.1f} ms |",
            f"| latency mean / max | {r['latency_ms']['mean']:.1f} / {r['latency_ms']['max']:.1f} ms |",
            f"| throughput | {r['throughput_qps']:.1f} queries/s |",
            f"| server peak RSS (VmHWM) | {rss} |",
            f"| server start-up (to /status/search 200) | {r['startup_s']:.1f} s |",
            "",
        ]
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--run", type=Path, help="run folder (syntriever quickstart / run)")
    source.add_argument("--tiny", action="store_true", help="build and serve a tiny run folder (needs torch)")
    parser.add_argument("--rerank", action="store_true", help="serve pipelines/query-rerank.yaml")
    parser.add_argument("--dataset", type=Path, help="BEIR folder whose queries.jsonl supplies the queries")
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--queries", type=int, default=200, help="queries per client")
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument("--top-k", type=int, default=10)
    parser.add_argument("--tiny-documents", type=int, default=1000, help="documents of the --tiny run")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--timeout", type=float, default=300.0, help="seconds to wait for the server")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "serving_load")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="serving-load-") as scratch:
        work = Path(scratch)
        run = build_tiny_run(work, args.tiny_documents) if args.tiny else args.run.resolve()
        pipeline = run / "pipelines" / ("query-rerank.yaml" if args.rerank else "query.yaml")
        port = free_port()
        base = f"http://127.0.0.1:{port}"
        log = work / "server.log"
        env = {k: v for k, v in os.environ.items() if not k.startswith(("HAYHOOKS_", "SYNTRIEVER_"))}
        env.update({"HAYSTACK_TELEMETRY_ENABLED": "False", "HF_HUB_OFFLINE": "1"})
        command = [sys.executable, "-m", "syntriever_haystack", "serve", str(run), "--port", str(port)]
        if args.rerank:
            command.append("--rerank")
        with log.open("wb") as log_file:
            server = subprocess.Popen(command, env=env, cwd=work, stdout=log_file, stderr=subprocess.STDOUT)
        try:
            startup = wait_until_up(server, base, log, args.timeout)
            queries = load_queries(args.dataset, args.clients * args.queries + args.warmup, args.seed)
            warm_latencies: list[float] = []
            warm_errors: list[str] = []
            client(port, queries[: args.warmup], args.top_k, warm_latencies, warm_errors)
            latencies: list[float] = []
            errors: list[str] = []
            shares = [queries[args.warmup + i :: args.clients] for i in range(args.clients)]
            threads = [
                threading.Thread(target=client, args=(port, share, args.top_k, latencies, errors)) for share in shares
            ]
            start = time.perf_counter()
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
            wall = time.perf_counter() - start
            rss = peak_rss_mb(server.pid)
            documents_line = next(
                (line for line in log.read_text(errors="replace").splitlines() if "search: serving" in line), ""
            )
        finally:
            server.terminate()
            try:
                server.wait(timeout=30)
            except subprocess.TimeoutExpired:
                server.kill()
    count = documents_line.split("(")[-1].split(" documents")[0] if "documents" in documents_line else "?"
    ms = [x * 1000 for x in latencies]
    result = {
        "config": {
            "pipeline": str(pipeline.relative_to(run.parent)) if args.tiny else str(pipeline),
            "tiny": args.tiny,
            "documents": count,
            "clients": args.clients,
            "queries_per_client": args.queries,
            "warmup": args.warmup,
            "top_k": args.top_k,
            "query_source": f"{args.dataset.name} queries.jsonl" if args.dataset else "synthetic",
            "machine": f"{platform.system()} {platform.machine()}",
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
        },
        "results": {
            "requests": len(latencies) + len(errors),
            "errors": len(errors) + len(warm_errors),
            "error_samples": (warm_errors + errors)[:5],
            "latency_ms": {
                "p50": percentile(ms, 50),
                "p95": percentile(ms, 95),
                "p99": percentile(ms, 99),
                "mean": sum(ms) / len(ms) if ms else float("nan"),
                "max": max(ms) if ms else float("nan"),
            },
            "throughput_qps": len(latencies) / wall if wall else float("nan"),
            "wall_s": wall,
            "server_peak_rss_mb": rss,
            "startup_s": startup,
        },
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    json_path, md_path = args.out.with_suffix(".json"), args.out.with_suffix(".md")
    json_path.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    markdown = to_markdown(result)
    md_path.write_text(markdown, encoding="utf-8")
    print(markdown)
    print(f"written: {json_path}, {md_path}", file=sys.stderr)
    return 0 if not result["results"]["errors"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
