"""Filters for LLM-generated queries (METHOD.md §1, §3): empty, truncated, too long, copied, duplicated.

A small LLM writes many bad queries: nothing at all, a sentence cut by the token limit, the passage's first
sentence copied verbatim, or the same question five times with different punctuation. Each such query makes a
training example worse, so every generated query goes through :class:`QueryFilter`, which returns a *reason
code* for a rejected query (``None`` for an accepted one) and counts them, so a run can report how much was
thrown away and why.

* :func:`normalize_text` is the canonical form used for exact duplicate detection.
* :func:`copies_passage` catches queries that are (nearly) a verbatim span of their source passage.
* :class:`NearDuplicateIndex` finds near-duplicates in ~O(1) per added query: MinHash signatures over character
  shingles with LSH banding propose candidates, and the exact Jaccard similarity verifies them (so a reported
  near-duplicate really is one; only recall is probabilistic).
* :func:`round_trip_filter` keeps a query only if a retriever finds its source passage in the top ``k``
  ("round-trip consistency", as in Promptagator / InPars).
"""

from __future__ import annotations

import functools
import hashlib
import re
import unicodedata
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Literal, NamedTuple

import numpy as np

__all__ = [
    "REASONS",
    "DuplicateMatch",
    "NearDuplicateIndex",
    "QueryFilter",
    "copies_passage",
    "is_empty",
    "looks_truncated",
    "normalize_text",
    "round_trip_filter",
    "words",
]

REASONS: tuple[str, ...] = ("empty", "truncated", "too_long", "copies_passage", "duplicate", "near_duplicate")
"""Every reason code :meth:`QueryFilter.check` can return, in the order the checks run."""

# Characters stripped from both ends of a text by normalize_text: quotes, brackets, sentence punctuation,
# markdown emphasis and dashes. Not %, #, +, & or $ ("c++", "5%", "#1" keep their meaning).
_EDGE_PUNCTUATION = "\"'`‘’‚‛“”„‟«»‹›()[]{}<>.,;:!?¿¡…*_~-–—•·|/\\ "
# Leading list markers / labels an LLM puts before its answer: "1.", "2)", "a)", "-", "Query:", "Q3:", ...
_LIST_MARKER = re.compile(
    r"^(?:\d{1,3}[.)]\s+|\(?\d{1,3}\)\s*|[a-z]\)\s+|"
    r"(?:synthetic\s+|search\s+|generated\s+|rewritten\s+)?"
    r"(?:query|question|q|keywords?|keyword\s+query|claim|answer)\s*\d{0,3}\s*[:=]\s*)"
)
_WHITESPACE = re.compile(r"\s+")
# Words: runs of letters/digits; CJK ideographs and kana count one word per character (no spaces in those).
_CJK = "\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff"
_WORD = re.compile(rf"[{_CJK}]|[^\W_{_CJK}]+")
_FINISH_LENGTH = frozenset({"length", "max_tokens", "max_output_tokens"})
# A query that ends with one of these was cut: "causes of anaemia and", "the effect of the".
_DANGLING_WORDS = frozenset({"the", "an", "and", "or", "but", "nor", "versus", "vs", "such"})
_BRACKETS = {")": "(", "]": "[", "}": "{", "”": "“", "»": "«"}


def normalize_text(text: str) -> str:
    """The canonical form of a generated query, for comparisons and exact duplicate detection.

    NFKC, lowercase, whitespace collapsed to single spaces, leading list markers and labels removed
    (``"1."``, ``"-"``, ``"a)"``, ``"Query:"``, ``"**Question 2:**"``), and quotes / brackets / punctuation
    stripped from both ends (inner punctuation is kept: ``"type-2"`` stays ``"type-2"``).

    >>> normalize_text('  1. Query: "What causes  Anaemia?"  ')
    'what causes anaemia'
    """
    text = _WHITESPACE.sub(" ", unicodedata.normalize("NFKC", text).lower())
    previous = None
    while text != previous:
        previous = text
        text = text.strip(_EDGE_PUNCTUATION)
        text = _LIST_MARKER.sub("", text)
    return text


def words(text: str) -> list[str]:
    """The words of ``text`` after NFKC + lowercase, punctuation dropped (``"type-2"`` → ``["type", "2"]``)."""
    return _WORD.findall(unicodedata.normalize("NFKC", text).lower())


