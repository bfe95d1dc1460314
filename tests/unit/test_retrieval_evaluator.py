"""SyntrieverRetrievalEvaluator: explicit cut-offs, id matching, graded relevance, Haystack pipelines."""

from __future__ import annotations

import math

import pytest
from haystack import Document, Pipeline
from haystack.components.retrievers.in_memory import InMemoryBM25Retriever
from haystack.document_stores.in_memory import InMemoryDocumentStore
from haystack.evaluation import EvaluationRunResult

from syntriever_haystack import SyntrieverRetrievalEvaluator


def test_hand_computed_scores_with_cutoffs() -> None:
    evaluator = SyntrieverRetrievalEvaluator(metrics=["nDCG@10", "R@2", "MRR@10"])
    result = evaluator.run(
        ground_truth_documents=[[Document(id="d1", score=2.0), Document(id="d7")], [Document(id="d2")]],
        retrieved_documents=[[Document(id="d3"), Document(id="d1"), Document(id="d7")], []],
    )
    ndcg_q1 = (2 / math.log2(3) + 1 / math.log2(4)) / (2 + 1 / math.log2(3))
    assert result["individual_scores"] == pytest.approx([ndcg_q1, 0.0])
    assert result["score"] == pytest.approx(ndcg_q1 / 2)  # the empty retrieval counts as 0
    assert result["scores"]["R@2"] == pytest.approx((1 / 2 + 0) / 2)  # cut-off 2 keeps only d1 of {d1, d7}
    assert result["scores"]["RR@10"] == pytest.approx(0.25)
    assert result["metrics"]["RR@10"]["individual_scores"] == pytest.approx([0.5, 0.0])


def test_matching_by_meta_field_counts_a_source_once() -> None:
    evaluator = SyntrieverRetrievalEvaluator(metrics=["RR@10", "P@3"], document_id_field="meta.source_id")
    chunks = [
        Document(content="a", meta={"source_id": "s9"}),
        Document(content="b", meta={"source_id": "s1"}),
        Document(content="c", meta={"source_id": "s1"}),  # another chunk of the same source: counted once
    ]
    result = evaluator.run(
        ground_truth_documents=[[Document(content="x", meta={"source_id": "s1"})]], retrieved_documents=[chunks]
    )
    assert result["scores"]["RR@10"] == 0.5
    assert result["scores"]["P@3"] == pytest.approx(1 / 3)


def test_relevance_from_meta_and_zero_graded_judgments() -> None:
    evaluator = SyntrieverRetrievalEvaluator(metrics=["Judged@2", "RR@10"], relevance_field="meta.grade")
    result = evaluator.run(
        ground_truth_documents=[[Document(id="a", meta={"grade": 0}), Document(id="b", meta={"grade": 3})]],
        retrieved_documents=[[Document(id="a"), Document(id="b")]],
    )
    assert result["scores"] == {"Judged@2": 1.0, "RR@10": 0.5}


def test_bad_inputs_are_explained() -> None:
    evaluator = SyntrieverRetrievalEvaluator()
    with pytest.raises(ValueError, match="one list per question"):
        evaluator.run(ground_truth_documents=[[Document(id="a")]], retrieved_documents=[])
    with pytest.raises(ValueError, match="question 0 has no relevant ground-truth Document"):
        evaluator.run(ground_truth_documents=[[Document(id="a", score=0.0)]], retrieved_documents=[[]])
    with pytest.raises(ValueError, match="unknown metric"):
        SyntrieverRetrievalEvaluator(metrics=["nDCG@ten"])
    with pytest.raises(ValueError, match="document_id_field must be"):
        SyntrieverRetrievalEvaluator(document_id_field="title")
    with pytest.raises(ValueError, match=r"has no 'meta\.doc' to match on"):
        SyntrieverRetrievalEvaluator(document_id_field="meta.doc").run(
            ground_truth_documents=[[Document(id="a")]], retrieved_documents=[[Document(id="a")]]
        )


def test_in_an_evaluation_pipeline_and_yaml() -> None:
    store = InMemoryDocumentStore()
    store.write_documents(
        [Document(id="d1", content="iron deficiency causes anaemia"), Document(id="d2", content="paris is in france")]
    )
    retriever = InMemoryBM25Retriever(document_store=store, top_k=2)
    questions = ["what causes anaemia", "where is paris"]
    retrieved = [retriever.run(query=q)["documents"] for q in questions]
    truth = [[Document(id="d1")], [Document(id="d2")]]

    pipeline = Pipeline()
    pipeline.add_component("ir", SyntrieverRetrievalEvaluator(metrics=["nDCG@10", "RR@10"]))
    output = pipeline.run({"ir": {"ground_truth_documents": truth, "retrieved_documents": retrieved}})["ir"]
    assert output["scores"] == {"nDCG@10": 1.0, "RR@10": 1.0}

    report = EvaluationRunResult("bm25", {"question": questions}, output["metrics"])
    assert report.aggregated_report(output_format="json")["metrics"] == ["nDCG@10", "RR@10"]

    restored = Pipeline.loads(pipeline.dumps())
    evaluator = restored.get_component("ir")
    assert isinstance(evaluator, SyntrieverRetrievalEvaluator)
    assert evaluator.metrics == ["nDCG@10", "RR@10"]
