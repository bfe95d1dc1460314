"""The run's report: ``report/report.md`` and ``report/summary.json``, and what the terminal shows at the end."""

from __future__ import annotations

import json
import sys
from typing import TYPE_CHECKING, Any

from syntriever_haystack.flow.context import FlowContext
from syntriever_haystack.flow.evaluation import results_table

if TYPE_CHECKING:
    from syntriever_haystack.flow.summary import RunSummary


def steps_table(summary: RunSummary) -> str:
    """Markdown: step, status, seconds."""
    lines = ["| step | status | seconds | note |", "|---|---|---:|---|"]
    for record in summary.steps:
        seconds = f"{record.seconds:.1f}" if record.status in ("ran", "resumed", "failed") else "—"
        note = record.reason if record.status != "failed" else record.reason.splitlines()[0][:100]
        lines.append(f"| {record.name} | {record.status} | {seconds} | {note} |")
    lines.append(f"| **total** | | **{summary.seconds:.1f}** | |")
    return "\n".join(lines)


def _evaluation_text(evaluation: dict[str, Any]) -> list[str]:
    if evaluation.get("skipped"):
        return [evaluation["skipped"] + "."]
    lines = [
        f"**{evaluation['dataset']} · {evaluation['split']} · {evaluation['queries']} queries · "
        f"{evaluation['documents']:,} documents**",
        "",
    ]
    if evaluation.get("sampled_corpus"):
        lines += [
            f"> **Sampled corpus**: {evaluation['documents']:,} of {evaluation['full_corpus']:,} documents (every "
            "judged-relevant document of the evaluated queries plus random others). Scores are higher than on the "
            "full corpus; compare the systems with each other. Set `evaluate.corpus_sample: null` for the full corpus.",
            "",
        ]
    lines.append(results_table(evaluation["rows"], evaluation["metrics"], evaluation["baseline"], evaluation["alpha"]))
    lines += ["", *_served_text(evaluation)]
    lines += [
        f"Δ and p: paired {evaluation['test']} against `{evaluation['baseline']}` over the queries, Holm-adjusted over "
        f"the compared systems; ▲/▼ significant at p < {evaluation['alpha']}. RR@10 is MRR@10. Bold: best.",
    ]
    other = evaluation["metrics"][1:]
    if other:
        lines += ["", "| system | " + " | ".join(f"Δ {m} (p)" for m in other) + " |", "|---|" + "---:|" * len(other)]
        for row in evaluation["rows"]:
            if row["baseline"]:
                continue
            cells = [f"{row['delta'][m]:+.4f} ({row['p_holm'][m]:.3g})" if m in row["delta"] else "—" for m in other]
            lines.append(f"| `{row['system']}` | " + " | ".join(cells) + " |")
    return lines


def _served_text(evaluation: dict[str, Any]) -> list[str]:
    """What the served row is: the saved pipeline itself, searched query by query."""
    served = evaluation.get("served")
    if served:
        return [
            f"`{served}` is the saved pipeline `{evaluation['served_pipeline']}`, the one that is served: loaded with "
            "`load_pipeline` and run with `run_query` on every evaluation query (rows marked *saved pipeline* "
            "likewise), so its numbers are what the served search answers.",
            "",
        ]
    if "served" in evaluation:  # evaluated, but the saved pipelines could not be (another corpus in their store)
        note = next((n for n in evaluation.get("notes", []) if "not by the saved pipelines" in n), None)
        return [f"> {note}", ""] if note else []
    return []


def real_effects(gate: dict[str, Any], evaluation: dict[str, Any] | None) -> dict[str, dict[str, float]]:
    """Per gate check, the same comparison on the evaluation's judgments (when there are any)."""
    rows = {r["system"]: r for r in (evaluation or {}).get("rows", [])}
    metric = gate.get("metric", "nDCG@10")
    out = {}
    for check in gate.get("checks", []):
        # The check's own systems when the evaluation scored them (the retriever check compares the hybrids; a
        # gate.json of an earlier run compared the dense models), else the dense models (a recipe whose
        # evaluate.systems has no hybrid-trained / hybrid-zero-shot).
        pairs = [(check.get("candidate", ""), check.get("incumbent", "")), ("trained", "zero-shot")]
        if check["component"] == "reranker":
            pairs = [("hybrid+rerank", "hybrid")]
        for candidate, incumbent in pairs:
            if candidate in rows and incumbent in rows and metric in rows[candidate]["means"]:
                a, b = rows[candidate]["means"][metric], rows[incumbent]["means"][metric]
                out[check["component"]] = {
                    "candidate": round(a, 4),
                    "incumbent": round(b, 4),
                    "delta": round(a - b, 4),
                    "systems": f"{candidate} vs {incumbent}",
                }
                break
    return out


