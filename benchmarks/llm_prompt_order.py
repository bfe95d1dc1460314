"""The LLM query step's prompt order: passages in sampled order vs grouped by query type (``by_prompt_prefix``).

Consecutive prompts of one query type share the system text and that type's few-shot examples; llama.cpp keeps the
previous prompt's KV cache and evaluates only what differs, so grouping saves the shared prefix on every call.
Both orders run the same passages through the same prompts (the offline Gemma 3 270M via llama-cpp-python, the
flow's default local backend), one after the other in one process, and the script prints seconds per call side by
side. Needs llama-cpp-python (``SYNTRIEVER_LLAMA_CPP=1 bash scripts/setup.sh``) and the offline model.

    python benchmarks/llm_prompt_order.py --dataset ../shared/datasets/scifact --passages 24
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", required=True, help="BEIR folder whose corpus gives the passages")
    parser.add_argument("--passages", type=int, default=24)
    parser.add_argument("--threads", type=int, default=None, help="llama.cpp threads (default: one per core)")
    parser.add_argument("--json", help="write the numbers here too")
    args = parser.parse_args()

    from syntriever_haystack.generate.local_llm.backends import LlamaCppBackend, llama_cpp_available
    from syntriever_haystack.generate.local_llm.prompting import FEW_SHOT_STOP, render_few_shot_prompt
    from syntriever_haystack.generate.local_llm.registry import default_cache_dir, resolve_model
    from syntriever_haystack.generate.prompts import load_prompts
    from syntriever_haystack.generate.reranker_data import (
        QUERY_TYPES,
        PassageItem,
        by_prompt_prefix,
        query_types_for,
    )

    if not llama_cpp_available():
        print("llama-cpp-python is not installed: SYNTRIEVER_LLAMA_CPP=1 bash scripts/setup.sh", file=sys.stderr)
        return 2
    prompt = load_prompts()["queries"]
    with open(Path(args.dataset) / "corpus.jsonl", encoding="utf-8") as handle:
        rows = [json.loads(line) for line, _ in zip(handle, range(args.passages), strict=False)]
    passages = [PassageItem(r["_id"], f"{r.get('title', '')}\n{r['text']}".strip()) for r in rows]
    llm = LlamaCppBackend(resolve_model("gemma3-270m", default_cache_dir()), args.threads).llm

    def seconds_per_call(order: list[PassageItem]) -> float:
        llm.reset()  # no prefix left over from the other order
        started = time.perf_counter()
        for item in order:
            query_type = query_types_for(item.doc_id, QUERY_TYPES, 1)[0]
            text = render_few_shot_prompt(prompt.render({"passage": item.text, "query_type": query_type}))
            llm.create_completion(text, max_tokens=48, stop=["\n", *FEW_SHOT_STOP], temperature=0.7, seed=13)
        return (time.perf_counter() - started) / len(order)

    sampled = seconds_per_call(passages)
    grouped = seconds_per_call(by_prompt_prefix(passages, QUERY_TYPES, 1))
    result = {
        "passages": len(passages),
        "sampled_order_s_per_call": round(sampled, 3),
        "grouped_by_type_s_per_call": round(grouped, 3),
        "speed_up": round(sampled / grouped, 2),
    }
    print(f"{'order':<22}{'s / call':>10}")
    print(f"{'sampled (before)':<22}{sampled:>10.3f}")
    print(f"{'grouped by type':<22}{grouped:>10.3f}   ({result['speed_up']}x)")
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
