"""Indexing and hybrid query pipelines over exported models, for an in-memory or an OpenSearch document store.

- :func:`indexing_pipeline`: ``DocumentSplitter`` → ``SyntrieverDocumentEmbedder`` → ``DocumentWriter``
  (duplicates overwritten, so re-indexing the same documents updates them).
- :func:`query_pipeline`: BM25 retriever and ``SyntrieverTextEmbedder`` → embedding retriever, fused by
  ``SyntrieverScoreFusionJoiner`` (distribution-based score fusion; ``fusion="rrf"``: Haystack's ``DocumentJoiner``
  with reciprocal rank fusion), then an optional ``SyntrieverRanker``.

The retrievers follow the store. For an ``InMemoryDocumentStore``: ``SyntrieverBM25Retriever`` (the evaluation's
``bm25``: bm25s, Lucene formula, English stemming and stop words, so a report's BM25 / hybrid numbers are what is
served) and ``InMemoryEmbeddingRetriever``. For an ``OpenSearchDocumentStore`` (imported only then):
``OpenSearchBM25Retriever`` (OpenSearch's BM25 over the ``english`` analyzer of the index mapping: close to, not
identical with, bm25s) and ``OpenSearchEmbeddingRetriever``. An OpenSearch store serialises its credentials as
environment-variable names, never as values.

Pipelines serialise to YAML with :func:`save_pipeline`, which writes model folders and store files inside the
YAML folder's parent tree relative to the YAML's folder (``../models/retriever-onnx``), so a run folder can be
moved. :func:`load_pipeline` resolves them against the YAML's folder; with plain ``Pipeline.loads(text)``, set
``SYNTRIEVER_PIPELINE_DIR`` to the YAML's folder (or run from it). A ``SyntrieverInMemoryDocumentStore`` loads its
store file when the pipeline is loaded, so a loaded query pipeline answers at once.

Usage example:

```python
from syntriever_haystack.serve.memory_store import memory_document_store
from syntriever_haystack.runtime.metadata import ModelMetadata
from syntriever_haystack.serve.pipelines import indexing_pipeline, indexing_inputs, query_pipeline, run_query

store = memory_document_store(ModelMetadata.load("models/minilm-onnx"))
indexing = indexing_pipeline(store, "models/minilm-onnx")
indexing.run(indexing_inputs(indexing, documents))
query = query_pipeline(store, "models/minilm-onnx", "models/reranker-onnx", top_k=5)
for doc in run_query(query, "what causes anaemia?"):
    print(doc.score, doc.content)
```
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Literal

from haystack import Document, Pipeline
from haystack.components.joiners import DocumentJoiner
from haystack.components.writers import DocumentWriter
from haystack.core.errors import DeserializationError
from haystack.document_stores.in_memory import InMemoryDocumentStore
from haystack.document_stores.types import DuplicatePolicy

from syntriever_haystack.errors import ExportedModelError, SyntrieverError
from syntriever_haystack.runtime.locations import pipeline_base, relative_to_base
from syntriever_haystack.runtime.metadata import ModelMetadata
from syntriever_haystack.runtime.vector_space import VectorSpace, vector_space
from syntriever_haystack.specs import DEFAULT_FUSION, FUSIONS, HYBRID_CANDIDATES, Fusion

logger = logging.getLogger(__name__)

StoreKind = Literal["memory", "opensearch"]


def store_kind(document_store: Any) -> StoreKind:
    """``"memory"`` for an ``InMemoryDocumentStore``, ``"opensearch"`` for an ``OpenSearchDocumentStore``.

    :raises SyntrieverError: Any other store.
    """
    if isinstance(document_store, InMemoryDocumentStore):
        return "memory"
    try:
        from haystack_integrations.document_stores.opensearch import OpenSearchDocumentStore
    except ImportError:  # pragma: no cover - depends on the install
        OpenSearchDocumentStore = None  # type: ignore[assignment,misc]  # noqa: N806
    if OpenSearchDocumentStore is not None and isinstance(document_store, OpenSearchDocumentStore):
        return "opensearch"
    raise SyntrieverError(
        f"unsupported document store {type(document_store).__name__}; use InMemoryDocumentStore or "
        "OpenSearchDocumentStore (pip install 'syntriever-haystack[opensearch]')."
    )


def _check_store(document_store: Any, space: VectorSpace) -> StoreKind:
    """Refuse a store whose similarity would rank this model's vectors differently from the model."""
    kind = store_kind(document_store)
    if kind == "memory":
        wanted = space.haystack_similarity
        actual = document_store.embedding_similarity_function
        if actual != wanted and not space.normalized:
            raise SyntrieverError(
                f"the InMemoryDocumentStore compares embeddings by {actual}, but {space.reason}: create it with "
                f'embedding_similarity_function="{wanted}" (memory_document_store(metadata) does).'
            )
        return kind
    params = document_store.to_dict().get("init_parameters", {})
    field = ((params.get("mappings") or {}).get("properties") or {}).get("embedding") or {}
    method = field.get("method") or {}
    dimension, space_type = field.get("dimension"), method.get("space_type") or field.get("space_type") or "l2"
    if params.get("create_index") and (dimension != space.dimension or space_type != space.space_type):
        logger.warning(
            "this OpenSearchDocumentStore would create a missing index with dimension %s and space_type %s, but the "
            "model needs %s and %s; build the store with opensearch_document_store(connection, index, metadata).",
            dimension,
            space_type,
            space.dimension,
            space.space_type,
        )
    return kind


