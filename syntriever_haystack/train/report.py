"""What a training run leaves next to the model: the training curve (PNG) and the model card (README.md)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

__all__ = ["write_curve", "write_model_card"]


def write_curve(history: dict[str, Any], path: str | Path, *, title: str = "training") -> Path | None:
    """Loss per step (and its moving average) with the dev metrics on a second axis. ``None`` without matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    steps = [s["step"] for s in history.get("steps", [])]
    losses = [s.get("loss", float("nan")) for s in history.get("steps", [])]
    fig, ax = plt.subplots(figsize=(7, 4))
    if steps:
        ax.plot(steps, losses, color="#9ab", linewidth=0.8, label="loss")
        window = max(1, len(losses) // 20)
        if window > 1:
            smooth = [
                sum(losses[max(0, i - window + 1) : i + 1]) / len(losses[max(0, i - window + 1) : i + 1])
                for i in range(len(losses))
            ]
            ax.plot(steps, smooth, color="#246", linewidth=1.6, label=f"loss (mean of {window})")
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("training loss")
    evals = history.get("evals", [])
    if evals:
        ax2 = ax.twinx()
        names = [k for k in evals[0] if k.startswith("dev_")]
        for name, color in zip(names, ["#c33", "#393", "#c80", "#639"], strict=False):
            ax2.plot(
                [e["step"] for e in evals], [e.get(name, float("nan")) for e in evals], "o-", color=color, label=name
            )
        ax2.set_ylabel("dev metric")
        ax2.legend(loc="lower right", fontsize=8)
    ax.legend(loc="upper right", fontsize=8)
    ax.set_title(title)
    fig.tight_layout()
    target = Path(path)
    fig.savefig(target, dpi=110)
    plt.close(fig)
    return target


def _provenance(data_file: str | None) -> dict[str, Any]:
    """The generation run behind a training file: its summary.json (models, prompts, judges, counts)."""
    if not data_file:
        return {}
    folder = Path(data_file)
    folder = folder if folder.is_dir() else folder.parent
    summary = folder / "summary.json"
    if not summary.is_file():
        return {}
    try:
        data = json.loads(summary.read_text())
    except json.JSONDecodeError:
        return {}
    keep = {k: data[k] for k in ("task", "model", "models", "prompts", "judge", "judges", "settings") if k in data}
    if "filtered" in data:
        keep["filtered"] = data["filtered"]
    return keep


def write_model_card(
    output: str | Path,
    *,
    kind: str,
    config: dict[str, Any],
    summary: dict[str, Any],
    data_file: str | None,
) -> Path:
    """Write ``README.md``: what the model is, the data and judge it learnt from, the losses, the
    hyper-parameters and the dev evaluation. Overwrites the base model's card."""
    out = Path(output)
    provenance = _provenance(data_file)
    settings = config.get("settings", {})
    evals = summary.get("evals", [])
    lines = [
        "---",
        "library_name: sentence-transformers" if kind == "retriever" else "library_name: transformers",
        "tags:",
        "- syntriever-haystack",
        f"- {'sentence-similarity' if kind == 'retriever' else 'text-ranking'}",
        f"base_model: {config.get('base')}",
        "---",
        "",
        f"# {out.name}",
        "",
    ]
    if kind == "retriever":
        stage = config.get("stage")
        what = (
            "gold pairs only (InfoNCE / MultipleNegativesRankingLoss baseline)"
            if config.get("gold_only")
            else (
                "Syntriever stage 1 (distillation: multi-positive contrastive loss)"
                if stage == 1
                else f"Syntriever stage 2 (alignment: {summary.get('loss')}, KL weight λ = {config.get('kl_weight')})"
            )
        )
        lines += [f"A dense dual-encoder retriever trained with syntriever-haystack: {what}.", ""]
    else:
        lines += ["A cross-encoder reranker (one relevance logit) trained with the LCE loss on synthetic data.", ""]
    lines += [
        "## Data",
        "",
        f"- training file: `{summary.get('source')}` ({summary.get('train_examples')} examples)",
        f"- dev queries held out: {summary.get('dev_queries', summary.get('dev_groups', 0))}",
    ]
    if summary.get("judges"):
        lines.append(f"- judges behind the labels: {', '.join(f'`{j}`' for j in summary['judges'])}")
    if provenance:
        lines += ["- generation run:", "", "```json", json.dumps(provenance, indent=1)[:4000], "```"]
    lines += ["", "## Training", "", "| setting | value |", "|---|---|"]
    for key, value in config.items():
        if key != "settings":
            lines.append(f"| {key} | `{value}` |")
    for key, value in settings.items():
        if key not in {"progress", "extra"}:
            lines.append(f"| {key} | `{value}` |")
    lines += ["", f"Steps: {summary.get('steps')}; wall time: {summary.get('seconds')} s.", ""]
    if evals:
        names = [k for k in evals[0] if k.startswith("dev_")]
        lines += ["## Dev evaluation", "", "| step | " + " | ".join(names) + " |", "|---|" + "---|" * len(names)]
        for e in evals:
            lines.append(f"| {e['step']} | " + " | ".join(f"{e.get(n, float('nan')):.4f}" for n in names) + " |")
        lines.append("")
    lines += [
        "![training curve](training_curve.png)",
        "",
        "## Use",
        "",
        "```bash",
        f"syntriever export {out} {out}-onnx",
        "```",
        "",
    ]
    path = out / "README.md"
    path.write_text("\n".join(lines), encoding="utf-8")
    return path
