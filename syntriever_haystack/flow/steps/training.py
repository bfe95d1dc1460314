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


TRAIN_RETRIEVER = Step(
    "train-retriever",
    "train the retriever, stage 1",
    run_train_retriever,
    config=lambda r: {
        "base_model": r.train.base_model,
        "seed": r.train.seed,
        "retriever": as_dict(r.train.retriever),
    },
    outputs=lambda lay: [lay.stage1 / "train_summary.json"],
    deps=("data", "generate-retriever"),
    clean=lambda lay: [lay.stage1],
)


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


TRAIN_RERANKER = Step(
    "train-reranker",
    "train the LCE reranker",
    run_train_reranker,
    config=lambda r: {
        "base_model": r.train.base_model,
        "seed": r.train.seed,
        "reranker": as_dict(r.train.reranker),
    },
    outputs=lambda lay: [lay.reranker / "train_summary.json"],
    deps=("data", "generate-reranker"),
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