def _bi_encoder_space(model: str | Path) -> VectorSpace:
    return vector_space(ModelMetadata.load(model))


def _check_ranker(model: str | Path) -> None:
    metadata = ModelMetadata.load(model)
    if metadata.kind != "cross-encoder":
        raise ExportedModelError(
            f"{model} is a {metadata.kind}; the ranker needs an exported cross-encoder (the embedder model goes "
            "first, the ranker second)."
        )


def indexing_pipeline(
    document_store: Any,
    embedder_model: str | Path,
    *,
    split_by: str | None = "word",
    split_length: int = 200,
    split_overlap: int = 20,
    quantization: Literal["fp32", "int8"] = "fp32",
    batch_size: int = 32,
    meta_fields_to_embed: list[str] | None = None,
    progress_bar: bool = False,
) -> Pipeline:
    """``DocumentSplitter`` → ``SyntrieverDocumentEmbedder`` → ``DocumentWriter`` (policy ``OVERWRITE``).

    Components: ``splitter`` (absent when ``split_by`` is ``None``), ``embedder``, ``writer``. Feed it with
    :func:`indexing_inputs`. Chunks keep the metadata of their document plus ``source_id`` (the document's id),
    ``split_id`` and ``split_idx_start`` (see Haystack's ``DocumentSplitter``).

    :param document_store: ``InMemoryDocumentStore`` or ``OpenSearchDocumentStore``.
    :param embedder_model: Exported bi-encoder directory.
    :param split_by: ``word``, ``sentence`` (needs nltk), ``passage``, ``line``, ``period``, ``page``; ``None``
        for documents that are already chunks.
    :param split_length: Units per chunk.
    :param split_overlap: Units shared by consecutive chunks.
    :param quantization: ``fp32`` or ``int8`` ONNX weights of the embedder.
    :param batch_size: Texts per ONNX Runtime call.
    :param meta_fields_to_embed: Metadata fields embedded with the content (e.g. ``["title"]``).
    :param progress_bar: Show the embedder's progress bar.
    :returns: The pipeline.
    :raises SyntrieverError: Unsupported store, a store similarity that does not fit the model, bad split settings.
    :raises ExportedModelError: The model directory is not an exported bi-encoder.
    """
    from haystack_integrations.components.embedders.syntriever import SyntrieverDocumentEmbedder

    _check_store(document_store, _bi_encoder_space(embedder_model))
    pipeline = Pipeline()
    if split_by is not None:
        from syntriever_haystack.data.documents import _make_splitter

        pipeline.add_component("splitter", _make_splitter(split_by, split_length, split_overlap))
    pipeline.add_component(
        "embedder",
        SyntrieverDocumentEmbedder(
            model=embedder_model,
            quantization=quantization,
            batch_size=batch_size,
            meta_fields_to_embed=meta_fields_to_embed,
            progress_bar=progress_bar,
        ),
    )
    pipeline.add_component("writer", DocumentWriter(document_store=document_store, policy=DuplicatePolicy.OVERWRITE))
    if split_by is not None:
        pipeline.connect("splitter.documents", "embedder.documents")
    pipeline.connect("embedder.documents", "writer.documents")
    return pipeline


