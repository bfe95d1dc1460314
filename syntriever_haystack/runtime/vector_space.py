"""Which vector space an exported bi-encoder's embeddings live in: one rule for OpenSearch and in-memory stores.

The rule, from the model's ``syntriever.json`` (``normalize`` and ``similarity``):

============================  ==========================  ======================================
model                         OpenSearch ``space_type``   ``InMemoryDocumentStore`` similarity
============================  ==========================  ======================================
normalises (unit vectors)     ``innerproduct``            ``dot_product``
not normalised, cosine        ``cosinesimil``             ``cosine``
not normalised, dot product   ``innerproduct``            ``dot_product``
not normalised, euclidean     ``l2``                      (not supported: refused)
============================  ==========================  ======================================

Why: on unit vectors the dot product *is* the cosine, and the squared euclidean distance is ``2 - 2·cos``, so
all three rank documents identically; ``innerproduct`` is the cheapest of them (no normalisation at search
time). A model that does not normalise keeps the similarity it was trained with: a cosine model's vector
lengths carry no meaning (``cosinesimil`` divides them out), while a dot-product model's lengths do
(``cosinesimil`` would throw them away, so it gets ``innerproduct``). Manhattan similarity is refused: neither
the Lucene nor the Faiss engine supports ``l1``.

Torch-free: standard library only.
"""

from __future__ import annotations

from dataclasses import dataclass

from syntriever_haystack.errors import ExportedModelError
from syntriever_haystack.runtime.metadata import ModelMetadata

# sentence-transformers' `similarity_fn_name` values and their common aliases → one canonical name.
_SIMILARITY_ALIASES = {
    "cosine": "cosine",
    "cos_sim": "cosine",
    "dot": "dot_product",
    "dot_product": "dot_product",
    "dot_score": "dot_product",
    "euclidean": "euclidean",
    "l2": "euclidean",
    "manhattan": "manhattan",
}


@dataclass(frozen=True)
class VectorSpace:
    """The vector space of a bi-encoder's embeddings.

    :param dimension: Embedding dimension.
    :param space_type: OpenSearch k-NN ``space_type``: ``innerproduct``, ``cosinesimil`` or ``l2``.
    :param similarity: The model's similarity, canonical: ``cosine``, ``dot_product`` or ``euclidean``.
    :param normalized: Whether the embeddings are L2-normalised.
    :param reason: One sentence saying why this space type was chosen (used in error messages).
    """

    dimension: int
    space_type: str
    similarity: str
    normalized: bool
    reason: str

    @property
    def haystack_similarity(self) -> str:
        """``embedding_similarity_function`` for ``InMemoryDocumentStore``: ``dot_product`` or ``cosine``.

        :raises ExportedModelError: For a non-normalised euclidean model (the in-memory store has no l2).
        """
        if self.space_type == "innerproduct":
            return "dot_product"
        if self.space_type == "cosinesimil":
            return "cosine"
        raise ExportedModelError(
            "InMemoryDocumentStore supports only dot_product and cosine similarity, but this model compares "
            "non-normalised vectors by euclidean distance; use the OpenSearch store (space_type l2)."
        )


def vector_space(metadata: ModelMetadata) -> VectorSpace:
    """The vector space of an exported bi-encoder (see the module docstring for the rule).

    :param metadata: The model's metadata (``ModelMetadata.load(model_dir)``).
    :returns: Dimension, OpenSearch space type and in-memory similarity.
    :raises ExportedModelError: The model is a cross-encoder, has no dimension, or uses an unsupported similarity.
    """
    if metadata.kind != "bi-encoder":
        raise ExportedModelError(
            f"a {metadata.kind} scores query/document pairs and makes no vectors to index; index with an exported "
            "bi-encoder (`syntriever export` of a sentence-transformers model) and use the cross-encoder as --ranker."
        )
    if not metadata.embedding_dim:
        raise ExportedModelError("the model's syntriever.json has no embedding_dim; re-run `syntriever export`.")
    dimension = int(metadata.embedding_dim)
    similarity = _SIMILARITY_ALIASES.get(metadata.similarity.strip().lower())
    if similarity is None or similarity == "manhattan":
        raise ExportedModelError(
            f"similarity {metadata.similarity!r} is not supported for indexing: OpenSearch's Lucene and Faiss engines "
            "support inner product, cosine and l2. Export a model trained with cosine or dot-product similarity."
        )
    if metadata.normalize:
        return VectorSpace(
            dimension,
            "innerproduct",
            similarity,
            True,
            "the model L2-normalises its embeddings, so the inner product equals the cosine",
        )
    if similarity == "cosine":
        return VectorSpace(
            dimension, "cosinesimil", similarity, False, "the model uses cosine similarity on non-normalised vectors"
        )
    if similarity == "dot_product":
        return VectorSpace(
            dimension,
            "innerproduct",
            similarity,
            False,
            "the model was trained with dot-product similarity on non-normalised vectors",
        )
    return VectorSpace(
        dimension, "l2", similarity, False, "the model uses euclidean distance on non-normalised vectors"
    )


__all__ = ["VectorSpace", "vector_space"]
