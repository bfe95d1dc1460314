from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any, Literal

import numpy as np
from haystack import Document, component, default_from_dict, default_to_dict
from haystack.utils.misc import _deduplicate_documents

from syntriever_haystack.runtime.encode import RERANK_BATCH_SIZE, score_documents
from syntriever_haystack.runtime.fusion import fuse_scores
from syntriever_haystack.runtime.inputs import (
    check_count,
    check_documents,
    check_text,
    documents_texts,
    legacy_quantization,
    split_textless,
)
from syntriever_haystack.runtime.locations import resolve_path
from syntriever_haystack.runtime.onnx_model import OnnxModel, load_onnx_model


@component
class SyntrieverRanker:
    """
    Reranks Documents by relevance to a query with an exported (ONNX) cross-encoder, without torch.

    Documents are de-duplicated by id first (keeping the highest-scored copy); the returned Documents are
    new objects whose ``score`` is the cross-encoder's relevance (sigmoid of the logit when ``scale_score``), or,
    with ``first_stage_weight``, that relevance fused with the incoming (first-stage) scores.
    Pairs are sorted by length and padded per batch, so reranking 100 candidates stays fast on a CPU.

    ### Usage example

    ```python
    from haystack import Document
    from syntriever_haystack import SyntrieverRanker

    ranker = SyntrieverRanker(model="models/reranker-onnx", quantization="int8", top_k=3)
    ranker.warm_up()
    docs = [Document(content="Paris is the capital of France."), Document(content="Berlin is in Germany.")]
    print(ranker.run(query="capital of France", documents=docs)["documents"][0].content)
    # Paris is the capital of France.
    ```
    """

    def __init__(
        self,
        *,
        model: str | Path,
        quantization: Literal["auto", "fp32", "int8"] = "auto",
        file_name: str | None = None,
        providers: list[str] | None = None,
        num_threads: int | None = None,
        max_length: int | None = None,
        top_k: int = 10,
        query_prefix: str | None = None,
        query_suffix: str = "",
        document_prefix: str | None = None,
        document_suffix: str = "",
        meta_fields_to_embed: list[str] | None = None,
        embedding_separator: str = "\n",
        scale_score: bool = True,
        score_threshold: float | None = None,
        batch_size: int = RERANK_BATCH_SIZE,
        first_stage_weight: float = 0.0,
    ) -> None:
        """
        Create a SyntrieverRanker. Nothing is loaded until :meth:`warm_up` (or the first :meth:`run`).

        :param model: Directory written by ``syntriever export`` for a cross-encoder.
            A relative path resolves against the pipeline's folder (``load_pipeline``),
            ``$SYNTRIEVER_PIPELINE_DIR`` or the current directory, once, here.
        :param quantization: Which exported ONNX weights run: ``"auto"`` (default: the variant the export measured
            fastest on its machine among those that passed the parity gate, ``serving.default`` in ``syntriever.json``;
            fp32 for exports without that record), ``"fp32"`` (not quantised, exact) or ``"int8"``
            (dynamically quantised, faster on CPU).
        :param file_name: ONNX file to run, relative to ``model``; overrides ``quantization``.
        :param providers: ONNX Runtime execution providers in order of preference (default: CPU).
        :param num_threads: ONNX Runtime intra-op threads (default: one per physical core).
        :param max_length: Truncate inputs at this many tokens (at most the exported maximum, the default).
        :param top_k: Maximum number of Documents to return.
        :param query_prefix: Text added before the query. ``None`` uses the model's ``query_prefix`` metadata.
        :param query_suffix: Text added after the query.
        :param document_prefix: Text added before each document. ``None`` uses the model's metadata.
        :param document_suffix: Text added after each document.
        :param meta_fields_to_embed: Meta fields whose values are scored along with the content.
        :param embedding_separator: Separator between the meta values and the content.
        :param scale_score: Return ``sigmoid(logit)`` in [0, 1] instead of the raw logit (not with
            ``first_stage_weight``: the fused score is returned).
        :param score_threshold: Drop Documents scoring below this (on the returned score: possibly scaled, or with
            ``first_stage_weight`` the fused one, which is relative to the list and not comparable across queries).
        :param batch_size: Pairs per ONNX Runtime call. The memory of a call grows with batch x length^2 (attention):
            2 pairs at 256 tokens keep a serving process's peak about 16 MB below 4 pairs and 110 MB below 16, at the
            same speed (``benchmarks/serving_memory.py``); larger batches only pay off with short inputs.
        :param first_stage_weight: Weight of the incoming Documents' own scores (the first stage's) in the returned
            score: the cross-encoder's logits and the incoming scores are each normalised by their list's
            distribution and summed, the logits with weight 1 (distribution-based score fusion, as
            ``SyntrieverScoreFusionJoiner``). A cross-encoder trained on little synthetic data then refines the
            first stage instead of replacing it. ``0`` (default): the cross-encoder's score alone; otherwise
            ``scale_score`` does not apply (the fused score is returned) and incoming Documents without a score
            count as the list's lowest.
        :raises ValueError: If ``top_k`` or ``batch_size`` is not an integer >= 1, ``first_stage_weight`` is negative,
            or ``num_threads`` /
            ``max_length`` is neither ``None`` nor an integer >= 1 (``max_length`` above the exported maximum fails in
            ``warm_up``).
        """
        check_count("SyntrieverRanker", "top_k", top_k)
        check_count("SyntrieverRanker", "batch_size", batch_size)
        check_count("SyntrieverRanker", "num_threads", num_threads, optional=True)
        check_count("SyntrieverRanker", "max_length", max_length, optional=True)
        if not (np.isfinite(first_stage_weight) and first_stage_weight >= 0):
            raise ValueError(f"SyntrieverRanker: first_stage_weight must be a number >= 0, got {first_stage_weight}.")
        if score_threshold is not None and not np.isfinite(score_threshold):
            raise ValueError(
                f"SyntrieverRanker: score_threshold must be a finite number or None, got {score_threshold}."
            )
        self.model = str(model)
        self._model_path = resolve_path(model)  # a relative folder: see syntriever_haystack.runtime.locations
        self.quantization = quantization
        self.file_name = file_name
        self.providers = providers
        self.num_threads = num_threads
        self.max_length = max_length
        self.top_k = top_k
        self.query_prefix = query_prefix
        self.query_suffix = query_suffix
        self.document_prefix = document_prefix
        self.document_suffix = document_suffix
        self.meta_fields_to_embed = meta_fields_to_embed or []
        self.embedding_separator = embedding_separator
        self.scale_score = scale_score
        self.score_threshold = score_threshold
        self.batch_size = batch_size
        self.first_stage_weight = float(first_stage_weight)
        self._model: OnnxModel | None = None

    @property
    def model_path(self) -> Path:
        """The model folder this component loads (``model`` resolved: see ``syntriever_haystack.runtime.locations``)."""
        return self._model_path

    def warm_up(self) -> None:
        """Load the ONNX session and tokenizer. Idempotent: a second call does nothing."""
        if self._model is None:
            self._model = load_onnx_model(
                self._model_path,
                precision=self.quantization,
                file_name=self.file_name,
                providers=self.providers,
                num_threads=self.num_threads,
                max_length=self.max_length,
                expected_kind="cross-encoder",
            )

    def to_dict(self) -> dict[str, Any]:
        """Serialize this component to a dictionary."""
        return default_to_dict(
            self,
            model=self.model,
            quantization=self.quantization,
            file_name=self.file_name,
            providers=self.providers,
            num_threads=self.num_threads,
            max_length=self.max_length,
            top_k=self.top_k,
            query_prefix=self.query_prefix,
            query_suffix=self.query_suffix,
            document_prefix=self.document_prefix,
            document_suffix=self.document_suffix,
            meta_fields_to_embed=self.meta_fields_to_embed,
            embedding_separator=self.embedding_separator,
            scale_score=self.scale_score,
            score_threshold=self.score_threshold,
            batch_size=self.batch_size,
            first_stage_weight=self.first_stage_weight,
        )

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SyntrieverRanker:
        """Deserialize this component from a dictionary."""
        return default_from_dict(cls, legacy_quantization(data))

    @component.output_types(documents=list[Document])
    def run(
        self,
        *,
        query: str,
        documents: list[Document],
        top_k: int | None = None,
        scale_score: bool | None = None,
        score_threshold: float | None = None,
    ) -> dict[str, list[Document]]:
        """
        Rank ``documents`` by relevance to ``query``, most relevant first.

        Run-time arguments override the init values when they are not ``None`` (so ``scale_score=False``
        and ``score_threshold=0.0`` do take effect).

        :param query: The query. A query longer than the model's window is cut to its first tokens before it is
            paired with each Document, and only about its first ``16 * max_length`` characters are read, so a
            100,000-character query costs about as much as a window-long one (see
            ``syntriever_haystack.runtime.onnx_model``).
        :param documents: Candidate Documents (duplicates by id are collapsed, keeping the highest score).
            Documents without text (``content=None``) are not scored: they come after the scored ones with
            ``score=None`` (like Haystack's MetaFieldRanker ``missing_meta="bottom"``), count towards ``top_k``, are
            dropped by a ``score_threshold``, and a warning is logged.
        :param top_k: Maximum number of Documents to return.
        :param scale_score: Return ``sigmoid(logit)`` instead of the raw logit.
        :param score_threshold: Drop Documents scoring below this.
        :returns: A dictionary with ``documents``: new Documents with their relevance ``score``, best first.
        :raises ValueError: If ``top_k`` is not > 0.
        :raises TypeError: If ``query`` is not a string or ``documents`` not a list of Documents.
        """
        check_text("SyntrieverRanker", query, hint="Pass the query text as `query=`.")
        check_documents("SyntrieverRanker", documents, hint="Wrap texts in haystack.Document(content=...).")
        if top_k is not None and top_k <= 0:
            raise ValueError(f"top_k must be > 0, but got {top_k}")
        top_k = self.top_k if top_k is None else top_k
        scale_score = self.scale_score if scale_score is None else scale_score
        score_threshold = self.score_threshold if score_threshold is None else score_threshold
        if not documents:
            return {"documents": []}
        if self._model is None:
            self.warm_up()
        assert self._model is not None
        unique = _deduplicate_documents(documents)
        with_text, textless = split_textless("SyntrieverRanker", unique)
        texts = documents_texts(
            [unique[i] for i in with_text], meta_fields=self.meta_fields_to_embed, separator=self.embedding_separator
        )
        scores = score_documents(
            self._model,
            query,
            texts,
            query_prefix=self.query_prefix,
            query_suffix=self.query_suffix,
            document_prefix=self.document_prefix,
            document_suffix=self.document_suffix,
            scale_score=scale_score and not self.first_stage_weight,
            batch_size=self.batch_size,
        )
        if self.first_stage_weight:  # keyed by position among the scored Documents
            first = [(i, unique[j].score) for i, j in enumerate(with_text)]
            fused = dict(fuse_scores([first, list(enumerate(scores.tolist()))], [self.first_stage_weight, 1.0]))
            scores = np.array([fused[i] for i in range(len(with_text))], dtype=np.float64)
        order = np.argsort(-scores, kind="stable")
        ranked = [replace(unique[with_text[i]], score=float(scores[i])) for i in order]
        ranked += [replace(unique[i], score=None) for i in textless]
        if score_threshold is not None:
            ranked = [doc for doc in ranked if doc.score is not None and doc.score >= score_threshold]
        return {"documents": ranked[:top_k]}
