"""The recipe: every choice of a ``syntriever run`` in one typed, validated YAML document.

Every field has a default, so an empty file is a valid recipe (the quickstart's). Loading is strict: an unknown
key, a value of the wrong type or outside its allowed values is an error that names the key (``train.reranker.
epochs``) and the fix (the allowed keys or values); every problem of a recipe is reported at once, one
``- key: problem; fix`` line each. The resolved recipe — defaults filled in — is saved as ``recipe.yaml`` in the
output folder, and loading that file gives the same recipe back.

.. code-block:: python

    from syntriever_haystack.flow.recipe import load_recipe, dump_recipe

    recipe = load_recipe("recipes/quickstart.yaml", overrides={"dataset": {"path": "../shared/datasets/scifact"}})
    print(dump_recipe(recipe))
"""

from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from syntriever_haystack.flow.recipe_checks import SYSTEM_ALIASES, RecipeError
from syntriever_haystack.flow.recipe_checks import Problems as _Problems
from syntriever_haystack.flow.recipe_checks import validate as _validate
from syntriever_haystack.specs import DEFAULT_FUSION, Fusion

__all__ = [
    "SYSTEM_ALIASES",
    "DatasetSection",
    "EvaluateSection",
    "ExportSection",
    "GateSection",
    "GenerateSection",
    "LLMSection",
    "PreferencesSection",
    "Recipe",
    "RecipeError",
    "RerankerTrainSection",
    "RetrieverTrainSection",
    "ServeSection",
    "Stage2TrainSection",
    "TrainSection",
    "dump_recipe",
    "load_recipe",
    "recipe_from_dict",
    "recipe_to_dict",
]


# --------------------------------------------------------------------------------------------------- sections
@dataclass
class DatasetSection:
    """The corpus and its queries.

    :param path: A folder of documents (``.txt``/``.md``/``.html``/``.pdf``/``.docx``, split into passages as
        ``syntriever data from-folder`` does), a BEIR folder (``corpus.jsonl``; queries and judgments optional), or a
        BEIR dataset name, downloaded into the cache on first use (``scifact``, ``nfcorpus``, ...).
    :param use_training_labels: Opt-in: also use the queries and judgments of ``train_split`` (the Syntriever
        paper's setting: synthetic ``p+``/``p-``/``q_cot`` for the training queries, plus their gold pairs with
        ``train.retriever.add_gold_pairs``). Off by default: nothing reads a training query or judgment, and the
        report says which it was.
    :param train_split: The training split, read only with ``use_training_labels``.
    :param eval_split: Split the evaluation scores (judgments are used for nothing else). When the dataset has no
        such split (a folder of documents, a corpus without judgments), there is no evaluation and the report shows
        the label-free checks only; ``null`` skips the evaluation.
    :param max_train_queries: With ``use_training_labels``: at most this many training queries (a seeded sample).
    :param include_title: Passage text is ``title + " " + text`` (the BEIR convention).
    """

    path: str = "scifact"
    use_training_labels: bool = False
    train_split: str = "train"
    eval_split: str | None = "test"
    max_train_queries: int | None = None
    include_title: bool = True


@dataclass
class LLMSection:
    """The LLM that writes the synthetic data.

    :param spec: ``local`` (the embedded offline Gemma 3 270M; llama.cpp when installed, else transformers),
        ``local:MODEL?backend=...``, or ``openai:MODEL`` for OpenAI and any OpenAI-compatible server.
    :param api_base_url: URL of an OpenAI-compatible server (vLLM, Ollama, llama.cpp server, TGI).
    :param api_key_env: Environment variable holding the API key (read through a Haystack Secret, never stored).
    :param concurrency: Requests in flight.
    :param requests_per_minute: Request budget per minute (``null``: unlimited).
    :param max_tokens: Output tokens per answer.
    :param timeout: Seconds to wait for one answer.
    :param parse_retries: New requests after an unparseable answer.
    """

    spec: str = "local"
    api_base_url: str | None = None
    api_key_env: str = "OPENAI_API_KEY"
    concurrency: int = 4
    requests_per_minute: float | None = None
    max_tokens: int = 160
    timeout: float = 120.0
    parse_retries: int = 2


