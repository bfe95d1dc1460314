"""The evaluate step's helpers: system aliases → SPECs, the saved pipelines as systems, corpus embeddings reused
from the index step, tables.

Evaluate what is served: the aliases ``hybrid`` and ``hybrid+rerank`` are the saved ``pipelines/query.yaml`` and
``query-rerank.yaml``, loaded as a user loads them (``serve.pipelines.load_pipeline``) and searched query by query
with ``run_query`` (:func:`saved_pipeline_runner`, the ``pipeline:`` runner ``syntriever evaluate`` uses too), as
long as the index step filled the store with the evaluation corpus. The served one of them
(:func:`~syntriever_haystack.flow.serving.choose_query_pipeline`) is always evaluated, and marked.

(The sampled evaluation corpus is :func:`syntriever_haystack.data.beir.sample_corpus`.)
"""

from __future__ import annotations

import dataclasses
import shutil
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from syntriever_haystack.evaluate.systems import EmbeddingCache
from syntriever_haystack.flow.context import FlowContext, FlowError
from syntriever_haystack.specs import DEFAULT_FUSION, HYBRID_CANDIDATES, Fusion, Precision

if TYPE_CHECKING:
    from syntriever_haystack.data.beir import BeirDataset
    from syntriever_haystack.evaluate.runner import EvaluationReport


@dataclass(frozen=True)
class Models:
    """The exported models a run evaluates (``None`` when not built) and their served precision."""

    base: Path
    retriever: Path | None
    reranker: Path | None
    base_precision: Precision
    precision: Precision
    reranker_precision: Precision
    reranker_max_length: int
    rerank_depth: int
    query_pipeline: Path | None = None  # the saved pipelines ``hybrid`` / ``hybrid+rerank`` run (None: the library's)
    query_rerank_pipeline: Path | None = None
    pipeline_top_k: int = 100  # documents asked of a saved pipeline (its order unchanged: the evaluation depth)
    fusion: Fusion = DEFAULT_FUSION  # the hybrids' fusion (serve.fusion), as the saved pipelines fuse
    rerank_first_stage_weight: float = 0.0  # serve.rerank_first_stage_weight, as the saved ranker fuses


def hybrid_options(fusion: str) -> str:
    """The ``hybrid:`` SPEC parameters that fuse as the saved query pipelines do (``&``-prefixed)."""
    return f"&fusion={fusion}&candidates={HYBRID_CANDIDATES}"


def rerank_stage(
    reranker: Path, *, depth: int, precision: Precision, max_length: int, first_stage_weight: float
) -> str:
    """The ``+rerank:`` SPEC stage that reranks as the saved ranker does: its top ``depth``, at its precision and
    length, fused with the first stage by ``first_stage_weight`` (no ``fuse`` for 0)."""
    fuse = f"&fuse={first_stage_weight:.17g}" if first_stage_weight else ""
    return f"+rerank:{reranker}?top_k={depth}&precision={precision}&max_length={max_length}{fuse}"


def system_spec(name: str, models: Models) -> str:
    """The ``syntriever evaluate`` SPEC of a recipe system alias (a raw SPEC is returned unchanged).

    ``hybrid`` / ``hybrid+rerank`` are ``pipeline:`` systems over the saved query pipelines when ``models`` names
    them, else the library's ``hybrid:`` (+ ``rerank:``) systems.

    :raises ValueError: When the alias needs a model the run did not build.
    """
    first, plus, rest = name.partition("+rerank")
    if first not in ("bm25", "zero-shot", "trained", "hybrid", "hybrid-zero-shot", "hybrid-trained") or rest:
        return name  # a raw SPEC
    if first == "bm25":
        spec = "bm25"
    elif first == "zero-shot":
        spec = f"dense:{models.base}?precision={models.base_precision}"
    elif first == "hybrid-zero-shot":
        spec = f"hybrid:{models.base}?precision={models.base_precision}" + hybrid_options(models.fusion)
    else:
        if models.retriever is None:
            raise ValueError(f"system {name!r} needs the trained retriever, which this run has not built")
        spec = f"{'dense' if first == 'trained' else 'hybrid'}:{models.retriever}?precision={models.precision}"
        if first in ("hybrid", "hybrid-trained"):
            spec += hybrid_options(models.fusion)
    if first == "hybrid":
        pipeline = models.query_rerank_pipeline if plus else models.query_pipeline
        if pipeline is not None:
            return f"pipeline:{pipeline}?top_k={models.pipeline_top_k}"
    if plus:
        if models.reranker is None:
            raise ValueError(f"system {name!r} needs the trained reranker, which this run has not built")
        spec += rerank_stage(
            models.reranker,
            depth=models.rerank_depth,
            precision=models.reranker_precision,
            max_length=models.reranker_max_length,
            first_stage_weight=models.rerank_first_stage_weight,
        )
    return spec


