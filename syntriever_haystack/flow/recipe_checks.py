"""The checks of a recipe's values: every numeric and enum setting within its range, and the settings that must
agree with each other, all before any work starts.

Each check names the key as written in the recipe (``train.retriever.learning_rate``), the value read and the fix;
:class:`Problems` collects them, so one :class:`RecipeError` lists every problem of a recipe at once.
:func:`validate` takes the typed recipe of :mod:`syntriever_haystack.flow.recipe` (which imports this module, so
the recipe is duck-typed here).
"""

from __future__ import annotations

import functools
import math
import re
from collections.abc import Callable, Sequence
from typing import Any

from syntriever_haystack.errors import SyntrieverError
from syntriever_haystack.specs import HYBRID_CANDIDATES, JudgeSpec, LLMSpec, SpecError, SystemSpec

__all__ = ["SYSTEM_ALIASES", "Problems", "RecipeError", "validate"]

# Names the ``evaluate.systems`` list may use besides raw ``syntriever evaluate`` SPECs.
SYSTEM_ALIASES = {
    "bm25": "BM25 over the evaluation corpus",
    "zero-shot": "the base model, exported to ONNX, untrained",
    "trained": "the trained retriever (stage 1, or stage 2 when enabled)",
    "hybrid-zero-shot": "BM25 + the base model, fused as serve.fusion says (the untrained hybrid)",
    "hybrid-trained": "BM25 + the trained retriever, fused as serve.fusion says (whether or not the gate serves it)",
    "hybrid": "the saved query pipeline: BM25 + the served dense model (trained if it passed the gate), fused",
    "hybrid+rerank": "the hybrid top rerank_depth reranked by the trained reranker (the reranked query pipeline)",
    "zero-shot+rerank": "the base model's top rerank_depth reranked by the trained reranker",
    "trained+rerank": "the trained retriever's top rerank_depth reranked by the trained reranker",
    "bm25+rerank": "BM25's top rerank_depth reranked by the trained reranker",
}


class RecipeError(SyntrieverError, ValueError):
    """A recipe is invalid: one ``key: problem; fix`` line, or a ``- key: ...`` line per problem (``problems``)."""

    def __init__(self, message: str, *, problems: Sequence[str] = ()) -> None:
        super().__init__(message)
        self.problems = list(problems) or [message]


class Problems(list[str]):
    """The problems found so far: a check adds its message instead of raising, so one error lists them all."""

    def check(self, condition: bool, message: str) -> None:
        if not condition:
            self.append(message)

    def parses(self, key: str, parse: Callable[[], object]) -> Any:
        """Parse a spec value once while loading, so a bad one fails before anything runs, naming its key."""
        try:
            return parse()
        except SpecError as error:
            self.append(f"{key}: {error}")
            return None

    def error(self, where: str = "") -> RecipeError:
        """One error: a single problem as it is, several one per line; prefixed by ``where`` (the file)."""
        lead = f"{where}: " if where else ""
        if len(self) > 1:
            lead += f"{len(self)} problems in the recipe, fix them all:\n- "
        return RecipeError(lead + "\n- ".join(self), problems=self)


# ------------------------------------------------------------------------------------------------- ranges
# Numeric settings by the range they need, named as in the recipe (so the message names the key that was read).
_POSITIVE_OR_NULL = """generate.round_trip dataset.max_train_queries evaluate.corpus_sample evaluate.max_queries
    train.threads train.retriever.max_steps train.stage2.max_steps train.reranker.max_steps""".split()
_ZERO_OR_MORE = """generate.retriever_queries generate.passages generate.sentence_queries generate.min_words
    generate.skip_top llm.parse_retries""".split()
_POSITIVE = """llm.concurrency llm.max_tokens generate.queries_per_passage generate.candidates generate.negatives
    generate.preferences.queries train.retriever.batch_size train.stage2.batch_size train.reranker.batch_size
    serve.top_k evaluate.rerank_depth""".split()
