"""The rerank stage: an exported ONNX cross-encoder over the top of a previous run (torch-free).

Pairs are scored by the shared rule of :mod:`syntriever_haystack.runtime.encode` (the code
:class:`SyntrieverRanker` runs), as raw logits. Scores are kept per ``(query, document)`` for each model, so
systems that rerank overlapping candidate lists with the same model score a pair once.
"""

from __future__ import annotations

from syntriever_haystack.evaluate.metrics import Run, rank_documents
from syntriever_haystack.evaluate.search import ranked_scores
from syntriever_haystack.evaluate.texts import SplitTexts, int_option, progress
from syntriever_haystack.runtime.encode import RERANK_BATCH_SIZE, score_documents
from syntriever_haystack.runtime.fusion import fuse_scores
from syntriever_haystack.runtime.onnx_model import OnnxModel, load_onnx_model
from syntriever_haystack.specs import StageSpec, SystemSpecError

__all__ = ["Reranker"]


class Reranker:
    """One cross-encoder (a ``rerank:DIR`` stage without its ``top_k``) and the pair scores it has computed.

    :param stage: The rerank stage (``precision``, ``file_name``, ``max_length`` and ``batch_size`` are used).
    """

    def __init__(self, stage: StageSpec) -> None:
        self.model: OnnxModel = load_onnx_model(
            stage.target,
            precision=stage.precision,
            file_name=stage.options.get("file_name"),
            max_length=stage.int_option("max_length"),
            expected_kind="cross-encoder",
        )
        self.batch_size = int_option(stage, "batch_size", RERANK_BATCH_SIZE)  # the served ranker's
        self.pair_scores: dict[tuple[str, str], float] = {}

    @staticmethod
    def model_key(stage: StageSpec) -> str:
        """What identifies the scoring model of ``stage``: the stage without ``top_k`` and ``fuse``."""
        return str(StageSpec(stage.kind, stage.target, tuple(p for p in stage.params if p[0] not in ("top_k", "fuse"))))

    def score(self, query_id: str, query: str, doc_ids: list[str], text_of: dict[str, str]) -> dict[str, float]:
        """Logits of ``doc_ids`` for the query, scoring only the pairs not scored before."""
        known = self.pair_scores
        todo = list(dict.fromkeys(d for d in doc_ids if (query_id, d) not in known))
        if todo:
            scores = score_documents(
                self.model, query, [text_of[d] for d in todo], scale_score=False, batch_size=self.batch_size
            )
            for doc_id, score in zip(todo, scores, strict=True):
                known[(query_id, doc_id)] = float(score)
        return {d: known[(query_id, d)] for d in doc_ids}

    def rerank(
        self, previous: Run, top_k: int, texts: SplitTexts, *, fuse: float = 0.0, show_progress: bool = True
    ) -> Run:
        """Rerank the best ``top_k`` of each query; the rest keep their order, below every reranked document.

        :param fuse: Weight of the first stage's scores fused with the cross-encoder's (weight 1) over the ``top_k``
            by distribution-based score fusion (:func:`~syntriever_haystack.runtime.fusion.fuse_scores`), as the
            served ``SyntrieverRanker(first_stage_weight=fuse)`` does; 0: the cross-encoder's order alone.
        """
        if top_k <= 0:
            raise SystemSpecError(f"top_k must be > 0 for a rerank stage, got {top_k}")
        run: Run = {}
        for query_id, query in progress(texts.queries(), "Reranking", enabled=show_progress):
            ranked = rank_documents(previous.get(query_id, {}))
            head, tail = ranked[:top_k], ranked[top_k:]
            if not head:
                run[query_id] = {}
                continue
            scores = self.score(query_id, query, [d for d, _ in head], texts.text_of)
            if fuse > 0.0:  # equal fused scores keep the first stage's order, as the ranker's stable sort does
                scores = ranked_scores(fuse_scores([head, list(scores.items())], weights=[fuse, 1.0]))
            floor = min(scores.values()) - 1.0
            for i, (doc_id, _) in enumerate(tail):
                scores[doc_id] = floor - i
            run[query_id] = scores
        return run