class SavedPipelineSearch:
    """A saved query pipeline loaded as a user loads it (``load_pipeline``), searched with ``run_query``: a
    :data:`~syntriever_haystack.evaluate.pipeline.PipelineSearch` giving ``(document id, score)`` best first.

    :param path: The pipeline's YAML file.
    :param top_k: Documents the last component (``ranker``, else ``joiner``) returns instead of its saved
        ``top_k``; both sort everything they rank before cutting, so the first saved-``top_k`` documents are
        exactly the saved pipeline's answer.
    :raises SyntrieverError: The file is missing, ``top_k`` has no component to go to, or the store is empty.
    """

    def __init__(self, path: str | Path, *, top_k: int | None = None) -> None:
        from syntriever_haystack.flow.serving import store_of
        from syntriever_haystack.serve.pipelines import load_pipeline

        self.path = Path(path)
        self.pipeline = load_pipeline(self.path)
        components = dict(self.pipeline.walk())
        if top_k is not None:
            last = components.get("ranker", components.get("joiner"))
            if last is None or not hasattr(last, "top_k"):
                raise FlowError(
                    f"pipeline:{path}?top_k={top_k}: the pipeline has no 'ranker' or 'joiner' component whose top_k "
                    "could be raised; drop ?top_k to evaluate the documents it returns as saved"
                )
            setattr(last, "top_k", top_k)  # noqa: B010 - a Component protocol
        try:
            self.store: Any = store_of(self.pipeline)
        except FlowError:
            self.store = None
        if self.store is not None and self.store.count_documents() == 0:
            raise FlowError(
                f"the document store of pipeline {path} is empty: index the corpus into it first (`syntriever run` "
                "does in its index step; an in-memory store's documents are in the store file it saved)"
            )

    def __call__(self, query: str) -> list[tuple[str, float | None]]:
        from syntriever_haystack.serve.pipelines import run_query

        return [(str(document.id), document.score) for document in run_query(self.pipeline, query)]


def saved_pipeline_runner(path: str, *, top_k: int | None = None) -> SavedPipelineSearch:
    """The :class:`~syntriever_haystack.evaluate.pipeline.PipelineRunner` of ``pipeline:PATH`` systems (the CLI's
    and the flow's): the saved pipeline loaded with ``load_pipeline`` and searched with ``run_query``."""
    return SavedPipelineSearch(path, top_k=top_k)


def onnx_fingerprint(model: Path, precision: str) -> str | None:
    """The model fingerprint ``syntriever evaluate`` keys cached corpus embeddings by (``None`` if unknown)."""
    from syntriever_haystack.evaluate.systems import onnx_model_fingerprint
    from syntriever_haystack.runtime.metadata import ModelMetadata

    onnx_file = model / ModelMetadata.load(model).files.get(precision, "")
    return onnx_model_fingerprint(model, onnx_file) if onnx_file.is_file() else None