@dataclass
class PreferencesSection:
    """Stage-2 preference data (used when ``train.stage2.enabled``).

    :param queries: Training queries whose candidates are compared.
    :param top_k: Candidates per query (all ``K(K-1)/2`` pairs are judged).
    :param retriever: Candidates from the stage-1 retriever (``stage1``, the paper's choice) or ``bm25``.
    :param judge: ``reranker`` (the trained LCE reranker), ``llm``, ``embedder`` (the base model) or a judge SPEC.
    :param margin: Score judges: a score gap at or below this is a tie (no preference).
    """

    queries: int = 100
    top_k: int = 5
    retriever: Literal["stage1", "bm25"] = "stage1"
    judge: str = "reranker"
    margin: float = 0.02


@dataclass
class GenerateSection:
    """Synthetic training data, label-free: queries for sampled corpus passages, mined hard negatives.

    :param passages: Corpus passages that get LLM-written queries (types cycle: claim, question, keywords).
    :param queries_per_passage: LLM queries per passage.
    :param sentence_queries: Passages that also give an extractive pseudo-query (one of their sentences, the
        Inverse Cloze Task): free, no LLM; 0 turns them off.
    :param held_out: Fraction of the passages (a seeded hash of their id) whose queries are never trained on: the
        ship gate ranks them over the full corpus.
    :param candidates: First-stage candidates retrieved per query: the hard negatives are drawn from them.
    :param candidate_retriever: The first stage of those candidates (a ``syntriever evaluate`` SPEC or ``zero-shot``).
    :param round_trip: Round-trip consistency: keep an LLM training query only if the candidate retriever ranks its
        source passage in its top this-many (``null``: keep all).
    :param negatives: Hard negatives per stage-1 example.
    :param skip_top: Never take the first this-many candidates as negatives (false-negative guard).
    :param guard: Also skip candidates whose first-stage score is within this fraction of the source passage's.
    :param min_words: Passages shorter than this are not sampled.
    :param judge: With ``dataset.use_training_labels``: verifies the synthetic ``p+``/``p-`` of training queries
        (``embedder``: cosine of the base model; ``llm``; or a judge SPEC). Also the stage-2 preferences' default.
    :param threshold: Threshold of the ``embedder`` judge.
    :param retriever_queries: With ``dataset.use_training_labels``: training queries that get synthetic ``p+``,
        ``p-``, ``q_cot``.
    :param use_cot: Also generate ``q_cot`` (a positive) for those.
    :param preferences: Stage-2 preference data.
    """

    passages: int = 150
    queries_per_passage: int = 1
    sentence_queries: int = 600
    held_out: float = 0.3
    candidates: int = 30
    candidate_retriever: str = "bm25"
    round_trip: int | None = None
    negatives: int = 1
    skip_top: int = 0
    guard: float = 0.0
    min_words: int = 20
    judge: str = "embedder"
    threshold: float = 0.5
    retriever_queries: int = 16
    use_cot: bool = True
    preferences: PreferencesSection = field(default_factory=PreferencesSection)


