"""The OpenSearch index of an exported bi-encoder: its layout, a check before every write, alias re-indexing.

- :func:`index_spec` is the create-index body: ``index.knn: true``, a ``knn_vector`` field with the model's
  dimension and space type (see :mod:`syntriever_haystack.runtime.vector_space` for the rule), an HNSW method on
  the Lucene or Faiss engine, a BM25 ``text`` field (``english`` analyzer: stop words and stemming, the analogue of
  the in-memory BM25, close to but not identical with it), and a ``_meta`` block recording the model. Field names and
  the dynamic template for metadata are those of ``OpenSearchDocumentStore``'s default mapping, so Haystack's
  ``OpenSearchBM25Retriever`` / ``OpenSearchEmbeddingRetriever`` work on it unchanged.
- :func:`ensure_index` creates the index if it is absent; if it exists, it checks dimension and space type
  (and the engine, when one is asked for) against the model *before* anything is written, and raises
  :class:`IndexMismatchError` naming the index, the mismatch and the fix.
- :func:`reindex_via_alias` builds a new physical index, fills it, and moves the alias to it in one atomic
  ``_aliases`` request, so searches through the alias never see a half-built index.

``client`` is an ``opensearchpy.OpenSearch`` (e.g. ``OpenSearchConnection(...).client()``); this module does
not import opensearch-py itself.
"""

from __future__ import annotations

import datetime
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from syntriever_haystack.errors import SyntrieverError
from syntriever_haystack.runtime.metadata import ModelMetadata
from syntriever_haystack.runtime.vector_space import VectorSpace, vector_space

if TYPE_CHECKING:
    from opensearchpy import OpenSearch

logger = logging.getLogger(__name__)

ENGINES: tuple[str, ...] = ("lucene", "faiss")
DEFAULT_ENGINE = "lucene"
DEFAULT_TEXT_ANALYZER = "english"  # stop words + stemming, like the in-memory BM25 (runtime.bm25)
META_KEY = "syntriever"
FIX = (
    "Fix: write to a new index (--index NEW_NAME), rebuild this one with `syntriever index --recreate` "
    "(deletes its documents), or re-index without downtime behind an alias (`syntriever index --alias NAME`)."
)


class IndexMismatchError(SyntrieverError, ValueError):
    """An existing index does not fit the model: nothing was written.

    :param index: The index (or alias) name.
    :param problems: One sentence per mismatch.
    """

    def __init__(self, message: str, *, index: str, problems: list[str]) -> None:
        super().__init__(message)
        self.index = index
        self.problems = problems


@dataclass(frozen=True)
class IndexStatus:
    """What :func:`ensure_index` found or did.

    :param name: The name asked for (an index or an alias).
    :param indices: The physical indices behind ``name``.
    :param created: Whether the index was created by this call.
    :param is_alias: Whether ``name`` is an alias.
    """

    name: str
    indices: tuple[str, ...]
    created: bool
    is_alias: bool = False


@dataclass(frozen=True)
class AliasSwap:
    """The result of :func:`reindex_via_alias`.

    :param alias: The alias, now pointing at ``index`` only.
    :param index: The new physical index.
    :param previous: The indices the alias (or the replaced concrete index) pointed at before.
    :param deleted: The previous indices that were deleted.
    :param documents: Documents in the new index when the alias was moved.
    """

    alias: str
    index: str
    previous: tuple[str, ...]
    deleted: tuple[str, ...]
    documents: int


def _engine(engine: str) -> str:
    engine = engine.strip().lower()
    if engine == "nmslib":
        raise SyntrieverError(
            "the nmslib k-NN engine is deprecated, and OpenSearch 3.0 and later refuse it for new indices; "
            "use engine='lucene' (default; filters during search, good up to a few million vectors) or 'faiss'."
        )
    if engine not in ENGINES:
        raise SyntrieverError(f"unknown k-NN engine {engine!r}; choose one of {', '.join(ENGINES)}.")
    return engine