def is_empty(text: str | None, min_words: int = 2) -> bool:
    """True when ``text`` has fewer than ``min_words`` words once normalised (``None`` and ``"1."`` are empty)."""
    if text is None:
        return True
    return len(words(normalize_text(text))) < min_words


def looks_truncated(text: str, finish_reason: str | None = None) -> bool:
    """True when the generation was (probably) cut off.

    * ``finish_reason`` says the token limit was hit (``"length"`` in the OpenAI / llama.cpp APIs,
      ``"max_tokens"`` / ``"max_output_tokens"`` elsewhere);
    * a bracket or a double quote opened in the text is still open at its end (``'what is "iron``,
      ``"effects of aspirin (low dose"``); single quotes are ignored (apostrophes);
    * the text ends mid-phrase: on a hyphen, comma, colon, semicolon or opening bracket, or on a word that
      cannot end a query (``"the"``, ``"and"``, ``"or"``, ...).
    """
    if finish_reason is not None and finish_reason.lower() in _FINISH_LENGTH:
        return True
    stripped = unicodedata.normalize("NFKC", text).strip()
    if not stripped:
        return False
    # Still-open brackets and quotes at the end of the text.
    stack: list[str] = []
    straight_quotes = 0
    for char in stripped:
        if char in "([{“«":
            stack.append(char)
        elif char in _BRACKETS:
            if stack and stack[-1] == _BRACKETS[char]:
                stack.pop()
        elif char == '"':
            straight_quotes += 1
    if stack or straight_quotes % 2:
        return True
    if stripped[-1] in "-–—,;:/\\&":
        return True
    if stripped.endswith(("...", "…")):  # a trailing ellipsis, unless after a complete question / exclamation
        body = stripped.rstrip(".… ")
        return bool(body) and body[-1] not in "?!"
    tail = words(stripped)
    return bool(tail) and tail[-1] in _DANGLING_WORDS and stripped[-1].isalnum()


def _longest_common_run(query: Sequence[str], passage: Sequence[str]) -> int:
    """Length of the longest run of consecutive query words that occurs consecutively in the passage."""
    positions: dict[str, list[int]] = {}
    for index, token in enumerate(passage):
        positions.setdefault(token, []).append(index)
    best = 0
    previous: dict[int, int] = {}  # passage index j -> length of the common run ending at (i - 1, j)
    for token in query:
        current = {j: previous.get(j - 1, 0) + 1 for j in positions.get(token, ())}
        if current:
            best = max(best, max(current.values()))
        previous = current
    return best


def copies_passage(query: str, passage: str, *, max_overlap: float = 0.8, ngram: int = 5) -> bool:
    """True when ``query`` is (nearly) a verbatim span of ``passage``, compared word by word after normalisation.

    Copied when either:

    * the longest run of consecutive query words found consecutively in the passage covers at least
      ``max_overlap`` of the query's words; or
    * at least ``max_overlap`` of the query's word ``ngram``-grams occur in the passage (catches a copy with a
      word changed in the middle). Queries shorter than ``ngram`` words only use the first criterion.

    Note that a short keyword query that happens to be a phrase of the passage (``"iron deficiency anaemia"``)
    counts as a copy; :class:`QueryFilter` has ``copy_min_words`` to exempt short queries.
    """
    if not 0.0 < max_overlap <= 1.0:
        raise ValueError(f"max_overlap must be in (0, 1], got {max_overlap}.")
    if ngram < 1:
        raise ValueError(f"ngram must be at least 1, got {ngram}.")
    query_words = words(query)
    passage_words = words(passage)
    if not query_words or not passage_words:
        return False
    if _longest_common_run(query_words, passage_words) / len(query_words) >= max_overlap:
        return True
    if len(query_words) < ngram:
        return False
    passage_grams = {tuple(passage_words[i : i + ngram]) for i in range(len(passage_words) - ngram + 1)}
    query_grams = [tuple(query_words[i : i + ngram]) for i in range(len(query_words) - ngram + 1)]
    found = sum(gram in passage_grams for gram in query_grams)
    return found / len(query_grams) >= max_overlap


# ------------------------------------------------------------------------------------------------ near duplicates

_MERSENNE_61 = np.uint64((1 << 61) - 1)
_HASH_MASK_32 = np.uint64(0xFFFFFFFF)


class DuplicateMatch(NamedTuple):
    """An earlier text that a new one duplicates."""

    key: str
    similarity: float
    """Exact Jaccard similarity of the shingle sets (1.0 for an exact duplicate)."""
    exact: bool
    """The two texts are equal after :func:`normalize_text`."""


