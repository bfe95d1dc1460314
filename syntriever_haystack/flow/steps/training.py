"""The training steps: ``train-retriever`` (stage 1), ``train-reranker`` (LCE) and ``train-stage2`` (preference
alignment). Each resumes from its last checkpoint and drops its checkpoints once done."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from syntriever_haystack.flow.context import FlowContext, FlowError, remove
from syntriever_haystack.flow.step import Step, as_dict, reranker_enabled, stage2_enabled


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


def _stage1_data(ctx: FlowContext) -> Path | None:
    """The stage-1 records: the mined synthetic examples, plus (opt-in labels) the training queries' examples."""
    files = [ctx.layout.mined / "retriever.jsonl"]
    generated = ctx.results.get("generate-retriever")
    if ctx.recipe.dataset.use_training_labels and generated:
        if generated.get("records"):
            files.append(ctx.layout.gen_retriever / "retriever.jsonl")
        else:
            ctx.warn("the stage-1 generation for the training queries wrote no example")
    files = [f for f in files if f.is_file() and f.stat().st_size > 0]
    if len(files) <= 1:
        return files[0] if files else None
    combined = ctx.layout.mined / "stage1-all.jsonl"
    with combined.open("w", encoding="utf-8") as out:
        for file in files:
            out.write(file.read_text(encoding="utf-8"))
    return combined


def run_train_retriever(ctx: FlowContext, resume: bool) -> dict[str, Any]:
    """Stage 1 on the synthetic examples (+ the gold pairs of the training queries, only with
    ``dataset.use_training_labels``); resumes from checkpoints."""
    from syntriever_haystack.models import resolve_model
    from syntriever_haystack.train.retriever import RetrieverTrainingConfig, train_retriever

    train = ctx.recipe.train
    section = train.retriever
    labels = ctx.recipe.dataset.use_training_labels
    data = _stage1_data(ctx)
    gold = labels and section.add_gold_pairs
    if data is None and not gold:
        raise FlowError(
            "stage 1 has no data: the synthetic query generation and mining wrote no example; raise "
            "generate.passages or generate.sentence_queries"
        )
    config = RetrieverTrainingConfig(
        stage=1,
        base=resolve_model(train.base_model),
        output=str(ctx.layout.stage1),
        data=str(data) if data else None,
        gold_only=data is None,
        dataset=str(ctx.train_folder()) if labels else None,
        split=ctx.recipe.dataset.train_split,
        add_gold_pairs=gold and data is not None,
        positive_mode=section.positive_mode,
        batch_size=section.batch_size,
        mini_batch_size=None,
        query_max_length=section.query_max_length,
        passage_max_length=section.passage_max_length,
        margin_mse_weight=section.margin_mse_weight,
        dev_fraction=section.dev_fraction if labels else 0.0,
        dev_corpus_size=800,
        settings=_loop_settings(
            ctx,
            epochs=section.epochs,
            learning_rate=section.learning_rate,
            max_steps=section.max_steps,
            dev=labels and section.dev_fraction > 0,
        ),
    )
    ctx.set_threads()
    result = _finish_training(ctx, ctx.layout.stage1, train_retriever(config))
    if section.interpolation < 1.0:  # WiSE-FT: the served weights keep part of the base model
        from syntriever_haystack.train.interpolate import interpolate_weights

        remove(ctx.layout.stage1_interpolated)
        interpolate_weights(ctx.layout.stage1, config.base, ctx.layout.stage1_interpolated, alpha=section.interpolation)
        result["interpolation"] = section.interpolation
    return result


TRAIN_RETRIEVER = Step(
    "train-retriever",
    "train the retriever, stage 1",
    run_train_retriever,
    config=lambda r: {
        "base_model": r.train.base_model,
        "seed": r.train.seed,
        "retriever": as_dict(r.train.retriever),
        "labels": r.dataset.use_training_labels,
    },
    outputs=lambda lay: [lay.stage1 / "train_summary.json"],
    deps=("data", "mine", "generate-retriever"),
    clean=lambda lay: [lay.stage1, lay.stage1_interpolated],
)


def run_train_reranker(ctx: FlowContext, resume: bool) -> dict[str, Any]:
    """The LCE reranker on the synthetic groups (resumes from checkpoints)."""
    from syntriever_haystack.models import resolve_model
    from syntriever_haystack.train.reranker import RerankerTrainingConfig, train_reranker

    train = ctx.recipe.train
    section = train.reranker
    mined = ctx.results.get("mine") or {}
    labels = ctx.recipe.dataset.use_training_labels
    if not mined.get("reranker_groups") and not (labels and section.add_gold_groups):
        raise FlowError(
            "the mine step wrote no reranker group (no synthetic query had a hard negative); raise "
            "generate.passages or generate.sentence_queries, or set train.reranker.enabled: false"
        )
    gold: dict[str, Any] = {}
    if labels and section.add_gold_groups:
        gold = {"add_gold_groups": True, "dataset": str(ctx.train_folder()), "split": ctx.recipe.dataset.train_split}
    config = RerankerTrainingConfig(
        data=str(ctx.layout.mined / "reranker.jsonl") if mined.get("reranker_groups") else "",
        base=str(ctx.layout.stage1)
        if section.base_model == "stage1"
        else resolve_model(section.base_model or train.base_model),
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


TRAIN_RERANKER = Step(
    "train-reranker",
    "train the LCE reranker",
    run_train_reranker,
    config=lambda r: {
        "base_model": r.train.base_model,
        "seed": r.train.seed,
        "reranker": as_dict(r.train.reranker),
        "labels": r.dataset.use_training_labels,
    },
    outputs=lambda lay: [lay.reranker / "train_summary.json"],
    deps=("data", "mine", "train-retriever"),
    enabled=reranker_enabled,
    clean=lambda lay: [lay.reranker],
)


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
        dataset=str(ctx.train_folder()) if ctx.recipe.dataset.use_training_labels else None,
        split=ctx.recipe.dataset.train_split,
        loss=section.loss,
        kl_weight=section.kl_weight,
        batch_size=section.batch_size,
        mini_batch_size=None,
        query_max_length=ctx.recipe.train.retriever.query_max_length,
        passage_max_length=ctx.recipe.train.retriever.passage_max_length,
        dev_fraction=ctx.recipe.train.retriever.dev_fraction if ctx.recipe.dataset.use_training_labels else 0.0,
        dev_corpus_size=800,
        settings=_loop_settings(
            ctx,
            epochs=section.epochs,
            learning_rate=section.learning_rate,
            max_steps=section.max_steps,
            dev=ctx.recipe.dataset.use_training_labels and ctx.recipe.train.retriever.dev_fraction > 0,
        ),
    )
    ctx.set_threads()
    return _finish_training(ctx, ctx.layout.stage2, train_retriever(config))


TRAIN_STAGE2 = Step(
    "train-stage2",
    "align the retriever with the preferences, stage 2",
    run_train_stage2,
    config=lambda r: {
        "stage2": as_dict(r.train.stage2),
        "seed": r.train.seed,
        "retriever": as_dict(r.train.retriever),
    },
    outputs=lambda lay: [lay.stage2 / "train_summary.json"],
    deps=("data", "train-retriever", "generate-preferences"),
    enabled=stage2_enabled,
    clean=lambda lay: [lay.stage2],
)
