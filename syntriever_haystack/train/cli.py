"""The ``syntriever train`` command.

- ``syntriever train retriever --stage 1 --data runs/gen/retriever.jsonl --dataset D --out models/stage1``
- ``syntriever train retriever --stage 1 --gold-only --dataset D --out models/gold`` (the MNRL baseline)
- ``syntriever train retriever --stage 1 --data retriever.jsonl --margin-mse-weight 1 --out models/stage1-mm``
  (adds GPL-style margin-MSE distillation on the records' ``teacher_score``)
- ``syntriever train retriever --stage 2 --base models/stage1 --data runs/gen/preferences.jsonl
  [--loss plackett_luce|bradley_terry] [--kl-weight 0.1] --out models/stage2``
- ``syntriever train reranker --data runs/gen/reranker.jsonl --out models/reranker``

A killed run resumes from its last checkpoint when the same command is run again.
"""

from __future__ import annotations

import argparse
import json

from syntriever_haystack.cli_types import (
    FRACTION,
    NON_NEGATIVE_FLOAT,
    NON_NEGATIVE_INT,
    POSITIVE_FLOAT,
    POSITIVE_INT,
    ranged,
)
from syntriever_haystack.train.loop import LoopSettings


def _add_loop_options(parser: argparse.ArgumentParser, *, lr: float, epochs: float, batch: int) -> None:
    group = parser.add_argument_group("optimisation")
    group.add_argument("--epochs", type=POSITIVE_FLOAT, default=epochs, help=f"passes over the data (default {epochs})")
    group.add_argument("--lr", type=POSITIVE_FLOAT, default=lr, help=f"peak learning rate (default {lr})")
    group.add_argument(
        "--weight-decay", type=NON_NEGATIVE_FLOAT, default=0.01, help="AdamW weight decay (default 0.01)"
    )
    group.add_argument("--warmup-ratio", type=FRACTION, default=0.1, help="linear warm-up share of the steps")
    group.add_argument("--batch-size", type=POSITIVE_INT, default=batch, help=f"examples per batch (default {batch})")
    group.add_argument("--grad-accumulation", type=POSITIVE_INT, default=1, help="batches per optimizer step")
    group.add_argument("--seed", type=int, default=42)
    group.add_argument("--no-bf16", action="store_true", help="fp32 instead of bf16 autocast (AMX CPUs, GPUs)")
    group.add_argument(
        "--checkpoint-steps", type=POSITIVE_INT, default=50, help="steps between checkpoints (default 50)"
    )
    group.add_argument(
        "--eval-steps", type=POSITIVE_INT, default=None, help="steps between dev evaluations (default: epochs)"
    )
    group.add_argument("--no-eval-at-start", action="store_true", help="skip the step-0 dev evaluation")
    group.add_argument("--max-steps", type=POSITIVE_INT, default=None, help="stop after this many steps (smoke runs)")
    group.add_argument("--dev-fraction", type=FRACTION, default=0.1, help="queries held out for dev (default 0.1)")
    group.add_argument("--overwrite", action="store_true", help="start over instead of resuming")
    group.add_argument("--quiet", action="store_true", help="no progress bars")


def _settings(args: argparse.Namespace) -> LoopSettings:
    return LoopSettings(
        epochs=args.epochs,
        learning_rate=args.lr,
        weight_decay=args.weight_decay,
        warmup_ratio=args.warmup_ratio,
        gradient_accumulation_steps=args.grad_accumulation,
        bf16=not args.no_bf16,
        checkpoint_steps=args.checkpoint_steps,
        eval_steps=args.eval_steps,
        eval_at_start=not args.no_eval_at_start,
        seed=args.seed,
        progress=not args.quiet,
        max_steps=args.max_steps,
    )


def _print_summary(summary: dict[str, object]) -> None:
    evals = summary.get("evals") or []
    print(f"\nsaved {summary['output']}  ({summary['steps']} steps, {summary['seconds']} s)")
    if isinstance(evals, list) and evals:
        names = [k for k in evals[0] if k.startswith("dev_")]
        print("| step | " + " | ".join(names) + " |")
        print("|---|" + "---|" * len(names))
        for e in evals:
            print(f"| {e['step']} | " + " | ".join(f"{e.get(n, float('nan')):.4f}" for n in names) + " |")
    print(json.dumps({k: v for k, v in summary.items() if k != "evals"}))


def _cmd_retriever(args: argparse.Namespace) -> int:
    from syntriever_haystack.train.retriever import RetrieverTrainingConfig, train_retriever

    config = RetrieverTrainingConfig(
        stage=args.stage,
        base=args.base,
        output=str(args.out),
        data=args.data,
        gold_only=args.gold_only,
        dataset=args.dataset,
        split=args.split,
        add_gold_pairs=args.add_gold_pairs,
        loss=args.loss,
        kl_weight=args.kl_weight,
        positive_mode=args.positive_mode,
        margin_mse_weight=args.margin_mse_weight,
        scale=args.scale,
        batch_size=args.batch_size,
        mini_batch_size=args.mini_batch_size or None,
        query_max_length=args.query_max_length,
        passage_max_length=args.passage_max_length,
        dev_fraction=args.dev_fraction,
        dev_corpus_size=args.dev_corpus_size,
        gather_across_devices=args.gather_across_devices,
        settings=_settings(args),
        overwrite=args.overwrite,
    )
    _print_summary(train_retriever(config))
    return 0


