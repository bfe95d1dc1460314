"""Torch-free inference on exported models: ONNX Runtime + Hugging Face ``tokenizers`` + NumPy.

:class:`OnnxModel` is what the Haystack components run. It tokenises with the Rust tokenizer, sorts the
inputs by length, pads each batch only to its own longest sequence (dynamic padding), runs ONNX Runtime
and pools (bi-encoder) or reads the logit (cross-encoder), returning results in input order.

Input size is bounded before tokenising, so an absurdly long text costs about as much as a window-long one:

- a text longer than :data:`SOFT_CHARS_PER_TOKEN` x ``max_length`` characters is cut at a word boundary (or at
  :data:`HARD_CHARS_PER_TOKEN` x ``max_length`` when the shorter cut does not fill the model's window, e.g. a long
  run of whitespace or an unsplittable blob); the tokens the model sees are the same as with the whole text;
- a cross-encoder pair is cut to the window *before* pairing, by the rule of the tokenizer's ``longest_first``
  truncation, so the tokenizer never splits a pair into overflow pieces (it keeps every combination of the
  pieces of both sides: a 100,000-character query against 50 passages made 32,400 encodings, gigabytes).
  A query that fits the window is paired exactly as before; a longer one keeps its first tokens.
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from syntriever_haystack.errors import ExportedModelError
from syntriever_haystack.runtime.metadata import QUANTIZATIONS, ModelMetadata, read_model_json

SOFT_CHARS_PER_TOKEN = 16
"""A text is first read up to this many characters per token of the window (a word is 4-6 characters)."""
HARD_CHARS_PER_TOKEN = 256
"""... and at most this many when those do not fill the window (the characters a model can ever read)."""
_CHUNK = 1024  # texts tokenised at a time: the tokenizer's objects live for one chunk, the ids after it

_CACHE: weakref.WeakValueDictionary[tuple[Any, ...], OnnxModel] = weakref.WeakValueDictionary()
_CACHE_LOCK = threading.Lock()


def load_onnx_model(
    model: str | Path,
    *,
    precision: str = "fp32",
    file_name: str | None = None,
    providers: Sequence[str] | None = None,
    num_threads: int | None = None,
    max_length: int | None = None,
    expected_kind: str | None = None,
) -> OnnxModel:
    """Load an exported model, sharing one ONNX Runtime session between components that ask for the same one.

    A query embedder and a document embedder pointing at the same directory hold the same session, so the
    model's weights are in memory once (also when one asks for ``"auto"`` and the other for the precision it
    resolves to). The session is freed when no component holds it any more.
    """
    if precision == "auto" and file_name is None:
        precision = ModelMetadata.load(Path(model)).resolve_quantization(precision)
    key = (str(Path(model).resolve()), precision, file_name, tuple(providers or ()), num_threads, max_length)
    with _CACHE_LOCK:
        cached = _CACHE.get(key)
        if cached is None:
            cached = OnnxModel(
                model,
                precision=precision,
                file_name=file_name,
                providers=providers,
                num_threads=num_threads,
                max_length=max_length,
            )
            _CACHE[key] = cached
    if expected_kind is not None:
        cached.require_kind(expected_kind)
    return cached


def session_options(num_threads: int | None = None) -> Any:
    """The ``onnxruntime.SessionOptions`` of every :class:`OnnxModel` session.

    Full graph optimisation, sequential execution, ``num_threads`` intra-op threads (``None``: one per physical
    core), warnings off; and, for the memory of a serving process (issue 17, ``benchmarks/serving_memory.py``):

    no memory pattern (``enable_mem_pattern``): dynamic padding gives every batch a new shape, so a planned
    pattern is never reused, and planning one block per shape made the arena hold far more than a batch needs
    (SciFact hybrid + rerank-100 at 256 tokens: peak RSS 687 -> 561 MB at the same latency).

    Measured and left as they are: the CPU arena stays on (off raised the peak: glibc keeps the freed activations);
    a shared arena growing by what is requested (``OrtArenaCfg`` kSameAsRequested) and initialisers outside the arena
    (``session.use_device_allocator_for_initializers``) each changed the peak by less than 10 MB; pre-packing stays
    on (off saved about 10 MB for two MiniLMs, but reranking was much slower).

    :raises ExportedModelError: ``num_threads`` is below 1.
    """
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.inter_op_num_threads = 1
    if num_threads is not None:
        if num_threads < 1:
            raise ExportedModelError(f"num_threads must be >= 1 (or None for automatic), got {num_threads}.")
        options.intra_op_num_threads = num_threads
    options.log_severity_level = 3
    options.enable_cpu_mem_arena = True
    options.enable_mem_pattern = False
    return options


def l2_normalize(vectors: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length (a zero row stays zero): the one L2 normalisation of the runtime."""
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    normalized: np.ndarray = vectors / np.clip(norms, 1e-12, None)
    return normalized