def indexing_inputs(pipeline: Pipeline, documents: list[Document]) -> dict[str, Any]:
    """The ``run`` input of an :func:`indexing_pipeline` (with or without its splitter)."""
    first = "splitter" if "splitter" in dict(pipeline.walk()) else "embedder"
    return {first: {"documents": documents}}


def query_pipeline(
    document_store: Any,
    embedder_model: str | Path,
    ranker_model: str | Path | None = None,
    *,
    top_k_bm25: int = HYBRID_CANDIDATES,
    top_k_dense: int = HYBRID_CANDIDATES,
    top_k: int = 10,
    candidates: int | None = None,
    quantization: Literal["fp32", "int8"] = "fp32",
    ranker_quantization: Literal["fp32", "int8"] | None = None,
    fusion: Fusion = DEFAULT_FUSION,
    ranker_first_stage_weight: float = 0.0,
) -> Pipeline:
    """Hybrid retrieval: BM25 + dense, fused by their scores' distributions, optionally reranked.

    Components: ``bm25_retriever``, ``text_embedder``, ``embedding_retriever``, ``joiner``
    (``SyntrieverScoreFusionJoiner``, or ``DocumentJoiner(join_mode="reciprocal_rank_fusion")`` with
    ``fusion="rrf"``) and ``ranker`` when ``ranker_model`` is given.
    Run it with :func:`run_query` (or :func:`query_inputs`).

    :param document_store: ``InMemoryDocumentStore`` or ``OpenSearchDocumentStore`` (selects the retrievers).
    :param embedder_model: Exported bi-encoder directory (the one the documents were indexed with).
    :param ranker_model: Exported cross-encoder directory, or ``None`` for no reranking.
    :param top_k_bm25: Documents from BM25 (default 100, what the evaluation's ``hybrid:`` systems fuse: score
        fusion normalises by each list's distribution, so the lists' length is part of the fusion).
    :param top_k_dense: Documents from the embedding retriever (default 100, likewise).
    :param top_k: Documents returned.
    :param candidates: Fused documents handed to the ranker (default: all of them).
    :param quantization: ONNX weights of the embedder (``fp32`` or ``int8``).
    :param ranker_quantization: ONNX weights of the ranker (default: ``quantization``).
    :param fusion: ``dbsf`` (distribution-based score fusion: each list's scores normalised by their mean and
        standard deviation, then summed) or ``rrf`` (reciprocal rank fusion). ``dbsf`` keeps how far ahead a
        retriever's best hits are; on SciFact it beats RRF by +0.023 nDCG@10 (docs/training.md).
    :param ranker_first_stage_weight: The ranker's ``first_stage_weight``: the fused first-stage scores' weight
        in the ranker's score (distribution-based fusion with the cross-encoder's logits, weight 1); 0: the
        cross-encoder alone. A small synthetic-trained reranker helps only this way (docs/training.md).
    :returns: The pipeline.
    :raises SyntrieverError: Unsupported store, or a store similarity that does not fit the model.
    :raises ExportedModelError: A model directory is not an export of the right kind.
    """
    from haystack_integrations.components.embedders.syntriever import SyntrieverTextEmbedder
    from haystack_integrations.components.rankers.syntriever import SyntrieverRanker

    if fusion not in FUSIONS:
        raise SyntrieverError(f"fusion {fusion!r} is not one of {', '.join(FUSIONS)}; use dbsf (the default) or rrf")
    for name, value in (("top_k_bm25", top_k_bm25), ("top_k_dense", top_k_dense), ("top_k", top_k)):
        if value < 1:
            raise SyntrieverError(f"{name} must be at least 1, got {value}.")
    kind = _check_store(document_store, _bi_encoder_space(embedder_model))
    if ranker_model is not None:
        _check_ranker(ranker_model)
    bm25: Any
    dense: Any
    if kind == "memory":
        from haystack.components.retrievers.in_memory import InMemoryEmbeddingRetriever

        from haystack_integrations.components.retrievers.syntriever import SyntrieverBM25Retriever

        # the evaluation's default bm25 (runtime.bm25.BM25Params defaults): same k1, b, stemmer, stop words
        bm25 = SyntrieverBM25Retriever(document_store=document_store, top_k=top_k_bm25)
        dense = InMemoryEmbeddingRetriever(document_store=document_store, top_k=top_k_dense)
    else:
        from haystack_integrations.components.retrievers.opensearch import (
            OpenSearchBM25Retriever,
            OpenSearchEmbeddingRetriever,
        )

        bm25 = OpenSearchBM25Retriever(document_store=document_store, top_k=top_k_bm25)
        dense = OpenSearchEmbeddingRetriever(document_store=document_store, top_k=top_k_dense)
    pipeline = Pipeline()
    pipeline.add_component("bm25_retriever", bm25)
    pipeline.add_component("text_embedder", SyntrieverTextEmbedder(model=embedder_model, quantization=quantization))
    pipeline.add_component("embedding_retriever", dense)
    joined = top_k if ranker_model is None else candidates
    pipeline.add_component("joiner", _joiner(fusion, joined))
    pipeline.connect("text_embedder.embedding", "embedding_retriever.query_embedding")
    pipeline.connect("bm25_retriever.documents", "joiner.documents")
    pipeline.connect("embedding_retriever.documents", "joiner.documents")
    if ranker_model is not None:
        pipeline.add_component(
            "ranker",
            SyntrieverRanker(
                model=ranker_model,
                quantization=ranker_quantization or quantization,
                top_k=top_k,
                first_stage_weight=ranker_first_stage_weight,
            ),
        )
        pipeline.connect("joiner.documents", "ranker.documents")
    return pipeline


