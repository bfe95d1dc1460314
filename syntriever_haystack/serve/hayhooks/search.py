"""The ``search`` Hayhooks wrapper: a saved syntriever query pipeline served as ``POST /search/run``.

:class:`SearchWrapper` loads the YAML named by the environment
(:func:`~syntriever_haystack.serve.hayhooks.pipeline_path`) with
:func:`~syntriever_haystack.serve.pipelines.load_pipeline`, warms its models up and checks that its document store
answers and holds documents: all in ``setup()``, so a broken pipeline stops the server at start-up (in Hayhooks'
durable mode, which ``syntriever serve`` and the Docker image use) instead of failing on the first request.

Request (``POST /search/run``, JSON): ``query`` (1-4096 characters, not blank), ``top_k`` (1-100, default 5) and
``filters`` (a Haystack metadata filter, e.g. ``{"field": "meta.title", "operator": "==", "value": "Aspirin"}``,
applied by both retrievers). Any other field is a 422. Response: ``{"result": [{"id", "content", "score", "meta"},
...]}``, best first.

Hayhooks 2.1 builds the request model from ``run_api``'s signature with pydantic's default ``extra="ignore"`` and
hands ``run_api`` only the declared fields, so the wrapper cannot see an unknown field itself. This module therefore
wraps Hayhooks' model factory (:func:`_forbid_unknown_fields`) so that, for methods marked by
:func:`_forbids_unknown_fields` only, the model it returns forbids extra fields; ``setup()`` checks that the wrap took
effect and refuses to start otherwise.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar

from hayhooks import BasePipelineWrapper, log
from haystack import Document, Pipeline
from haystack.document_stores.in_memory import InMemoryDocumentStore
from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from syntriever_haystack.errors import SyntrieverError
from syntriever_haystack.serve.hayhooks import PIPELINE_NAME, pipeline_path
from syntriever_haystack.serve.pipelines import load_pipeline, query_inputs

__all__ = ["MAX_QUERY_CHARS", "MAX_TOP_K", "SearchWrapper", "check_filters", "document_json"]

MAX_TOP_K = 100
MAX_QUERY_CHARS = 4096
MAX_FILTER_NODES = 64
STORE_FILE = Path("data") / "document_store.json"  # of a run folder, next to pipelines/
COMPARISON_OPERATORS = frozenset({"==", "!=", ">", ">=", "<", "<=", "in", "not in"})
LOGICAL_OPERATORS = frozenset({"AND", "OR", "NOT"})
_FORBID_MARK = "__syntriever_forbid_unknown_fields__"

F = TypeVar("F", bound=Callable[..., Any])


def check_filters(filters: dict[str, Any] | None) -> dict[str, Any] | None:
    """``filters`` if it is a well-formed Haystack metadata filter (or empty / ``None``: no filter).

    A comparison is ``{"field": "meta.x", "operator": "==" | "!=" | ">" | ">=" | "<" | "<=" | "in" | "not in",
    "value": ...}`` (``in`` / ``not in`` take a list); a logical node is ``{"operator": "AND" | "OR" | "NOT",
    "conditions": [...]}``. At most 64 nodes.

    :raises ValueError: The filter is malformed (pydantic turns it into a 422 naming the node).
    """
    if not filters:
        return None
    nodes = 0

    def visit(node: Any, where: str) -> None:
        nonlocal nodes
        nodes += 1
        if nodes > MAX_FILTER_NODES:
            raise ValueError(f"more than {MAX_FILTER_NODES} filter conditions")
        if not isinstance(node, dict):
            raise ValueError(f"{where} must be an object, got {type(node).__name__}")
        if "conditions" in node:
            if set(node) != {"operator", "conditions"}:
                raise ValueError(f"{where}: a logical filter has exactly the keys 'operator' and 'conditions'")
            if node["operator"] not in LOGICAL_OPERATORS:
                raise ValueError(f"{where}.operator must be one of {sorted(LOGICAL_OPERATORS)}")
            conditions = node["conditions"]
            if not isinstance(conditions, list) or not conditions:
                raise ValueError(f"{where}.conditions must be a non-empty list")
            for i, condition in enumerate(conditions):
                visit(condition, f"{where}.conditions[{i}]")
            return
        if set(node) != {"field", "operator", "value"}:
            raise ValueError(
                f"{where}: a comparison has exactly the keys 'field', 'operator' and 'value' (a logical filter: "
                "'operator' and 'conditions')"
            )
        if not isinstance(node["field"], str) or not node["field"]:
            raise ValueError(f"{where}.field must be a field name such as 'meta.title'")
        operator = node["operator"]
        if operator not in COMPARISON_OPERATORS:
            raise ValueError(f"{where}.operator must be one of {sorted(COMPARISON_OPERATORS)}")
        if operator in ("in", "not in") and not isinstance(node["value"], list):
            raise ValueError(f"{where}.value must be a list for operator {operator!r}")

    visit(filters, "filters")
    return filters


Query = Annotated[str, Field(min_length=1, max_length=MAX_QUERY_CHARS, pattern=r"\S")]
TopK = Annotated[int, Field(ge=1, le=MAX_TOP_K)]
Filters = Annotated[dict[str, Any] | None, AfterValidator(check_filters)]


def _forbids_unknown_fields(method: F) -> F:
    """Mark ``method`` so that Hayhooks' request model built from its signature rejects unknown fields."""
    setattr(method, _FORBID_MARK, True)
    return method