_POSITIVE_NUMBERS = """train.retriever.epochs train.stage2.epochs train.reranker.epochs llm.timeout""".split()
_LEARNING_RATES = ["train.retriever.learning_rate", "train.stage2.learning_rate", "train.reranker.learning_rate"]
_TOKEN_LENGTHS = ["train.retriever.query_max_length", "train.retriever.passage_max_length", "train.reranker.max_length"]
_SEEDS = ["seed", "train.seed"]
_MIN_TOKENS, _MAX_TOKENS = 8, 8192  # [CLS] + [SEP] + a few words; beyond any encoder's position embeddings
_MAX_SEED = 2**32 - 1  # numpy's and torch's seeds are unsigned 32-bit
# The score a judge compares with its threshold / margin: cosine of the base model, sigmoid of the reranker.
_SCORE_RANGE = {"embedder": (-1.0, 1.0, "cosine"), "ranker": (0.0, 1.0, "sigmoid"), "reranker": (0.0, 1.0, "sigmoid")}
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_INDEX_NAME = re.compile(r"[a-z0-9][a-z0-9_.+-]*")  # OpenSearch: lowercase, no spaces, not starting with _ - +


def _finite(value: float) -> bool:
    return not isinstance(value, float) or math.isfinite(value)


def _judge_kind(problems: Problems, key: str, name: str, purpose: Any) -> tuple[str, JudgeSpec | None]:
    """(``embedder`` / ``ranker`` / ``llm``, the parsed SPEC when ``name`` is one) of a recipe judge."""
    if name in ("embedder", "reranker", "llm"):
        return ("ranker" if name == "reranker" else name), None
    spec = problems.parses(key, lambda: JudgeSpec.parse(name, purpose=purpose))
    return (spec.kind if spec is not None else "llm"), spec


def _check_ranges(recipe: Any, problems: Problems) -> None:
    """Every numeric setting within the range its step accepts."""
    _check = problems.check

    def value(key: str) -> Any:  # value("train.threads") is recipe.train.threads
        return functools.reduce(getattr, key.split("."), recipe)

    for key in _POSITIVE_OR_NULL:
        _check(value(key) is None or value(key) > 0, f"{key}: must be a positive integer or null, got {value(key)}")
    for key in _ZERO_OR_MORE:
        _check(value(key) >= 0, f"{key}: must be 0 or more, got {value(key)}")
    for key in _POSITIVE:
        _check(value(key) > 0, f"{key}: must be a positive integer, got {value(key)}")
    for key in _POSITIVE_NUMBERS:
        _check(value(key) > 0 and _finite(value(key)), f"{key}: must be a positive number, got {value(key)}")
    for key in _LEARNING_RATES:
        _check(
            0 < value(key) < 1,
            f"{key}: must be a positive number below 1, got {value(key)}; typical values are 1e-5 to 1e-4",
        )
    for key in _TOKEN_LENGTHS:
        _check(
            _MIN_TOKENS <= value(key) <= _MAX_TOKENS,
            f"{key}: tokens per input must be between {_MIN_TOKENS} and {_MAX_TOKENS}, got {value(key)}",
        )
    for key in _SEEDS:
        _check(0 <= value(key) <= _MAX_SEED, f"{key}: must be an integer from 0 to {_MAX_SEED}, got {value(key)}")
    rpm = recipe.llm.requests_per_minute
    _check(
        rpm is None or (rpm > 0 and _finite(rpm)),
        f"llm.requests_per_minute: must be a positive number or null (unlimited), got {rpm}",
    )
    train, prefs = recipe.train, recipe.generate.preferences
    _check(prefs.top_k >= 2, f"generate.preferences.top_k: needs 2 or more candidates, got {prefs.top_k}")
    _check(
        train.reranker.group_size >= 2,
        f"train.reranker.group_size: 1 positive + at least 1 negative: use 2 or more, got {train.reranker.group_size}",
    )
    _check(
        0 <= train.retriever.dev_fraction < 1,
        f"train.retriever.dev_fraction: use a fraction in [0, 1), got {train.retriever.dev_fraction}",
    )
    for key in (
        "train.retriever.margin_mse_weight",
        "train.retriever.teacher_bm25_weight",
        "serve.rerank_first_stage_weight",
    ):
        _check(value(key) >= 0 and _finite(value(key)), f"{key}: must be 0 or more, got {value(key)}")
    _check(
        recipe.evaluate.rerank_depth <= HYBRID_CANDIDATES,
        f"evaluate.rerank_depth: at most {HYBRID_CANDIDATES} (the hybrid's depth in the gate and the evaluation), "
        f"got {recipe.evaluate.rerank_depth}",
    )
    interpolation = recipe.train.retriever.interpolation
    _check(
        0 < interpolation <= 1,
        f"train.retriever.interpolation: the trained weights' share must be in (0, 1], got {interpolation}",
    )
    gen = recipe.generate
    _check(0 <= gen.held_out < 1, f"generate.held_out: use a fraction in [0, 1), got {gen.held_out}")
    _check(0 <= gen.guard < 1, f"generate.guard: use a fraction in [0, 1) (0: off), got {gen.guard}")
    _check(
        gen.skip_top < gen.candidates,
        f"generate.skip_top: {gen.skip_top} skips every one of the {gen.candidates} candidates; lower it",
    )
    _check(0 < recipe.gate.max_p <= 1, f"gate.max_p: use a p-value in (0, 1], got {recipe.gate.max_p}")
    _check(
        recipe.gate.min_delta >= 0 and _finite(recipe.gate.min_delta),
        f"gate.min_delta: must be 0 or more, got {recipe.gate.min_delta}",
    )
    _check(
        train.stage2.kl_weight >= 0 and _finite(train.stage2.kl_weight),
        f"train.stage2.kl_weight: must be 0 or more, got {train.stage2.kl_weight}",
    )