@dataclass
class RetrieverTrainSection:
    """Stage 1: multi-positive contrastive distillation on synthetic examples (+ gold pairs).

    :param add_gold_pairs: With ``dataset.use_training_labels``: also train on the gold pairs of the training
        queries without a synthetic example.
    :param positive_mode: ``all`` (gold, verified ``p+``, ``q_cot``) or ``gold`` (the released code's variant).
    :param epochs: Passes over the data.
    :param learning_rate: Peak learning rate.
    :param batch_size: Queries per contrastive batch.
    :param query_max_length: Query tokens.
    :param passage_max_length: Passage tokens in training (the exported model keeps the base model's maximum, so
        a shorter length only makes training faster).
    :param dev_fraction: With ``dataset.use_training_labels``: training queries held out for a dev evaluation
        during training (0: none, faster).
    :param max_steps: Stop after this many steps (``null``: the full schedule).
    :param margin_mse_weight: Weight of a margin-MSE distillation term (GPL) next to the contrastive loss: the
        student's score margins between the positive and each hard negative follow a label-free teacher's (the base
        model + BM25 ensemble; 0: off).
    :param teacher_bm25_weight: The teacher's BM25 share: ``cosine + w · BM25 / max BM25 of the query``.
    :param interpolation: The served weights are ``interpolation · trained + (1 − interpolation) · base`` (WiSE-FT
        weight interpolation; 1: the trained weights as they are).
    """

    add_gold_pairs: bool = True
    positive_mode: Literal["all", "gold"] = "all"
    epochs: float = 1.0
    learning_rate: float = 2e-5
    batch_size: int = 32
    query_max_length: int = 64
    passage_max_length: int = 128
    dev_fraction: float = 0.0
    max_steps: int | None = None
    margin_mse_weight: float = 30.0
    teacher_bm25_weight: float = 0.5
    interpolation: float = 0.5


@dataclass
class Stage2TrainSection:
    """Stage 2: preference alignment of the stage-1 retriever.

    :param enabled: Run stage 2 (needs ``generate.preferences``).
    :param loss: ``plackett_luce`` (partial Plackett-Luce) or ``bradley_terry``.
    :param kl_weight: Weight of the KL term towards the frozen stage-1 model (``plackett_luce`` only).
    """

    enabled: bool = False
    loss: Literal["plackett_luce", "bradley_terry"] = "plackett_luce"
    kl_weight: float = 0.1
    epochs: float = 1.0
    learning_rate: float = 2e-5
    batch_size: int = 32
    max_steps: int | None = None


@dataclass
class RerankerTrainSection:
    """The LCE cross-encoder reranker, trained on the synthetic groups.

    :param enabled: Generate reranker data, train and export the reranker (off in the small quickstart: a useful
        LCE reranker needs far more synthetic groups and steps than ~15 minutes on 2 CPU cores allow).
    :param base_model: Starting encoder, with a fresh 1-logit head: ``stage1`` (the trained stage-1 retriever's
        encoder, which already separates the corpus's passages), ``null`` (``train.base_model``) or a folder.
    :param add_gold_groups: With ``dataset.use_training_labels``: also train on groups built from the training
        split's judgments (gold positive + BM25
        hard negatives): one group per judged pair, so far more steps than the synthetic groups alone.
    :param group_size: 1 positive + ``group_size - 1`` hard negatives per group.
    :param max_length: Tokens of query + passage (also the exported maximum).

    The defaults are sized for 2 CPU cores: 1 epoch of groups of 4 at 128 tokens trains on ~1,000 groups in 6–8
    minutes (343 s on MedQuAD, 458 s on SciFact); the earlier 3 epochs of groups of 8 at 192 tokens cost ~8× that.
    """

    enabled: bool = False
    base_model: str | None = "stage1"
    add_gold_groups: bool = False
    epochs: float = 1.0
    learning_rate: float = 5e-5
    batch_size: int = 8
    group_size: int = 4
    max_length: int = 128
    max_steps: int | None = None


@dataclass
class TrainSection:
    """Training.

    :param base_model: The retriever's starting point: a sentence-transformers folder or name
        (``all-MiniLM-L6-v2`` resolves to the offline package).
    :param threads: torch CPU threads (``null``: torch's default, one per core).
    :param seed: Training seed.
    """

    base_model: str = "all-MiniLM-L6-v2"
    threads: int | None = None
    seed: int = 42
    retriever: RetrieverTrainSection = field(default_factory=RetrieverTrainSection)
    stage2: Stage2TrainSection = field(default_factory=Stage2TrainSection)
    reranker: RerankerTrainSection = field(default_factory=RerankerTrainSection)


@dataclass
class ExportSection:
    """ONNX export. Every model is exported fp32 (fused) and int8, each verified against torch.

    :param precision: The variant the pipelines serve and the evaluation scores.
    """

    precision: Literal["int8", "fp32"] = "int8"


