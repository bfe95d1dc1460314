from __future__ import annotations

import math
from typing import Any

from haystack import Document, component, default_from_dict, default_to_dict

from syntriever_haystack.evaluate.metrics import parse_metrics, score_run


@component
class SyntrieverRetrievalEvaluator:
    """
    Scores retrieved Documents with standard IR metrics at explicit cut-offs (nDCG@10, R@100, RR@10, ...).

    Haystack's built-in document evaluators have no cut-off and match Documents by content. This one matches by
    document id (or a meta field, e.g. the id of the source document a chunk came from), reads graded relevance
    from the ground-truth Documents, and computes the metrics with ``ir_measures`` (pytrec_eval), the same code as
    ``syntriever evaluate``. The order of each retrieved list is the ranking; a repeated id counts once, at its
    best rank. A question whose retrieved list is empty scores 0; a question with no relevant ground truth is
    undefined and raises an error rather than being averaged in.

    The output ``metrics`` has Haystack's evaluator shape per metric (``score`` + ``individual_scores``), so
    ``EvaluationRunResult(run_name, inputs, results=output["metrics"])`` builds a report directly.

    ### Usage example

    ```python
    from haystack import Document
    from syntriever_haystack import SyntrieverRetrievalEvaluator

    evaluator = SyntrieverRetrievalEvaluator(metrics=["nDCG@10", "R@100", "RR@10"])
    result = evaluator.run(
        ground_truth_documents=[[Document(id="d1", score=2.0), Document(id="d7")]],
        retrieved_documents=[[Document(id="d3"), Document(id="d1"), Document(id="d7")]],
    )
    print(result["score"], result["scores"]["RR@10"])
    # 0.6696... 0.5
    ```
    """

    def __init__(
        self,
        *,
        metrics: list[str] | None = None,
        document_id_field: str = "id",
        relevance_field: str = "score",
    ) -> None:
        """
        Create a SyntrieverRetrievalEvaluator.

        :param metrics: ``ir_measures`` metric names with cut-offs (``MRR@10`` and ``Recall@100`` are accepted
            aliases). Default: nDCG@10, R@100, RR@10, Judged@10. The first is the headline ``score``.
        :param document_id_field: How Documents are matched: ``"id"``, ``"content"`` or ``"meta.<key>"``.
        :param relevance_field: Where a ground-truth Document's graded relevance is read: ``"score"`` or
            ``"meta.<key>"``. Missing values mean relevance 1; values are rounded to integers (0 = judged not
            relevant, which still counts for Judged@k).
        :raises ValueError: If a metric name or field is not understood.
        """
        self.metrics = parse_metrics(metrics)
        for name, value in (("document_id_field", document_id_field), ("relevance_field", relevance_field)):
            allowed = ("id", "content") if name == "document_id_field" else ("score",)
            if value not in allowed and not value.startswith("meta."):
                raise ValueError(f"{name} must be one of {', '.join(allowed)} or 'meta.<key>', got {value!r}")
        self.document_id_field = document_id_field
        self.relevance_field = relevance_field

    def to_dict(self) -> dict[str, Any]:
        """Serialize this component to a dictionary."""
        return default_to_dict(
            self,
            metrics=self.metrics,
            document_id_field=self.document_id_field,
            relevance_field=self.relevance_field,
        )

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SyntrieverRetrievalEvaluator:
        """Deserialize this component from a dictionary."""
        return default_from_dict(cls, data)

    def _key(self, doc: Document) -> str | None:
        if self.document_id_field == "id":
            return doc.id
        if self.document_id_field == "content":
            return doc.content
        value = doc.meta.get(self.document_id_field[len("meta.") :])
        return None if value is None else str(value)

    def _relevance(self, doc: Document) -> int:
        value = doc.score if self.relevance_field == "score" else doc.meta.get(self.relevance_field[len("meta.") :])
        return 1 if value is None else math.floor(float(value) + 0.5)  # half-up, not banker's rounding

    @component.output_types(score=float, scores=dict[str, float], individual_scores=list[float], metrics=dict)
    def run(
        self, ground_truth_documents: list[list[Document]], retrieved_documents: list[list[Document]]
    ) -> dict[str, Any]:
        """
        Score each question's retrieved list against its ground truth.

        :param ground_truth_documents: One list per question: the judged Documents (relevance in
            ``relevance_field``; a Document with relevance 0 is judged non-relevant).
        :param retrieved_documents: One list per question: what the system returned, best first.
        :returns: A dictionary with
            - ``score``: mean of the first metric;
            - ``individual_scores``: the first metric per question;
            - ``scores``: metric name → mean;
            - ``metrics``: metric name → ``{"score": mean, "individual_scores": [...]}``.
        :raises ValueError: If the two lists differ in length, or a question has no relevant ground truth or a
            Document lacks the field used for matching.
        """
        if len(ground_truth_documents) != len(retrieved_documents):
            raise ValueError(
                f"ground_truth_documents has {len(ground_truth_documents)} questions but retrieved_documents has "
                f"{len(retrieved_documents)}; pass one list per question to both."
            )
        qrels: dict[str, dict[str, int]] = {}
        run: dict[str, dict[str, float]] = {}
        query_ids = []
        for i, (truth, retrieved) in enumerate(zip(ground_truth_documents, retrieved_documents, strict=True)):
            query_id = str(i)
            query_ids.append(query_id)
            judged: dict[str, int] = {}
            for doc in truth:
                key = self._require_key(doc, i, "ground_truth_documents")
                judged[key] = max(judged.get(key, 0), self._relevance(doc))
            if not any(v > 0 for v in judged.values()):
                raise ValueError(
                    f"question {i} has no relevant ground-truth Document (all relevance 0 or the list is empty); "
                    "its metrics are undefined. Drop the question or add its relevant Documents."
                )
            qrels[query_id] = judged
            ranking: dict[str, float] = {}
            for rank, doc in enumerate(retrieved):
                key = self._require_key(doc, i, "retrieved_documents")
                ranking.setdefault(key, float(len(retrieved) - rank))  # first (best) occurrence wins
            run[query_id] = ranking
        scores = score_run(run, qrels, self.metrics, query_ids=query_ids)
        means = scores.means
        per_metric = {
            name: {"score": means[name], "individual_scores": [float(v) for v in scores.per_query[name]]}
            for name in self.metrics
        }
        headline = self.metrics[0]
        return {
            "score": means[headline],
            "individual_scores": per_metric[headline]["individual_scores"],
            "scores": means,
            "metrics": per_metric,
        }

    def _require_key(self, doc: Document, question: int, argument: str) -> str:
        key = self._key(doc)
        if key is None:
            raise ValueError(
                f"a Document in {argument}[{question}] has no {self.document_id_field!r} to match on; set it or choose "
                "another document_id_field."
            )
        return key