class OnnxModel:
    """An exported bi-encoder or cross-encoder, ready to run on ONNX Runtime.

    :param model: Exported model directory (the OUTPUT_DIR of ``syntriever export``).
    :param precision: ``"fp32"`` or ``"int8"``: which of the exported ONNX files to run; ``"auto"``: the one the
        export measured fastest among those that passed parity (``serving.default`` in ``syntriever.json``).
    :param file_name: Run this ONNX file (relative to ``model``) instead of the one ``precision`` names.
    :param providers: ONNX Runtime execution providers, in order of preference. Default: CPU.
    :param num_threads: Intra-op threads. ``None`` lets ONNX Runtime use one per physical core.
    :param max_length: Truncate inputs to fewer tokens than the exported maximum (faster, less context).
    """

    def __init__(
        self,
        model: str | Path,
        *,
        precision: str = "fp32",
        file_name: str | None = None,
        providers: Sequence[str] | None = None,
        num_threads: int | None = None,
        max_length: int | None = None,
    ) -> None:
        import onnxruntime as ort
        from tokenizers import Tokenizer

        self.path = Path(model)
        self.metadata = ModelMetadata.load(self.path)
        if precision not in QUANTIZATIONS:
            raise ExportedModelError(f"precision must be one of {QUANTIZATIONS}, got {precision!r}.")
        precision = self.metadata.resolve_quantization(precision)
        if file_name is None:
            if precision not in self.metadata.files:
                raise ExportedModelError(
                    f"'{self.path}' has no {precision} ONNX file (it has: {sorted(self.metadata.files)}). "
                    f"Use {next(iter(self.metadata.files))!r} weights (quantization= on the components, ?precision= in "
                    "a system SPEC), or re-export without --no-int8."
                )
            file_name = self.metadata.files[precision]
        onnx_path = self.path / file_name
        if not onnx_path.is_file():
            raise ExportedModelError(
                f"ONNX file '{onnx_path}' is missing: the export is incomplete or was moved. "
                f"Re-run `syntriever export SOURCE_DIR {self.path} --force`."
            )
        tokenizer_path = self.path / "tokenizer.json"
        if not tokenizer_path.is_file():
            raise ExportedModelError(
                f"'{tokenizer_path}' is missing. Re-run `syntriever export SOURCE_DIR {self.path} --force` "
                "(it writes the fast tokenizer file the torch-free runtime needs)."
            )
        available = ort.get_available_providers()
        chosen = list(providers) if providers else ["CPUExecutionProvider"]
        unknown = [p for p in chosen if p not in available]
        if unknown:
            raise ExportedModelError(
                f"ONNX Runtime providers {unknown} are not available in this onnxruntime build "
                f"(available: {available}). Install the matching package (e.g. onnxruntime-gpu) or pass one of those."
            )
        options = session_options(num_threads)
        try:
            self.session = ort.InferenceSession(str(onnx_path), sess_options=options, providers=chosen)
        except Exception as exc:  # onnxruntime's own error classes (InvalidProtobuf, InvalidArgument, Fail, ...)
            if not type(exc).__module__.startswith("onnxruntime"):
                raise
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:300]
            raise ExportedModelError(
                f"ONNX file '{onnx_path}' cannot be loaded: it is damaged or not an ONNX model "
                f"({type(exc).__name__}: {first}). Re-run `syntriever export SOURCE_DIR {self.path} --force`."
            ) from exc
        self.onnx_file = file_name
        self.precision = precision
        self.input_names = {i.name for i in self.session.get_inputs()}
        self.output_name = self.session.get_outputs()[0].name

        try:
            self.tokenizer = Tokenizer.from_file(str(tokenizer_path))
        except Exception as exc:  # tokenizers' own error names neither the file nor the fix
            read_model_json(tokenizer_path)  # not UTF-8 / not JSON / unreadable: an error naming the file
            raise ExportedModelError(
                f"{tokenizer_path} is not a tokenizer file the tokenizers library can read ({exc}); "
                f"re-run `syntriever export SOURCE_DIR {self.path} --force` to rewrite it."
            ) from None
        pad_id = self.tokenizer.padding["pad_id"] if self.tokenizer.padding else None
        self.tokenizer.no_padding()
        self.max_length = int(self.metadata.max_length)
        if max_length is not None:
            if not 1 <= max_length <= self.max_length:
                raise ExportedModelError(
                    f"max_length must be between 1 and the exported model's {self.max_length}, got {max_length}. "
                    "To allow longer inputs, re-export with `syntriever export --max-length N`."
                )
            self.max_length = max_length
        self.tokenizer.enable_truncation(max_length=self.max_length, strategy="longest_first")
        # measures texts (no special tokens) up to one token past any window, to cut them before pairing
        self._plain = Tokenizer.from_str(self.tokenizer.to_str())
        self._plain.enable_truncation(max_length=self.max_length + 1)
        self._pair_room = max(0, self.max_length - self.tokenizer.num_special_tokens_to_add(True))
        single_room = max(0, self.max_length - self.tokenizer.num_special_tokens_to_add(False))
        self._window = max(single_room, self._pair_room + 1)  # tokens a cut text must keep to change nothing
        if pad_id is None:
            pad_id = self.tokenizer.token_to_id("[PAD]")
            if pad_id is None:
                pad_id = self.tokenizer.token_to_id("<pad>")
        self.pad_id = int(pad_id or 0)

    @property
    def kind(self) -> str:
        return self.metadata.kind

    def require_kind(self, expected: str) -> None:
        if self.kind == expected:
            return
        if expected == "bi-encoder":
            fix = "Use SyntrieverRanker for a cross-encoder, or export a sentence-transformers bi-encoder here."
        else:
            fix = (
                "Use SyntrieverTextEmbedder/SyntrieverDocumentEmbedder for a bi-encoder, or export a cross-encoder "
                "(AutoModelForSequenceClassification with 1 label) for the ranker."
            )
        raise ExportedModelError(f"'{self.path}' is a {self.kind}, but this component needs a {expected}. {fix}")

    # ------------------------------------------------------------------ batching
    def bounded_texts(self, texts: Sequence[str]) -> list[str]:
        """``texts`` cut to a character budget that changes none of the tokens the model reads (see the module doc).

        A text of at most ``SOFT_CHARS_PER_TOKEN * max_length`` characters is returned as it is.
        """
        soft, hard = SOFT_CHARS_PER_TOKEN * self.max_length, HARD_CHARS_PER_TOKEN * self.max_length
        out = list(texts)
        long = [i for i, text in enumerate(texts) if len(text) > soft]
        if long:
            cuts = [_cut_chars(texts[i], soft) for i in long]
            for i, cut, enc in zip(long, cuts, self._plain.encode_batch(cuts, add_special_tokens=False), strict=True):
                out[i] = cut if len(enc.ids) >= self._window else _cut_chars(texts[i], hard)
        return out

    def fit_pairs(self, pairs: Sequence[tuple[str, str]]) -> list[tuple[str, str]]:
        """Each ``(query, document)`` cut to the tokens that tokenizers' ``longest_first`` truncation keeps.

        The result pairs fit the window, so encoding them leaves no overflow pieces; their tokens are those of
        the truncated original pair whenever the query fits the window (longer queries keep their first tokens).
        """
        queries = list(dict.fromkeys(q for q, _ in pairs))
        query_texts = self.bounded_texts(queries)
        measured = dict(zip(queries, zip(query_texts, self._measure(query_texts), strict=True), strict=True))
        doc_texts = self.bounded_texts([d for _, d in pairs])
        out = []
        for (query, _), doc_text, doc_offsets in zip(pairs, doc_texts, self._measure(doc_texts), strict=True):
            query_text, query_offsets = measured[query]
            keep_query, keep_doc = longest_first(len(query_offsets), len(doc_offsets), self._pair_room)
            out.append(
                (_token_prefix(query_text, query_offsets, keep_query), _token_prefix(doc_text, doc_offsets, keep_doc))
            )
        return out

    def _measure(self, texts: list[str]) -> list[list[tuple[int, int]]]:
        """Character offsets of each text's tokens (no special tokens), at most ``max_length + 1`` of them."""
        return [enc.offsets for enc in self._plain.encode_batch(texts, add_special_tokens=False)]

    def _tokenize(self, items: Sequence[Any]) -> list[tuple[np.ndarray, np.ndarray]]:
        """``(ids, type_ids)`` of each text or pair, tokenised a chunk at a time (with the model's truncation)."""
        out: list[tuple[np.ndarray, np.ndarray]] = []
        for start in range(0, len(items), _CHUNK):
            for enc in self.tokenizer.encode_batch(list(items[start : start + _CHUNK]), add_special_tokens=True):
                out.append((np.asarray(enc.ids, dtype=np.int64), np.asarray(enc.type_ids, dtype=np.int64)))
        return out

    def _batches(
        self, encodings: list[tuple[np.ndarray, np.ndarray]], batch_size: int
    ) -> Iterator[tuple[np.ndarray, dict[str, np.ndarray]]]:
        """Yield (original indices, ONNX feed) per batch, longest inputs first, each padded to its own maximum."""
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}.")
        lengths = np.fromiter((len(ids) for ids, _ in encodings), dtype=np.int64, count=len(encodings))
        order = np.argsort(-lengths, kind="stable")
        for start in range(0, len(order), batch_size):
            idx = order[start : start + batch_size]
            width = int(lengths[idx].max())
            ids = np.full((len(idx), width), self.pad_id, dtype=np.int64)
            mask = np.zeros((len(idx), width), dtype=np.int64)
            types = np.zeros((len(idx), width), dtype=np.int64)
            for row, i in enumerate(idx):
                enc_ids, enc_types = encodings[i]
                n = len(enc_ids)
                ids[row, :n] = enc_ids
                mask[row, :n] = 1
                types[row, :n] = enc_types
            feed = {"input_ids": ids, "attention_mask": mask, "token_type_ids": types}
            yield idx, {k: v for k, v in feed.items() if k in self.input_names}

    def _progress(self, total: int, enabled: bool, desc: str) -> Any:
        from tqdm.auto import tqdm

        return tqdm(total=total, disable=not enabled, desc=desc, unit="text")

    # ------------------------------------------------------------------ bi-encoder
    def embed(
        self, texts: Sequence[str], *, batch_size: int = 32, normalize: bool = False, progress_bar: bool = False
    ) -> np.ndarray:
        """Embed ``texts``; returns a float32 array of shape ``(len(texts), embedding_dim)`` in input order."""
        self.require_kind("bi-encoder")
        dim = int(self.metadata.embedding_dim or 0)
        out = np.zeros((len(texts), dim), dtype=np.float32)
        if not texts:
            return out
        encodings = self._tokenize(self.bounded_texts(texts))
        with self._progress(len(texts), progress_bar, "Embedding") as bar:
            for idx, feed in self._batches(encodings, batch_size):
                hidden = self.session.run([self.output_name], feed)[0]
                out[idx] = self._pool(hidden, feed["attention_mask"])
                bar.update(len(idx))
        return l2_normalize(out) if normalize else out

    def _pool(self, hidden: np.ndarray, mask: np.ndarray) -> np.ndarray:
        if hidden.ndim == 2:  # graph already pooled
            return hidden
        mode = self.metadata.pooling or "mean"
        m = mask[..., None].astype(hidden.dtype)
        if mode == "mean":
            pooled: np.ndarray = (hidden * m).sum(axis=1) / np.clip(m.sum(axis=1), 1e-9, None)
            return pooled
        if mode == "cls":
            return hidden[:, 0]
        if mode == "max":
            return np.where(m > 0, hidden, -1e9).max(axis=1)
        if mode == "lasttoken":
            last = mask.sum(axis=1) - 1
            return hidden[np.arange(hidden.shape[0]), last]
        raise ExportedModelError(f"Unsupported pooling mode {mode!r} in {self.path}/syntriever.json.")

    # ------------------------------------------------------------------ cross-encoder
    def score(
        self, query: str, documents: Sequence[str], *, batch_size: int = 32, progress_bar: bool = False
    ) -> np.ndarray:
        """Raw relevance logits of ``(query, document)`` pairs, in input order."""
        return self.score_pairs([(query, d) for d in documents], batch_size=batch_size, progress_bar=progress_bar)

    def score_pairs(
        self, pairs: Sequence[tuple[str, str]], *, batch_size: int = 32, progress_bar: bool = False
    ) -> np.ndarray:
        """Raw relevance logits of arbitrary ``(query, document)`` pairs, in input order."""
        self.require_kind("cross-encoder")
        out = np.zeros(len(pairs), dtype=np.float32)
        if not pairs:
            return out
        encodings: list[tuple[np.ndarray, np.ndarray]] = []
        for start in range(0, len(pairs), _CHUNK):
            encodings.extend(self._tokenize(self.fit_pairs(pairs[start : start + _CHUNK])))
        with self._progress(len(pairs), progress_bar, "Scoring") as bar:
            for idx, feed in self._batches(encodings, batch_size):
                logits = self.session.run([self.output_name], feed)[0]
                out[idx] = logits.reshape(len(idx), -1)[:, 0]
                bar.update(len(idx))
        return out