@dataclass
class ServeSection:
    """The served search: document store and pipelines.

    :param store: ``memory`` (Haystack ``InMemoryDocumentStore``, saved to ``data/document_store.json``) or
        ``opensearch``.
    :param url: OpenSearch URL (credentials from ``OPENSEARCH_USERNAME`` / ``OPENSEARCH_PASSWORD``).
    :param index: Index name (OpenSearch) / shared in-memory index name.
    :param index_corpus: Index the ``evaluation`` corpus (the sampled one when ``evaluate.corpus_sample`` is
        set: fast, and its embeddings are reused by the evaluation) or the ``full`` corpus.
    :param top_k: Documents the query pipeline returns.
    :param reranker: Serve the trained reranker (``query-rerank.yaml``): ``auto`` (when the ship gate says it
        improves the served first stage on held-out synthetic queries), ``always`` or ``never``.
    :param fusion: How the hybrid fuses BM25 and dense: ``dbsf`` (distribution-based score fusion, the default;
        +0.023 nDCG@10 over RRF on SciFact, +0.006 on MedQuAD LiveQA) or ``rrf`` (reciprocal rank fusion). The
        evaluation's hybrid systems and the ship gate fuse the same way.
    :param rerank_first_stage_weight: The served reranker's score is its cross-encoder logits fused with the first
        stage's scores over the reranked candidates (distribution-based fusion), the first stage weighted this much
        to the cross-encoder's 1; ``0``: the cross-encoder alone. A reranker trained on a thousand synthetic groups
        on 2 cores ranks worse than the hybrid on its own (−0.03 to −0.16 nDCG@10) but refines it when fused: with
        2, +0.029 on MedQuAD LiveQA (docs/training.md). The gate and the evaluation score it the same way.
    """

    store: Literal["memory", "opensearch"] = "memory"
    url: str | None = None
    index: str = "syntriever"
    index_corpus: Literal["evaluation", "full"] = "evaluation"
    top_k: int = 5
    reranker: Literal["auto", "always", "never"] = "auto"
    fusion: Fusion = DEFAULT_FUSION
    rerank_first_stage_weight: float = 2.0


@dataclass
class EvaluateSection:
    """The comparison.

    :param systems: Aliases (``bm25``, ``zero-shot``, ``trained``, ``hybrid-zero-shot`` — BM25 + the base model —,
        ``hybrid-trained`` — BM25 + the trained retriever, served or not —,
        ``hybrid`` — the saved first-stage pipeline —, ``hybrid+rerank`` — the saved reranked pipeline, added when
        the run trains a reranker —, ``trained+rerank``, ``zero-shot+rerank``,
        ``bm25+rerank``) or raw ``syntriever evaluate`` SPECs.
    :param baseline: The system every other one is tested against (paired test, Holm-adjusted).
    :param metrics: ``ir_measures`` names (``RR@10`` is MRR@10).
    :param rerank_depth: Candidates of the first stage the reranker rescores.
    :param corpus_sample: Evaluate on a *sampled* corpus of this many documents: every judged-relevant document
        of the evaluated queries plus random others (seeded). Absolute scores are higher than on the full
        corpus; the comparison between systems is what it shows. ``null``: the full corpus.
    :param max_queries: Evaluate a seeded sample of this many queries (``null``: all).
    :param test: Paired significance test.
    :param cache: Reuse corpus embeddings across runs (``$SYNTRIEVER_CACHE`` or ``~/.cache/syntriever``).
    """

    systems: list[str] = field(
        default_factory=lambda: ["bm25", "zero-shot", "trained", "hybrid-zero-shot", "hybrid-trained", "hybrid"]
    )
    baseline: str = "zero-shot"
    metrics: list[str] = field(default_factory=lambda: ["nDCG@10", "R@100", "RR@10"])
    rerank_depth: int = 10
    corpus_sample: int | None = None
    max_queries: int | None = None
    test: Literal["t-test", "permutation", "bootstrap"] = "t-test"
    cache: bool = True


