"""Retrieval systems named by a SPEC string, run over a whole dataset split.

SPEC grammar (parameters after ``?`` are optional, ``&``-separated; parsed by :mod:`syntriever_haystack.specs`)::

    bm25[?k1=1.2&b=0.75&stemmer=english|none&backend=bm25s|haystack]
    dense:EXPORTED_DIR[?precision=fp32|int8&max_length=N&batch_size=N&query_batch_size=1]   # our ONNX embedders
    st:MODEL_NAME_OR_DIR[?batch_size=N&max_length=N]                      # sentence-transformers (torch)
    hybrid:EXPORTED_DIR[?candidates=N&fusion=dbsf|rrf&...] | hybrid:st:MODEL[...]  # BM25 + dense, fused
    pipeline:QUERY_PIPELINE_YAML[?top_k=N]                                # a saved Haystack query pipeline
    FIRST_STAGE+rerank:EXPORTED_RANKER_DIR[?top_k=100&precision=..&max_length=N&batch_size=N&fuse=W]
    # fuse=W: the top_k's cross-encoder scores fused (DBSF) with the first stage's, weighted W to 1

:class:`SystemRunner` orchestrates the stages, each in its own module: :mod:`.bm25`, :mod:`.dense` (ONNX,
torch-free), :mod:`.st_dense` (sentence-transformers), :mod:`.pipeline` (a saved pipeline, run by the caller's
:class:`~.pipeline.PipelineRunner`) and :mod:`.rerank`. A hybrid is fused as the served query pipelines fuse: by
distribution-based score fusion (``fusion=dbsf``, the default: :func:`.search.score_fusion`, the code of
``SyntrieverScoreFusionJoiner``) or by Haystack's ``DocumentJoiner`` (``fusion=rrf``:
:func:`.search.reciprocal_rank_fusion`). ONNX models are run through the
runtime's shared encoding rules (:mod:`syntriever_haystack.runtime.encode`), the code the serving components
run. Corpus embeddings are cached on disk per (model, corpus) (:mod:`.embedding_cache`), and within one process
every first stage is computed once however many systems share it, and every reranked pair is scored once.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from syntriever_haystack.data.beir import BeirDataset
from syntriever_haystack.evaluate.bm25 import bm25_run
from syntriever_haystack.evaluate.dense import onnx_vectors
from syntriever_haystack.evaluate.embedding_cache import (
    EmbeddingCache,
    default_cache_dir,
    onnx_model_fingerprint,
)
from syntriever_haystack.evaluate.embedding_cache import _hash_files as _hash_files  # re-exported
from syntriever_haystack.evaluate.metrics import Run
from syntriever_haystack.evaluate.pipeline import PipelineRunner, pipeline_run
from syntriever_haystack.evaluate.rerank import Reranker
from syntriever_haystack.evaluate.search import (
    dense_run,
    reciprocal_rank_fusion,
    score_fusion,
    top_k_search,
    truncate_run,
)
from syntriever_haystack.evaluate.st_dense import st_vectors
from syntriever_haystack.evaluate.texts import SplitTexts, int_option
from syntriever_haystack.specs import DEFAULT_FUSION, RRF_K, StageSpec, SystemSpec, SystemSpecError, parse_system

__all__ = [
    "EmbeddingCache",
    "PipelineRunner",
    "StageSpec",
    "StageTiming",
    "SystemRunner",
    "SystemSpec",
    "SystemSpecError",
    "check_system",
    "default_cache_dir",
    "onnx_model_fingerprint",
    "parse_system",
    "reciprocal_rank_fusion",
    "top_k_search",
]


def check_system(system: SystemSpec) -> None:
    """Fail fast, before any work, if a model folder named by ``system`` is missing or of the wrong kind."""
    system.check()


@dataclass
class StageTiming:
    """Wall time of one stage; ``cached`` when the corpus embeddings came from the cache."""

    stage: str
    seconds: float
    cached: bool = False


Result = tuple[Run, list[StageTiming]]


class SystemRunner:
    """Runs systems over one dataset split, sharing corpus embeddings and first-stage runs between them.

    :param dataset: The dataset split.
    :param depth: Documents retrieved per query (at least the largest metric cut-off).
    :param include_title: Index ``title + " " + text`` (BEIR convention) instead of the text alone.
    :param cache: Embedding cache (``EmbeddingCache(None)`` for memory only).
    :param progress: Show progress bars.
    :param pipeline_runner: Loads and searches the saved pipelines of ``pipeline:`` systems (the library does not
        load pipelines itself; see :mod:`.pipeline`).
    :param query_batch_size: Queries per ONNX call of ``dense:`` stages; ``None``: each stage's ``query_batch_size``
        (default 1, the served text embedder's). Callers that mine candidates rather than evaluate may batch.
    """

    def __init__(
        self,
        dataset: BeirDataset,
        *,
        depth: int = 100,
        include_title: bool = True,
        cache: EmbeddingCache | None = None,
        progress: bool = True,
        pipeline_runner: PipelineRunner | None = None,
        query_batch_size: int | None = None,
    ) -> None:
        self.dataset = dataset
        self.query_batch_size = query_batch_size
        self.pipeline_runner = pipeline_runner
        self.depth = depth
        self.include_title = include_title
        self.cache = cache or EmbeddingCache(None)
        self.progress = progress
        self.texts = SplitTexts.from_dataset(dataset, include_title=include_title)
        self._runs: dict[str, Result] = {}
        # One reranker per scoring model, with its (query, document) scores shared by every system that reranks
        # with it: the top-100 lists of several first stages overlap heavily, and a pair is scored once.
        self._rerankers: dict[str, Reranker] = {}

    def run(self, system: SystemSpec) -> Result:
        """Run ``system``; returns the run and the timing of each stage (shared stages are computed once)."""
        keys = system.prefixes()
        if keys[0] not in self._runs:
            self._runs[keys[0]] = self._first_stage(system.first_stage, self.depth)
        for i, stage in enumerate(system.rerankers, start=1):
            if keys[i] not in self._runs:
                previous, timings = self._runs[keys[i - 1]]
                started = time.perf_counter()
                reranked = self._reranker(stage).rerank(
                    previous,
                    int_option(stage, "top_k", 100),
                    self.texts,
                    fuse=stage.float_option("fuse", 0.0),
                    show_progress=self.progress,
                )
                timing = StageTiming(f"rerank {stage.target}", time.perf_counter() - started)
                self._runs[keys[i]] = (reranked, [*timings, timing])
        return self._runs[keys[-1]]

    def _first_stage(self, stage: StageSpec, depth: int) -> Result:
        started = time.perf_counter()
        if stage.kind == "bm25":
            run = bm25_run(stage, self.texts, depth, show_progress=self.progress)
            return run, [StageTiming("bm25", time.perf_counter() - started)]
        if stage.kind in ("dense", "st"):
            return self._dense(stage, depth)
        if stage.kind == "hybrid":
            assert stage.inner is not None
            candidates = int_option(stage, "candidates", max(depth, 100))
            bm25, bm25_timings = self._shared_first_stage(StageSpec("bm25"), candidates)
            dense, dense_timings = self._shared_first_stage(stage.inner, candidates)
            started = time.perf_counter()
            runs = [truncate_run(bm25, candidates), truncate_run(dense, candidates)]
            fusion = stage.options.get("fusion", DEFAULT_FUSION)
            if fusion == "rrf":
                fused = reciprocal_rank_fusion(runs, k=int_option(stage, "k", RRF_K), depth=depth)
            else:
                fused = score_fusion(runs, depth=depth)
            return fused, [*bm25_timings, *dense_timings, StageTiming(fusion, time.perf_counter() - started)]
        if stage.kind == "pipeline":
            run = pipeline_run(stage, self.texts, self.pipeline_runner, depth, show_progress=self.progress)
            return run, [StageTiming(f"pipeline {stage.target}", time.perf_counter() - started)]
        raise SystemSpecError(f"unknown first stage {stage.kind!r}")

    def _shared_first_stage(self, stage: StageSpec, depth: int) -> Result:
        """``stage`` at least ``depth`` deep; runs at the runner's depth are shared with the systems."""
        depth = max(self.depth, depth)
        key = str(stage)
        if depth == self.depth and key in self._runs:
            return self._runs[key]
        result = self._first_stage(stage, depth)
        if depth == self.depth:
            self._runs[key] = result
        return result

    def _dense(self, stage: StageSpec, depth: int) -> Result:
        started = time.perf_counter()
        if stage.kind == "dense":
            vectors = onnx_vectors(
                stage, self.texts, self.cache, show_progress=self.progress, query_batch_size=self.query_batch_size
            )
        else:
            vectors = st_vectors(stage, self.texts, self.cache, show_progress=self.progress)
        doc_vectors, query_vectors, cached = vectors
        embed_time = time.perf_counter() - started
        started = time.perf_counter()
        run = dense_run(self.texts.query_ids, query_vectors, self.texts.doc_ids, doc_vectors, depth)
        return run, [
            StageTiming(f"embed {stage.kind}:{stage.target}", embed_time, cached),
            StageTiming("search", time.perf_counter() - started),
        ]

    def _reranker(self, stage: StageSpec) -> Reranker:
        key = Reranker.model_key(stage)
        if key not in self._rerankers:
            self._rerankers[key] = Reranker(stage)
        return self._rerankers[key]