def _check_judges(recipe: Any, problems: Problems) -> None:
    """The judges parse, and their threshold / margin lie within the score their judge computes."""
    gen = recipe.generate
    kind, spec = _judge_kind(problems, "generate.judge", gen.judge, "relevance")
    threshold = spec.threshold if spec is not None and spec.threshold is not None else gen.threshold
    key = "generate.judge threshold" if spec is not None and spec.threshold is not None else "generate.threshold"
    low, high, score = _SCORE_RANGE.get(kind, (-1.0, 1.0, "score"))
    problems.check(
        low <= threshold <= high,
        f"{key}: {threshold} is outside the {kind} judge's {score} range [{low:g}, {high:g}]; use e.g. 0.5",
    )
    kind, spec = _judge_kind(problems, "generate.preferences.judge", gen.preferences.judge, "preference")
    margin = spec.margin if spec is not None and spec.margin is not None else gen.preferences.margin
    key = (
        "generate.preferences.judge margin"
        if spec is not None and spec.margin is not None
        else "generate.preferences.margin"
    )
    low, high, score = _SCORE_RANGE.get(kind, (-1.0, 1.0, "score"))
    problems.check(
        0 <= margin < high - low,
        f"{key}: a score gap must be 0 or more and below {high - low:g} (the {kind} judge's {score} range "
        f"[{low:g}, {high:g}]), got {margin}; use e.g. 0.02",
    )


def _check_texts(recipe: Any, problems: Problems) -> None:
    """Names, URLs and paths that a later step would trip over."""
    _check = problems.check
    name = recipe.name
    _check(
        bool(name.strip()) and name not in (".", "..") and not re.search(r"[/\\\x00]", name),
        f"name: {name!r} names the folder runs/<name>; use a plain name without '/' (e.g. scifact-small)",
    )
    _check(bool(recipe.dataset.path.strip()), "dataset.path: empty; give a BEIR folder or a BEIR name (scifact)")
    for key in ("dataset.train_split", "dataset.eval_split"):
        split = functools.reduce(getattr, key.split("."), recipe)
        if split is None and key == "dataset.eval_split":
            continue
        _check(
            bool(split.strip()) and not re.search(r"[/\\]", split),
            f"{key}: {split!r} is not a split name; use the stem of a qrels/<split>.tsv file (train, dev, test)",
        )
    llm = recipe.llm
    _check(
        bool(_ENV_NAME.fullmatch(llm.api_key_env)),
        f"llm.api_key_env: {llm.api_key_env!r} is not an environment variable name; use e.g. OPENAI_API_KEY",
    )
    for key, url in (("llm.api_base_url", llm.api_base_url), ("serve.url", recipe.serve.url)):
        _check(
            url is None or bool(re.match(r"https?://[^\s/]+", url)),
            f"{key}: {url!r} is not an http(s) URL; use e.g. http://localhost:{9200 if key == 'serve.url' else 8000}",
        )
    _check(
        recipe.train.base_model.strip() != "",
        "train.base_model: empty; give a sentence-transformers folder or name",
    )
    reranker_base = recipe.train.reranker.base_model
    _check(
        reranker_base is None or reranker_base.strip() != "",
        "train.reranker.base_model: empty; give a model folder or name, or null for train.base_model",
    )
    if recipe.serve.store == "opensearch":
        _check(
            bool(_INDEX_NAME.fullmatch(recipe.serve.index)),
            f"serve.index: {recipe.serve.index!r} is not an OpenSearch index name; use lowercase letters, digits, "
            "'-', '_' or '.', e.g. syntriever",
        )
    _check(bool(recipe.serve.index.strip()), "serve.index: empty; use a name such as syntriever")
    query = recipe.sample_query
    _check(query is None or bool(query.strip()), "sample_query: empty; write a query, or null for a drawn one")


