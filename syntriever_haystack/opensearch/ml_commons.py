"""Run our exported models *inside* an OpenSearch cluster with ML Commons, and wire them into pipelines.

Flow (requests as in ``docs/ml-commons.md``): optional dev cluster settings → model group → register meta
→ upload the zip in chunks → wait for ``REGISTERED`` → deploy (a task) → ingest pipeline with a
``text_embedding`` processor / search pipeline with a ``rerank`` processor → ``neural`` queries.

Every request goes through opensearch-py's own methods: ML Commons through ``client.plugins.ml``
(``register_model_group``, ``register_model_meta``, ``upload_chunk``, ``get_model``, ``deploy_model``,
``get_task``, ``predict``, ``predict_model``, ``undeploy_model``, ``delete_model``), the rest through
``client.cluster.put_settings``, ``client.ingest.put_pipeline`` and ``client.search_pipeline.put``. They all end
in ``client.transport.perform_request``, so any client built by
:class:`~syntriever_haystack.opensearch.OpenSearchConnection` works and tests can script the transport.
"""

from __future__ import annotations

import functools
import json
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from syntriever_haystack.errors import SyntrieverError
from syntriever_haystack.export.ml_commons_bundle import MlCommonsBundle

ML = "/_plugins/_ml"
#: Settings a single-node development cluster needs to run local models (see docs for what they open up).
DEV_CLUSTER_SETTINGS: dict[str, str] = {
    "plugins.ml_commons.only_run_on_ml_node": "false",
    "plugins.ml_commons.allow_registering_model_via_local_file": "true",
    "plugins.ml_commons.native_memory_threshold": "99",
    "plugins.ml_commons.jvm_heap_memory_threshold": "95",
}
_TASK_FAILED = ("FAILED", "COMPLETED_WITH_ERROR", "CANCELLED")
_GROUP_EXISTS = re.compile(r"already being used by a model group with ID: ([^\s.]+)")


class MLCommonsError(SyntrieverError):
    """An ML Commons request or task failed; the message carries the cluster's own reason."""


@dataclass
class DeployedModel:
    """A model registered and deployed from a bundle.

    :param model_id: ML Commons model id.
    :param function_name: ``TEXT_EMBEDDING`` or ``TEXT_SIMILARITY``.
    :param bundle: The bundle it was built from.
    :param model_group_id: Model group it belongs to.
    """

    model_id: str
    function_name: str
    bundle: MlCommonsBundle
    model_group_id: str