def _forbidding(model: type[BaseModel]) -> type[BaseModel]:
    namespace = {"model_config": ConfigDict(extra="forbid"), "__module__": model.__module__, "__doc__": model.__doc__}
    return type(model.__name__, (model,), namespace)


def _forbid_unknown_fields() -> None:
    """Wrap ``create_request_model_from_callable`` where Hayhooks 2.1 calls it (idempotent, marked methods only)."""
    from hayhooks.server.pipelines import models
    from hayhooks.server.utils import deploy_utils

    for module in (models, deploy_utils):
        original = getattr(module, "create_request_model_from_callable", None)
        if original is None or getattr(original, _FORBID_MARK, False):
            continue

        def create(func: Callable[..., Any], *args: Any, _original: Any = original, **kwargs: Any) -> type[BaseModel]:
            model = _original(func, *args, **kwargs)
            marked = getattr(getattr(func, "__func__", func), _FORBID_MARK, False)
            return _forbidding(model) if marked else model

        setattr(create, _FORBID_MARK, True)
        module.create_request_model_from_callable = create


_forbid_unknown_fields()


def document_json(document: Document) -> dict[str, Any]:
    """What the API returns for one document: ``id``, ``content``, ``score`` and ``meta``."""
    return {"id": document.id, "content": document.content, "score": document.score, "meta": document.meta}


def _final_component(pipeline: Pipeline, path: Path) -> str:
    components = dict(pipeline.walk())
    missing = [
        name for name in ("bm25_retriever", "text_embedder", "embedding_retriever", "joiner") if name not in components
    ]
    if missing:
        raise SyntrieverError(
            f"{path} is not a syntriever query pipeline (no {', '.join(missing)}; it has {', '.join(components)}): "
            "serve RUN/pipelines/query.yaml or query-rerank.yaml."
        )
    return "ranker" if "ranker" in components else "joiner"


def _opensearch_url(store: Any) -> str | None:
    if type(store).__name__ != "OpenSearchDocumentStore":
        return None
    hosts = store.to_dict().get("init_parameters", {}).get("hosts")
    return ", ".join(hosts) if isinstance(hosts, list) else str(hosts)


def _count_documents(store: Any, path: Path) -> int:
    """Documents in the pipeline's store; an unreachable OpenSearch fails here, named with its address."""
    url = _opensearch_url(store)
    try:
        return int(store.count_documents())
    except Exception as exc:
        if url is None:
            raise
        raise SyntrieverError(
            f"cannot serve {path}: the OpenSearch cluster at {url} did not answer ({type(exc).__name__}: {exc}). "
            "Start it, or fix the hosts / credentials (OPENSEARCH_USERNAME, OPENSEARCH_PASSWORD) the YAML names."
        ) from exc