def gate_text(gate: dict[str, Any], evaluation: dict[str, Any] | None) -> list[str]:
    """The gate's table, with the real effect next to each check when the evaluation has judgments."""
    from syntriever_haystack.flow.steps.gate import gate_markdown

    lines = gate_markdown(gate).rstrip("\n").split("\n")
    effects = real_effects(gate, evaluation)
    if effects:
        metric = gate.get("metric", "nDCG@10")
        lines += ["", f"The same comparisons on the evaluation's judgments ({metric}; never used by the gate):", ""]
        for component, e in effects.items():
            systems = f" ({e['systems']})" if e.get("systems") else ""
            lines.append(f"- {component}{systems}: {e['candidate']:.4f} vs {e['incumbent']:.4f} ({e['delta']:+.4f})")
    return lines


def _answer_text(answer: dict[str, Any]) -> list[str]:
    if not answer.get("query"):
        return ["No sample query (no evaluation split, no held-out query; set `sample_query`)."]
    lines = [f"**Query**: {answer['query']}", "", f"Answered by `{answer['pipeline']}` — {answer['reason']}.", ""]
    for rank, doc in enumerate(answer["documents"], start=1):
        mark = " ✓ relevant" if doc.get("relevant") else ""
        score = "" if doc.get("score") is None else f" ({doc['score']:.3f})"
        title = f"**{doc['title']}** — " if doc.get("title") else ""
        lines.append(f"{rank}. `{doc['id']}`{score}{mark}: {title}{doc['text']}")
    if answer.get("query_id") is not None:
        if any(doc.get("relevant") for doc in answer["documents"]):
            lines += ["", "✓ = judged relevant for this query in the evaluation split."]
        else:
            lines += ["", "None of these is judged relevant for this query in the evaluation split."]
    return lines


def _files(ctx: FlowContext) -> list[str]:
    layout = ctx.layout
    entries = [
        ("models (ONNX)", [layout.retriever_onnx, layout.reranker_onnx, layout.base_onnx]),
        ("pipelines (YAML)", [layout.indexing_yaml, layout.query_yaml, layout.query_rerank_yaml]),
        (
            "data (JSONL)",
            [
                layout.gen_queries / "queries.jsonl",
                layout.mined / "retriever.jsonl",
                layout.mined / "reranker.jsonl",
                layout.gen_retriever / "retriever.jsonl",
                layout.gen_preferences / "preferences.jsonl",
                layout.document_store,
            ],
        ),
        (
            "report",
            [
                layout.report / "report.md",
                layout.report / "summary.json",
                layout.report / "gate.md",
                layout.report / "results.png",
            ],
        ),
    ]
    lines = []
    for label, paths in entries:
        present = [f"`{ctx.relative(p)}`" for p in paths if p.exists()]
        if present:
            lines.append(f"- {label}: " + ", ".join(present))
    return lines


def report_markdown(ctx: FlowContext, summary: RunSummary) -> str:
    """The whole report as Markdown."""
    recipe, results = ctx.recipe, summary.results
    lines = [f"# syntriever run: {recipe.name}", ""]
    data = results.get("data")
    if data:
        if recipe.dataset.use_training_labels:
            labels = (
                f"**training labels used (opt-in)**: {data['train_queries']:,} training queries and their judgments "
                f"from `{recipe.dataset.train_split}`"
            )
        else:
            labels = "**label-free**: no training query and no judgment was read for training or for any decision"
        split = data.get("eval_split", recipe.dataset.eval_split)
        evaluated = (
            f"{data['eval_queries']:,} evaluation queries from `{split}` (used only to evaluate)"
            if split
            else "no evaluation split"
        )
        lines += [
            f"Dataset `{data['name']}` ({data['documents']:,} documents; {labels}; {evaluated}). Base model "
            f"`{recipe.train.base_model}`, LLM `{recipe.llm.spec}`, store `{recipe.serve.store}`.",
            "",
        ]
    lines += ["## What was built", ""]
    built = []
    if "generate-retriever" in results:
        g = results["generate-retriever"]
        built.append(
            f"- stage-1 synthetic examples: {g['records']} for {g['items']} training queries (judge `{g['judge']}`)"
        )
    if "generate-queries" in results:
        g = results["generate-queries"]
        built.append(f"- LLM queries: {g['queries']} accepted for {g['passages']} sampled passages (`{g['llm']}`)")
    if "mine" in results:
        m = results["mine"]
        built.append(
            f"- mined: {m['train_queries']} training queries ({m['llm_queries'] - m['gate_queries']} LLM + "
            f"{m['sentence_queries']} sentence), {m['negatives']} hard negatives from "
            f"`{ctx.short(m['candidate_retriever'])}`, "
            f"{m['reranker_groups']} reranker groups; {m['gate_queries']} held-out queries for the gate"
        )
    if "generate-preferences" in results:
        g = results["generate-preferences"]
        built.append(f"- stage-2 preferences: {g['records']} over {g['queries']} queries (judge `{g['judge']}`)")
    for name, label in (
        ("train-retriever", "retriever stage 1"),
        ("train-stage2", "retriever stage 2"),
        ("train-reranker", "LCE reranker"),
    ):
        if name in results:
            t = results[name]
            line = f"- {label}: {t.get('train_examples')} examples, {t.get('steps')} steps, {t.get('seconds')} s"
            built.append(line + (f" — {ctx.short(str(t['source']))}" if t.get("source") else ""))
    lines += built or ["- (nothing yet)"]
    lines += [""]
    if "gate" in results:
        lines += ["## Ship gate", "", *gate_text(results["gate"], results.get("evaluate")), ""]
    if "evaluate" in results:
        lines += ["## Results", "", *_evaluation_text(results["evaluate"]), ""]
        if (ctx.layout.report / "results.png").exists():
            lines += ["![results](results.png)", ""]
    if "answer" in results:
        lines += ["## Sample query", "", *_answer_text(results["answer"]), ""]
    lines += ["## Steps", "", steps_table(summary), ""]
    if summary.warnings:
        lines += ["## Warnings", "", *(f"- {w}" for w in summary.warnings), ""]
    lines += ["## Files", "", *_files(ctx), ""]
    lines += ["## Use it", "", *_usage(ctx), ""]
    return "\n".join(lines)


