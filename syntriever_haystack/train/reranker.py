"""Train the cross-encoder reranker with Localized Contrastive Estimation (LCE) on synthetic groups.

Each training group is ``{d+} ∪ {d1-, ..., d(G-1)-}``: the positive (the passage the synthetic query was written
from, confirmed by the judge) and ``G-1`` hard negatives sampled from the first stage's top results that the
judge labelled not relevant — without replacement, with replacement when fewer exist, a fresh sample every
epoch. The cross-encoder scores ``[CLS] q [SEP] d [SEP]`` with one logit; the loss is the softmax cross-entropy
of the positive within its group (:class:`~syntriever_haystack.train.losses.LCELoss`).

.. code-block:: python

    from syntriever_haystack.train import RerankerTrainingConfig, train_reranker

    train_reranker(RerankerTrainingConfig(data="runs/gen/medquad-reranker/reranker.jsonl",
                                          base="all-MiniLM-L6-v2", output="models/reranker"))

The output is a ``transformers`` sequence-classification folder (``num_labels=1``) that sentence-transformers'
``CrossEncoder`` loads and ``syntriever export`` turns into an ONNX ranker.
"""

from __future__ import annotations

import json
import random
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from syntriever_haystack.train.data import (
    RerankerExample,
    TrainingDataError,
    gold_reranker_examples,
    load_reranker_groups,
    split_by_query,
)
from syntriever_haystack.train.dev_eval import GroupDevSet
from syntriever_haystack.train.distributed import init_from_environment, is_main_process
from syntriever_haystack.train.loop import LoopSettings, TrainingLoop, bf16_supported, run_fingerprint
from syntriever_haystack.train.losses import LCELoss, lce_group_logits

__all__ = ["RerankerTrainingConfig", "sample_group", "train_reranker"]


@dataclass
class RerankerTrainingConfig:
    """Everything one reranker training run depends on (saved as ``train_config.json``).

    :param data: ``reranker.jsonl`` from ``syntriever generate reranker`` (or its folder); may be empty with
        ``add_gold_groups``.
    :param base: Starting model: an encoder (a fresh 1-logit head is added) or a cross-encoder folder.
    :param output: Output folder.
    :param group_size: ``G``: 1 positive + ``G-1`` negatives per group (default 8).
    :param negatives_depth: Sample negatives among the first this-many ranked negatives (``None``: all).
    :param batch_size: Groups per optimizer step (before gradient accumulation).
    :param max_length: Tokens of ``query + passage``.
    :param dev_fraction: Fraction of the queries held out for the dev metric (group MRR).
    :param add_gold_groups: Also train on groups built from the gold judgments of ``dataset``/``split`` with
        hard negatives from ``gold_negatives`` (for corpora that come with training queries, like SciFact).
    :param dataset: BEIR folder for ``add_gold_groups``.
    :param split: Its training split.
    :param gold_negatives: First-stage SPEC whose top ``gold_candidates`` give the gold groups' negatives.
    :param gold_candidates: How many first-stage results to take the negatives from.
    :param settings: Optimisation and checkpoint settings.
    :param overwrite: Start over instead of resuming from checkpoints in ``output``.
    """

    data: str = ""
    base: str = "all-MiniLM-L6-v2"
    output: str = "models/reranker"
    group_size: int = 8
    negatives_depth: int | None = None
    batch_size: int = 8
    max_length: int = 256
    dev_fraction: float = 0.1
    add_gold_groups: bool = False
    dataset: str | None = None
    split: str = "train"
    gold_negatives: str = "bm25"
    gold_candidates: int = 30
    settings: LoopSettings = field(default_factory=lambda: LoopSettings(learning_rate=3e-5, epochs=1.0))
    overwrite: bool = False


def sample_group(example: RerankerExample, group_size: int, rng: random.Random, depth: int | None = None) -> list[str]:
    """``[positive, G-1 negatives]``: without replacement when enough negatives exist, with replacement otherwise."""
    pool = list(example.negatives[:depth] if depth else example.negatives)
    need = group_size - 1
    negatives = rng.sample(pool, need) if len(pool) >= need else [rng.choice(pool) for _ in range(need)]
    return [example.positive, *negatives]


class _RerankerTask:
    def __init__(
        self,
        config: RerankerTrainingConfig,
        model: Any,
        tokenizer: Any,
        train: list[RerankerExample],
        dev: GroupDevSet | None,
    ) -> None:
        self.config = config
        self.model = model
        self.tokenizer = tokenizer
        self.examples = train
        self.dev = dev
        self.loss = LCELoss()
        self._batches: dict[int, list[list[tuple[str, list[str]]]]] = {}

    def _device(self) -> torch.device:
        return next(self.model.parameters()).device

    def batches(self, epoch: int) -> list[Any]:
        if epoch not in self._batches:
            rng = random.Random(self.config.settings.seed + epoch)
            order = list(range(len(self.examples)))
            rng.shuffle(order)
            groups = [
                (
                    self.examples[i].query,
                    sample_group(self.examples[i], self.config.group_size, rng, self.config.negatives_depth),
                )
                for i in order
            ]
            size = self.config.batch_size
            self._batches = {epoch: [groups[s : s + size] for s in range(0, len(groups), size)]}
        return self._batches[epoch]

    def _logits(self, pairs: list[tuple[str, str]]) -> torch.Tensor:
        encoded = self.tokenizer(
            [q for q, _ in pairs],
            [d for _, d in pairs],
            padding=True,
            truncation="only_second",
            max_length=self.config.max_length,
            return_tensors="pt",
        ).to(self._device())
        return self.model(**encoded).logits.squeeze(-1)

    def train_step(self, batch: list[tuple[str, list[str]]]) -> dict[str, float]:
        pairs = [(query, doc) for query, docs in batch for doc in docs]
        logits = lce_group_logits(self._logits(pairs).float(), self.config.group_size)
        loss = self.loss(logits)
        loss.backward()
        return {"loss": float(loss.detach())}

    def score(self, pairs: list[tuple[str, str]], batch_size: int = 64) -> np.ndarray:
        out = [self._logits(pairs[s : s + batch_size]).float().cpu() for s in range(0, len(pairs), batch_size)]
        return torch.cat(out).numpy() if out else np.zeros(0)

    def evaluate(self) -> dict[str, float]:
        return self.dev.evaluate(self.score) if self.dev else {}


