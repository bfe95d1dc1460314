"""Paired significance of every system in a results.json against another baseline, from the stored per-query values.

python scripts/experiments/significance.py results/scifact-training/results.json --baseline st:models/scifact-gold
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from syntriever_haystack.evaluate.significance import holm_adjust, paired_test


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("results", type=Path)
    parser.add_argument("--baseline", required=True, help="system SPEC in results.json (or a unique substring)")
    parser.add_argument("--metric", action="append", default=None)
    parser.add_argument("--test", default="t-test", choices=["t-test", "permutation", "bootstrap"])
    args = parser.parse_args()
    data = json.loads(args.results.read_text())
    systems = data["systems"]
    matches = [s for s in systems if s == args.baseline] or [s for s in systems if args.baseline in s]
    if len(matches) != 1:
        raise SystemExit(f"--baseline {args.baseline!r} matches {matches or 'no system'}; pick one of {list(systems)}")
    base = matches[0]
    metrics = args.metric or data["metrics"]
    rows = []
    for metric in metrics:
        reference = systems[base]["per_query"][metric]
        tests = []
        for spec, result in systems.items():
            if spec == base:
                continue
            values = result["per_query"][metric]
            queries = sorted(reference)
            system = np.array([values[q] for q in queries])
            baseline = np.array([reference[q] for q in queries])
            tests.append((spec, paired_test(baseline, system, test=args.test)))
        adjusted = holm_adjust([t.p_value for _, t in tests])
        rows += [(spec, metric, t, p) for (spec, t), p in zip(tests, adjusted, strict=True)]
    print(f"Against `{base}` ({args.test}, paired over {len(reference)} queries, Holm-adjusted per metric):\n")
    print("| system | metric | Δ | 95% CI | p | p (Holm) |")
    print("|---|---|---:|---|---:|---:|")
    for spec, metric, t, p in rows:
        ci = f"[{t.ci_low:+.4f}, {t.ci_high:+.4f}]"
        print(f"| `{spec}` | {metric} | {t.delta:+.4f} | {ci} | {t.p_value:.3g} | {p:.3g} |")


if __name__ == "__main__":
    main()
