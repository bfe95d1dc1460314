"""Generation throughput: the LLM client against a scripted OpenAI-compatible server, and the local model.

Prints requests/s at several concurrency levels against the scripted server with a simulated latency (the
reference column is the ideal ``concurrency / latency``), and optionally seconds per query of the embedded
offline model, with sample queries. Results also go to ``--json``.

    python benchmarks/generation_benchmark.py --latency-ms 100 --requests 64 --concurrency 1 16
    python benchmarks/generation_benchmark.py --local --local-queries 10 --dataset ../shared/datasets/scifact
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


async def _ask_many(client, prompt, passages) -> list:
    return await asyncio.gather(
        *(client.ask(prompt, {"passage": p, "query_type": "question"}, sample=i) for i, p in enumerate(passages))
    )


def bench_server(latency_ms: float, requests: int, levels: list[int], openai_client: str) -> list[dict]:
    from haystack.components.generators.chat import OpenAIChatGenerator
    from haystack.utils import Secret

    from syntriever_haystack.generate.llm import LLMClient, LLMSettings
    from syntriever_haystack.generate.prompts import load_prompts
    from tests.support.fake_openai import FakeOpenAIServer
    from tests.support.scripted_llm import syntriever_responder

    prompt = load_prompts()["queries"]
    passages = [f"Passage number {i} about iron deficiency anemia and its many causes." for i in range(requests)]
    rows = []
    with FakeOpenAIServer(syntriever_responder, latency_s=latency_ms / 1000) as server:
        for level in levels:
            generator = OpenAIChatGenerator(
                api_key=Secret.from_token("bench"), api_base_url=server.url, model="fake-model", max_retries=0
            )
            client = LLMClient(generator, cache=None, settings=LLMSettings(concurrency=level))
            started = time.perf_counter()
            answers = asyncio.run(_ask_many(client, prompt, passages))
            elapsed = time.perf_counter() - started
            ok = sum(a.ok for a in answers)
            rows.append(
                {
                    "concurrency": level,
                    "requests": requests,
                    "ok": ok,
                    "seconds": round(elapsed, 3),
                    "requests_per_s": round(requests / elapsed, 2),
                    "ideal_requests_per_s": round(level / (latency_ms / 1000), 2),
                    "peak_in_flight": server.max_concurrency_seen,
                }
            )
            server.max_concurrency_seen = 0
    return rows


def bench_local(dataset: str | None, n: int, model: str, seed: int) -> dict:
    """Seconds per query of the offline model; ``model`` is a local spec, e.g. ``gemma3-270m?backend=transformers``."""
    from syntriever_haystack.data.beir import read_corpus
    from syntriever_haystack.generate.backends import make_generator
    from syntriever_haystack.generate.llm import LLMClient, LLMSettings
    from syntriever_haystack.generate.prompts import load_prompts

    prompt = load_prompts()["queries"]
    if dataset:
        corpus = read_corpus(Path(dataset) / "corpus.jsonl")
        ids = random.Random(seed).sample(sorted(d for d, p in corpus.items() if len(p.text.split()) >= 30), n)
        passages = [(d, " ".join(corpus[d].text.split()[:120])) for d in ids]
    else:
        passages = [(str(i), "Iron deficiency anemia is caused by blood loss and low dietary iron.") for i in range(n)]
    generator = make_generator(f"local:{model}")
    backend = getattr(generator, "backend", "auto")
    started = time.perf_counter()
    generator.warm_up()
    load_s = time.perf_counter() - started
    client = LLMClient(generator, cache=None, settings=LLMSettings(concurrency=1))
    types = ["question", "keywords", "claim"]

    async def run() -> list:
        results = []
        for i, (_, text) in enumerate(passages):
            results.append(await client.ask(prompt, {"passage": text, "query_type": types[i % 3]}))
        return results

    started = time.perf_counter()
    answers = asyncio.run(run())
    elapsed = time.perf_counter() - started
    tokens = client.accounting.summary()["completion_tokens"]
    samples = [
        {"doc_id": d, "passage": t[:200], "query_type": types[i % 3], "query": a.value, "failure": a.failure}
        for i, ((d, t), a) in enumerate(zip(passages, answers, strict=True))
    ]
    return {
        "model": model,
        "backend": getattr(generator, "loaded_backend", None) or backend,
        "dataset": dataset,
        "load_s": round(load_s, 2),
        "queries": n,
        "ok": sum(a.ok for a in answers),
        "seconds_per_query": round(elapsed / n, 3),
        "completion_tokens_per_s": round(tokens / elapsed, 1) if elapsed else None,
        "samples": samples,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--latency-ms", type=float, default=100.0)
    parser.add_argument("--requests", type=int, default=64)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 16])
    parser.add_argument("--local", action="store_true", help="also time the embedded offline model")
    parser.add_argument("--local-model", default="gemma3-270m")
    parser.add_argument("--local-queries", type=int, default=10)
    parser.add_argument("--dataset", default=None, help="BEIR folder to sample passages from for --local")
    parser.add_argument("--seed", type=int, default=13)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()

    results: dict = {"server": bench_server(args.latency_ms, args.requests, args.concurrency, "openai")}
    print(f"\nScripted OpenAI-compatible server, {args.latency_ms:g} ms latency, {args.requests} requests")
    print("| concurrency | requests/s | ideal (concurrency/latency) | peak in flight | seconds |")
    print("|---:|---:|---:|---:|---:|")
    for row in results["server"]:
        print(
            f"| {row['concurrency']} | {row['requests_per_s']:.1f} | {row['ideal_requests_per_s']:.1f} "
            f"| {row['peak_in_flight']} | {row['seconds']:.2f} |"
        )
    if args.local:
        local = bench_local(args.dataset, args.local_queries, args.local_model, args.seed)
        results["local"] = local
        print(
            f"\nLocal model {local['model']} ({local['backend']}): load {local['load_s']} s, "
            f"{local['seconds_per_query']} s/query, "
            f"{local['completion_tokens_per_s']} tokens/s, {local['ok']}/{local['queries']} parsed"
        )
        for sample in local["samples"]:
            print(f"- [{sample['query_type']}] {sample['query'] or '(failed: ' + str(sample['failure']) + ')'}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