@dataclass
class GateSection:
    """The ship gate: a trained component replaces what it improves on only when a label-free check says so.

    The check ranks the held-out synthetic queries (``generate.held_out``; never trained on) over the full corpus,
    each with its source passage as the one relevant document, with what would be served: the hybrid (BM25 + dense,
    fused as ``serve.fusion``) with the trained retriever against the hybrid with the base model (the dense models
    alone are reported, not decided on), then the reranker on the served first stage against that first stage alone.

    :param enabled: Off: every trained component is served (the report says so).
    :param metric: The metric compared.
    :param min_delta: A component ships when it beats what it replaces by more than this ...
    :param max_p: ... and the paired test over the held-out queries (``evaluate.test``) gives p at most this (1: no
        test). With a few dozen held-out queries only a clear gain ships: the gate is built to never ship worse.
        0.05 since a SciFact run's fused reranker passed at 0.1 (+0.039 on 32 held-out queries, p 0.09) and lowered
        the test judgments' nDCG@10 by 0.010 (docs/training.md).
    """

    enabled: bool = True
    metric: str = "nDCG@10"
    min_delta: float = 0.0
    max_p: float = 0.05


@dataclass
class Recipe:
    """A whole run: corpus → synthetic data → retriever (+ reranker) → ONNX → pipelines → index → evaluation.

    :param name: Name of the run (default output folder ``runs/<name>``).
    :param seed: Seed of every sample (training queries, passages, evaluation corpus).
    :param sample_query: Query answered by the saved query pipeline at the end (``null``: an evaluation query
        drawn with ``seed``, whose judged-relevant documents the answer marks).
    """

    name: str = "quickstart"
    seed: int = 13
    dataset: DatasetSection = field(default_factory=DatasetSection)
    llm: LLMSection = field(default_factory=LLMSection)
    generate: GenerateSection = field(default_factory=GenerateSection)
    train: TrainSection = field(default_factory=TrainSection)
    export: ExportSection = field(default_factory=ExportSection)
    serve: ServeSection = field(default_factory=ServeSection)
    gate: GateSection = field(default_factory=GateSection)
    evaluate: EvaluateSection = field(default_factory=EvaluateSection)
    sample_query: str | None = None

    def validate(self) -> None:
        """Cross-field checks (types and allowed values are checked on load).

        :raises RecipeError: Naming the key and the fix of every problem.
        """
        if problems := _validate(self):
            raise problems.error()


# ------------------------------------------------------------------------------------------------- loading
def _type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin is Literal:
        return " | ".join(repr(a) for a in typing.get_args(tp))
    if origin in (typing.Union, types.UnionType):
        return " or ".join("null" if a is type(None) else _type_name(a) for a in typing.get_args(tp))
    if origin is list:
        return f"a list of {_type_name(typing.get_args(tp)[0])}"
    if dataclasses.is_dataclass(tp):
        return "a mapping"
    return {bool: "true/false", int: "an integer", float: "a number", str: "a string"}.get(tp, str(tp))