@dataclass
class PrimedEmbeddingCache(EmbeddingCache):
    """An :class:`EmbeddingCache` that also knows corpus embeddings computed elsewhere (by the indexing pipeline),
    so the evaluation does not embed the same corpus with the same model a second time.

    :param primed: ``(model fingerprint, precision, corpus fingerprint)`` → embeddings in corpus order.
    """

    primed: dict[tuple[str, str, str], np.ndarray] = field(default_factory=dict)
    primed_hits: int = 0

    def get_or_compute(
        self, key_parts: dict[str, Any], rows: int, compute: Callable[[], np.ndarray]
    ) -> tuple[np.ndarray, bool]:
        key = (str(key_parts.get("model")), str(key_parts.get("precision")), str(key_parts.get("corpus")))
        array = self.primed.get(key)
        plain = key_parts.get("max_length") is None and key_parts.get("backend") is None
        if array is not None and plain and array.shape[0] == rows:
            self.primed_hits += 1
            return array, True
        return super().get_or_compute(key_parts, rows, compute)


def display_name(spec: str, aliases: Mapping[str, str]) -> str:
    """The recipe's name of a system SPEC."""
    return aliases.get(spec, spec)


def result_rows(report: EvaluationReport, aliases: Mapping[str, str]) -> list[dict[str, Any]]:
    """One row per system: means, and Δ / Holm-adjusted p against the baseline per metric."""
    rows = []
    for result in report.systems:
        row: dict[str, Any] = {
            "system": display_name(result.spec, aliases),
            "spec": result.spec,
            "baseline": result.spec == report.baseline,
            "means": {m: round(float(v), 6) for m, v in result.means.items()},
            "delta": {},
            "p_holm": {},
            "seconds": round(result.seconds, 1),
            "cached": any(t.cached for t in result.timings),
        }
        for metric, test in result.significance.items():
            row["delta"][metric] = round(float(test.delta), 6)
            row["p_holm"][metric] = round(float(result.adjusted_p.get(metric, test.p_value)), 6)
        rows.append(row)
    return rows


