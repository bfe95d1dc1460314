"""Retrieval systems named by a SPEC string, run over a whole dataset split.

SPEC grammar (parameters after ``?`` are optional, ``&``-separated)::

    bm25[?k1=1.2&b=0.75&stemmer=english|none&backend=bm25s|haystack]
    dense:EXPORTED_DIR[?precision=fp32|int8&max_length=N&batch_size=N]   # our ONNX embedders
    st:MODEL_NAME_OR_DIR[?batch_size=N&max_length=N]                      # sentence-transformers (torch)
    hybrid:EXPORTED_DIR[?k=60&...] | hybrid:st:MODEL[...]                # BM25 + dense, reciprocal rank fusion
    FIRST_STAGE+rerank:EXPORTED_RANKER_DIR[?top_k=100&precision=..&max_length=N&batch_size=N]

Dense systems go through :class:`SyntrieverDocumentEmbedder` (ONNX, torch-free) or sentence-transformers;
rerankers through :class:`SyntrieverRanker`. Corpus embeddings are cached on disk per (model, corpus), and
within one process every first stage is computed once however many systems share it.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from syntriever_haystack.data.beir import BeirDataset
from syntriever_haystack.errors import SyntrieverError
from syntriever_haystack.evaluate.metrics import Run, rank_documents
from syntriever_haystack.specs import StageSpec, SystemSpec, SystemSpecError, parse_system

__all__ = [
    "EmbeddingCache",
    "StageSpec",
    "StageTiming",
    "SystemRunner",
    "SystemSpec",
    "SystemSpecError",
    "check_system",
    "parse_system",
]


def check_system(system: SystemSpec) -> None:
    """Fail fast, before any work, if a model folder named by ``system`` is missing or of the wrong kind."""
    system.check()


# --------------------------------------------------------------------------- embeddings cache


def _hash_files(paths: Iterable[Path]) -> str:
    digest = hashlib.sha256()
    for path in sorted(paths):
        digest.update(path.name.encode())
        with path.open("rb") as handle:
            while chunk := handle.read(1 << 20):
                digest.update(chunk)
    return digest.hexdigest()


def onnx_model_fingerprint(model_dir: Path, onnx_file: Path) -> str:
    """The content hash that keys cached corpus embeddings of an exported model: the ONNX file in use, plus the
    folder's ``tokenizer.json`` and ``syntriever.json`` (so a re-export or a new tokenizer is a new key)."""
    extra = [p for p in (model_dir / n for n in ("tokenizer.json", "syntriever.json")) if p.exists()]
    return _hash_files([onnx_file, *extra])


def default_cache_dir() -> Path:
    """``$SYNTRIEVER_CACHE`` or ``~/.cache/syntriever``."""
    return Path(os.environ.get("SYNTRIEVER_CACHE", Path.home() / ".cache" / "syntriever"))


@dataclass
class EmbeddingCache:
    """Corpus embeddings cached per (model fingerprint, embedding settings, corpus fingerprint).

    Files are ``<key>.npy`` (float32) plus ``<key>.json`` (what produced them), written atomically. With
    ``directory=None`` embeddings are only shared within the process.
    """

    directory: Path | None
    hits: int = 0
    misses: int = 0
    _memory: dict[str, np.ndarray] = field(default_factory=dict)

    def get_or_compute(
        self, key_parts: dict[str, Any], rows: int, compute: Callable[[], np.ndarray]
    ) -> tuple[np.ndarray, bool]:
        """Return the cached array for ``key_parts`` or compute, store and return it; second value: cache hit."""
        key = hashlib.sha256(json.dumps(key_parts, sort_keys=True).encode()).hexdigest()[:32]
        if key in self._memory:
            self.hits += 1
            return self._memory[key], True
        if self.directory is not None:
            path = self.directory / f"{key}.npy"
            if path.is_file():
                try:
                    array = np.load(path)
                except (OSError, ValueError):
                    array = None
                if array is not None and array.shape[0] == rows:
                    self.hits += 1
                    self._memory[key] = array
                    return array, True
        self.misses += 1
        array = np.ascontiguousarray(compute(), dtype=np.float32)
        self._memory[key] = array
        if self.directory is not None:
            self.directory.mkdir(parents=True, exist_ok=True)
            tmp = self.directory / f".{key}.{os.getpid()}.tmp.npy"
            np.save(tmp, array)
            os.replace(tmp, self.directory / f"{key}.npy")
            meta = {**key_parts, "shape": list(array.shape), "created": time.strftime("%Y-%m-%dT%H:%M:%S")}
            (self.directory / f"{key}.json").write_text(json.dumps(meta, indent=2), encoding="utf-8")
        return array, False


