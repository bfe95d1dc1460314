"""An ``OpenSearchDocumentStore`` laid out for an exported bi-encoder, built from an :class:`OpenSearchConnection`."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from syntriever_haystack.errors import SyntrieverError
from syntriever_haystack.opensearch.connection import OpenSearchConnection
from syntriever_haystack.opensearch.errors import opensearch_errors
from syntriever_haystack.opensearch.index import DEFAULT_ENGINE, ensure_index, index_spec
from syntriever_haystack.runtime.metadata import ModelMetadata

if TYPE_CHECKING:
    from haystack_integrations.document_stores.opensearch import OpenSearchDocumentStore
    from opensearchpy import OpenSearch


def _store_class() -> type[OpenSearchDocumentStore]:
    try:
        from haystack_integrations.document_stores.opensearch import OpenSearchDocumentStore
    except ImportError as exc:  # pragma: no cover - depends on the install
        raise SyntrieverError(
            "the OpenSearch store needs the opensearch extra: pip install 'syntriever-haystack[opensearch]'"
        ) from exc
    return OpenSearchDocumentStore


def opensearch_document_store(
    connection: OpenSearchConnection,
    index: str,
    metadata: ModelMetadata,
    *,
    ensure: bool = True,
    create: bool = True,
    recreate: bool = False,
    engine: str | None = None,
    client: OpenSearch | None = None,
    **spec_options: Any,
) -> OpenSearchDocumentStore:
    """An ``OpenSearchDocumentStore`` on ``index`` with our mapping (:func:`index_spec`) for the model.

    With ``ensure`` (the default) the index is created now if absent, or checked against the model, so a
    dimension or space-type mismatch fails here, before any document is written. The store carries the same
    mapping and settings (so a copy loaded from YAML creates the index the same way) and the connection's
    Secrets (so its YAML holds environment-variable names, never credentials).

    :param connection: Where and how to connect.
    :param index: Index (or alias) name.
    :param metadata: The bi-encoder's metadata.
    :param ensure: Create or check the index now (needs the cluster); ``False`` defers to first use and
        checks nothing.
    :param create: Create the index if absent (else raise when it does not exist).
    :param recreate: Delete and recreate an existing concrete index.
    :param engine: k-NN engine (default ``lucene``); for an existing index, require it.
    :param client: Client for the ``ensure`` step (default: ``connection.client()``).
    :param spec_options: Passed to :func:`index_spec` (``m``, ``ef_construction``, ``replicas``, ``model_name``...).
    :returns: The document store.
    :raises IndexMismatchError: The existing index does not fit the model.
    :raises SyntrieverError: Cannot connect, or bad credentials / certificates (the message names the fix).
    """
    store_class = _store_class()
    spec = index_spec(metadata, engine=engine or DEFAULT_ENGINE, **spec_options)
    if ensure:
        with opensearch_errors(connection.url):
            ensure_index(
                client or connection.client(),
                index,
                metadata,
                engine=engine,
                recreate=recreate,
                create=create,
                **spec_options,
            )
    return store_class(
        **connection.document_store_kwargs(),
        index=index,
        embedding_dim=int(metadata.embedding_dim or 0),
        mappings=spec["mappings"],
        settings=spec["settings"],
        create_index=create,
    )


__all__ = ["opensearch_document_store"]