def results_table(rows: list[dict[str, Any]], metrics: list[str], baseline: str, alpha: float = 0.05) -> str:
    """A Markdown table: systems × metrics, then Δ and p (Holm) of the first metric against the baseline."""
    if not rows:
        return "(no results)"
    first = metrics[0]
    header = ["system", *metrics, f"Δ {first} vs {baseline}", "p (Holm)"]
    lines = ["| " + " | ".join(header) + " |", "|---|" + "---:|" * (len(header) - 1)]
    best = {m: max(r["means"][m] for r in rows) for m in metrics}
    for row in rows:
        cells = [f"`{row['system']}`" + (" (baseline)" if row["baseline"] else "") + _pipeline_mark(row)]
        for metric in metrics:
            value = f"{row['means'][metric]:.4f}"
            cells.append(f"**{value}**" if row["means"][metric] == best[metric] else value)
        if row["baseline"] or first not in row["delta"]:
            cells += ["—", "—"]
        else:
            p = row["p_holm"][first]
            mark = " ▲" if p < alpha and row["delta"][first] > 0 else (" ▼" if p < alpha else "")
            cells += [f"{row['delta'][first]:+.4f}{mark}", f"{p:.3g}"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _pipeline_mark(row: dict[str, Any]) -> str:
    if row.get("served"):
        return " — the saved pipeline (served)"
    return " — saved pipeline" if row.get("pipeline") else ""


def served_candidates(ctx: FlowContext, systems: list[str]) -> list[str]:
    """The saved query pipelines the evaluation scores: the served one (the gate chose it) and, when the run has a
    reranker, the other one too (the real effect of the gate's reranker decision)."""
    if ctx.layout.query_rerank_yaml.is_file():
        return ["hybrid", "hybrid+rerank"]
    return ["hybrid"]


def served_corpus_problem(ctx: FlowContext, dataset: BeirDataset) -> str | None:
    """Why the saved pipelines cannot be scored on ``dataset`` (their store holds another corpus), or ``None``."""
    index = ctx.results.get("index") or {}
    if not index:
        return "the index step has not run, so the saved pipelines' store is not known to hold the evaluation corpus"
    indexed = ctx.eval_dataset() if index.get("corpus") == "evaluation" else ctx.full_eval_dataset()
    if indexed is dataset or indexed.corpus.keys() == dataset.corpus.keys():
        return None
    return (
        f"the saved pipelines search the {index.get('corpus')} corpus ({len(indexed.corpus):,} documents, "
        f"serve.index_corpus: {ctx.recipe.serve.index_corpus}) but the evaluation uses {len(dataset.corpus):,} "
        "(evaluate.corpus_sample); set serve.index_corpus: evaluation (or evaluate.corpus_sample: null) to score "
        "the saved pipelines"
    )


def _flow_pipeline_runner(ctx: FlowContext, dataset: BeirDataset) -> Callable[..., SavedPipelineSearch]:
    """:func:`saved_pipeline_runner`, after filling the shared in-memory index from the saved store file when this
    process has not indexed it, and checking that the store holds the evaluation corpus."""

    def runner(path: str, *, top_k: int | None = None) -> SavedPipelineSearch:
        if ctx.recipe.serve.store == "memory" and ctx.layout.document_store.is_file():
            from syntriever_haystack.flow.serving import document_store
            from syntriever_haystack.serve.memory_store import load_memory_store

            if document_store(ctx.recipe.serve, ctx.served_retriever()[0]).count_documents() == 0:
                load_memory_store(ctx.layout.document_store)  # fills the shared index the pipeline reads
        search = saved_pipeline_runner(path, top_k=top_k)
        stored = None if search.store is None else search.store.count_documents()
        if stored is not None and stored != len(dataset.corpus):
            raise FlowError(
                f"the store of {ctx.relative(Path(path))} holds {stored:,} documents but the evaluation corpus has "
                f"{len(dataset.corpus):,}: rerun the index step (--force-step index)"
            )
        return search

    return runner


def _primed_cache(ctx: FlowContext, dataset: BeirDataset) -> PrimedEmbeddingCache:
    """The evaluation's embedding cache, knowing the corpus embeddings the index step computed with the same
    model, texts and batching: the trained retriever then does not embed the evaluation corpus a second time."""
    from syntriever_haystack.evaluate.systems import default_cache_dir

    cache = PrimedEmbeddingCache(default_cache_dir() / "embeddings" if ctx.recipe.evaluate.cache else None)
    index = ctx.results.get("index") or {}
    embeddings = ctx.layout.index_dir / "embeddings.npy"
    if not index.get("embeddings") or not embeddings.is_file():
        return cache
    if index.get("corpus_fingerprint") != dataset.fingerprint():
        return cache
    precision = str(index.get("precision"))
    model = onnx_fingerprint(ctx.served_retriever()[0], precision)
    if model is None or model != index.get("model_fingerprint"):
        return cache
    array = np.load(embeddings)
    if array.shape[0] == len(dataset.corpus):
        cache.primed[(model, precision, dataset.fingerprint())] = array
    return cache


def embeds_like_evaluation(embedder: Any, model: Path, precision: str) -> bool:
    """Whether an indexing pipeline's ``SyntrieverDocumentEmbedder`` computes exactly the vectors the evaluation
    computes for the same texts: same model and precision, no extra text (prefix, suffix, meta fields), the model's
    normalisation and length, and the same batches (int8 activations are quantised per batch)."""
    params = embedder.to_dict().get("init_parameters", {})
    loaded = Path(getattr(embedder, "model_path", None) or str(params.get("model")))  # the YAML's path is relative
    return (
        loaded.resolve() == model.resolve()
        and params.get("quantization") == precision
        and params.get("file_name") is None
        and params.get("max_length") is None
        and params.get("prefix") is None
        and not params.get("suffix")
        and not params.get("meta_fields_to_embed")
        and params.get("normalize_embeddings") is None
        and int(params.get("batch_size") or 0) == 32
    )


def cached_corpus_embeddings(
    ctx: FlowContext, embedder: Any, dataset: BeirDataset, texts: list[str]
) -> np.ndarray | None:
    """The corpus embeddings the gate or an evaluation already computed for what the index step is about to embed,
    from the on-disk embedding cache (``evaluate.cache``), or ``None`` (then the index step embeds).

    Found only under the evaluation's own cache key for the served model (a hash of its ONNX file in use,
    tokenizer.json and syntriever.json), the served precision, the exported max_length, the document prefix and
    the corpus (fingerprint of ids, titles and texts; ``include_title``), and only when the indexing pipeline's
    embedder applies the evaluation's text rule (:func:`embeds_like_evaluation`) to exactly the evaluation's texts.
    Another model, precision or setting is another key, so it never reuses wrong vectors. With int8 weights ONNX
    Runtime quantises activations per batch, so a vector depends slightly on the texts batched with it: the cached
    vectors come from corpus-wide length-sorted batches (the evaluation's), the pipeline's own from 256-document
    slices (cosine >= 0.99 between the two on SciFact); reusing them, the store holds exactly what the gate and the
    evaluation scored.

    :param embedder: The indexing pipeline's ``SyntrieverDocumentEmbedder``.
    :param dataset: The dataset whose corpus is indexed.
    :param texts: The content of the documents about to be indexed, in corpus order.
    """
    if not ctx.recipe.evaluate.cache:
        return None
    from syntriever_haystack.evaluate.dense import onnx_corpus_key
    from syntriever_haystack.evaluate.systems import default_cache_dir
    from syntriever_haystack.evaluate.texts import SplitTexts
    from syntriever_haystack.runtime.metadata import ModelMetadata

    model, precision = ctx.served_retriever()
    if not embeds_like_evaluation(embedder, model, precision):
        return None
    split = SplitTexts.from_dataset(dataset, include_title=ctx.recipe.dataset.include_title)
    if split.doc_texts != texts:  # the documents are not the evaluation's texts (another text rule)
        return None
    fingerprint = onnx_fingerprint(model, precision)
    if fingerprint is None:
        return None
    metadata = ModelMetadata.load(model)
    key = onnx_corpus_key(fingerprint, metadata, precision, None, split.corpus_key)
    array = EmbeddingCache(default_cache_dir() / "embeddings").lookup(key, len(texts))
    if array is None or array.shape[1] != int(metadata.embedding_dim or array.shape[1]):
        return None
    if not np.isfinite(array).all():
        return None
    return array


def _aliased(report: EvaluationReport, aliases: Mapping[str, str]) -> EvaluationReport:
    """A copy of ``report`` whose systems carry the recipe's names (readable tables, charts, file names)."""
    systems = [dataclasses.replace(s, spec=aliases.get(s.spec, s.spec)) for s in report.systems]
    baseline = aliases.get(report.baseline, report.baseline) if report.baseline else None
    return dataclasses.replace(report, systems=systems, baseline=baseline)


def run_evaluation(ctx: FlowContext) -> dict[str, Any]:
    """Evaluate the recipe's systems — ``hybrid`` / ``hybrid+rerank`` by the saved query pipelines, the served one
    always — ; write ``report/evaluation/`` (Markdown, JSON, TREC runs, PNG) and ``report/results.png``; return the
    rows of the results table and which system is served."""
    from syntriever_haystack.evaluate import evaluate_systems
    from syntriever_haystack.evaluate.report import write_outputs
    from syntriever_haystack.evaluate.runner import default_depth
    from syntriever_haystack.flow.serving import choose_query_pipeline

    recipe, layout = ctx.recipe, ctx.layout
    section = recipe.evaluate
    dataset = ctx.eval_dataset()
    problem = served_corpus_problem(ctx, dataset)
    pipelines = problem is None
    models = Models(
        base=layout.base_onnx.resolve(),
        retriever=layout.retriever_onnx.resolve(),
        reranker=layout.reranker_onnx.resolve() if recipe.train.reranker.enabled else None,
        base_precision=ctx.precision("base-model"),
        precision=ctx.precision("export-retriever"),
        reranker_precision=ctx.precision("export-reranker"),
        reranker_max_length=recipe.train.reranker.max_length,
        rerank_depth=section.rerank_depth,
        query_pipeline=layout.query_yaml.resolve() if pipelines and layout.query_yaml.is_file() else None,
        query_rerank_pipeline=(
            layout.query_rerank_yaml.resolve() if pipelines and layout.query_rerank_yaml.is_file() else None
        ),
        pipeline_top_k=default_depth(section.metrics),
        fusion=recipe.serve.fusion,
        rerank_first_stage_weight=recipe.serve.rerank_first_stage_weight,
    )
    names = list(section.systems)
    notes: list[str] = []
    if pipelines:
        added = [name for name in served_candidates(ctx, names) if name not in names]
        names += added
        if added:
            notes.append(
                f"{', '.join(added)} added to the evaluated systems: the saved query pipelines (the served one is "
                f"marked; serve.reranker: {recipe.serve.reranker})"
            )
    else:
        message = f"hybrid (+rerank) scored by the evaluation's own fusion, not by the saved pipelines: {problem}"
        notes.append(message)
        ctx.warn(message)
    try:
        specs = {name: system_spec(name, models) for name in names}
    except ValueError as exc:
        raise FlowError(f"evaluate.systems: {exc}") from None
    same = "hybrid" in specs and specs.get("hybrid-trained") == specs["hybrid"]  # no saved pipeline to score
    if same and section.baseline != "hybrid-trained":
        del specs["hybrid-trained"]
        notes.append("hybrid-trained is the hybrid row here (the same system, scored once)")
    aliases = {spec: name for name, spec in specs.items()}
    cache = _primed_cache(ctx, dataset)
    report = evaluate_systems(
        dataset,
        list(specs.values()),
        metrics=section.metrics,
        baseline=specs[section.baseline],
        test=section.test,
        include_title=recipe.dataset.include_title,
        cache=cache,
        progress=ctx.progress,
        seed=recipe.seed,
        pipeline_runner=_flow_pipeline_runner(ctx, dataset) if pipelines else None,
    )
    rows = result_rows(report, aliases)
    served: str | None = None
    served_path: Path | None = None
    if pipelines:
        served_path, _ = choose_query_pipeline(ctx)  # decided by the gate, never by these judgments
        served = "hybrid+rerank" if served_path == layout.query_rerank_yaml else "hybrid"
        paths = {"hybrid": layout.query_yaml, "hybrid+rerank": layout.query_rerank_yaml}
        for row in rows:
            if row["spec"].startswith("pipeline:") and row["system"] in paths:
                row["pipeline"] = ctx.relative(paths[row["system"]])
            row["served"] = row["system"] == served
        if served not in {row["system"] for row in rows}:  # pragma: no cover - served_candidates prevents it
            raise FlowError(f"the served system {served!r} was not evaluated")
    named = _aliased(report, aliases)
    written = write_outputs(named, layout.evaluation)
    chart = None
    if "chart" in written:  # drawn once by write_outputs; the report folder gets a copy
        layout.report.mkdir(parents=True, exist_ok=True)
        chart = Path(shutil.copyfile(written["chart"], layout.report / "results.png"))
    full = ctx.full_eval_dataset()
    return {
        "dataset": report.dataset,
        "split": report.split,
        "queries": len(report.query_ids),
        "documents": len(dataset.corpus),
        "full_corpus": len(full.corpus),
        "sampled_corpus": len(dataset.corpus) < len(full.corpus),
        "metrics": report.metrics,
        "baseline": section.baseline,
        "test": report.test,
        "alpha": report.alpha,
        "rows": rows,
        "served": served,
        "served_pipeline": ctx.relative(served_path) if served_path else None,
        "notes": [*notes, *report.warnings],
        "seconds": round(report.seconds, 1),
        "reused_index_embeddings": cache.primed_hits > 0,
        "chart": ctx.relative(chart) if chart else None,
        "results": ctx.relative(layout.evaluation / "results.json"),
    }