def index_spec(
    metadata: ModelMetadata,
    *,
    engine: str = DEFAULT_ENGINE,
    m: int = 16,
    ef_construction: int = 100,
    ef_search: int | None = None,
    text_field: str = "content",
    embedding_field: str = "embedding",
    text_analyzer: str | None = DEFAULT_TEXT_ANALYZER,
    shards: int | None = None,
    replicas: int | None = None,
    model_name: str | None = None,
) -> dict[str, Any]:
    """The settings + mappings body that creates an index for ``metadata``'s embeddings.

    Haystack's OpenSearch retrievers query the fields ``content`` and ``embedding``: keep the default field
    names to use them. Metadata fields are mapped as ``OpenSearchDocumentStore`` maps them (strings as
    ``keyword``, so metadata filters match exact values).

    :param metadata: The exported bi-encoder's metadata.
    :param engine: ``lucene`` (default) or ``faiss``. ``nmslib`` is refused (OpenSearch 3 refuses it).
    :param m: HNSW links per node.
    :param ef_construction: HNSW candidate list size while building the graph.
    :param ef_search: HNSW candidate list size at search time (Faiss only; Lucene uses the query's ``k``).
    :param text_field: The BM25 text field.
    :param embedding_field: The ``knn_vector`` field.
    :param text_analyzer: Analyzer of the text field. Default ``english`` (English stop words and stemming):
        OpenSearch's BM25 (Lucene, ``k1=1.2``, ``b=0.75``) over it is what serves BM25 on OpenSearch, the analogue
        of the in-memory ``SyntrieverBM25Retriever`` (bm25s with English stop words and Snowball stemming) and of
        the evaluation's ``bm25``: close to, not identical with it (the analyzers' tokens differ slightly, e.g.
        possessives and stop-word lists). ``None``: OpenSearch's ``standard`` analyzer (no stemming).
    :param shards: ``number_of_shards`` (default: the cluster's).
    :param replicas: ``number_of_replicas`` (default: the cluster's; 0 suits a single-node cluster).
    :param model_name: Model name or path recorded in ``_meta`` (default: the model's ``source_model``).
    :returns: ``{"settings": ..., "mappings": ...}``, the body of ``PUT /<index>``.
    :raises SyntrieverError: Unknown or refused engine, or a parameter out of range.
    :raises ExportedModelError: The model is not a bi-encoder or its similarity cannot be indexed.
    """
    engine = _engine(engine)
    space = vector_space(metadata)
    if not 2 <= m <= 100:
        raise SyntrieverError(f"HNSW m must be between 2 and 100, got {m}.")
    if ef_construction < 2:
        raise SyntrieverError(f"HNSW ef_construction must be at least 2, got {ef_construction}.")
    parameters: dict[str, Any] = {"m": m, "ef_construction": ef_construction}
    if ef_search is not None:
        if engine != "faiss":
            raise SyntrieverError("ef_search is a Faiss setting; the Lucene engine uses the query's k instead.")
        parameters["ef_search"] = ef_search
    index_settings: dict[str, Any] = {"knn": True}
    if shards is not None:
        index_settings["number_of_shards"] = shards
    if replicas is not None:
        index_settings["number_of_replicas"] = replicas
    text_mapping: dict[str, Any] = {"type": "text"}
    if text_analyzer:
        text_mapping["analyzer"] = text_analyzer
    return {
        "settings": {"index": index_settings},
        "mappings": {
            "_meta": {META_KEY: _meta_block(metadata, space, engine, model_name, text_field, embedding_field)},
            "properties": {
                embedding_field: {
                    "type": "knn_vector",
                    "dimension": space.dimension,
                    "method": {
                        "name": "hnsw",
                        "space_type": space.space_type,
                        "engine": engine,
                        "parameters": parameters,
                    },
                },
                text_field: text_mapping,
            },
            # As OpenSearchDocumentStore's default mapping: metadata strings are exact-match keywords.
            "dynamic_templates": [{"strings": {"match_mapping_type": "string", "mapping": {"type": "keyword"}}}],
        },
    }


def _meta_block(
    metadata: ModelMetadata,
    space: VectorSpace,
    engine: str,
    model_name: str | None,
    text_field: str,
    embedding_field: str,
) -> dict[str, Any]:
    from syntriever_haystack._version import __version__

    return {
        "model": model_name or metadata.source_model,
        "source_model": metadata.source_model,
        "dimension": space.dimension,
        "space_type": space.space_type,
        "similarity": space.similarity,
        "normalize": space.normalized,
        "pooling": metadata.pooling,
        "engine": engine,
        "text_field": text_field,
        "embedding_field": embedding_field,
        "syntriever_haystack": __version__,
    }