def longest_first(first: int, second: int, room: int) -> tuple[int, int]:
    """How many tokens of each side of a pair the tokenizers' ``longest_first`` truncation keeps in ``room``.

    The same arithmetic as ``tokenizers`` (``truncate_encodings``, strategy ``LongestFirst``): the shorter side is
    kept whole if the longer one can take the rest of the room, else both get half of it.
    """
    if first + second <= room:
        return first, second
    swap = first > second
    short, long = (second, first) if swap else (first, second)
    long = short if short > room else max(short, room - short)
    if short + long > room:
        short = room // 2
        long = short + room % 2
    return (long, short) if swap else (short, long)


def _token_prefix(text: str, offsets: list[tuple[int, int]], keep: int) -> str:
    """``text`` up to the end of its ``keep``-th token (all of it when it has no more tokens)."""
    if keep >= len(offsets):
        return text
    return text[: offsets[keep - 1][1]] if keep > 0 else ""


def _cut_chars(text: str, limit: int) -> str:
    """At most ``limit`` characters of ``text``, cut before the last whitespace run (a word boundary for every
    pre-tokenizer) when there is one in the second half, so the words kept tokenise as in the whole text."""
    if len(text) <= limit:
        return text
    end = limit
    while end > limit // 2 and not text[end].isspace():
        end -= 1
    if end <= limit // 2:
        return text[:limit]
    while end > 0 and text[end - 1].isspace():
        end -= 1
    return text[:end]