def _load_cross_encoder(base: str) -> tuple[Any, Any]:
    from transformers import AutoConfig, AutoModelForSequenceClassification, AutoTokenizer

    from syntriever_haystack.models import resolve_model

    source = resolve_model(base)
    config = AutoConfig.from_pretrained(source)
    architectures = config.architectures or []
    is_cross_encoder = any("SequenceClassification" in a for a in architectures) and config.num_labels == 1
    torch.manual_seed(0)  # a reproducible fresh head
    model = AutoModelForSequenceClassification.from_pretrained(source, num_labels=1)
    if not is_cross_encoder:
        model.config.architectures = [type(model).__name__]
    return model, AutoTokenizer.from_pretrained(source)


def _gold_groups(config: RerankerTrainingConfig) -> list[RerankerExample]:
    from syntriever_haystack.data import load_beir
    from syntriever_haystack.generate.candidates import SpecRetriever

    assert config.dataset is not None
    dataset = load_beir(config.dataset, config.split)
    queries = {q: t for q, t in dataset.queries.items() if q in dataset.qrels}
    retriever = SpecRetriever(config.gold_negatives, dataset.corpus, progress=config.settings.progress)
    return gold_reranker_examples(dataset, retriever.retrieve(queries, config.gold_candidates))


def train_reranker(config: RerankerTrainingConfig) -> dict[str, Any]:
    """Train (or resume) an LCE reranker run; save model, tokenizer, card and curve into ``config.output``."""
    if config.group_size < 2:
        raise TrainingDataError(
            f"group size must be >= 2 (a positive and at least one negative), got {config.group_size}."
        )
    init_from_environment()
    from syntriever_haystack.train.report import write_curve, write_model_card

    if config.settings.bf16 and not bf16_supported():
        config.settings.bf16 = False
    examples = load_reranker_groups(config.data) if config.data else []
    source = str(config.data) if config.data else ""
    if config.add_gold_groups:
        if not config.dataset:
            raise TrainingDataError("--add-gold-groups needs --dataset (the BEIR folder with the judgments).")
        gold = _gold_groups(config)
        examples += gold
        source = " + ".join(
            x
            for x in (
                source,
                f"{len(gold)} gold groups of {config.dataset}/{config.split} ({config.gold_negatives} negatives)",
            )
            if x
        )
    if not examples:
        raise TrainingDataError("no reranker training data: pass --data reranker.jsonl and/or --add-gold-groups.")
    train, dev_examples = split_by_query(
        examples, lambda e: e.query_id, dev_fraction=config.dev_fraction, seed=config.settings.seed
    )
    if not train:
        raise TrainingDataError(f"{config.data}: nothing left to train on after holding out the dev queries.")
    dev = (
        GroupDevSet.from_examples([(e.query, e.positive, e.negatives) for e in dev_examples]) if dev_examples else None
    )
    model, tokenizer = _load_cross_encoder(config.base)
    if torch.cuda.is_available():
        model = model.cuda()
    task = _RerankerTask(config, model, tokenizer, train, dev)
    output = Path(config.output)
    loop = TrainingLoop(
        task, config.settings, output, fingerprint=run_fingerprint(config, train), overwrite=config.overwrite
    )
    history = loop.run()
    summary: dict[str, Any] = {
        "output": str(output),
        "loss": "lce",
        "group_size": config.group_size,
        "max_length": {"pair": config.max_length},  # tokens of query + passage; read by export
        "train_examples": len(train),
        "dev_groups": len(dev.groups) if dev else 0,
        "steps": history["steps"][-1]["step"] if history["steps"] else 0,
        "seconds": round(float(history["seconds"]), 1),
        "evals": history["evals"],
        "source": source,
        "query_types": sorted({e.query_type for e in train if e.query_type}),
    }
    if is_main_process():
        model.save_pretrained(str(output))
        tokenizer.save_pretrained(str(output))
        (output / "train_config.json").write_text(json.dumps(asdict(config), indent=1, default=str))
        (output / "train_summary.json").write_text(json.dumps(summary, indent=1))
        write_curve(history, output / "training_curve.png", title="LCE reranker")
        write_model_card(output, kind="reranker", config=asdict(config), summary=summary, data_file=config.data)
    return summary