def _convert(value: Any, tp: Any, key: str, problems: list[str]) -> Any:
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        for arg in (a for a in args if a is not type(None)):
            try:
                return _convert(value, arg, key, problems)
            except RecipeError:
                continue
        raise RecipeError(f"{key}: {value!r} is not {_type_name(tp)}")
    if origin is Literal:
        allowed = typing.get_args(tp)
        if value not in allowed:
            raise RecipeError(f"{key}: {value!r} is not allowed; use one of: {', '.join(str(a) for a in allowed)}")
        return value
    if origin is list:
        if not isinstance(value, list):
            raise RecipeError(f"{key}: expected {_type_name(tp)}, got {value!r}")
        (item,) = typing.get_args(tp)
        return [_convert(v, item, f"{key}[{i}]", problems) for i, v in enumerate(value)]
    if isinstance(tp, type) and dataclasses.is_dataclass(tp):
        if value is None:
            value = {}
        if not isinstance(value, Mapping):
            raise RecipeError(f"{key}: expected a mapping of settings, got {value!r}")
        return _build(tp, value, key, problems)
    if tp is bool:
        if not isinstance(value, bool):
            raise RecipeError(f"{key}: expected true or false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise RecipeError(f"{key}: expected an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise RecipeError(f"{key}: expected a number, got {value!r}")
        return float(value)
    if tp is str:
        if isinstance(value, bool) or not isinstance(value, str | int | float):
            raise RecipeError(f"{key}: expected a string, got {value!r}")
        return str(value)
    raise RecipeError(f"{key}: unsupported setting type {tp!r}")  # pragma: no cover - a bug in this module


def _build(cls: type, data: Mapping[str, Any], prefix: str, problems: list[str]) -> Any:
    """``cls`` from ``data``; a bad key is added to ``problems`` and keeps its default, so every one is found."""
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    values: dict[str, Any] = {}
    for key, value in data.items():
        full = f"{prefix}.{key}" if prefix else str(key)
        if key not in names:
            close = difflib.get_close_matches(str(key), names, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            problems.append(f"{full}: unknown key{hint}; allowed keys here: {', '.join(names)}")
            continue
        try:
            values[key] = _convert(value, hints[key], full, problems)
        except RecipeError as error:
            problems.append(str(error))
    return cls(**values)


def recipe_from_dict(data: Mapping[str, Any] | None) -> Recipe:
    """Build and validate a recipe from plain data (parsed YAML); missing keys take their defaults.

    :raises RecipeError: For an unknown key, a wrong type, a value outside its allowed set, or an inconsistency;
        listing every problem (``error.problems``), not only the first.
    """
    if data is None:
        data = {}
    if not isinstance(data, Mapping):
        raise RecipeError(f"a recipe is a mapping of sections (dataset, llm, generate, ...), got {type(data).__name__}")
    problems = _Problems()
    recipe: Recipe = _build(Recipe, data, "", problems)
    reported = {problem.split(":", 1)[0] for problem in problems}  # a key with a bad value checks its default
    problems += [p for p in _validate(recipe) if p.split(":", 1)[0] not in reported]
    if problems:
        raise problems.error()
    return recipe


def _merge(base: dict[str, Any], overrides: Mapping[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in overrides.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            merged[key] = _merge(dict(merged[key]), value)
        else:
            merged[key] = value
    return merged


def load_recipe(path: str | Path | None = None, *, overrides: Mapping[str, Any] | None = None) -> Recipe:
    """Read a recipe YAML file (``None``: the defaults), apply ``overrides`` (nested dict), validate.

    :param path: The YAML file.
    :param overrides: Values that replace the file's, e.g. ``{"serve": {"store": "opensearch"}}``.
    :raises RecipeError: For a missing file, invalid YAML or an invalid recipe (naming the file and key).
    """
    import yaml

    data: Any = {}
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise RecipeError(f"recipe {path} not found; print the default recipe with `syntriever recipe dump`.")
        try:
            data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        except UnicodeDecodeError as exc:
            raise RecipeError(
                f"{path}: not UTF-8 text (byte {exc.start}: {exc.reason}); save the recipe as UTF-8, "
                f"e.g. iconv -f latin1 -t utf-8 {path} > fixed.yaml"
            ) from None
        except OSError as exc:
            raise RecipeError(f"{path}: cannot be read ({exc.strerror or exc}); check its permissions") from None
        except yaml.YAMLError as exc:
            raise RecipeError(f"{path}: invalid YAML: {' '.join(str(exc).split())}") from None
    if overrides and isinstance(data, Mapping):
        data = _merge(dict(data), overrides)
    try:
        return recipe_from_dict(data)
    except RecipeError as exc:
        if path is None:
            raise
        raise _Problems(exc.problems).error(where=str(path)) from None


def recipe_to_dict(recipe: Recipe) -> dict[str, Any]:
    """The recipe as plain data (every field, defaults included)."""
    return dataclasses.asdict(recipe)


def dump_recipe(recipe: Recipe, *, header: str | None = None) -> str:
    """The recipe as YAML, sections in their natural order; :func:`load_recipe` reads it back to an equal recipe."""
    import yaml

    text = yaml.safe_dump(recipe_to_dict(recipe), sort_keys=False, allow_unicode=True, width=110)
    return (header.rstrip() + "\n" if header else "") + text
