"""Train the dual-encoder retriever: Syntriever stage 1 (distillation) and stage 2 (alignment).

.. code-block:: python

    from syntriever_haystack.train import RetrieverTrainingConfig, train_retriever

    # stage 1: multi-positive contrastive loss on (q, P(q), N(q)) from `syntriever generate retriever`
    train_retriever(RetrieverTrainingConfig(
        stage=1, base="all-MiniLM-L6-v2", data="runs/gen/scifact-stage1/retriever.jsonl",
        dataset="datasets/scifact", output="models/stage1"))
    # stage 1 + GPL-style margin-MSE on the records' teacher_score (positives x negatives of each query)
    train_retriever(RetrieverTrainingConfig(
        stage=1, data="runs/gen/scifact-stage1/retriever.jsonl", margin_mse_weight=1.0, output="models/stage1-mm"))
    # stage 2: partial Plackett-Luce on LLM preferences, KL towards the frozen stage-1 model
    train_retriever(RetrieverTrainingConfig(
        stage=2, base="models/stage1", data="runs/gen/scifact-prefs/preferences.jsonl",
        loss="plackett_luce", kl_weight=0.1, dataset="datasets/scifact", output="models/stage2"))

The output is a sentence-transformers model folder (with a model card, ``history.json`` and
``training_curve.png``) that ``syntriever export`` turns into ONNX directly.
"""

from __future__ import annotations

import copy
import json
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch import Tensor

from syntriever_haystack.train.data import (
    PositiveMode,
    PreferenceExample,
    RetrieverExample,
    TrainingDataError,
    gold_pair_examples,
    load_preferences,
    load_stage1_examples,
    no_duplicate_batches,
    split_by_query,
)
from syntriever_haystack.train.dev_eval import RetrievalDevSet
from syntriever_haystack.train.distributed import gather_with_grad, init_from_environment, is_main_process, rank_world
from syntriever_haystack.train.grad_cache import cached_backward
from syntriever_haystack.train.loop import LoopSettings, TrainingError, TrainingLoop, bf16_supported, run_fingerprint
from syntriever_haystack.train.losses import (
    BradleyTerryLoss,
    MarginMSELoss,
    MultiPositiveContrastiveLoss,
    PartialPlackettLuceLoss,
    similarity_matrix,
)

__all__ = ["RetrieverTrainingConfig", "train_retriever"]

RetrieverLoss = Literal["multi_positive", "plackett_luce", "bradley_terry"]