@dataclass
class _Prepared:
    normalized: str
    digest: bytes
    shingles: np.ndarray  # sorted unique uint64 shingle hashes
    signature: np.ndarray | None  # MinHash signature (None when there are no shingles)
    markers: frozenset[str]  # numbers and single letters, which must agree (see exact_markers)


@functools.lru_cache(maxsize=8)
def _hash_parameters(num_perm: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``(a, b)`` of the MinHash functions h(x) = (a·x + b) mod (2^61 − 1), shared by indexes with equal settings.

    With a, b, x < 2^32, a·x + b < 2^64: exact in uint64.
    """
    rng = np.random.default_rng(seed)
    a = rng.integers(1, 1 << 32, size=num_perm, dtype=np.uint64)
    b = rng.integers(0, 1 << 32, size=num_perm, dtype=np.uint64)
    a.flags.writeable = False
    b.flags.writeable = False
    return a, b


def _optimal_bands(num_perm: int, threshold: float, min_recall: float = 0.99) -> tuple[int, int]:
    """(bands, rows): the most selective banding whose candidate probability at ``threshold`` is ≥ ``min_recall``."""
    best = (num_perm, 1)
    for rows in range(1, num_perm + 1):
        bands = num_perm // rows
        if bands < 1:
            break
        if 1.0 - (1.0 - threshold**rows) ** bands >= min_recall:
            best = (bands, rows)
    return best


class NearDuplicateIndex:
    """Near-duplicate detection for short texts: MinHash + LSH banding, verified with the exact Jaccard.

    Texts are normalised (:func:`normalize_text`), reduced to their words (so ``"type-2"`` and ``"type 2"``
    agree) and cut into shingles: character ``shingle``-grams of the word string (``unit="char"``, the default:
    robust for short queries) or word ``shingle``-grams (``unit="word"``). Exact duplicates after normalisation
    are found first through a hash. Otherwise the MinHash signature (``num_perm`` universal hash functions,
    fixed ``seed``: the same input always gives the same answer) is split into bands; texts sharing a band are
    candidates, and a candidate is reported only if its exact Jaccard similarity is ≥ ``threshold``. The
    banding is chosen so that a pair exactly at the threshold becomes a candidate with probability ≥ 0.99;
    adding ``N`` texts costs ~O(N) when few of them are similar.

    Character shingles barely notice a changed number or letter (``"symptoms of type 1 diabetes"`` /
    ``"... type 2 ..."`` have Jaccard 0.85, ``"hepatitis B"`` / ``"hepatitis C"`` questions 0.94), yet those are
    different queries. So with ``exact_markers`` (the default) two texts are near-duplicates only if they also
    have the same *marker* tokens: tokens containing a digit and one-letter tokens other than "a" and "i".

    :param threshold: Jaccard similarity (of the shingle sets) from which two texts are near-duplicates.
    :param shingle: Shingle length in characters (``unit="char"``) or words (``unit="word"``).
    :param unit: ``"char"`` or ``"word"`` shingles.
    :param num_perm: Number of MinHash functions.
    :param seed: Seed of the hash functions.
    :param exact_markers: Require equal numbers and single letters (see above); ``False`` gives plain Jaccard.
    """

    def __init__(
        self,
        threshold: float = 0.85,
        shingle: int = 3,
        *,
        unit: Literal["char", "word"] = "char",
        num_perm: int = 64,
        seed: int = 0,
        exact_markers: bool = True,
    ) -> None:
        if not 0.0 < threshold <= 1.0:
            raise ValueError(f"threshold must be in (0, 1], got {threshold}.")
        if shingle < 1:
            raise ValueError(f"shingle must be at least 1, got {shingle}.")
        if unit not in ("char", "word"):
            raise ValueError(f'unit must be "char" or "word", got {unit!r}.')
        if num_perm < 1:
            raise ValueError(f"num_perm must be at least 1, got {num_perm}.")
        self.threshold = threshold
        self.shingle = shingle
        self.unit = unit
        self.num_perm = num_perm
        self.exact_markers = exact_markers
        self.bands, self.rows = _optimal_bands(num_perm, threshold)
        self._a, self._b = _hash_parameters(num_perm, seed)
        self._exact: dict[bytes, str] = {}
        self._shingles: dict[str, np.ndarray] = {}
        self._markers: dict[str, frozenset[str]] = {}
        self._normalized: dict[str, str] = {}
        self._buckets: dict[bytes, list[str]] = {}  # band number + band values -> keys

    def __len__(self) -> int:
        return len(self._shingles)

    def __contains__(self, key: object) -> bool:
        return key in self._shingles

    def shingles(self, text: str) -> set[str]:
        """The shingle set of ``text`` (exposed for tests and for brute-force comparisons)."""
        return self._shingle_set(words(normalize_text(text)))

    def _shingle_set(self, tokens: list[str]) -> set[str]:
        if not tokens:
            return set()
        if self.unit == "word":
            if len(tokens) <= self.shingle:
                return {" ".join(tokens)}
            return {" ".join(tokens[i : i + self.shingle]) for i in range(len(tokens) - self.shingle + 1)}
        joined = " ".join(tokens)
        if len(joined) <= self.shingle:
            return {joined}
        return {joined[i : i + self.shingle] for i in range(len(joined) - self.shingle + 1)}

    def jaccard(self, a: str, b: str) -> float:
        """The exact Jaccard similarity of the shingle sets of two texts."""
        sa, sb = self.shingles(a), self.shingles(b)
        if not sa and not sb:
            return 1.0
        return len(sa & sb) / len(sa | sb)

    def _prepare(self, text: str) -> _Prepared:
        normalized = normalize_text(text)
        digest = hashlib.sha1(normalized.encode("utf-8")).digest()
        tokens = words(normalized)
        hashes = sorted(
            {
                int.from_bytes(hashlib.blake2b(s.encode("utf-8"), digest_size=8).digest(), "little")
                for s in self._shingle_set(tokens)
            }
        )
        shingles = np.array(hashes, dtype=np.uint64)
        signature = None
        if shingles.size:
            x = shingles & _HASH_MASK_32
            values = (np.outer(self._a, x) + self._b[:, None]) % _MERSENNE_61
            signature = values.min(axis=1)
        markers = frozenset(
            t for t in tokens if (len(t) == 1 and t.isascii() and t not in "ai") or any(c.isdigit() for c in t)
        )
        return _Prepared(normalized, digest, shingles, signature, markers)

    def _band_keys(self, signature: np.ndarray) -> list[bytes]:
        return [
            i.to_bytes(2, "little") + signature[i * self.rows : (i + 1) * self.rows].tobytes()
            for i in range(self.bands)
        ]

    def _candidates(self, item: _Prepared) -> list[DuplicateMatch]:
        """Every stored text sharing an LSH band with ``item`` and passing the exact-Jaccard (and marker) check."""
        if item.signature is None:
            return []
        found: list[DuplicateMatch] = []
        seen: set[str] = set()
        for band_key in self._band_keys(item.signature):
            for key in self._buckets.get(band_key, ()):
                if key in seen:
                    continue
                seen.add(key)
                if self.exact_markers and self._markers[key] != item.markers:
                    continue
                other = self._shingles[key]
                common = np.intersect1d(item.shingles, other, assume_unique=True).size
                similarity = common / (item.shingles.size + other.size - common)
                if similarity >= self.threshold:
                    found.append(DuplicateMatch(key, float(similarity), False))
        return found

    def _find(self, item: _Prepared) -> DuplicateMatch | None:
        exact = self._exact.get(item.digest)
        if exact is not None:
            return DuplicateMatch(exact, 1.0, True)
        return max(self._candidates(item), key=lambda match: match.similarity, default=None)

    def _insert(self, key: str, item: _Prepared) -> None:
        if key in self._shingles:
            raise ValueError(f"key {key!r} is already in the near-duplicate index; every text needs its own key.")
        self._exact.setdefault(item.digest, key)
        self._shingles[key] = item.shingles
        self._markers[key] = item.markers
        self._normalized[key] = item.normalized
        if item.signature is not None:
            for band_key in self._band_keys(item.signature):
                self._buckets.setdefault(band_key, []).append(key)

    def find(self, text: str) -> DuplicateMatch | None:
        """The most similar stored text that ``text`` duplicates (exactly or nearly), without storing ``text``."""
        return self._find(self._prepare(text))

    def matches(self, text: str) -> list[DuplicateMatch]:
        """Every stored near-duplicate of ``text`` (most similar first), without storing ``text``.

        Found through LSH (a pair at the threshold is found with probability ≥ 0.99) and verified with the exact
        Jaccard; ``exact`` is set for stored texts equal to ``text`` after normalisation.
        """
        item = self._prepare(text)
        found = [m._replace(exact=self._normalized[m.key] == item.normalized) for m in self._candidates(item)]
        return sorted(found, key=lambda match: (-match.similarity, match.key))

    def add(self, key: str, text: str) -> str | None:
        """Store ``text`` under ``key`` unless it duplicates a stored text; then return that text's key instead.

        :returns: ``None`` when ``text`` is new (it is stored), else the key of the existing (near-)duplicate
            (``text`` is not stored).
        :raises ValueError: ``key`` is already used.
        """
        item = self._prepare(text)
        match = self._find(item)
        if match is not None:
            return match.key
        self._insert(key, item)
        return None

    def force_add(self, key: str, text: str) -> None:
        """Store ``text`` under ``key`` even if it duplicates a stored text (e.g. to reload accepted queries)."""
        self._insert(key, self._prepare(text))


# ------------------------------------------------------------------------------------------------- query filter


@dataclass
class QueryFilter:
    """All query checks in one place, with a reason code per rejection and counters.

    :meth:`check` runs, in this order: ``"empty"`` (fewer than ``min_words`` words), ``"truncated"``
    (:func:`looks_truncated`), ``"too_long"`` (more than ``max_words`` words), ``"copies_passage"``
    (:func:`copies_passage`, only when the passage is given), ``"duplicate"`` (equal after
    :func:`normalize_text` to an accepted query) and ``"near_duplicate"`` (:class:`NearDuplicateIndex`). The
    first failing check is the reason. Accepted queries are registered for duplicate detection; rejected ones
    are not (so a rejected query never blocks a later good one).

    :param min_words: Fewer words than this is ``"empty"``.
    :param max_words: More words than this is ``"too_long"``.
    :param max_overlap: :func:`copies_passage` threshold.
    :param ngram: :func:`copies_passage` n-gram length.
    :param copy_min_words: Queries with fewer words are never flagged as copies (1 = check every query; raise
        it to allow short keyword queries that are a phrase of their passage).
    :param near_duplicate_threshold: Jaccard threshold of the near-duplicate index; ``None`` disables
        near-duplicate detection (exact duplicates are still rejected).
    :param shingle: Character shingle length of the near-duplicate index.
    :param scope: ``"global"``: a query is a duplicate of any accepted query; ``"per_passage"``: only of the
        accepted queries of the same passage (pass ``passage_id`` or ``passage`` to :meth:`check`).
    :param counts: Reason code → number of rejections, plus ``"accepted"``.
    """

    min_words: int = 2
    max_words: int = 64
    max_overlap: float = 0.8
    ngram: int = 5
    copy_min_words: int = 1
    near_duplicate_threshold: float | None = 0.85
    shingle: int = 3
    scope: Literal["global", "per_passage"] = "global"
    counts: Counter[str] = field(default_factory=Counter)
    last_duplicate_of: str | None = field(default=None, init=False)
    """After a ``"duplicate"`` / ``"near_duplicate"`` verdict: the key of the accepted query it duplicates."""
    _indexes: dict[str, NearDuplicateIndex] = field(default_factory=dict, init=False, repr=False)
    _registered: int = field(default=0, init=False, repr=False)

    def __post_init__(self) -> None:
        if self.scope not in ("global", "per_passage"):
            raise ValueError(f'scope must be "global" or "per_passage", got {self.scope!r}.')
        if self.min_words < 0 or self.max_words < max(self.min_words, 1):
            raise ValueError(
                f"need 0 <= min_words <= max_words (and max_words >= 1), got {self.min_words} and {self.max_words}."
            )

    def _index(self, passage: str | None, passage_id: str | None) -> NearDuplicateIndex:
        if self.scope == "global":
            scope_key = ""
        elif passage_id is not None:
            scope_key = "id:" + passage_id
        elif passage is not None:
            scope_key = "text:" + hashlib.sha1(passage.encode("utf-8")).hexdigest()
        else:
            raise ValueError(
                'QueryFilter(scope="per_passage") needs to know the passage: pass passage_id=... or passage=... '
                'to check() / register(), or use scope="global".'
            )
        index = self._indexes.get(scope_key)
        if index is None:
            threshold = self.near_duplicate_threshold if self.near_duplicate_threshold is not None else 1.0
            index = self._indexes[scope_key] = NearDuplicateIndex(threshold, self.shingle)
        return index

    def _key(self, query_id: str | None) -> str:
        self._registered += 1
        return query_id if query_id is not None else f"#{self._registered}"

    def check(
        self,
        query: str | None,
        *,
        passage: str | None = None,
        finish_reason: str | None = None,
        passage_id: str | None = None,
        query_id: str | None = None,
    ) -> str | None:
        """The reason ``query`` is rejected (one of :data:`REASONS`), or ``None`` if it is accepted (and registered).

        :param query: The generated query.
        :param passage: Its source passage (enables ``"copies_passage"``; identifies the passage for
            ``scope="per_passage"`` when ``passage_id`` is not given).
        :param finish_reason: The LLM's finish reason (``"length"`` means truncated).
        :param passage_id: Identifies the source passage for ``scope="per_passage"``.
        :param query_id: Key to register an accepted query under (reported by :attr:`last_duplicate_of`).
        """
        self.last_duplicate_of = None
        reason = self._reason(
            query, passage=passage, finish_reason=finish_reason, passage_id=passage_id, query_id=query_id
        )
        self.counts[reason or "accepted"] += 1
        return reason

    def _reason(
        self,
        query: str | None,
        *,
        passage: str | None,
        finish_reason: str | None,
        passage_id: str | None,
        query_id: str | None,
    ) -> str | None:
        index = self._index(passage, passage_id)  # first: a missing passage is an error even for a bad query
        if query is None or is_empty(query, self.min_words):
            return "empty"
        if looks_truncated(query, finish_reason):
            return "truncated"
        n_words = len(words(normalize_text(query)))
        if n_words > self.max_words:
            return "too_long"
        if (
            passage is not None
            and n_words >= self.copy_min_words
            and copies_passage(query, passage, max_overlap=self.max_overlap, ngram=self.ngram)
        ):
            return "copies_passage"
        item = index._prepare(query)
        match = index._find(item)
        if match is not None and (match.exact or self.near_duplicate_threshold is not None):
            self.last_duplicate_of = match.key
            return "duplicate" if match.exact else "near_duplicate"
        index._insert(self._key(query_id), item)
        return None

    def register(
        self, query: str, *, passage: str | None = None, passage_id: str | None = None, query_id: str | None = None
    ) -> None:
        """Register an already accepted query (e.g. from a resumed run) for duplicate detection, without checks."""
        self._index(passage, passage_id).force_add(self._key(query_id), query)

    def summary(self) -> str:
        """One line: accepted and rejected counts by reason."""
        total = sum(self.counts.values())
        rejected = ", ".join(f"{r} {self.counts[r]}" for r in REASONS if self.counts[r])
        return f"{self.counts['accepted']} of {total} queries accepted" + (
            f"; rejected: {rejected}" if rejected else ""
        )


# ---------------------------------------------------------------------------------------------------- round trip


def round_trip_filter(
    queries: Iterable[tuple[str, str, str]],
    retrieve: Callable[[list[str]], list[list[str]]],
    *,
    k: int = 10,
    batch_size: int = 64,
) -> tuple[list[str], dict[str, int | None]]:
    """Round-trip consistency: keep a query only if the retriever ranks its source document in the top ``k``.

    :param queries: ``(query_id, query_text, source_doc_id)`` triples.
    :param retrieve: Takes a batch of query texts and returns, for each, the ranked document ids (best first;
        it may return more or fewer than ``k``).
    :param k: The source document must be at rank ≤ ``k``.
    :param batch_size: Number of queries per ``retrieve`` call.
    :returns: ``(kept_ids, dropped)``: the ids of the kept queries in input order, and for every dropped query
        the 1-based rank of its source document in what the retriever returned (``None`` if not returned).
    :raises ValueError: ``retrieve`` returned the wrong number of result lists.
    """
    if k < 1:
        raise ValueError(f"k must be at least 1, got {k}.")
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}.")
    items = list(queries)
    kept: list[str] = []
    dropped: dict[str, int | None] = {}
    for start in range(0, len(items), batch_size):
        batch = items[start : start + batch_size]
        results = retrieve([text for _, text, _ in batch])
        if len(results) != len(batch):
            raise ValueError(
                f"retrieve() returned {len(results)} result lists for {len(batch)} queries; it must return one ranked "
                "list of document ids per query, in the same order."
            )
        for (query_id, _, source_id), ranked in zip(batch, results, strict=True):
            ids = [str(doc_id) for doc_id in ranked]
            rank = ids.index(source_id) + 1 if source_id in ids else None
            if rank is not None and rank <= k:
                kept.append(query_id)
            else:
                dropped[query_id] = rank
    return kept, dropped