class MLCommonsClient:
    """ML Commons model lifecycle and pipelines over an ``opensearchpy.OpenSearch`` client.

    :param client: An ``opensearchpy.OpenSearch`` client (e.g. ``OpenSearchConnection(...).client()``).
    :param poll_interval: Seconds between task / model state polls.
    :param sleep: Sleep function (tests pass a no-op).
    :param clock: Monotonic clock (tests pass a fake one).

    Usage example:

    ```python
    from syntriever_haystack.export.ml_commons_bundle import build_bundle
    from syntriever_haystack.opensearch import OpenSearchConnection

    ml = MLCommonsClient(OpenSearchConnection(url="http://localhost:9200").client())
    model = ml.register_and_deploy(build_bundle("models/retriever-onnx", "build/retriever.zip"))
    ml.put_ingest_pipeline("embed", ingest_pipeline_body(model.model_id, {"content": "embedding"}))
    ```
    """

    def __init__(
        self,
        client: Any,
        *,
        poll_interval: float = 1.0,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.client = client
        self.poll_interval = poll_interval
        self._sleep = sleep
        self._clock = clock

    # ------------------------------------------------------------------ transport
    def request(self, method: str, path: str, body: Any = None, *, what: str) -> Any:
        """A raw ``client.transport.perform_request``, for an endpoint opensearch-py has no method for.

        Every request of this class has one (see :meth:`send`); this stays for callers' own endpoints.
        """
        return self._checked(
            lambda: self.client.transport.perform_request(method, path, body=body), method, path, what=what
        )

    def send(self, api: str, method: str, path: str, *, what: str, body: Any = None, **path_args: Any) -> Any:
        """Call opensearch-py's ``api`` (``"plugins.ml.get_task"``, ``"ingest.put_pipeline"``, ...) on the client.

        ``method`` and ``path`` are the request it sends, named in errors. With an opensearch-py that lacks the
        method (older releases wrap fewer ML Commons endpoints) the same request goes out raw through
        ``client.transport.perform_request``.
        """
        target: Any = self.client
        for part in api.split("."):
            target = getattr(target, part, None)
        if not callable(target):  # not wrapped by this opensearch-py: the same request, raw
            return self.request(method, path, body, what=what)
        call = functools.partial(target, **path_args, **({} if body is None else {"body": body}))
        return self._checked(call, method, path, what=what)

    def _checked(self, call: Callable[[], Any], method: str, path: str, *, what: str) -> Any:
        """Run one call; HTTP errors become :class:`MLCommonsError` naming ``what`` and the cluster's reason.

        Connection, TLS and authentication errors are raised unchanged (the CLI turns them into messages
        naming the URL and the fix, see :mod:`syntriever_haystack.opensearch.errors`).
        """
        try:
            from opensearchpy.exceptions import (
                AuthenticationException,
                AuthorizationException,
                ConnectionError,
                TransportError,
            )
        except ImportError as exc:  # pragma: no cover - depends on the install
            raise SyntrieverError(
                "ML Commons support needs the opensearch extra: pip install 'syntriever-haystack[opensearch]'"
            ) from exc
        try:
            return call()
        except (ConnectionError, AuthenticationException, AuthorizationException):
            raise
        except TransportError as exc:
            raise MLCommonsError(f"{what} failed ({method} {path}): {_reason(exc)}{_hint(exc)}") from exc

    # ------------------------------------------------------------------ cluster
    def apply_dev_cluster_settings(self, settings: dict[str, str] | None = None) -> dict[str, Any]:
        """``PUT /_cluster/settings`` with :data:`DEV_CLUSTER_SETTINGS` (persistent). Development clusters only."""
        body = {"persistent": dict(settings or DEV_CLUSTER_SETTINGS)}
        what = "Updating ML Commons cluster settings"
        return dict(self.send("cluster.put_settings", "PUT", "/_cluster/settings", body=body, what=what))

    # ------------------------------------------------------------------ models
    def register_model_group(self, name: str, description: str = "") -> str:
        """Create model group ``name`` and return its id; an existing group of that name is reused."""
        body = {"name": name, "description": description or "syntriever-haystack models"}
        try:
            response = self.send(
                "plugins.ml.register_model_group",
                "POST",
                f"{ML}/model_groups/_register",
                body=body,
                what=f"Registering model group {name!r}",
            )
        except MLCommonsError as exc:
            match = _GROUP_EXISTS.search(str(exc))
            if match:
                return match.group(1)
            raise
        return str(_require(response, "model_group_id", "model group registration"))

    def register_bundle(self, bundle: MlCommonsBundle, *, model_group_id: str, timeout: float = 300.0) -> str:
        """Register meta, upload every chunk, wait until the model is ``REGISTERED``; returns its id."""
        body = dict(bundle.register_body, model_group_id=model_group_id)
        response = self.send(
            "plugins.ml.register_model_meta",
            "POST",
            f"{ML}/models/_register_meta",
            body=body,
            what=f"Registering model {body['name']!r}",
        )
        model_id = str(_require(response, "model_id", "model meta registration"))
        uploaded = 0
        for number, chunk in enumerate(bundle.chunks()):
            self.send(
                "plugins.ml.upload_chunk",
                "POST",
                f"{ML}/models/{model_id}/upload_chunk/{number}",
                model_id=model_id,
                chunk_number=number,
                body=chunk,
                what=f"Uploading chunk {number + 1}/{bundle.total_chunks} of model {model_id}",
            )
            uploaded += 1
        if uploaded != bundle.total_chunks:
            raise MLCommonsError(
                f"Uploaded {uploaded} chunks but the register body says {bundle.total_chunks}: "
                f"'{bundle.zip_path}' changed after it was built. Rebuild the bundle."
            )
        self.wait_for_model_state(model_id, ("REGISTERED", "DEPLOYED"), timeout=timeout)
        return model_id

    def deploy(self, model_id: str, *, timeout: float = 600.0) -> dict[str, Any]:
        """``POST .../_deploy`` and wait for the deploy task; returns the completed task."""
        response = self.send(
            "plugins.ml.deploy_model",
            "POST",
            f"{ML}/models/{model_id}/_deploy",
            model_id=model_id,
            what=f"Deploying model {model_id}",
        )
        task_id = str(_require(response, "task_id", "model deployment"))
        return self.wait_for_task(task_id, timeout=timeout, what=f"Deploying model {model_id}")

    def register_and_deploy(
        self,
        bundle: MlCommonsBundle,
        *,
        model_group: str = "syntriever",
        model_group_id: str | None = None,
        timeout: float = 600.0,
    ) -> DeployedModel:
        """Model group (unless ``model_group_id``) → register with chunked upload → deploy."""
        group_id = model_group_id or self.register_model_group(model_group)
        model_id = self.register_bundle(bundle, model_group_id=group_id, timeout=timeout)
        self.deploy(model_id, timeout=timeout)
        return DeployedModel(
            model_id=model_id, function_name=bundle.function_name, bundle=bundle, model_group_id=group_id
        )

    def get_model(self, model_id: str) -> dict[str, Any]:
        path, what = f"{ML}/models/{model_id}", f"Reading model {model_id}"
        return dict(self.send("plugins.ml.get_model", "GET", path, model_id=model_id, what=what))

    def undeploy(self, model_id: str) -> dict[str, Any]:
        path, what = f"{ML}/models/{model_id}/_undeploy", f"Undeploying {model_id}"
        return dict(self.send("plugins.ml.undeploy_model", "POST", path, model_id=model_id, what=what))

    def delete_model(self, model_id: str) -> dict[str, Any]:
        path, what = f"{ML}/models/{model_id}", f"Deleting model {model_id}"
        return dict(self.send("plugins.ml.delete_model", "DELETE", path, model_id=model_id, what=what))

    # ------------------------------------------------------------------ polling
    def wait_for_task(self, task_id: str, *, timeout: float = 600.0, what: str = "ML Commons task") -> dict[str, Any]:
        """Poll ``GET /_plugins/_ml/tasks/{task_id}`` until ``COMPLETED``.

        :raises MLCommonsError: When the task fails (its ``error`` is in the message) or ``timeout`` passes.
        """
        deadline = self._clock() + timeout
        while True:
            path, reading = f"{ML}/tasks/{task_id}", f"Reading task {task_id}"
            task = dict(self.send("plugins.ml.get_task", "GET", path, task_id=task_id, what=reading))
            state = str(task.get("state", ""))
            if state == "COMPLETED":
                return task
            if state in _TASK_FAILED:
                raise MLCommonsError(f"{what}: task {task_id} ended {state}: {_task_error(task)}{_task_hint(task)}")
            if self._clock() >= deadline:
                raise MLCommonsError(
                    f"{what}: task {task_id} still {state or 'unknown'} after {timeout:.0f} s. "
                    f"Check GET {ML}/tasks/{task_id}, or raise --timeout on a slow node."
                )
            self._sleep(self.poll_interval)

    def wait_for_model_state(self, model_id: str, states: Sequence[str], *, timeout: float = 300.0) -> dict[str, Any]:
        """Poll ``GET /_plugins/_ml/models/{model_id}`` until ``model_state`` is one of ``states``."""
        deadline = self._clock() + timeout
        while True:
            model = self.get_model(model_id)
            state = str(model.get("model_state", ""))
            if state in states:
                return model
            if state in ("REGISTER_FAILED", "DEPLOY_FAILED"):
                raise MLCommonsError(f"Model {model_id} is {state}. Check the OpenSearch logs for the cause.")
            if self._clock() >= deadline:
                raise MLCommonsError(
                    f"Model {model_id} still {state or 'unknown'} after {timeout:.0f} s (wanted {list(states)})."
                )
            self._sleep(self.poll_interval)

    # ------------------------------------------------------------------ inference checks
    def embed(self, model_id: str, texts: Sequence[str]) -> list[list[float]]:
        """``POST /_plugins/_ml/_predict/text_embedding/{id}``: one ``sentence_embedding`` per text."""
        body = {"text_docs": list(texts), "return_number": True, "target_response": ["sentence_embedding"]}
        response = self.send(
            "plugins.ml.predict",
            "POST",
            f"{ML}/_predict/text_embedding/{model_id}",
            algorithm_name="text_embedding",
            model_id=model_id,
            body=body,
            what=f"Embedding with {model_id}",
        )
        results = _require(response, "inference_results", "text embedding")
        return [[float(x) for x in item["output"][0]["data"]] for item in results]

    def similarity(self, model_id: str, query: str, documents: Sequence[str]) -> list[float]:
        """``POST /_plugins/_ml/models/{id}/_predict`` with ``query_text``/``text_docs``: one score per document."""
        body = {"query_text": query, "text_docs": list(documents)}
        response = self.send(
            "plugins.ml.predict_model",
            "POST",
            f"{ML}/models/{model_id}/_predict",
            model_id=model_id,
            body=body,
            what=f"Scoring with {model_id}",
        )
        results = _require(response, "inference_results", "text similarity")
        return [float(item["output"][0]["data"][0]) for item in results]

    # ------------------------------------------------------------------ pipelines
    def put_ingest_pipeline(self, name: str, body: dict[str, Any]) -> dict[str, Any]:
        path, what = f"/_ingest/pipeline/{name}", f"Creating ingest pipeline {name!r}"
        return dict(self.send("ingest.put_pipeline", "PUT", path, id=name, body=body, what=what))

    def put_search_pipeline(self, name: str, body: dict[str, Any]) -> dict[str, Any]:
        path, what = f"/_search/pipeline/{name}", f"Creating search pipeline {name!r}"
        return dict(self.send("search_pipeline.put", "PUT", path, id=name, body=body, what=what))


# ---------------------------------------------------------------------------------------------- bodies
def ingest_pipeline_body(
    model_id: str,
    field_map: dict[str, str],
    *,
    document_prefix: str = "",
    description: str = "syntriever: embed documents in OpenSearch (ML Commons text_embedding)",
) -> dict[str, Any]:
    """Ingest pipeline body with a ``text_embedding`` processor (``field_map``: source field → vector field).

    With a ``document_prefix`` (models trained with e.g. ``"passage: "``), each source field is first copied
    with the prefix into a temporary field, embedded from there, and the temporary field removed, so the
    stored text stays as it was.
    """
    if not field_map:
        raise SyntrieverError("field_map is empty: pass e.g. --field-map content:embedding")
    if not document_prefix:
        return {
            "description": description,
            "processors": [{"text_embedding": {"model_id": model_id, "field_map": dict(field_map)}}],
        }
    processors: list[dict[str, Any]] = []
    embed_map: dict[str, str] = {}
    for source, target in field_map.items():
        tmp = "_syntriever_prefixed_" + source.replace(".", "_")
        processors.append(
            {
                "set": {
                    "field": tmp,
                    "value": document_prefix + "{{{" + source + "}}}",
                    "if": "ctx." + "?.".join(source.split(".")) + " != null",
                }
            }
        )
        embed_map[tmp] = target
    processors.append({"text_embedding": {"model_id": model_id, "field_map": embed_map}})
    processors.append({"remove": {"field": list(embed_map), "ignore_missing": True}})
    return {"description": description, "processors": processors}


def search_pipeline_body(
    model_id: str,
    document_fields: Sequence[str],
    *,
    description: str = "syntriever: rerank in OpenSearch (ML Commons cross-encoder)",
) -> dict[str, Any]:
    """Search pipeline body with a ``rerank`` response processor (``ml_opensearch`` cross-encoder)."""
    if not document_fields:
        raise SyntrieverError("document_fields is empty: pass e.g. --document-field content")
    return {
        "description": description,
        "response_processors": [
            {"rerank": {"ml_opensearch": {"model_id": model_id}, "context": {"document_fields": list(document_fields)}}}
        ],
    }


def neural_query(
    vector_field: str, query_text: str, model_id: str, *, k: int = 10, query_prefix: str = ""
) -> dict[str, Any]:
    """``neural`` query clause: OpenSearch embeds ``query_prefix + query_text`` with ``model_id``."""
    return {"neural": {vector_field: {"query_text": query_prefix + query_text, "model_id": model_id, "k": int(k)}}}


def search_body(
    vector_field: str,
    query_text: str,
    model_id: str,
    *,
    k: int = 10,
    size: int | None = None,
    query_prefix: str = "",
    rerank: bool = False,
    source_excludes: Sequence[str] = (),
) -> dict[str, Any]:
    """A ready-to-send ``_search`` body: neural retrieval, plus the rerank context when a rerank pipeline runs.

    The rerank processor takes the query from ``ext.rerank.query_context.query_text`` (without prefix: the
    cross-encoder gets the raw query).
    """
    body: dict[str, Any] = {
        "size": int(size if size is not None else k),
        "query": neural_query(vector_field, query_text, model_id, k=k, query_prefix=query_prefix),
    }
    if source_excludes:
        body["_source"] = {"excludes": list(source_excludes)}
    if rerank:
        body["ext"] = {"rerank": {"query_context": {"query_text": query_text}}}
    return body


def neural_index_body(
    vector_field: str,
    dimension: int,
    *,
    similarity: str = "cosine",
    text_fields: Sequence[str] = ("content",),
    ingest_pipeline: str | None = None,
    search_pipeline: str | None = None,
) -> dict[str, Any]:
    """Index body for in-cluster embedding: a k-NN vector field (Lucene HNSW) and default pipelines."""
    space = {"cosine": "cosinesimil", "dot_product": "innerproduct", "l2": "l2"}.get(similarity)
    if space is None:
        raise SyntrieverError(f"similarity must be cosine, dot_product or l2, got {similarity!r}.")
    settings: dict[str, Any] = {"index.knn": True}
    if ingest_pipeline:
        settings["index.default_pipeline"] = ingest_pipeline
    if search_pipeline:
        settings["index.search.default_pipeline"] = search_pipeline
    properties: dict[str, Any] = {name: {"type": "text"} for name in text_fields}
    properties[vector_field] = {
        "type": "knn_vector",
        "dimension": int(dimension),
        "method": {"name": "hnsw", "engine": "lucene", "space_type": space},
    }
    return {"settings": settings, "mappings": {"properties": properties}}


# ---------------------------------------------------------------------------------------------- errors
def _require(response: Any, key: str, what: str) -> Any:
    if not isinstance(response, dict) or key not in response:
        raise MLCommonsError(f"Unexpected {what} response (no {key!r}): {json.dumps(response)[:500]}")
    return response[key]


def _reason(exc: Any) -> str:
    info = getattr(exc, "info", None)
    if isinstance(info, dict):
        error = info.get("error", info)
        if isinstance(error, dict):
            root = (error.get("root_cause") or [{}])[0] if isinstance(error.get("root_cause"), list) else {}
            reason = error.get("reason") or root.get("reason") or json.dumps(error)[:500]
            return f"{getattr(exc, 'status_code', '')} {reason}".strip()
        return f"{getattr(exc, 'status_code', '')} {error}".strip()
    return str(exc)


def _hint(exc: Any) -> str:
    if "allow_registering_model_via_local_file" in _reason(exc):
        return (
            ". Fix: allow local-file registration (PUT _cluster/settings "
            '{"persistent": {"plugins.ml_commons.allow_registering_model_via_local_file": true}}), '
            "or pass --dev-cluster-settings on a development cluster."
        )
    if getattr(exc, "status_code", None) == 400 and "no handler found" in _reason(exc).lower():
        return ". Fix: install the ml-commons plugin (OpenSearch 2.12+ distributions include it)."
    return ""


def _task_error(task: dict[str, Any]) -> str:
    error = task.get("error")
    if error is None:
        return "no error message in the task"
    if isinstance(error, str):
        try:  # deploy tasks report {"<node id>": "<message>"} as a JSON string
            parsed = json.loads(error)
        except json.JSONDecodeError:
            return error
        if isinstance(parsed, dict):
            return "; ".join(f"{node}: {message}" for node, message in parsed.items())
        return error
    return json.dumps(error)


def _task_hint(task: dict[str, Any]) -> str:
    text = _task_error(task)
    if "No eligible node" in text or "only_run_on_ml_node" in text:
        return (
            ". Fix: add a node with the ml role, or allow data nodes "
            "(plugins.ml_commons.only_run_on_ml_node=false; --dev-cluster-settings does it on a dev cluster)."
        )
    if "Memory Circuit Breaker" in text or "memory" in text.lower():
        return (
            ". Fix: give the node more memory, or raise plugins.ml_commons.native_memory_threshold / "
            "jvm_heap_memory_threshold (--dev-cluster-settings sets 99 / 95)."
        )
    if "Input mismatch" in text:
        return (
            ". Fix: rebuild the bundle with `syntriever mlcommons bundle` "
            "(graph inputs must match what ML Commons feeds)."
        )
    return ""