def _joiner(fusion: Fusion, top_k: int | None) -> Any:
    if fusion == "rrf":
        return DocumentJoiner(join_mode="reciprocal_rank_fusion", top_k=top_k)
    from haystack_integrations.components.joiners.syntriever import SyntrieverScoreFusionJoiner

    return SyntrieverScoreFusionJoiner(top_k=top_k)


def query_inputs(pipeline: Pipeline, query: str, *, filters: dict[str, Any] | None = None) -> dict[str, Any]:
    """The ``run`` input of a :func:`query_pipeline`: the query to both retrievers' sides and the ranker.

    :param pipeline: A query pipeline.
    :param query: The query text.
    :param filters: Haystack metadata filters applied by both retrievers.
    """
    components = dict(pipeline.walk())
    data: dict[str, Any] = {"bm25_retriever": {"query": query}, "text_embedder": {"text": query}}
    if filters:
        data["bm25_retriever"]["filters"] = filters
        data["embedding_retriever"] = {"filters": filters}
    if "ranker" in components:
        data["ranker"] = {"query": query}
    return data


def run_query(pipeline: Pipeline, query: str, *, filters: dict[str, Any] | None = None) -> list[Document]:
    """Run a :func:`query_pipeline` and return its final documents, best first."""
    result = pipeline.run(query_inputs(pipeline, query, filters=filters))
    last = "ranker" if "ranker" in result else "joiner"
    return list(result[last]["documents"])


# Path-valued init parameters of our components, by class name: written relative to the YAML by save_pipeline.
_PATH_PARAMETERS = {
    "SyntrieverTextEmbedder": ("model",),
    "SyntrieverDocumentEmbedder": ("model",),
    "SyntrieverRanker": ("model",),
    "SyntrieverBM25Retriever": ("index_path",),
    "SyntrieverInMemoryDocumentStore": ("path",),
}