def _check_metrics(metrics: Sequence[str], problems: Problems) -> None:
    try:
        from syntriever_haystack.evaluate.metrics import MetricError, canonical_metric
    except ImportError:  # pragma: no cover - the evaluation extra is missing: the evaluate step reports it
        return
    for metric in metrics:
        try:
            canonical_metric(metric)
        except MetricError as error:
            problems.append(f"evaluate.metrics: {error}")


def validate(recipe: Any) -> Problems:
    """Every problem of ``recipe`` (a :class:`~syntriever_haystack.flow.recipe.Recipe`; empty: valid)."""
    gen, train, ev, llm = recipe.generate, recipe.train, recipe.evaluate, recipe.llm
    problems = Problems()
    _check, _parses = problems.check, problems.parses
    _parses("llm.spec", lambda: LLMSpec.parse(llm.spec, api_base_url=llm.api_base_url, api_key_env=llm.api_key_env))
    if gen.candidate_retriever != "zero-shot":
        _parses("generate.candidate_retriever", lambda: SystemSpec.parse(gen.candidate_retriever))
    for name in recipe.evaluate.systems:
        if ":" in name:
            _parses("evaluate.systems", functools.partial(SystemSpec.parse, name))
    _check_judges(recipe, problems)
    _check_ranges(recipe, problems)
    _check_texts(recipe, problems)
    if recipe.dataset.use_training_labels:
        _check(
            gen.retriever_queries > 0 or train.retriever.add_gold_pairs or gen.passages > 0 or gen.sentence_queries > 0,
            "stage 1 has nothing to train on: set generate.passages or generate.retriever_queries above 0, or "
            "train.retriever.add_gold_pairs: true",
        )
    else:
        _check(
            gen.passages > 0 or gen.sentence_queries > 0,
            "stage 1 has nothing to train on: set generate.passages (LLM queries) or generate.sentence_queries above 0"
            " (or opt in to dataset.use_training_labels)",
        )
        _check(
            not train.reranker.add_gold_groups,
            "train.reranker.add_gold_groups reads training judgments: set dataset.use_training_labels: true to opt in",
        )
    gate_problems = Problems()
    _check_metrics([recipe.gate.metric], gate_problems)
    problems.extend(p.replace("evaluate.metrics:", "gate.metric:", 1) for p in gate_problems)
    if train.stage2.enabled:
        _check(
            train.stage2.loss == "plackett_luce" or train.stage2.kl_weight == 0,
            "train.stage2.kl_weight: the KL term belongs to the plackett_luce loss; set it to 0 for bradley_terry",
        )
        _check(
            gen.preferences.judge != "reranker" or train.reranker.enabled,
            "generate.preferences.judge is 'reranker' but train.reranker.enabled is false; enable the reranker or "
            "use judge: llm | embedder",
        )
    if recipe.serve.store == "opensearch":
        _check(bool(recipe.serve.url), "serve.url: the opensearch store needs a URL, e.g. http://localhost:9200")
    if recipe.serve.reranker == "always":
        _check(train.reranker.enabled, "serve.reranker is 'always' but train.reranker.enabled is false")
    _check(bool(ev.systems), "evaluate.systems: list at least one system, e.g. [bm25, zero-shot, trained]")
    _check(len(set(ev.systems)) == len(ev.systems), f"evaluate.systems: a system is listed twice: {ev.systems}")
    for name in ev.systems:
        if ":" in name:
            continue  # a raw SPEC: parsed above, its folders checked by the evaluation before any work
        _check(
            name in SYSTEM_ALIASES,
            f"evaluate.systems: unknown system {name!r}; use one of {', '.join(SYSTEM_ALIASES)} or a SPEC "
            "(dense:DIR, bm25+rerank:DIR, ...)",
        )
        _check(
            not name.endswith("+rerank") or train.reranker.enabled,
            f"evaluate.systems: {name!r} needs the reranker; enable train.reranker or drop it from the list",
        )
    _check(
        ev.baseline in ev.systems,
        f"evaluate.baseline: {ev.baseline!r} is not in evaluate.systems ({', '.join(ev.systems)})",
    )
    _check(bool(ev.metrics), "evaluate.metrics: list at least one metric, e.g. [nDCG@10, R@100, RR@10]")
    _check_metrics(ev.metrics, problems)
    return problems