def _fill_from_run_folder(store: Any, path: Path) -> int:
    """A plain in-memory store saved in a YAML comes back empty: fill its shared index from the run folder's store
    file (``RUN/data/document_store.json`` next to ``RUN/pipelines/``), as the run report's recipe does."""
    if not isinstance(store, InMemoryDocumentStore):
        return 0
    store_file = path.resolve().parent.parent / STORE_FILE
    if not store_file.is_file():
        return 0
    from syntriever_haystack.serve.memory_store import load_memory_store

    load_memory_store(store_file)  # the same index name: the pipeline's store sees the documents
    return int(store.count_documents())


class SearchWrapper(BasePipelineWrapper):
    """Serve the saved query pipeline named by the environment; see the module docstring."""

    pipeline: Pipeline
    final: str
    path: Path

    def setup(self) -> None:
        """Load, check and warm up the pipeline.

        :raises SyntrieverError: Nothing to serve, the YAML or a model is missing or broken, the store cannot be
            reached or holds no document, or the request model would not reject unknown fields.
        """
        self.path = pipeline_path()
        try:
            pipeline = load_pipeline(self.path)
            self.final = _final_component(pipeline, self.path)
            pipeline.warm_up()  # load the ONNX models now, not on the first request
        except SyntrieverError as exc:
            raise SyntrieverError(f"cannot serve {self.path}: {exc}") from exc
        except Exception as exc:  # Haystack's (de)serialisation and component errors
            raise SyntrieverError(f"cannot serve {self.path}: {type(exc).__name__}: {exc}") from exc
        self.pipeline = pipeline
        retriever: Any = dict(pipeline.walk())["bm25_retriever"]
        store = getattr(retriever, "document_store", None) or retriever._document_store  # OpenSearch: private
        count = _count_documents(store, self.path) or _fill_from_run_folder(store, self.path)
        if not count:
            raise SyntrieverError(
                f"cannot serve {self.path}: its document store ({type(store).__name__}) holds no document. Index "
                f"first (`syntriever run RECIPE --until index`, or `syntriever index`), and keep {STORE_FILE} next to "
                "the pipelines/ folder of a run."
            )
        self._check_request_model()
        log.info("search: serving {} ({} documents, final component '{}')", self.path, count, self.final)

    def _check_request_model(self) -> None:
        """Refuse to start unless the request models Hayhooks builds from ``run_api`` forbid unknown fields."""
        import docstring_parser
        from hayhooks.server.pipelines import models
        from hayhooks.server.utils import deploy_utils

        docstring = docstring_parser.parse(inspect.getdoc(self.run_api) or "")
        for module in (models, deploy_utils):
            request_model = module.create_request_model_from_callable(self.run_api, f"{PIPELINE_NAME}Run", docstring)
            if request_model.model_config.get("extra") != "forbid":
                raise SyntrieverError(
                    "this Hayhooks version builds request models this wrapper cannot make strict (unknown request "
                    "fields would be ignored); install hayhooks>=2.1,<3 as pinned by syntriever-haystack[serve]."
                )

    def search(self, query: str, *, top_k: int = 5, filters: dict[str, Any] | None = None) -> list[Document]:
        """The best ``top_k`` documents for ``query`` (filters applied by both retrievers), best first."""
        data = query_inputs(self.pipeline, query, filters=check_filters(filters))
        data.setdefault(self.final, {})["top_k"] = top_k  # beyond the saved pipeline's own top_k, up to 100
        return list(self.pipeline.run(data)[self.final]["documents"])[:top_k]

    @_forbids_unknown_fields
    def run_api(self, query: Query, top_k: TopK = 5, filters: Filters = None) -> list[dict]:
        """
        Search the indexed documents.

        :param query: The user's question or keywords (1-4096 characters).
        :param top_k: How many documents to return (1-100).
        :param filters: Haystack metadata filter applied by both retrievers, e.g.
            {"field": "meta.title", "operator": "==", "value": "Aspirin"}; logical nodes
            {"operator": "AND" | "OR" | "NOT", "conditions": [...]}.
        :returns: The best documents first: id, content, score and meta (title, source_id of a chunk, ...).
        """
        return [document_json(doc) for doc in self.search(query, top_k=top_k, filters=filters)]
