"""Paired significance of every system in a results.json against another baseline, from the stored per-query values.

python scripts/experiments/significance.py results/scifact-training/results.json --baseline st:models/scifact-gold
python scripts/experiments/significance.py results/scifact-training/results.json --reranked-vs-first-stage
(every `FIRST+rerank:...` system against its own `FIRST`: does the reranker add?)
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import numpy as np

from syntriever_haystack.evaluate.significance import PairedTest, holm_adjust, paired_test


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("results", type=Path)
    group = parser.add_mutually_exclusive_group(required=True)
    group.add_argument("--baseline", help="system SPEC in results.json (or a unique substring)")
    group.add_argument(
        "--reranked-vs-first-stage", action="store_true", help="test each FIRST+rerank:... system against FIRST"
    )
    parser.add_argument("--metric", action="append", default=None)
    parser.add_argument("--test", default="t-test", choices=["t-test", "permutation", "bootstrap"])
    args = parser.parse_args()
    data = json.loads(args.results.read_text())
    systems = data["systems"]
    if args.reranked_vs_first_stage:
        reranked_vs_first_stage(systems, args.metric or data["metrics"], args.test)
        return
    matches = [s for s in systems if s == args.baseline] or [s for s in systems if args.baseline in s]
    if len(matches) != 1:
        raise SystemExit(f"--baseline {args.baseline!r} matches {matches or 'no system'}; pick one of {list(systems)}")
    base = matches[0]
    pairs = [(base, spec) for spec in systems if spec != base]
    print(f"Against `{base}` ({args.test}, paired over the judged queries, Holm-adjusted per metric):\n")
    print("| system | metric | Δ | 95% CI | p | p (Holm) |")
    print("|---|---|---:|---|---:|---:|")
    for _, spec, metric, _, _, t, p in compare(systems, pairs, args.metric or data["metrics"], args.test):
        ci = f"[{t.ci_low:+.4f}, {t.ci_high:+.4f}]"
        print(f"| `{spec}` | {metric} | {t.delta:+.4f} | {ci} | {t.p_value:.3g} | {p:.3g} |")


def compare(
    systems: dict[str, Any], pairs: list[tuple[str, str]], metrics: list[str], test: str
) -> list[tuple[str, str, str, float, float, PairedTest, float]]:
    """(baseline, system, metric, baseline mean, system mean, test, Holm p) for each pair, Holm per metric."""
    rows = []
    for metric in metrics:
        tests = []
        for base, spec in pairs:
            queries = sorted(systems[base]["per_query"][metric])
            a = np.array([systems[base]["per_query"][metric][q] for q in queries])
            b = np.array([systems[spec]["per_query"][metric][q] for q in queries])
            tests.append((base, spec, metric, float(a.mean()), float(b.mean()), paired_test(a, b, test=test)))
        adjusted = holm_adjust([row[-1].p_value for row in tests])
        rows += [(*row, p) for row, p in zip(tests, adjusted, strict=True)]
    return rows


def reranked_vs_first_stage(systems: dict[str, Any], metrics: list[str], test: str) -> None:
    pairs = [(spec.split("+rerank:")[0], spec) for spec in systems if "+rerank:" in spec]
    pairs = [(first, reranked) for first, reranked in pairs if first in systems]
    if not pairs:
        raise SystemExit("no FIRST+rerank:... system whose FIRST is also in the results")
    print(f"Each reranked system against its own first stage ({test}, paired, Holm-adjusted per metric):\n")
    print("| first stage | metric | first stage | + reranker | Δ | 95% CI | p (Holm) |")
    print("|---|---|---:|---:|---:|---|---:|")
    for first, _, metric, mean_a, mean_b, t, p in compare(systems, pairs, metrics, test):
        ci = f"[{t.ci_low:+.4f}, {t.ci_high:+.4f}]"
        print(f"| `{first}` | {metric} | {mean_a:.4f} | {mean_b:.4f} | {t.delta:+.4f} | {ci} | {p:.3g} |")


if __name__ == "__main__":
    main()
