"""Evaluation outputs: a Markdown table with significance marks, JSON (summary and per-query), TREC run
files, and a PNG chart."""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Any

from syntriever_haystack.evaluate.metrics import Run, rank_documents
from syntriever_haystack.evaluate.runner import EvaluationReport, SystemResult

UP, DOWN = "▲", "▼"


def _mark(result: SystemResult, metric: str, alpha: float) -> str:
    test = result.significance.get(metric)
    if test is None or result.adjusted_p.get(metric, 1.0) >= alpha:
        return ""
    return UP if test.delta > 0 else DOWN


def to_markdown(report: EvaluationReport) -> str:
    """Systems × metrics table; ▲/▼ = significantly better/worse than the baseline."""
    lines = [
        f"### {report.dataset} · {report.split} · {len(report.query_ids)} queries",
        "",
        "| system | " + " | ".join(report.metrics) + " | time (s) |",
        "|---|" + "---:|" * (len(report.metrics) + 1),
    ]
    for result in report.systems:
        cells = []
        for metric in report.metrics:
            value = f"{result.means[metric]:.4f}{_mark(result, metric, report.alpha)}"
            cells.append(
                f"**{value}**" if result.means[metric] == max(r.means[metric] for r in report.systems) else value
            )
        cached = " (cached emb.)" if any(t.cached for t in result.timings) else ""
        name = result.spec + (" (baseline)" if result.spec == report.baseline else "")
        lines.append(f"| `{name}` | " + " | ".join(cells) + f" | {result.seconds:.1f}{cached} |")
    lines.append("")
    if report.baseline is not None and len(report.systems) > 1:
        lines.append(
            f"{UP}/{DOWN}: significantly better/worse than `{report.baseline}` ({report.test}, paired over queries, "
            f"Holm-adjusted p < {report.alpha} over {len(report.systems) - 1} comparison(s)). Bold: best."
        )
        lines.append("")
        lines.append("| system | metric | Δ vs baseline | 95% CI | p | p (Holm) |")
        lines.append("|---|---|---:|---|---:|---:|")
        for result in report.systems:
            for metric in report.metrics:
                test = result.significance.get(metric)
                if test is None:
                    continue
                lines.append(
                    f"| `{result.spec}` | {metric} | {test.delta:+.4f} | [{test.ci_low:+.4f}, {test.ci_high:+.4f}] | "
                    f"{test.p_value:.3g} | {result.adjusted_p[metric]:.3g} |"
                )
        lines.append("")
    if report.excluded_queries or report.warnings:
        lines.append("Notes:")
        lines.extend(f"- {w}" for w in report.warnings)
        lines.append("")
    return "\n".join(lines)


def to_json(report: EvaluationReport) -> dict[str, Any]:
    """Full machine-readable results: settings, means, per-query scores, tests, timings."""
    return {
        "dataset": report.dataset,
        "split": report.split,
        "metrics": report.metrics,
        "queries": len(report.query_ids),
        "excluded_queries": report.excluded_queries,
        "baseline": report.baseline,
        "test": report.test,
        "alpha": report.alpha,
        "depth": report.depth,
        "started": report.started,
        "seconds": round(report.seconds, 3),
        "settings": report.settings,
        "warnings": report.warnings,
        "summary": report.summary(),
        "systems": {
            r.spec: {
                **r.scores.to_dict(),
                "timings": [{"stage": t.stage, "seconds": round(t.seconds, 3), "cached": t.cached} for t in r.timings],
                "significance": {m: {**t.to_dict(), "p_holm": r.adjusted_p[m]} for m, t in r.significance.items()},
            }
            for r in report.systems
        },
    }


def slug(spec: str) -> str:
    """A file-name-safe, collision-free version of a system SPEC (readable part + short hash)."""
    readable = re.sub(r"[^A-Za-z0-9._-]+", "_", spec).strip("_")[:80] or "system"
    return f"{readable}-{hashlib.sha1(spec.encode()).hexdigest()[:8]}"


def write_trec_run(run: Run, path: str | Path, *, tag: str = "syntriever") -> Path:
    """Write a run in TREC format: ``qid Q0 docid rank score tag``, best first per query."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tag = re.sub(r"\s+", "_", tag)
    with path.open("w", encoding="utf-8") as handle:
        for query_id in sorted(run):
            # full precision, trec_eval's tie order: the file reproduces the reported numbers
            for rank, (doc_id, score) in enumerate(rank_documents(run[query_id]), start=1):
                handle.write(f"{query_id} Q0 {doc_id} {rank} {score!r} {tag}\n")
    return path


def write_chart(report: EvaluationReport, path: str | Path) -> Path | None:
    """Grouped bar chart of every metric per system (PNG). Returns ``None`` if matplotlib is missing."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    import numpy as np

    path = Path(path)
    n_sys, n_met = len(report.systems), len(report.metrics)
    width = 0.8 / max(n_sys, 1)
    fig, ax = plt.subplots(figsize=(max(6.0, 1.6 * n_met + 0.4 * n_sys), 4.2))
    x = np.arange(n_met)
    for i, result in enumerate(report.systems):
        values = [result.means[m] for m in report.metrics]
        bars = ax.bar(x + (i - (n_sys - 1) / 2) * width, values, width, label=result.spec[:60])
        for bar, metric in zip(bars, report.metrics, strict=True):
            mark = _mark(result, metric, report.alpha)
            ax.annotate(
                f"{bar.get_height():.3f}{mark}",
                (bar.get_x() + bar.get_width() / 2, bar.get_height()),
                ha="center",
                va="bottom",
                fontsize=7,
            )
    ax.set_xticks(x, report.metrics)
    ax.set_ylim(0, 1.08)
    ax.set_title(f"{report.dataset} · {report.split} · {len(report.query_ids)} queries")
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def write_outputs(report: EvaluationReport, directory: str | Path) -> dict[str, Path]:
    """Write ``results.md``, ``results.json``, ``summary.json``, ``runs/<system>.trec`` and ``results.png``."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    written = {
        "markdown": directory / "results.md",
        "json": directory / "results.json",
        "summary": directory / "summary.json",
    }
    written["markdown"].write_text(to_markdown(report), encoding="utf-8")
    written["json"].write_text(json.dumps(to_json(report), indent=2), encoding="utf-8")
    written["summary"].write_text(json.dumps(report.summary(), indent=2), encoding="utf-8")
    for result in report.systems:
        written[f"run:{result.spec}"] = write_trec_run(
            result.run, directory / "runs" / f"{slug(result.spec)}.trec", tag=slug(result.spec)
        )
    chart = write_chart(report, directory / "results.png")
    if chart is not None:
        written["chart"] = chart
    return written