@dataclass
class RetrieverTrainingConfig:
    """Everything one retriever training run depends on (saved as ``train_config.json``).

    :param stage: ``1`` (distillation, multi-positive loss) or ``2`` (alignment on preferences).
    :param base: Starting model: a sentence-transformers folder or name (stage 2: the stage-1 output).
    :param output: Output folder (the trained model, checkpoints, history, card).
    :param data: Stage 1: ``retriever.jsonl``; stage 2: ``preferences.jsonl``. ``None`` with ``gold_only``.
    :param gold_only: Stage-1 baseline: gold ``(query, passage)`` pairs of ``dataset``/``split`` only
        (InfoNCE with in-batch negatives = ``MultipleNegativesRankingLoss``).
    :param dataset: BEIR folder: gold pairs (``gold_only``) and the dev split's corpus and judgments.
    :param split: The training split of ``dataset`` (``train``).
    :param add_gold_pairs: Stage 1: also train on the gold pairs of the ``split`` queries that have no generated
        example (synthetic data for a subset, gold for the rest; a superset of the gold-only baseline's data).
    :param loss: ``multi_positive`` (stage 1), ``plackett_luce`` (stage 2, default) or ``bradley_terry``.
    :param kl_weight: Stage 2: weight λ of the KL term towards the frozen starting model (0 = released code).
    :param positive_mode: Stage 1: ``all`` positives (default) or ``gold`` (released code's variant).
    :param margin_mse_weight: Stage 1: weight of the margin-MSE teacher-distillation term (GPL) added to the
        multi-positive loss, over every scored positive x scored negative of each example (the records'
        ``teacher_score``); the student margin is the unscaled cosine difference. ``0`` (default) turns it off.
    :param scale: Similarity scale, 1/τ (20 = τ 0.05).
    :param batch_size: Examples (queries) per contrastive batch.
    :param mini_batch_size: Texts per encoder call with gradient caching (``None``: no caching).
    :param query_max_length: Query tokens.
    :param passage_max_length: Passage tokens.
    :param dev_fraction: Fraction of the training queries held out as the dev split (0 disables dev eval).
    :param dev_corpus_size: Dev corpus: gold passages plus sampled passages up to this size.
    :param gather_across_devices: Multi-GPU: every device's candidates join the in-batch negatives.
    :param settings: Optimisation and checkpoint settings.
    :param overwrite: Start over instead of resuming from checkpoints in ``output``.
    """

    stage: int = 1
    base: str = "all-MiniLM-L6-v2"
    output: str = "models/retriever"
    data: str | None = None
    gold_only: bool = False
    dataset: str | None = None
    split: str = "train"
    add_gold_pairs: bool = False
    loss: RetrieverLoss | None = None
    kl_weight: float = 0.0
    positive_mode: PositiveMode = "all"
    margin_mse_weight: float = 0.0
    scale: float = 20.0
    batch_size: int = 32
    mini_batch_size: int | None = 64
    query_max_length: int = 64
    passage_max_length: int = 256
    dev_fraction: float = 0.1
    dev_corpus_size: int = 2000
    gather_across_devices: bool = False
    settings: LoopSettings = field(default_factory=LoopSettings)
    overwrite: bool = False

    def resolved_loss(self) -> RetrieverLoss:
        if self.loss is not None:
            return self.loss
        return "multi_positive" if self.stage == 1 else "plackett_luce"

    def validate(self) -> None:
        if self.stage not in (1, 2):
            raise TrainingError(f"stage must be 1 or 2, got {self.stage}.")
        loss = self.resolved_loss()
        if self.stage == 1 and loss != "multi_positive":
            raise TrainingError(f"stage 1 trains with the multi_positive loss, not {loss}.")
        if self.stage == 2 and loss == "multi_positive":
            raise TrainingError("stage 2 trains with plackett_luce or bradley_terry.")
        if self.gold_only and self.stage != 1:
            raise TrainingError("--gold-only is the stage-1 baseline; drop it for stage 2.")
        if self.gold_only and not self.dataset:
            raise TrainingError("--gold-only needs --dataset (the BEIR folder with the gold pairs).")
        if not self.gold_only and not self.data:
            what = "retriever.jsonl (syntriever generate retriever)" if self.stage == 1 else "preferences.jsonl"
            raise TrainingError(f"stage {self.stage} needs --data: the {what}.")
        if self.kl_weight < 0:
            raise TrainingError(f"kl_weight must be >= 0, got {self.kl_weight}.")
        if self.kl_weight > 0 and loss != "plackett_luce":
            raise TrainingError("the KL regularisation is part of the plackett_luce loss; set kl_weight 0.")
        if not (math.isfinite(self.margin_mse_weight) and self.margin_mse_weight >= 0):
            raise TrainingError(
                f"margin_mse_weight must be a finite number >= 0, got {self.margin_mse_weight}; "
                "use 0 to turn the margin-MSE term off (--margin-mse-weight 0) or a positive weight such as 1.0."
            )
        if self.margin_mse_weight > 0 and self.stage != 1:
            raise TrainingError(
                "margin_mse_weight is a stage-1 term (teacher scores in retriever.jsonl); "
                "set it to 0 (drop --margin-mse-weight) for stage 2."
            )
        if self.margin_mse_weight > 0 and self.gold_only:
            raise TrainingError(
                "--gold-only pairs carry no teacher scores for margin_mse_weight; drop --margin-mse-weight, or "
                "train on --data records whose positives and negatives have a teacher_score."
            )