def _relocatable(value: Any, folder: Path) -> Any:
    """``value`` (a serialised pipeline part) with our components' paths written relative to ``folder``."""
    if isinstance(value, list):
        return [_relocatable(v, folder) for v in value]
    if not isinstance(value, dict):
        return value
    out = {k: _relocatable(v, folder) for k, v in value.items()}
    keys = _PATH_PARAMETERS.get(str(out.get("type", "")).rpartition(".")[2], ())
    params = out.get("init_parameters")
    if keys and isinstance(params, dict):
        out["init_parameters"] = {
            k: relative_to_base(v, folder) if k in keys and isinstance(v, str) else v for k, v in params.items()
        }
    return out


def save_pipeline(pipeline: Pipeline, path: str | Path) -> Path:
    """Write ``pipeline`` as YAML (``Pipeline.dumps``), model folders and store files relative to the YAML's folder.

    A path of a Syntriever component or store inside the YAML folder's parent tree is written relative to the YAML's
    folder (``runs/x/models/retriever-onnx`` in ``runs/x/pipelines/query.yaml`` becomes ``../models/retriever-onnx``)
    so the run folder can move; other paths stay as they are.

    :param pipeline: The pipeline.
    :param path: The file to write (parent folders are created).
    :returns: The path written.
    """
    from haystack.marshal import YamlMarshaller

    target = Path(path).expanduser()
    target.parent.mkdir(parents=True, exist_ok=True)
    data = _relocatable(pipeline.to_dict(), target.parent)
    target.write_text(YamlMarshaller().marshal(data), encoding="utf-8")
    return target


def load_pipeline(path: str | Path) -> Pipeline:
    """Read a pipeline written by :func:`save_pipeline` (``Pipeline.loads``, Haystack's default module allow-list).

    Relative paths in it resolve against the YAML's folder. A ``SyntrieverInMemoryDocumentStore`` loads its store
    file now (an error names the fix when it is missing or empty); a plain ``InMemoryDocumentStore`` comes back with
    its configuration, not its documents (load the store file first with
    :func:`~syntriever_haystack.serve.memory_store.load_memory_store`: stores with the same index name share
    documents within a process).

    :param path: The YAML file.
    :raises SyntrieverError: The file does not exist, or its store file is missing or empty.
    """
    source = Path(path).expanduser()
    if not source.is_file():
        raise SyntrieverError(f"pipeline file {source} does not exist.")
    try:
        text = source.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise SyntrieverError(
            f"pipeline file {source} is not UTF-8 text (byte {exc.start}: {exc.reason}), so not a pipeline YAML "
            "written by syntriever; pass the query.yaml / indexing.yaml that `syntriever index` wrote."
        ) from exc
    except OSError as exc:
        raise SyntrieverError(f"pipeline file {source} cannot be read ({exc.strerror or exc}).") from exc
    with pipeline_base(source.parent):
        try:
            return Pipeline.loads(text)
        except DeserializationError as exc:
            cause = exc.__cause__
            if isinstance(cause, SyntrieverError):  # e.g. a missing store file: its message names the fix
                raise SyntrieverError(f"cannot load {source}: {cause}") from cause
            raise SyntrieverError(f"cannot load pipeline file {source}: {_one_line(exc)}") from exc
        except (AttributeError, TypeError, KeyError, ValueError) as exc:  # YAML that is not a pipeline mapping
            if isinstance(exc, SyntrieverError):
                raise
            raise SyntrieverError(
                f"pipeline file {source} is not a Haystack pipeline YAML ({type(exc).__name__}: {_one_line(exc)}); "
                "pass the query.yaml / indexing.yaml that `syntriever index` wrote."
            ) from exc


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split())[:300]


__all__ = [
    "indexing_inputs",
    "indexing_pipeline",
    "load_pipeline",
    "query_inputs",
    "query_pipeline",
    "run_query",
    "save_pipeline",
    "store_kind",
]