def _usage(ctx: FlowContext) -> list[str]:
    out = ctx.out.as_posix()
    load = (
        f'load_memory_store("{out}/data/document_store.json")  # fills the in-memory index the pipeline reads'
        if ctx.recipe.serve.store == "memory"
        else "# the OpenSearch index is already filled; credentials come from OPENSEARCH_USERNAME / PASSWORD"
    )
    return [
        "```python",
        "from syntriever_haystack.serve.memory_store import load_memory_store",
        "from syntriever_haystack.serve.pipelines import load_pipeline, run_query",
        "",
        load,
        f'pipeline = load_pipeline("{out}/pipelines/query.yaml")'
        + ("  # or query-rerank.yaml" if ctx.layout.query_rerank_yaml.is_file() else ""),
        'for doc in run_query(pipeline, "your question"):',
        "    print(doc.score, doc.content[:80])",
        "```",
        "",
        f"Index more documents with `{out}/pipelines/indexing.yaml`; rerun `syntriever run {out}/recipe.yaml --out "
        f"{out}` after changing a setting: only the affected steps run again.",
    ]


def write_reports(ctx: FlowContext, summary: RunSummary) -> None:
    """Write ``report/report.md`` and ``report/summary.json``."""
    layout = ctx.layout
    layout.report.mkdir(parents=True, exist_ok=True)
    (layout.report / "report.md").write_text(report_markdown(ctx, summary), encoding="utf-8")
    evaluation = summary.results.get("evaluate") or {}
    data = {
        "recipe": ctx.recipe.name,
        "complete": summary.complete,
        "seconds": round(summary.seconds, 1),
        "steps": {r.name: {"status": r.status, "seconds": round(r.seconds, 1)} for r in summary.steps},
        "results": {row["system"]: row["means"] for row in evaluation.get("rows", [])},
        "delta_vs_baseline": {
            row["system"]: {"delta": row["delta"], "p_holm": row["p_holm"]}
            for row in evaluation.get("rows", [])
            if not row["baseline"]
        },
        "baseline": evaluation.get("baseline"),
        "served": evaluation.get("served"),  # the system whose row is the served (saved) query pipeline
        "labels": "training split (opt-in)" if ctx.recipe.dataset.use_training_labels else "none",
        "gate": {
            **(summary.results.get("gate") or {}),
            "real_effect": real_effects(summary.results.get("gate") or {}, evaluation),
        },
        "evaluation": {k: v for k, v in evaluation.items() if k not in ("rows",)},
        "answer": summary.results.get("answer"),
        "warnings": summary.warnings,
    }
    (layout.report / "summary.json").write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def print_summary(ctx: FlowContext, summary: RunSummary) -> None:
    """Steps table, results table and the sample answer on stdout."""
    out = sys.stdout
    print("\n## Steps\n", file=out)
    print(steps_table(summary), file=out)
    if "gate" in summary.results:
        print("\n## Ship gate\n", file=out)
        print("\n".join(gate_text(summary.results["gate"], summary.results.get("evaluate"))), file=out)
    if "evaluate" in summary.results:
        print("\n## Results\n", file=out)
        print("\n".join(_evaluation_text(summary.results["evaluate"])), file=out)
    if "answer" in summary.results:
        print("\n## Sample query\n", file=out)
        print("\n".join(_answer_text(summary.results["answer"])), file=out)
    print(f"\nreport: {ctx.layout.report / 'report.md'}", file=out)
    out.flush()