class _SentenceEncoder:
    """Embeds texts with a sentence-transformers model at the query or passage length."""

    def __init__(self, model: Any, query_max_length: int, passage_max_length: int) -> None:
        self.model = model
        self.lengths = (query_max_length, passage_max_length)

    def __call__(self, texts: list[str], is_query: bool) -> Tensor:
        self.model[0].max_seq_length = self.lengths[0 if is_query else 1]
        preprocess = getattr(self.model, "preprocess", None) or self.model.tokenize  # tokenize: before ST 5.5
        features = preprocess(texts)
        device = next(self.model.parameters()).device
        features = {k: v.to(device) if isinstance(v, Tensor) else v for k, v in features.items()}
        return self.model(features)["sentence_embedding"]

    def numpy(self, texts: list[str], is_query: bool, batch_size: int = 64) -> np.ndarray:
        out = []
        for start in range(0, len(texts), batch_size):
            out.append(torch.nn.functional.normalize(self(texts[start : start + batch_size], is_query).float(), dim=-1))
        return torch.cat(out).cpu().numpy()


class _RetrieverTask:
    def __init__(
        self, config: RetrieverTrainingConfig, model: Any, examples: Sequence[Any], dev: RetrievalDevSet | None
    ):
        self.config = config
        self.model = model
        self.examples = examples
        self.dev = dev
        self.encoder = _SentenceEncoder(model, config.query_max_length, config.passage_max_length)
        self.reference: _SentenceEncoder | None = None
        loss = config.resolved_loss()
        self.margin_loss: MarginMSELoss | None = None
        if loss == "multi_positive":
            self.loss: torch.nn.Module = MultiPositiveContrastiveLoss(scale=config.scale)
            if config.margin_mse_weight > 0:
                self.margin_loss = MarginMSELoss()  # unscaled cosine margins
        elif loss == "plackett_luce":
            self.loss = PartialPlackettLuceLoss(scale=config.scale, kl_weight=config.kl_weight)
            if config.kl_weight > 0:
                frozen = copy.deepcopy(model).eval()
                for p in frozen.parameters():
                    p.requires_grad_(False)
                self.reference = _SentenceEncoder(frozen, config.query_max_length, config.passage_max_length)
        else:
            self.loss = BradleyTerryLoss(scale=config.scale)
        self._batches: dict[int, list[list[int]]] = {}

    def batches(self, epoch: int) -> list[list[int]]:
        if epoch not in self._batches:
            self._batches = {
                epoch: no_duplicate_batches(
                    self.examples,
                    self.config.batch_size,
                    texts=lambda e: e.texts(),
                    seed=self.config.settings.seed + epoch,
                )
            }
        return self._batches[epoch]

    def train_step(self, batch: list[int]) -> dict[str, float]:
        items = [self.examples[i] for i in batch]
        if isinstance(items[0], RetrieverExample):
            return self._stage1_step(items)
        return self._stage2_step(items)

    def _embed(self, texts: list[str], group: int) -> Tensor:
        return self.encoder(texts, group == 0)

    def _stage1_step(self, items: list[RetrieverExample]) -> dict[str, float]:
        queries = [e.query for e in items]
        candidates: list[str] = []
        index: dict[str, int] = {}
        rows: list[tuple[int, int]] = []
        triples: list[tuple[int, int, int, float]] = []  # (query row, positive, negative, teacher margin)
        for i, example in enumerate(items):
            for text in example.positives:
                if text not in index:
                    index[text] = len(candidates)
                    candidates.append(text)
                rows.append((i, index[text]))
            for text in example.negatives:
                if text not in index:
                    index[text] = len(candidates)
                    candidates.append(text)
            if self.margin_loss is not None:
                for p, n, margin in example.teacher_pairs():
                    triples.append((i, index[example.positives[p]], index[example.negatives[n]], margin))
        rank, world = rank_world()
        gather = self.config.gather_across_devices and world > 1
        loss_fn = self.loss
        margin_fn, weight = self.margin_loss, self.config.margin_mse_weight
        terms: dict[str, float] = {}

        def compute(embeddings: list[Tensor]) -> Tensor:
            q, c = embeddings
            n_local = c.shape[0]
            if gather:
                sizes = [torch.zeros(1, dtype=torch.long) for _ in range(world)]
                torch.distributed.all_gather(sizes, torch.tensor([n_local]))
                max_n = int(max(int(s) for s in sizes))
                padded = torch.nn.functional.pad(c, (0, 0, 0, max_n - n_local))
                everything = gather_with_grad(padded)
                keep = torch.cat([torch.arange(r * max_n, r * max_n + int(sizes[r])) for r in range(world)])
                c = everything[keep]
                offset = int(sum(int(s) for s in sizes[:rank]))
            else:
                offset = 0
            mask = torch.zeros(q.shape[0], c.shape[0], dtype=torch.bool)
            for i, j in rows:
                mask[i, offset + j] = True
            loss: Tensor = loss_fn(q, c, mask)
            if margin_fn is None:
                return loss
            terms["loss_infonce"] = float(loss.detach())
            terms["loss_margin_mse"] = 0.0
            if triples:  # a batch of unscored examples (e.g. --add-gold-pairs) adds nothing
                at = torch.tensor([[t[0], offset + t[1], offset + t[2]] for t in triples], device=q.device)
                margins = torch.tensor([t[3] for t in triples], dtype=q.dtype, device=q.device)
                margin_mse = margin_fn(q[at[:, 0]], c[at[:, 1]], c[at[:, 2]], margins)
                terms["loss_margin_mse"] = float(margin_mse.detach())
                loss = loss + weight * margin_mse
            return loss

        value = cached_backward(
            [queries, candidates], self._embed, compute, mini_batch_size=self.config.mini_batch_size
        )
        return {"loss": value, **terms}

    def _stage2_step(self, items: list[PreferenceExample]) -> dict[str, float]:
        queries = [e.query for e in items]
        preferred = [e.preferred for e in items]
        rejected = [e.rejected for e in items]
        reference_scores = None
        if self.reference is not None:
            with torch.no_grad():
                q = self.reference(queries, True).float()
                c = torch.cat([self.reference(preferred, False), self.reference(rejected, False)]).float()
                reference_scores = similarity_matrix(q, c) * self.config.scale
        loss_fn = self.loss

        def compute(embeddings: list[Tensor]) -> Tensor:
            q, c = embeddings
            n = len(items)
            return loss_fn(q, c[:n], c[n:], reference_scores)

        value = cached_backward(
            [queries, preferred + rejected], self._embed, compute, mini_batch_size=self.config.mini_batch_size
        )
        terms = {"loss": value}
        last = getattr(loss_fn, "last_terms", None)
        if isinstance(last, dict):
            terms.update({f"loss_{k}": float(v) for k, v in last.items()})
        return terms

    def evaluate(self) -> dict[str, float]:
        if self.dev is None:
            return {}
        return self.dev.evaluate(self.encoder.numpy)