# --------------------------------------------------------------------------- search helpers


def top_k_search(
    queries: np.ndarray, docs: np.ndarray, k: int, *, block: int | None = None, memory_budget: int = 256 << 20
) -> tuple[np.ndarray, np.ndarray]:
    """Exact inner-product top-``k`` for every query row, best first: (indices, scores), each ``(nq, k)``.

    Queries are processed in blocks sized so the similarity block stays within ``memory_budget`` bytes.
    """
    n_docs = docs.shape[0]
    k = min(k, n_docs)
    n = queries.shape[0]
    if block is None:
        block = max(1, memory_budget // (12 * max(n_docs, 1)))  # float32 sims + int64 partition indices
    indices = np.empty((n, k), dtype=np.int64)
    scores = np.empty((n, k), dtype=np.float32)
    for start in range(0, n, block):
        sims = queries[start : start + block] @ docs.T
        if k < n_docs:
            part = np.argpartition(sims, n_docs - k, axis=1)[:, n_docs - k :]
        else:
            part = np.broadcast_to(np.arange(n_docs), sims.shape)
        part_scores = np.take_along_axis(sims, part, axis=1)
        del sims
        order = np.argsort(-part_scores, axis=1, kind="stable")
        indices[start : start + block] = np.take_along_axis(part, order, axis=1)
        scores[start : start + block] = np.take_along_axis(part_scores, order, axis=1)
    return indices, scores


def reciprocal_rank_fusion(runs: list[Run], *, k: int = 60, depth: int = 100) -> Run:
    """Fuse runs by reciprocal rank: ``score(d) = Σ 1 / (k + rank(d))`` with ranks starting at 1."""
    fused: Run = {}
    for query_id in {q for run in runs for q in run}:
        totals: dict[str, float] = {}
        for run in runs:
            ranked = rank_documents(run.get(query_id, {}))
            for rank, (doc_id, _) in enumerate(ranked, start=1):
                totals[doc_id] = totals.get(doc_id, 0.0) + 1.0 / (k + rank)
        best = rank_documents(totals)[:depth]
        fused[query_id] = dict(best)
    return fused


# --------------------------------------------------------------------------- the runner


@dataclass
class StageTiming:
    """Wall time of one stage; ``cached`` when the corpus embeddings came from the cache."""

    stage: str
    seconds: float
    cached: bool = False


class SystemRunner:
    """Runs systems over one dataset split, sharing corpus embeddings and first-stage runs between them.

    :param dataset: The dataset split.
    :param depth: Documents retrieved per query (at least the largest metric cut-off).
    :param include_title: Index ``title + " " + text`` (BEIR convention) instead of the text alone.
    :param cache: Embedding cache (``EmbeddingCache(None)`` for memory only).
    :param progress: Show progress bars.
    """

    def __init__(
        self,
        dataset: BeirDataset,
        *,
        depth: int = 100,
        include_title: bool = True,
        cache: EmbeddingCache | None = None,
        progress: bool = True,
    ) -> None:
        self.dataset = dataset
        self.depth = depth
        self.include_title = include_title
        self.cache = cache or EmbeddingCache(None)
        self.progress = progress
        self.doc_ids = dataset.doc_ids
        self.doc_texts = dataset.doc_texts(include_title=include_title)
        self.text_of = dict(zip(self.doc_ids, self.doc_texts, strict=True))
        self.query_ids = list(dataset.queries)
        self.query_texts = [dataset.queries[q] for q in self.query_ids]
        self._runs: dict[str, tuple[Run, list[StageTiming]]] = {}
        # Reranker scores per (query, document), shared by every system that reranks with the same model: the
        # top-100 lists of several first stages overlap heavily, and a pair is scored once.
        self._pair_scores: dict[str, dict[tuple[str, str], float]] = {}
        self._rankers: dict[str, Any] = {}

    # public ----------------------------------------------------------------
    def run(self, system: SystemSpec) -> tuple[Run, list[StageTiming]]:
        """Run ``system``; returns the run and the timing of each stage (shared stages are computed once)."""
        keys = system.prefixes()
        if keys[0] not in self._runs:
            self._runs[keys[0]] = self._first_stage(system.first_stage)
        for i, reranker in enumerate(system.rerankers, start=1):
            if keys[i] not in self._runs:
                previous, timings = self._runs[keys[i - 1]]
                started = time.perf_counter()
                reranked = self._rerank(previous, reranker)
                timing = StageTiming(f"rerank {reranker.target}", time.perf_counter() - started)
                self._runs[keys[i]] = (reranked, [*timings, timing])
        return self._runs[keys[-1]]

    # first stages ----------------------------------------------------------
    def _first_stage(self, stage: StageSpec) -> tuple[Run, list[StageTiming]]:
        started = time.perf_counter()
        if stage.kind == "bm25":
            run = self._bm25(stage.options)
            return run, [StageTiming("bm25", time.perf_counter() - started)]
        if stage.kind in ("dense", "st"):
            return self._dense(stage)
        if stage.kind == "hybrid":
            assert stage.inner is not None
            options = stage.options
            candidates = int(options.get("candidates", max(self.depth, 100)))
            bm25_run, bm25_t = self._cached_first_stage(StageSpec("bm25"), candidates)
            dense_run, dense_t = self._cached_first_stage(stage.inner, candidates)
            started = time.perf_counter()
            runs = [_truncate(bm25_run, candidates), _truncate(dense_run, candidates)]
            fused = reciprocal_rank_fusion(runs, k=int(options.get("k", 60)), depth=self.depth)
            return fused, [*bm25_t, *dense_t, StageTiming("rrf", time.perf_counter() - started)]
        raise SystemSpecError(f"unknown first stage {stage.kind!r}")

    def _cached_first_stage(self, stage: StageSpec, depth: int) -> tuple[Run, list[StageTiming]]:
        key = str(stage)
        if key in self._runs and depth <= self.depth:
            return self._runs[key]
        saved, self.depth = self.depth, max(self.depth, depth)
        try:
            result = self._first_stage(stage)
        finally:
            self.depth = saved
        if depth <= saved:
            self._runs[key] = result
        return result

    def _bm25(self, options: dict[str, str]) -> Run:
        backend = options.get("backend", "bm25s")
        if backend == "haystack":
            return self._bm25_haystack()
        if backend != "bm25s":
            raise SystemSpecError(f"unknown bm25 backend {backend!r}; use bm25s or haystack")
        try:
            import bm25s
        except ImportError as exc:
            raise SyntrieverError(
                f"bm25 needs the eval extra ({exc.name} is missing): pip install 'syntriever-haystack[eval]'"
            ) from None
        stemmer_name = options.get("stemmer", "english")
        stemmer = None
        if stemmer_name != "none":
            try:
                import Stemmer
            except ImportError:
                raise SyntrieverError(
                    "bm25 stems English words with PyStemmer, which is not installed: "
                    "pip install 'syntriever-haystack[eval]' (or use bm25?stemmer=none)"
                ) from None
            stemmer = Stemmer.Stemmer(stemmer_name)
        stopwords = options.get("stopwords", "en")
        stop: str | None = None if stopwords == "none" else stopwords
        retriever = bm25s.BM25(
            method=options.get("method", "lucene"), k1=float(options.get("k1", 1.2)), b=float(options.get("b", 0.75))
        )
        corpus_tokens = bm25s.tokenize(self.doc_texts, stopwords=stop, stemmer=stemmer, show_progress=False)
        retriever.index(corpus_tokens, show_progress=False)
        query_tokens = bm25s.tokenize(self.query_texts, stopwords=stop, stemmer=stemmer, show_progress=False)
        k = min(self.depth, len(self.doc_ids))
        run: Run = {}
        # bm25s returns empty token lists for queries made only of stop words; score those as "no results".
        results, scores = retriever.retrieve(query_tokens, k=k, show_progress=False, n_threads=0)
        for row, query_id in enumerate(self.query_ids):
            run[query_id] = {self.doc_ids[j]: float(s) for j, s in zip(results[row], scores[row], strict=True) if s > 0}
        return run

    def _bm25_haystack(self) -> Run:
        from haystack import Document
        from haystack.components.retrievers.in_memory import InMemoryBM25Retriever
        from haystack.document_stores.in_memory import InMemoryDocumentStore

        store = InMemoryDocumentStore(bm25_algorithm="BM25Okapi")
        store.write_documents([Document(id=i, content=t) for i, t in zip(self.doc_ids, self.doc_texts, strict=True)])
        retriever = InMemoryBM25Retriever(document_store=store, top_k=self.depth)
        run: Run = {}
        for query_id, text in self._progress(list(zip(self.query_ids, self.query_texts, strict=True)), "BM25"):
            docs = retriever.run(query=text)["documents"]
            run[query_id] = {d.id: float(d.score) for d in docs if d.score is not None and d.score > 0}
        return run

    def _dense(self, stage: StageSpec) -> tuple[Run, list[StageTiming]]:
        started = time.perf_counter()
        if stage.kind == "dense":
            doc_vectors, query_vectors, cached = self._onnx_vectors(stage)
        else:
            doc_vectors, query_vectors, cached = self._st_vectors(stage)
        embed_time = time.perf_counter() - started
        started = time.perf_counter()
        indices, scores = top_k_search(query_vectors, doc_vectors, self.depth)
        run: Run = {
            query_id: {self.doc_ids[j]: float(s) for j, s in zip(indices[row], scores[row], strict=True)}
            for row, query_id in enumerate(self.query_ids)
        }
        return run, [
            StageTiming(f"embed {stage.kind}:{stage.target}", embed_time, cached),
            StageTiming("search", time.perf_counter() - started),
        ]

    def _corpus_key(self) -> dict[str, Any]:
        return {
            "corpus": self.dataset.fingerprint(),
            "corpus_name": self.dataset.name,
            "documents": len(self.doc_ids),
            "include_title": self.include_title,
        }

    def _onnx_vectors(self, stage: StageSpec) -> tuple[np.ndarray, np.ndarray, bool]:
        from haystack import Document

        from haystack_integrations.components.embedders.syntriever import SyntrieverDocumentEmbedder
        from syntriever_haystack.runtime.metadata import ModelMetadata

        options = stage.options
        metadata = ModelMetadata.load(stage.target)
        precision = options.get("precision", "fp32")
        file_name = options.get("file_name")
        onnx_file = Path(stage.target) / (file_name or metadata.files.get(precision, ""))
        if not onnx_file.is_file():
            raise SystemSpecError(
                f"{stage.target} has no {precision} ONNX file; exported precisions: {', '.join(metadata.files)}"
            )
        max_length = int(options["max_length"]) if "max_length" in options else None
        batch_size = int(options.get("batch_size", 32))
        fingerprint = onnx_model_fingerprint(Path(stage.target), onnx_file)

        def embedder(prefix: str) -> SyntrieverDocumentEmbedder:
            component = SyntrieverDocumentEmbedder(
                model=stage.target,
                precision=precision,  # type: ignore[arg-type]
                file_name=file_name,
                max_length=max_length,
                batch_size=batch_size,
                prefix=prefix,
                progress_bar=self.progress,
            )
            component.warm_up()
            return component

        def embed(texts: list[str], prefix: str) -> np.ndarray:
            docs = [Document(id=str(i), content=t) for i, t in enumerate(texts)]
            out = embedder(prefix).run(documents=docs)["documents"]
            return np.asarray([d.embedding for d in out], dtype=np.float32)

        key = {"model": fingerprint, "precision": precision, "max_length": max_length, **self._corpus_key()}
        key["prefix"] = metadata.document_prefix
        doc_vectors, cached = self.cache.get_or_compute(
            key, len(self.doc_ids), lambda: embed(self.doc_texts, metadata.document_prefix)
        )
        query_vectors = embed(self.query_texts, metadata.query_prefix)
        if metadata.similarity == "cosine" and not metadata.normalize:
            doc_vectors = _l2(doc_vectors)
            query_vectors = _l2(query_vectors)
        return doc_vectors, query_vectors, cached

    def _st_vectors(self, stage: StageSpec) -> tuple[np.ndarray, np.ndarray, bool]:
        from syntriever_haystack.models import resolve_model

        options = stage.options
        source = resolve_model(stage.target)
        local = Path(source)
        if local.is_dir():
            weights = [
                p
                for p in local.rglob("*")
                if p.is_file() and p.suffix in {".safetensors", ".bin", ".json", ".txt", ".model"}
            ]
            fingerprint = _hash_files(weights) if weights else str(local.resolve())
        else:
            fingerprint = source
        try:
            from sentence_transformers import SentenceTransformer
        except ImportError:
            raise SyntrieverError(
                "st: systems need sentence-transformers: pip install 'syntriever-haystack[train]', or export the "
                "model with `syntriever export` and evaluate it as dense:DIR"
            ) from None
        batch_size = int(options.get("batch_size", 32))
        model_holder: list[Any] = []

        def model() -> Any:
            if not model_holder:
                m = SentenceTransformer(source, device="cpu")
                if "max_length" in options:
                    m.max_seq_length = int(options["max_length"])
                model_holder.append(m)
            return model_holder[0]

        def encode(texts: list[str], *, query: bool) -> np.ndarray:
            m = model()
            fn = m.encode_query if query and hasattr(m, "encode_query") else m.encode
            if not query and hasattr(m, "encode_document"):
                fn = m.encode_document
            vectors = fn(texts, batch_size=batch_size, show_progress_bar=self.progress, convert_to_numpy=True)
            return np.asarray(vectors, dtype=np.float32)

        key = {"model": fingerprint, "backend": "sentence-transformers", "max_length": options.get("max_length")}
        key.update(self._corpus_key())
        doc_vectors, cached = self.cache.get_or_compute(
            key, len(self.doc_ids), lambda: encode(self.doc_texts, query=False)
        )
        query_vectors = encode(self.query_texts, query=True)
        if getattr(model(), "similarity_fn_name", "cosine") in ("cosine", None):
            doc_vectors, query_vectors = _l2(doc_vectors), _l2(query_vectors)
        return doc_vectors, query_vectors, cached

    # reranking --------------------------------------------------------------
    def _rerank(self, previous: Run, stage: StageSpec) -> Run:
        from haystack import Document

        from haystack_integrations.components.rankers.syntriever import SyntrieverRanker

        options = stage.options
        top_k = int(options.get("top_k", 100))
        model_key = str(StageSpec(stage.kind, stage.target, tuple(p for p in stage.params if p[0] != "top_k")))
        if model_key not in self._rankers:
            ranker = SyntrieverRanker(
                model=stage.target,
                precision=options.get("precision", "fp32"),  # type: ignore[arg-type]
                file_name=options.get("file_name"),
                max_length=int(options["max_length"]) if "max_length" in options else None,
                batch_size=int(options.get("batch_size", 32)),
                top_k=top_k,
            )
            ranker.warm_up()
            self._rankers[model_key] = ranker
        ranker = self._rankers[model_key]
        known = self._pair_scores.setdefault(model_key, {})
        run: Run = {}
        for query_id, query in self._progress(list(zip(self.query_ids, self.query_texts, strict=True)), "Reranking"):
            ranked = rank_documents(previous.get(query_id, {}))
            head, tail = ranked[:top_k], ranked[top_k:]
            if not head:
                run[query_id] = {}
                continue
            todo = [Document(id=d, content=self.text_of[d]) for d, _ in head if (query_id, d) not in known]
            if todo:
                out = ranker.run(query=query, documents=todo, top_k=len(todo), scale_score=False)["documents"]
                for d in out:
                    known[(query_id, d.id)] = float(d.score if d.score is not None else 0.0)
            scores = {d: known[(query_id, d)] for d, _ in head}
            # Documents below the reranking depth keep their first-stage order, below every reranked one.
            floor = min(scores.values()) - 1.0
            for i, (doc_id, _) in enumerate(tail):
                scores[doc_id] = floor - i
            run[query_id] = scores
        return run

    def _progress(self, items: list[Any], desc: str) -> Any:
        from tqdm.auto import tqdm

        return tqdm(items, desc=desc, disable=not self.progress, unit="query")


def _truncate(run: Run, n: int) -> Run:
    return {q: dict(rank_documents(docs)[:n]) for q, docs in run.items()}


def _l2(vectors: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return vectors / np.clip(norms, 1e-12, None)