def _cmd_reranker(args: argparse.Namespace) -> int:
    from syntriever_haystack.train.reranker import RerankerTrainingConfig, train_reranker

    config = RerankerTrainingConfig(
        data=args.data,
        base=args.base,
        output=str(args.out),
        group_size=args.group_size,
        negatives_depth=args.negatives_depth,
        batch_size=args.batch_size,
        max_length=args.max_length,
        dev_fraction=args.dev_fraction,
        add_gold_groups=args.add_gold_groups,
        dataset=args.dataset,
        split=args.split,
        gold_negatives=args.gold_negatives,
        gold_candidates=args.gold_candidates,
        settings=_settings(args),
        overwrite=args.overwrite,
    )
    _print_summary(train_reranker(config))
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``train`` and its sub-commands to the ``syntriever`` parser."""
    train = sub.add_parser("train", help="train the retriever (stage 1 / 2) or the LCE reranker")
    kinds = train.add_subparsers(dest="train_command", required=True, metavar="MODEL")

    retriever = kinds.add_parser("retriever", help="Syntriever stage 1 (distillation) or stage 2 (alignment)")
    retriever.add_argument("--stage", type=int, choices=[1, 2], default=1)
    retriever.add_argument("--base", default="all-MiniLM-L6-v2", help="sentence-transformers model (stage 2: stage 1)")
    retriever.add_argument("--data", default=None, help="retriever.jsonl (stage 1) or preferences.jsonl (stage 2)")
    retriever.add_argument("--gold-only", action="store_true", help="baseline: gold pairs of --dataset only (MNRL)")
    retriever.add_argument("--dataset", default=None, help="BEIR folder: gold pairs and the dev corpus")
    retriever.add_argument("--split", default="train", help="training split of --dataset (default train)")
    retriever.add_argument(
        "--add-gold-pairs", action="store_true", help="stage 1: also the gold pairs of --split queries without --data"
    )
    retriever.add_argument("--loss", choices=["multi_positive", "plackett_luce", "bradley_terry"], default=None)
    retriever.add_argument(
        "--kl-weight", type=NON_NEGATIVE_FLOAT, default=0.0, help="stage 2: λ of the KL term (default 0)"
    )
    retriever.add_argument("--positive-mode", choices=["all", "gold"], default="all", help="stage 1 positives")
    retriever.add_argument(
        "--margin-mse-weight",
        type=NON_NEGATIVE_FLOAT,
        default=0.0,
        help="stage 1: weight of the margin-MSE distillation term on the records' teacher_score (default 0: off)",
    )
    retriever.add_argument("--scale", type=POSITIVE_FLOAT, default=20.0, help="similarity scale 1/τ (default 20)")
    retriever.add_argument(
        "--mini-batch-size", type=NON_NEGATIVE_INT, default=64, help="gradient caching chunk (0: off)"
    )
    retriever.add_argument("--query-max-length", type=POSITIVE_INT, default=64)
    retriever.add_argument("--passage-max-length", type=POSITIVE_INT, default=256)
    retriever.add_argument("--dev-corpus-size", type=POSITIVE_INT, default=2000, help="dev corpus size (default 2000)")
    retriever.add_argument("--gather-across-devices", action="store_true", help="multi-GPU: share in-batch negatives")
    retriever.add_argument("--out", required=True, help="output folder")
    _add_loop_options(retriever, lr=2e-5, epochs=1.0, batch=32)
    retriever.set_defaults(func=_cmd_retriever)

    reranker = kinds.add_parser("reranker", help="cross-encoder with the LCE loss on synthetic groups")
    reranker.add_argument("--data", default="", help="reranker.jsonl from `syntriever generate reranker`")
    reranker.add_argument(
        "--add-gold-groups", action="store_true", help="also train on gold judgments of --dataset + hard negatives"
    )
    reranker.add_argument("--dataset", default=None, help="BEIR folder for --add-gold-groups")
    reranker.add_argument("--split", default="train", help="its training split (default train)")
    reranker.add_argument("--gold-negatives", default="bm25", help="first-stage SPEC for the gold groups' negatives")
    reranker.add_argument(
        "--gold-candidates", type=POSITIVE_INT, default=30, help="negatives come from this top N (30)"
    )
    reranker.add_argument("--base", default="all-MiniLM-L6-v2", help="encoder or cross-encoder to start from")
    reranker.add_argument("--group-size", type=ranged(int, 2), default=8, help="1 positive + G-1 negatives (default 8)")
    reranker.add_argument(
        "--negatives-depth", type=POSITIVE_INT, default=None, help="sample negatives in the top N only"
    )
    reranker.add_argument("--max-length", type=POSITIVE_INT, default=256)
    reranker.add_argument("--out", required=True, help="output folder")
    _add_loop_options(reranker, lr=3e-5, epochs=1.0, batch=8)
    reranker.set_defaults(func=_cmd_reranker)