def train_retriever(config: RetrieverTrainingConfig) -> dict[str, Any]:
    """Train (or resume) a retriever run and save the model, card and curve into ``config.output``.

    :returns: A summary: output folder, examples, steps, seconds, final and best dev metrics.
    """
    config.validate()
    init_from_environment()
    from sentence_transformers import SentenceTransformer

    from syntriever_haystack.data.beir import load_beir
    from syntriever_haystack.models import resolve_model
    from syntriever_haystack.train.report import write_curve, write_model_card

    if config.settings.bf16 and not bf16_supported():
        config.settings.bf16 = False
    dataset = load_beir(config.dataset, config.split) if config.dataset else None
    examples: list[Any]
    if config.gold_only:
        assert dataset is not None
        examples = gold_pair_examples(dataset)
        source = f"gold pairs of {dataset.name}/{config.split}"
    elif config.stage == 1:
        assert config.data is not None
        examples = load_stage1_examples(config.data, positive_mode=config.positive_mode)
        source = str(config.data)
        if config.margin_mse_weight > 0 and not any(e.teacher_pairs() for e in examples):
            raise TrainingDataError(
                f"{config.data}: margin_mse_weight is {config.margin_mse_weight} but no record has a positive and "
                "a negative with a teacher_score. The records need numeric `teacher_score`s on their positives and "
                "negatives (e.g. a cross-encoder's scores); or set --margin-mse-weight 0."
            )
    else:
        assert config.data is not None
        examples = load_preferences(config.data)
        source = str(config.data)
    if config.add_gold_pairs and dataset is not None and not config.gold_only and config.stage == 1:
        covered = {e.query_id for e in examples}
        extra = [e for e in gold_pair_examples(dataset) if e.query_id not in covered]
        examples = examples + extra
        source += f" + {len(extra)} gold pairs of the {len({e.query_id for e in extra})} other {config.split} queries"

    def query_of(example: Any) -> str:
        return str(example.query_id)

    train, dev_examples = split_by_query(
        examples, query_of, dev_fraction=config.dev_fraction if dataset else 0.0, seed=config.settings.seed
    )
    if not train:
        raise TrainingDataError(f"{source}: nothing left to train on after holding out the dev queries.")
    dev = None
    if dataset is not None and dev_examples:
        dev_ids = sorted({e.query_id for e in dev_examples} & set(dataset.qrels))
        if dev_ids:
            dev = RetrievalDevSet.from_dataset(dataset, dev_ids, corpus_size=config.dev_corpus_size)
    torch.manual_seed(config.settings.seed)  # weights the checkpoint lacks (e.g. an unused pooler) start equal
    model = SentenceTransformer(resolve_model(config.base), device="cuda" if torch.cuda.is_available() else "cpu")
    task = _RetrieverTask(config, model, train, dev)
    output = Path(config.output)
    fingerprint = run_fingerprint(config, train)
    loop = TrainingLoop(task, config.settings, output, fingerprint=fingerprint, overwrite=config.overwrite)
    history = loop.run()
    summary: dict[str, Any] = {
        "output": str(output),
        "stage": config.stage,
        "loss": config.resolved_loss(),
        "gold_only": config.gold_only,
        "max_length": {"query": config.query_max_length, "passage": config.passage_max_length},  # read by export
        "train_examples": len(train),
        "dev_queries": len(dev.queries) if dev else 0,
        "steps": history["steps"][-1]["step"] if history["steps"] else 0,
        "seconds": round(float(history["seconds"]), 1),
        "evals": history["evals"],
        "source": source,
        **(
            {"margin_mse_examples": sum(1 for e in train if isinstance(e, RetrieverExample) and e.teacher_pairs())}
            if config.margin_mse_weight > 0
            else {}
        ),
        "judges": sorted(
            {str(e.judge) for e in train if getattr(e, "judge", None)}
            | {j for e in train for j in getattr(e, "judges", ())}
        ),
    }
    if is_main_process():
        model[0].max_seq_length = config.passage_max_length  # not the query length the encoder switched to last
        model.save(str(output))
        (output / "train_config.json").write_text(json.dumps(asdict(config), indent=1, default=str))
        (output / "train_summary.json").write_text(json.dumps(summary, indent=1))
        write_curve(history, output / "training_curve.png", title=f"retriever stage {config.stage}")
        write_model_card(output, kind="retriever", config=asdict(config), summary=summary, data_file=config.data)
    return summary
