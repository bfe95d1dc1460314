"""Typed specs: what a user names in text (a CLI argument, a recipe value, a component's init) parsed once.

Text enters at the edges and becomes one of these frozen objects; everything inward takes the object, never the
string. Each spec has ``parse(text)`` (errors name the key and the fix) and ``__str__`` (the canonical text, used
in names, provenance and fingerprints). The grammars, all ``kind[:target][?key=value&...]``:

- :class:`LLMSpec` — who writes the data: ``local[:gemma3-270m|smollm2-135m|FILE.gguf][?backend=..&precision=..]``
  or ``openai:MODEL`` (also a bare ``MODEL``), plus the server / key / timeout given beside it.
- :class:`JudgeSpec` — who labels: ``llm``, ``embedder:EXPORTED_DIR?threshold=X|margin=X&precision=P`` or
  ``ranker:EXPORTED_DIR?...`` (a threshold for relevance, a margin for preferences).
- :class:`SystemSpec` — what is evaluated / where candidates come from: ``bm25``, ``dense:DIR``, ``st:MODEL``,
  ``hybrid:DIR`` or ``hybrid:st:MODEL``, ``pipeline:QUERY_YAML`` (a saved Haystack query pipeline), then
  ``+rerank:DIR`` stages.
- :data:`Precision` — which exported ONNX file runs: ``fp32`` or ``int8``.

Standard library only: every layer may import this module.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, cast, get_args

from syntriever_haystack.errors import SyntrieverError
from syntriever_haystack.runtime.metadata import PRECISIONS, QUANTIZATIONS, Precision

__all__ = [
    "DEFAULT_FUSION",
    "FUSIONS",
    "HYBRID_CANDIDATES",
    "PRECISIONS",
    "RRF_K",
    "Fusion",
    "JudgeSpec",
    "JudgeSpecError",
    "LLMSpec",
    "LLMSpecError",
    "Precision",
    "SpecError",
    "StageSpec",
    "SystemSpec",
    "SystemSpecError",
    "parse_precision",
    "parse_system",
]


class SpecError(SyntrieverError, ValueError):
    """A spec string could not be parsed; the message names the value and the fix."""


class SystemSpecError(SpecError):
    """A --system SPEC could not be parsed or names a missing model."""


class JudgeSpecError(SpecError):
    """A judge spec string is invalid."""


class LLMSpecError(SpecError):
    """An --llm spec string is invalid."""


def parse_precision(value: object, *, key: str = "precision") -> Precision:
    """``value`` as a :data:`Precision`, or an error naming ``key`` and the allowed values."""
    if value not in PRECISIONS:
        raise SpecError(f"{key}: must be one of {', '.join(PRECISIONS)}, got {value!r}")
    return cast(Precision, value)


def split_params(
    text: str, *, where: str, error: type[SpecError] = SpecError
) -> tuple[str, tuple[tuple[str, str], ...]]:
    """``"target?k=v&k2=v2"`` → ``("target", (("k", "v"), ("k2", "v2")))``; the one ``?k=v`` parser."""
    target, _, query = text.partition("?")
    params: list[tuple[str, str]] = []
    for item in filter(None, query.split("&")):
        key, eq, value = item.partition("=")
        if not eq or not key.strip():
            raise error(f"bad parameter {item!r} in {where}: it must be name=value (key=value pairs after '?')")
        params.append((key.strip(), value.strip()))
    return target, tuple(params)


def _query(params: Iterable[tuple[str, object]]) -> str:
    items = [f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}" for k, v in params if v is not None]
    return "?" + "&".join(items) if items else ""


# ------------------------------------------------------------------------------------------------------ systems
_ALLOWED_PARAMS = {
    "bm25": {"k1", "b", "method", "stemmer", "stopwords", "backend"},
    "dense": {"precision", "max_length", "batch_size", "query_batch_size", "file_name"},
    "st": {"batch_size", "max_length"},
    "hybrid": {"k", "candidates", "fusion"},  # plus the dense stage's own parameters
    "pipeline": {"top_k"},
    "rerank": {"top_k", "precision", "max_length", "batch_size", "file_name", "fuse"},
}
_SPEC_HELP = (
    "a system SPEC is one of: bm25 | dense:EXPORTED_DIR | st:MODEL | hybrid:EXPORTED_DIR | hybrid:st:MODEL | "
    "pipeline:QUERY_PIPELINE_YAML, optionally followed by +rerank:EXPORTED_RANKER_DIR, with parameters after '?' "
    "(e.g. dense:models/x?precision=int8)"
)
# The reciprocal-rank-fusion constant of Haystack's DocumentJoiner (61 over 0-based ranks = 60 over 1-based ones):
# the evaluation fuses with that component, so a hybrid's ``k`` can only be this.
RRF_K = 60
# How a hybrid fuses BM25 and dense: ``dbsf`` (distribution-based score fusion, what the served pipelines run by
# default: syntriever_haystack.runtime.fusion) or ``rrf`` (Haystack's DocumentJoiner, reciprocal rank fusion).
Fusion = Literal["dbsf", "rrf"]
FUSIONS: tuple[Fusion, ...] = ("dbsf", "rrf")
DEFAULT_FUSION: Fusion = "dbsf"
# Documents from BM25 and from dense that a hybrid fuses by default: the query pipelines, the CLI's search, the
# evaluation's hybrid systems and the flow's saved pipelines all use it, since score fusion normalises by each list's
# score distribution (the same lists must go in for the served and the evaluated fusion to agree).
HYBRID_CANDIDATES = 100


@dataclass(frozen=True)
class StageSpec:
    """One stage of a system: a first stage (``bm25``, ``dense``, ``st``, ``hybrid``, ``pipeline``) or a ``rerank``
    stage. A ``pipeline`` stage's ``target`` is the saved query pipeline's YAML file."""

    kind: str
    target: str = ""
    params: tuple[tuple[str, str], ...] = ()
    inner: StageSpec | None = None  # the dense half of a hybrid

    @property
    def options(self) -> dict[str, str]:
        """Parameters as a dict."""
        return dict(self.params)

    @property
    def precision(self) -> Precision:
        """The ONNX precision a ``dense`` / ``rerank`` stage runs (``fp32`` unless ``?precision=`` says);
        ``?precision=auto`` is the variant the export measured fastest (what the components' default runs)."""
        value = self.options.get("precision", "fp32")
        if value == "auto":
            from syntriever_haystack.runtime.metadata import ModelMetadata

            value = ModelMetadata.load(self.target).resolve_quantization(value)
        return parse_precision(value, key=f"precision of {self}")

    def int_option(self, key: str, default: int | None = None) -> int | None:
        """An integer parameter (``None`` when absent and no default)."""
        value = self.options.get(key)
        if value is None:
            return default
        try:
            return int(value)
        except ValueError:
            raise SystemSpecError(f"{key}={value!r} in system stage {self}: must be an integer") from None

    def float_option(self, key: str, default: float) -> float:
        """A non-negative number parameter (``default`` when absent)."""
        value = self.options.get(key)
        if value is None:
            return default
        try:
            number = float(value)
        except ValueError:
            number = math.nan
        if not 0.0 <= number < math.inf:
            raise SystemSpecError(f"{key}={value!r} in system stage {self}: must be a number >= 0 (e.g. {key}=1)")
        return number

    def __str__(self) -> str:
        query = "?" + "&".join(f"{k}={v}" for k, v in self.params) if self.params else ""
        if self.kind == "bm25":
            return "bm25" + query
        if self.kind == "hybrid":
            assert self.inner is not None
            inner = str(self.inner)
            inner = inner.removeprefix("dense:")
            return f"hybrid:{inner}" + (("&" if "?" in inner else "?") + query[1:] if query else "")
        return f"{self.kind}:{self.target}{query}"


@dataclass(frozen=True)
class SystemSpec:
    """A first stage followed by zero or more rerankers. ``text`` is the SPEC as the user wrote it."""

    text: str
    first_stage: StageSpec
    rerankers: tuple[StageSpec, ...] = ()

    @classmethod
    def parse(cls, text: str) -> SystemSpec:
        """Parse a SPEC string (see the module docstring). Paths are checked by :meth:`check`."""
        return parse_system(text)

    def prefixes(self) -> list[str]:
        """Canonical keys of the system and each of its prefixes (for sharing first-stage runs)."""
        keys = [str(self.first_stage)]
        for r in self.rerankers:
            keys.append(keys[-1] + "+" + str(r))
        return keys

    def stages(self) -> list[StageSpec]:
        """Every stage, the dense half of a hybrid included."""
        stages = [self.first_stage, *self.rerankers]
        if self.first_stage.inner is not None:
            stages.append(self.first_stage.inner)
        return stages

    def check(self) -> None:
        """Fail fast, before any work, if a model folder named here is missing or of the wrong kind."""
        from syntriever_haystack.runtime.metadata import ModelMetadata

        for stage in self.stages():
            if stage.kind in ("dense", "rerank"):
                expected = "bi-encoder" if stage.kind == "dense" else "cross-encoder"
                metadata = ModelMetadata.load(stage.target)  # clear error if missing / not exported
                if metadata.kind != expected:
                    hint = "dense:/hybrid:" if metadata.kind == "bi-encoder" else "+rerank:"
                    raise SystemSpecError(
                        f"{stage.target} is a {metadata.kind}, but {stage.kind} needs a {expected}; use it as {hint} "
                        f"in system {self.text!r}"
                    )
                stage.precision  # noqa: B018 - validates ?precision=
            elif stage.kind == "pipeline" and not Path(stage.target).expanduser().is_file():
                raise SystemSpecError(
                    f"pipeline file {stage.target} of system {self.text!r} does not exist; give the query pipeline's "
                    "YAML (e.g. runs/quickstart/pipelines/query.yaml, written by `syntriever run`)"
                )

    def __str__(self) -> str:
        return self.text


def _check_params(kind: str, params: Iterable[tuple[str, str]], spec: str) -> None:
    allowed = _ALLOWED_PARAMS[kind]
    for key, value in params:
        if key not in allowed:
            raise SystemSpecError(
                f"unknown parameter {key!r} for {kind} in system {spec!r}; allowed: {', '.join(sorted(allowed))}"
            )
        if key == "precision" and value not in QUANTIZATIONS:
            raise SystemSpecError(
                f"precision of {kind} in system {spec!r}: must be one of auto, fp32, int8, got {value!r}"
            )
        if kind == "bm25" and key in ("k1", "b"):
            import math

            try:
                number = float(value)
            except ValueError:
                number = float("nan")
            low_ok = number >= 0 if key == "k1" else 0 <= number <= 1
            if not (math.isfinite(number) and low_ok):
                wanted = "a finite number >= 0" if key == "k1" else "a number between 0 and 1"
                raise SystemSpecError(f"{key}={value!r} of bm25 in system {spec!r}: must be {wanted}")


def _system_params(text: str, spec: str) -> tuple[str, tuple[tuple[str, str], ...]]:
    return split_params(text, where=f"system {spec!r}", error=SystemSpecError)


def _parse_first_stage(text: str, spec: str) -> StageSpec:
    if text == "bm25" or text.startswith("bm25?"):
        _, params = _system_params(text, spec)
        _check_params("bm25", params, spec)
        return StageSpec("bm25", "", params)
    kind, colon, rest = text.partition(":")
    if not colon or not rest:
        raise SystemSpecError(f"cannot parse system {spec!r}: {_SPEC_HELP}")
    if kind in ("dense", "st"):
        target, params = _system_params(rest, spec)
        _check_params(kind, params, spec)
        return StageSpec(kind, target, params)
    if kind == "pipeline":
        target, params = _system_params(rest, spec)
        _check_params(kind, params, spec)
        if not target:
            raise SystemSpecError(f"'pipeline:' needs the query pipeline's YAML file in {spec!r}")
        top_k = dict(params).get("top_k")
        if top_k is not None and (not top_k.isdigit() or int(top_k) < 1):
            raise SystemSpecError(f"top_k={top_k!r} in system {spec!r}: must be a positive integer")
        return StageSpec("pipeline", target, params)
    if kind == "hybrid":
        inner_text = rest if rest.startswith(("dense:", "st:")) else "dense:" + rest
        inner_kind = inner_text.split(":", 1)[0]
        target, params = _system_params(inner_text.split(":", 1)[1], spec)
        own = tuple(p for p in params if p[0] in _ALLOWED_PARAMS["hybrid"])
        passed = tuple(p for p in params if p[0] not in _ALLOWED_PARAMS["hybrid"])
        _check_params(inner_kind, passed, spec)
        k = dict(own).get("k")
        # k is reciprocal rank fusion's constant: a hybrid that names it (older SPECs) is fused by RRF
        fusion = dict(own).get("fusion", "rrf" if k is not None else DEFAULT_FUSION)
        if fusion not in FUSIONS:
            raise SystemSpecError(f"fusion={fusion} in system {spec!r}: use one of {', '.join(FUSIONS)}")
        if k is not None and fusion != "rrf":
            raise SystemSpecError(
                f"k={k} in system {spec!r}: k is reciprocal rank fusion's constant; use fusion=rrf or drop k"
            )
        if k is not None and "fusion" not in dict(own):
            own = (*own, ("fusion", "rrf"))
        if k is not None and k != str(RRF_K):
            raise SystemSpecError(
                f"k={k} in system {spec!r}: a hybrid is fused by Haystack's DocumentJoiner (the served pipelines' "
                f"fusion), whose reciprocal-rank constant is fixed at k={RRF_K}; drop k or use k={RRF_K}"
            )
        return StageSpec("hybrid", "", own, inner=StageSpec(inner_kind, target, passed))
    raise SystemSpecError(f"unknown system kind {kind!r} in {spec!r}: {_SPEC_HELP}")


def parse_system(spec: str) -> SystemSpec:
    """Parse a system SPEC string. Paths are not checked here; see :meth:`SystemSpec.check`."""
    text = spec.strip()
    if not text:
        raise SystemSpecError(f"empty system: {_SPEC_HELP}")
    first, *reranks = text.split("+rerank:")
    rerankers = []
    for r in reranks:
        target, params = _system_params(r, spec)
        if not target:
            raise SystemSpecError(f"'+rerank:' needs an exported ranker folder in {spec!r}")
        _check_params("rerank", params, spec)
        stage = StageSpec("rerank", target, params)
        stage.float_option("fuse", 0.0)  # a bad weight fails here, before any first stage runs
        rerankers.append(stage)
    return SystemSpec(text, _parse_first_stage(first, spec), tuple(rerankers))


# ------------------------------------------------------------------------------------------------------- judges
JudgeKind = Literal["llm", "embedder", "ranker"]
JUDGE_KINDS: tuple[str, ...] = get_args(JudgeKind)
_JUDGE_HELP = "use 'llm', 'embedder:EXPORTED_DIR?threshold=0.5' or 'ranker:EXPORTED_DIR?threshold=0.5'"


@dataclass(frozen=True)
class JudgeSpec:
    """Who labels: the run's LLM, or a score over one of our exported models.

    :param kind: ``llm``, ``embedder`` (cosine of an exported bi-encoder) or ``ranker`` (sigmoid of an exported
        cross-encoder's logit).
    :param model: The exported model folder (score judges).
    :param threshold: Minimum score of a relevant label (relevance judges; default 0.5).
    :param margin: Score difference below which a pair is a tie (preference judges; default 0.0).
    :param precision: Which exported ONNX file the score judge runs.
    """

    kind: JudgeKind = "llm"
    model: Path | None = None
    threshold: float | None = None
    margin: float | None = None
    precision: Precision = "fp32"

    @classmethod
    def parse(cls, text: str, *, purpose: Literal["relevance", "preference"] = "relevance") -> JudgeSpec:
        """Parse ``llm`` / ``embedder:DIR?threshold=X&precision=P`` / ``ranker:DIR?margin=X`` (see the module)."""
        kind, _, rest = text.strip().partition(":")
        target, params = split_params(rest, where=f"judge spec {text!r}", error=JudgeSpecError)
        if kind == "llm":
            return cls("llm")
        if kind not in ("embedder", "ranker"):
            if purpose == "preference":
                raise JudgeSpecError(
                    f"Unknown judge {text!r}: use 'llm', 'embedder:DIR?margin=0.0' or 'ranker:DIR?margin=0.0'."
                )
            raise JudgeSpecError(f"Unknown judge {text!r}: {_JUDGE_HELP}.")
        score_key = "threshold" if purpose == "relevance" else "margin"
        values = dict(params)
        unknown = set(values) - {score_key, "precision"}
        if unknown:
            if purpose == "preference":
                raise JudgeSpecError(f"Judge spec {text!r}: unknown parameters {sorted(unknown)}; use margin=.")
            raise JudgeSpecError(f"Judge spec {text!r}: unknown parameters {sorted(unknown)}; {_JUDGE_HELP}.")
        if not target:
            raise JudgeSpecError(f"Judge spec {text!r} needs a model folder, e.g. {kind}:models/minilm-onnx.")
        try:
            score = float(values[score_key]) if score_key in values else None
        except ValueError:
            raise JudgeSpecError(f"Judge spec {text!r}: {score_key} must be a number") from None
        try:
            precision = parse_precision(values.get("precision", "fp32"), key=f"judge spec {text!r}: precision")
        except SpecError as error:
            raise JudgeSpecError(str(error)) from None
        return cls(
            cast(JudgeKind, kind),
            Path(target),
            threshold=score if purpose == "relevance" else None,
            margin=score if purpose == "preference" else None,
            precision=precision,
        )

    @classmethod
    def coerce(cls, value: JudgeSpec | str, *, purpose: Literal["relevance", "preference"] = "relevance") -> JudgeSpec:
        """``value`` itself, or parsed when it is text (for APIs that accept both)."""
        return value if isinstance(value, JudgeSpec) else cls.parse(value, purpose=purpose)

    @property
    def is_llm(self) -> bool:
        return self.kind == "llm"

    def check(self) -> None:
        """Fail before any LLM call when a score judge's threshold / margin is out of range (a ranker's threshold in
        [0, 1], an embedder's in [-1, 1], a margin finite and >= 0), or its model folder is missing, not an
        exported model, or of the wrong kind (``embedder`` needs a bi-encoder, ``ranker`` a cross-encoder)."""
        if self.kind == "llm":
            return
        # the score ranges are checked here, not in parse(), so that a recipe can report them in its own terms
        if self.threshold is not None:
            _check_judge_score(str(self), self.kind, "threshold", self.threshold)
        if self.margin is not None:
            _check_judge_score(str(self), self.kind, "margin", self.margin)
        if self.model is None or not self.model.is_dir():
            raise JudgeSpecError(
                f"Judge spec {str(self)!r}: {self.model} is not a folder. "
                "Export a model first with `syntriever export`."
            )
        from syntriever_haystack.runtime.metadata import ModelMetadata

        metadata = ModelMetadata.load(self.model)  # a clear error when it is not an exported model
        expected = "bi-encoder" if self.kind == "embedder" else "cross-encoder"
        if metadata.kind != expected:
            other = "ranker" if self.kind == "embedder" else "embedder"
            raise JudgeSpecError(
                f"Judge spec {str(self)!r}: {self.model} is a {metadata.kind}, but the {self.kind} judge needs a "
                f"{expected}; use {other}:{self.model}, or export a {expected}."
            )

    def __str__(self) -> str:
        if self.kind == "llm":
            return "llm"
        return f"{self.kind}:{self.model}" + _query(
            [("threshold", self.threshold), ("margin", self.margin), ("precision", self.precision)]
        )


def _check_judge_score(text: str, kind: str, key: str, value: float) -> None:
    """A judge's ``threshold`` lies in the range of its score (a ranker's sigmoid in [0, 1], an embedder's cosine in
    [-1, 1]); a ``margin`` is a finite score difference >= 0."""
    if key == "margin":
        if not math.isfinite(value) or value < 0:
            raise JudgeSpecError(f"Judge spec {text!r}: margin must be a finite number >= 0, got {value:g}.")
        return
    low = 0.0 if kind == "ranker" else -1.0
    if not math.isfinite(value) or not low <= value <= 1.0:
        score = "a sigmoid score in [0, 1]" if kind == "ranker" else "a cosine similarity in [-1, 1]"
        raise JudgeSpecError(
            f"Judge spec {text!r}: threshold must be a number in [{low:g}, 1] (a {kind} judge's score is {score}), "
            f"got {value:g}."
        )


# ---------------------------------------------------------------------------------------------------------- LLM
_LOCAL_OPTIONS = ("backend", "precision", "prompt_format", "n_threads")


@dataclass(frozen=True)
class LLMSpec:
    """Which chat model writes the data, and how to reach it.

    :param kind: ``local`` (the embedded offline GGUF model) or ``openai`` (OpenAI or any OpenAI-compatible
        server: vLLM, Ollama, llama.cpp server, TGI).
    :param model: The local model name / GGUF file, or the served model's name.
    :param options: Local-model options (``backend``, ``precision``, ``prompt_format``, ``n_threads``).
    :param api_base_url: The OpenAI-compatible server (``None``: OpenAI itself).
    :param api_key_env: Environment variable with the API key (never written anywhere).
    :param timeout_s: Seconds to wait for one response.
    """

    kind: Literal["local", "openai"] = "local"
    model: str = "gemma3-270m"
    options: tuple[tuple[str, str], ...] = field(default=())
    api_base_url: str | None = None
    api_key_env: str = "OPENAI_API_KEY"
    timeout_s: float | None = None

    @classmethod
    def parse(
        cls,
        text: str,
        *,
        api_base_url: str | None = None,
        api_key_env: str = "OPENAI_API_KEY",
        timeout_s: float | None = None,
    ) -> LLMSpec:
        """Parse ``local[:NAME][?k=v]`` / ``openai:MODEL`` / ``MODEL`` (see the module docstring)."""
        kind, _, name = text.partition(":")
        if text == "local" or text.startswith("local?"):
            kind, name = "local", text.removeprefix("local")
        if kind == "local":
            model, params = split_params(name, where=f"--llm {text!r}", error=LLMSpecError)
            for key, _ in params:
                if key not in _LOCAL_OPTIONS:
                    raise LLMSpecError(
                        f"--llm {text!r}: options after '?' are {sorted(_LOCAL_OPTIONS)} as name=value, "
                        "e.g. local:gemma3-270m?backend=transformers&precision=bf16."
                    )
            for key, value in params:
                if key == "n_threads" and not value.isdigit():
                    raise LLMSpecError(f"--llm {text!r}: n_threads must be a positive integer, got {value!r}.")
            return cls("local", model or "gemma3-270m", params, api_base_url, api_key_env, timeout_s)
        model = name if kind == "openai" else text
        if not model:
            raise LLMSpecError("--llm openai: needs a model name, e.g. --llm openai:gpt-4o-mini.")
        return cls("openai", model, (), api_base_url, api_key_env, timeout_s)

    @property
    def is_local(self) -> bool:
        return self.kind == "local"

    def local_options(self) -> dict[str, str | int]:
        """The local model's options as keyword arguments (``n_threads`` an int)."""
        return {k: int(v) if k == "n_threads" else v for k, v in self.options}

    def __str__(self) -> str:
        query = "?" + "&".join(f"{k}={v}" for k, v in self.options) if self.options else ""
        return f"{self.kind}:{self.model}{query}"
