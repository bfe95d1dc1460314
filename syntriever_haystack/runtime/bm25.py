"""The one BM25 of syntriever-haystack: what the evaluation's ``bm25`` system scores and what the served
``SyntrieverBM25Retriever`` answers with.

``bm25s`` with Lucene's formula (``method="lucene"``, ``k1=1.2``, ``b=0.75``), scikit-learn's word tokens
(``(?u)\\b\\w\\w+\\b``, lower-cased), English stop words and PyStemmer's English (Snowball) stemmer: close to
BEIR's Elasticsearch ``english`` analyzer. Rankings are deterministic: by score, then by position in the corpus,
so the top ``k`` is always a prefix of the top ``k + n`` (``bm25s.retrieve`` breaks ties arbitrarily); documents
scoring 0 (no query term) are never returned.

An index is saved with :meth:`BM25Index.save` to a folder (``bm25s``'s files plus ``syntriever_bm25.json``: the
parameters, the document ids and a :func:`corpus_fingerprint`); :meth:`BM25Index.load` returns it only when it
matches the corpus it is asked for.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from syntriever_haystack.errors import SyntrieverError

__all__ = [
    "BM25Index",
    "BM25Params",
    "bm25_index_dir",
    "corpus_fingerprint",
    "indexable",
]

MANIFEST = "syntriever_bm25.json"
FORMAT = 1


@dataclass(frozen=True)
class BM25Params:
    """How texts are tokenised and scored.

    :param k1: Term-frequency saturation.
    :param b: Length normalisation.
    :param method: ``bm25s`` scoring variant (``lucene``, ``robertson``, ``atire``, ``bm25l``, ``bm25+``).
    :param stemmer: PyStemmer algorithm (``english``), or ``None`` for no stemming.
    :param stopwords: ``bm25s`` stop-word list (``en``), or ``None`` to keep every word.
    """

    k1: float = 1.2
    b: float = 0.75
    method: str = "lucene"
    stemmer: str | None = "english"
    stopwords: str | None = "en"

    def __post_init__(self) -> None:
        import math

        for name, value in (("k1", self.k1), ("b", self.b)):
            if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
                raise ValueError(f"BM25 parameter {name} must be a finite number, got {value!r}.")
        if self.k1 < 0:
            raise ValueError(f"BM25 parameter k1 must be >= 0 (1.2 is usual), got {self.k1!r}.")
        if not 0 <= self.b <= 1:
            raise ValueError(f"BM25 parameter b must be between 0 and 1 (0.75 is usual), got {self.b!r}.")

    @classmethod
    def from_options(cls, options: dict[str, str]) -> BM25Params:
        """From the evaluation's ``bm25?k1=..&b=..&method=..&stemmer=..|none&stopwords=..|none`` options."""
        stemmer = options.get("stemmer", "english")
        stopwords = options.get("stopwords", "en")
        return cls(
            k1=float(options.get("k1", 1.2)),
            b=float(options.get("b", 0.75)),
            method=options.get("method", "lucene"),
            stemmer=None if stemmer == "none" else stemmer,
            stopwords=None if stopwords == "none" else stopwords,
        )


def _bm25s() -> Any:
    try:
        import bm25s
    except ImportError:  # pragma: no cover - a base dependency
        raise SyntrieverError("BM25 needs bm25s: pip install bm25s (a dependency of syntriever-haystack)") from None
    bm25s_logger = logging.getLogger("bm25s")
    if bm25s_logger.level == logging.DEBUG:  # bm25s sets DEBUG at import: "DEBUG:bm25s:Building index from tokens"
        bm25s_logger.setLevel(logging.WARNING)
    return bm25s


def _stemmer(name: str) -> Any:
    """A new stemmer (cheap; PyStemmer's objects are not thread-safe, so none is shared)."""
    try:
        import Stemmer
    except ImportError:  # pragma: no cover - a base dependency
        raise SyntrieverError(
            "BM25 stems words with PyStemmer, which is not installed: pip install PyStemmer (or use stemmer=none)"
        ) from None
    try:
        return Stemmer.Stemmer(name)
    except KeyError:
        raise SyntrieverError(
            f"unknown stemmer {name!r}; use one of {', '.join(Stemmer.algorithms())} or none"
        ) from None


def tokenize(texts: Sequence[str], params: BM25Params) -> list[list[str]]:
    """The BM25 tokens (stemmed words, stop words removed) of each text."""
    if not texts:
        return []
    stemmer = _stemmer(params.stemmer) if params.stemmer else None
    tokens = _bm25s().tokenize(
        list(texts), stopwords=params.stopwords, stemmer=stemmer, return_ids=False, show_progress=False
    )
    return [list(t) for t in tokens]


def indexable(documents: Iterable[Any]) -> tuple[list[int], list[str], list[str]]:
    """The documents BM25 indexes: those with text content (like Haystack's in-memory BM25).

    :param documents: Objects with ``id`` and ``content`` (Haystack Documents).
    :returns: Their positions in ``documents``, ids and texts.
    """
    positions, ids, texts = [], [], []
    for position, document in enumerate(documents):
        if isinstance(document.content, str):
            positions.append(position)
            ids.append(str(document.id))
            texts.append(document.content)
    return positions, ids, texts