def _problems(
    name: str,
    physical: str,
    body: dict[str, Any],
    space: VectorSpace,
    *,
    engine: str | None,
    embedding_field: str,
    source_model: str,
) -> list[str]:
    label = f"index '{name}'" if physical == name else f"index '{physical}' (behind alias '{name}')"
    mappings = body.get("mappings") or {}
    field = (mappings.get("properties") or {}).get(embedding_field)
    if not isinstance(field, dict):
        return [f"{label} has no '{embedding_field}' field, so it was not created for embeddings"]
    if field.get("type") != "knn_vector":
        return [f"{label} maps '{embedding_field}' as {field.get('type')!r}, not as a knn_vector"]
    problems = []
    dimension = field.get("dimension")
    if dimension is not None and int(dimension) != space.dimension:
        problems.append(f"{label} has dimension {int(dimension)}, the model makes {space.dimension}-d vectors")
    method = field.get("method") or {}
    index_space = str(method.get("space_type") or field.get("space_type") or "l2")
    if index_space != space.space_type:
        problems.append(
            f"{label} uses space_type '{index_space}', the model needs '{space.space_type}' ({space.reason})"
        )
    index_engine = method.get("engine")
    if engine is not None and index_engine is not None and index_engine != engine:
        problems.append(f"{label} uses the {index_engine} engine, {engine} was asked for")
    recorded = ((mappings.get("_meta") or {}).get(META_KEY) or {}).get("source_model")
    if not problems and recorded and source_model and recorded != source_model:
        logger.warning(
            "%s was built with the model %s, you are using %s: vectors of different models are not comparable "
            "unless one is an export of the other.",
            label,
            recorded,
            source_model,
        )
    return problems


def check_index(
    client: OpenSearch,
    name: str,
    metadata: ModelMetadata,
    *,
    engine: str | None = None,
    embedding_field: str = "embedding",
) -> IndexStatus:
    """Check that the existing index (or every index behind the alias) ``name`` fits the model. Read-only.

    :param client: An ``opensearchpy.OpenSearch`` client.
    :param name: Index or alias name; it must exist.
    :param metadata: The bi-encoder's metadata.
    :param engine: Also require this engine (``None``: accept any).
    :param embedding_field: The ``knn_vector`` field.
    :returns: The physical indices behind ``name``.
    :raises IndexMismatchError: Dimension, space type or engine do not fit; the message names the fix.
    """
    space = vector_space(metadata)
    wanted_engine = _engine(engine) if engine is not None else None
    found: dict[str, Any] = client.indices.get(index=name)
    problems: list[str] = []
    for physical, body in found.items():
        problems += _problems(
            name,
            physical,
            body,
            space,
            engine=wanted_engine,
            embedding_field=embedding_field,
            source_model=metadata.source_model,
        )
    if problems:
        raise IndexMismatchError("; ".join(problems) + ". Nothing was written. " + FIX, index=name, problems=problems)
    return IndexStatus(name=name, indices=tuple(found), created=False, is_alias=name not in found)


def ensure_index(
    client: OpenSearch,
    name: str,
    metadata: ModelMetadata,
    *,
    engine: str | None = None,
    recreate: bool = False,
    create: bool = True,
    **spec_options: Any,
) -> IndexStatus:
    """Create the index ``name`` for the model if absent; otherwise check it fits, before any write.

    :param client: An ``opensearchpy.OpenSearch`` client.
    :param name: Index name (or an existing alias, which is checked but never created or recreated).
    :param metadata: The bi-encoder's metadata.
    :param engine: Engine for a new index (default ``lucene``); for an existing index, require it (``None``:
        accept the index's engine).
    :param recreate: Delete an existing concrete index and create it afresh (its documents are lost).
    :param create: Create the index if it is absent; ``False`` raises instead.
    :param spec_options: Passed to :func:`index_spec` (``m``, ``ef_construction``, ``replicas``, ``model_name``, ...).
    :returns: What was found or done.
    :raises IndexMismatchError: The existing index does not fit the model (nothing was written).
    :raises SyntrieverError: The index is absent and ``create`` is false, or ``recreate`` names an alias.
    """
    spec = index_spec(metadata, engine=engine or DEFAULT_ENGINE, **spec_options)
    embedding_field = spec_options.get("embedding_field", "embedding")
    if client.indices.exists(index=name):
        if not recreate:
            return check_index(client, name, metadata, engine=engine, embedding_field=embedding_field)
        found = client.indices.get(index=name)
        if name not in found:
            raise SyntrieverError(
                f"'{name}' is an alias (of {', '.join(sorted(found))}); --recreate only rebuilds a concrete index. "
                f"Re-index behind the alias instead: `syntriever index --alias --index {name} ...`."
            )
        logger.info("deleting index %s to recreate it", name)
        client.indices.delete(index=name)
    elif not create:
        raise SyntrieverError(
            f"index '{name}' does not exist; build it first with `syntriever index --store opensearch --index {name}`."
        )
    client.indices.create(index=name, body=spec)
    return IndexStatus(name=name, indices=(name,), created=True)