def corpus_fingerprint(ids: Sequence[str], texts: Sequence[str], params: BM25Params) -> str:
    """A hash of the ids and texts (in order) and of the parameters: what an index was built from."""
    digest = hashlib.sha256(json.dumps(asdict(params), sort_keys=True).encode())
    for doc_id, text in zip(ids, texts, strict=True):
        for part in (doc_id, text):
            data = part.encode("utf-8", "surrogatepass")
            digest.update(len(data).to_bytes(8, "little"))
            digest.update(data)
    return digest.hexdigest()


def bm25_index_dir(store_file: str | Path) -> Path:
    """Where the BM25 index of a saved store file lives: ``document_store.json`` → ``document_store.bm25/``."""
    path = Path(store_file)
    return path.with_name(path.stem + ".bm25")


class BM25Index:
    """A ``bm25s`` index over a list of texts; positions in results are positions in that list."""

    def __init__(self, retriever: Any, params: BM25Params, size: int) -> None:
        self._retriever = retriever
        self.params = params
        self.size = size

    @classmethod
    def build(cls, texts: Sequence[str], params: BM25Params | None = None) -> BM25Index:
        """Tokenise and index ``texts``."""
        params = params or BM25Params()
        tokens = tokenize(texts, params)
        if not any(tokens):  # no vocabulary: every query scores 0 everywhere
            return cls(None, params, len(texts))
        retriever = _bm25s().BM25(method=params.method, k1=params.k1, b=params.b)
        retriever.index(tokens, show_progress=False)
        return cls(retriever, params, len(texts))

    def scores(self, tokens: Sequence[str]) -> np.ndarray:
        """The BM25 score of every document for a tokenised query (tokens not in the corpus count 0)."""
        if self._retriever is None:
            return np.zeros(self.size, dtype=np.float32)
        vocabulary = self._retriever.vocab_dict
        known = [t for t in tokens if t in vocabulary]  # bm25s drops unknown tokens the same way
        if not known:
            return np.zeros(self.size, dtype=np.float32)
        return np.asarray(self._retriever.get_scores(known))

    def ranking(self, tokens: Sequence[str], k: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Positions and scores of the (at most ``k``) best documents with a positive score, best first;
        equal scores keep corpus order."""
        scores = self.scores(tokens)
        positive = np.flatnonzero(scores > 0)
        if k is not None and k < len(positive):
            if k <= 0:
                positive = positive[:0]
            else:
                values = scores[positive]
                kth = np.partition(values, len(values) - k)[len(values) - k]
                positive = positive[values >= kth]  # every tie of the k-th score, so the order below decides
        order = np.lexsort((positive, -scores[positive]))
        chosen = positive[order][:k] if k is not None else positive[order]
        return chosen, scores[chosen]

    def search(self, queries: Sequence[str], k: int) -> list[list[tuple[int, float]]]:
        """The top ``k`` ``(position, score)`` of each query (a query of stop words only finds nothing)."""
        return [
            [(int(p), float(s)) for p, s in zip(*self.ranking(tokens, k), strict=True)]
            for tokens in tokenize(queries, self.params)
        ]

    def save(self, folder: str | Path, *, ids: Sequence[str], fingerprint: str) -> Path:
        """Write the index and its manifest to ``folder`` (replaced as a whole).

        :param ids: The document ids, in index order.
        :param fingerprint: :func:`corpus_fingerprint` of the indexed corpus.
        """
        target = Path(folder)
        target.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}."))
        try:
            if self._retriever is not None:
                self._retriever.save(str(staging))
            manifest = {
                "format": FORMAT,
                "params": asdict(self.params),
                "fingerprint": fingerprint,
                "size": self.size,
                "empty_vocabulary": self._retriever is None,
                "ids": list(ids),
            }
            (staging / MANIFEST).write_text(json.dumps(manifest), encoding="utf-8")
            old = target.with_name(f".{target.name}.old")
            if target.exists():
                shutil.rmtree(old, ignore_errors=True)
                os.replace(target, old)
            os.replace(staging, target)
            shutil.rmtree(old, ignore_errors=True)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        return target

    @classmethod
    def load(cls, folder: str | Path, *, fingerprint: str, params: BM25Params) -> BM25Index | None:
        """The index saved in ``folder`` if it was built from the corpus of ``fingerprint`` with ``params``,
        else ``None`` (missing, stale, unreadable: the caller rebuilds)."""
        source = Path(folder)
        try:
            manifest = json.loads((source / MANIFEST).read_text(encoding="utf-8"))
            if (
                manifest.get("format") != FORMAT
                or manifest.get("fingerprint") != fingerprint
                or BM25Params(**manifest["params"]) != params
            ):
                return None
            size = int(manifest["size"])
            if manifest.get("empty_vocabulary"):
                return cls(None, params, size)
            retriever = _bm25s().BM25.load(str(source))
        except (OSError, ValueError, KeyError, TypeError):
            return None
        if int(retriever.scores.get("num_docs", -1)) != size:
            return None
        return cls(retriever, params, size)