def _timestamped(alias: str) -> str:
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%d-%H%M%S-%f")
    return f"{alias}-{stamp}"


def reindex_via_alias(
    client: OpenSearch,
    alias: str,
    metadata: ModelMetadata,
    fill: Callable[[str], Any],
    *,
    new_index: str | None = None,
    delete_old: bool = False,
    replace_index: bool = False,
    allow_empty: bool = False,
    engine: str | None = None,
    **spec_options: Any,
) -> AliasSwap:
    """Build a new physical index, fill it, then point ``alias`` at it in one atomic ``_aliases`` request.

    Searches through the alias see the old index until the swap and the complete new one after it. If
    ``fill`` raises, the new index is deleted and the alias is left untouched.

    :param client: An ``opensearchpy.OpenSearch`` client.
    :param alias: The alias clients search (created if it does not exist yet).
    :param metadata: The bi-encoder's metadata (the new index is laid out for it).
    :param fill: Called with the new index name; writes the documents (e.g. runs an indexing pipeline whose
        document store targets that index).
    :param new_index: Name of the new index (default ``{alias}-{UTC timestamp}``).
    :param delete_old: Delete the indices the alias pointed at after the swap.
    :param replace_index: If ``alias`` is a concrete index, replace it by the alias in the same atomic request
        (``remove_index``: the old index and its documents are deleted). Without it, that case is an error.
    :param allow_empty: Move the alias even if the new index holds no documents.
    :param engine: k-NN engine of the new index (default ``lucene``).
    :param spec_options: Passed to :func:`index_spec`.
    :returns: The new index and the previous ones.
    :raises SyntrieverError: ``alias`` is a concrete index (without ``replace_index``), the new index already
        exists, or the new index is empty (without ``allow_empty``).
    """
    spec = index_spec(metadata, engine=engine or DEFAULT_ENGINE, **spec_options)
    concrete = False
    previous: tuple[str, ...] = ()
    if client.indices.exists(index=alias):
        found = client.indices.get(index=alias)
        concrete = alias in found
        previous = tuple(sorted(found))
        if concrete and not replace_index:
            raise SyntrieverError(
                f"'{alias}' is a concrete index, not an alias, so it cannot be swapped atomically. Either pick an "
                f"alias name that is not an index (e.g. --index {alias}-live) and point clients at it, or pass "
                f"--replace-index to replace the index '{alias}' by an alias of the same name in the same atomic step "
                "(the old index and its documents are deleted)."
            )
    target = new_index or _timestamped(alias)
    if target == alias or client.indices.exists(index=target):
        raise SyntrieverError(f"index '{target}' already exists; pass another new index name.")
    client.indices.create(index=target, body=spec)
    try:
        fill(target)
        client.indices.refresh(index=target)
        documents = int(client.count(index=target)["count"])
        if documents == 0 and not allow_empty:
            raise SyntrieverError(
                f"the new index '{target}' is empty after filling it, so '{alias}' was not moved (searches would "
                "return nothing). Check the input documents."
            )
    except BaseException:
        logger.warning("re-indexing into %s failed; deleting it, alias %s unchanged", target, alias)
        try:
            client.indices.delete(index=target)
        except Exception as cleanup:  # the original error matters more
            logger.warning("could not delete %s: %s", target, cleanup)
        raise
    actions: list[dict[str, Any]] = [{"add": {"index": target, "alias": alias}}]
    if concrete:
        actions.append({"remove_index": {"index": alias}})
    else:
        actions = [{"remove": {"index": old, "alias": alias}} for old in previous] + actions
    client.indices.update_aliases(body={"actions": actions})
    deleted: tuple[str, ...] = ()
    if delete_old and previous and not concrete:
        for old in previous:
            client.indices.delete(index=old)
        deleted = previous
    elif concrete:
        deleted = previous
    return AliasSwap(alias=alias, index=target, previous=previous, deleted=deleted, documents=documents)


__all__ = [
    "DEFAULT_ENGINE",
    "ENGINES",
    "AliasSwap",
    "IndexMismatchError",
    "IndexStatus",
    "check_index",
    "ensure_index",
    "index_spec",
    "reindex_via_alias",
]
