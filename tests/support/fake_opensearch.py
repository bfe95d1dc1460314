"""A scripted OpenSearch behind a real ``opensearchpy`` client: no sockets, every request recorded.

``FakeCluster.connection_class()`` is an ``opensearchpy.Connection`` subclass whose ``perform_request`` answers
from an in-memory model of indices, aliases and documents, so the real client, its transport and serializer
(and ``OpenSearchDocumentStore``, which forwards ``connection_class``) run unchanged. Tests assert the exact
method, path and JSON body of what was sent.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from opensearchpy import Connection, OpenSearch

URL = "http://localhost:9200"
READ_METHODS = ("HEAD", "GET")


@dataclass
class Request:
    method: str
    path: str
    params: dict[str, Any]
    body: Any


def _decode(body: Any) -> Any:
    if body is None or body == b"" or body == "":
        return None
    text = body.decode("utf-8") if isinstance(body, bytes) else str(body)
    try:
        return json.loads(text)
    except json.JSONDecodeError:  # NDJSON (bulk)
        return [json.loads(line) for line in text.splitlines() if line.strip()]


@dataclass
class FakeCluster:
    """Indices (name → {"mappings", "settings"}), aliases (alias → set of indices) and documents."""

    indices: dict[str, dict[str, Any]] = field(default_factory=dict)
    aliases: dict[str, set[str]] = field(default_factory=dict)
    documents: dict[str, dict[str, Any]] = field(default_factory=dict)
    requests: list[Request] = field(default_factory=list)
    search: Callable[[str, dict[str, Any]], list[dict[str, Any]]] | None = None
    fail_with: Exception | None = None

    # ------------------------------------------------------------------ helpers for tests
    def add_index(self, name: str, body: dict[str, Any]) -> None:
        self.indices[name] = copy.deepcopy(body)
        self.documents.setdefault(name, {})

    def client(self) -> OpenSearch:
        return OpenSearch(hosts=[URL], connection_class=self.connection_class(), max_retries=0)

    def writes(self) -> list[Request]:
        return [r for r in self.requests if r.method not in READ_METHODS and not r.path.endswith("/_search")]

    def calls(self) -> list[tuple[str, str]]:
        return [(r.method, r.path) for r in self.requests]

    def connection_class(self) -> type[Connection]:
        cluster = self

        class _FakeConnection(Connection):
            def perform_request(
                self,
                method: str,
                url: str,
                params: Any = None,
                body: Any = None,
                timeout: Any = None,
                ignore: Any = (),
                headers: Any = None,
            ) -> tuple[int, dict[str, str], str]:
                request = Request(method, url.split("?")[0], dict(params or {}), _decode(body))
                cluster.requests.append(request)
                if cluster.fail_with is not None:
                    raise cluster.fail_with
                status, payload = cluster.handle(request)
                raw = "" if payload is None else json.dumps(payload)
                if not 200 <= status < 300 and status not in (ignore or ()):
                    self._raise_error(status, raw, "application/json")
                return status, {"content-type": "application/json"}, raw

        return _FakeConnection

    # ------------------------------------------------------------------ the server
    def _resolve(self, name: str) -> list[str]:
        if name in self.indices:
            return [name]
        return sorted(self.aliases.get(name, ()))

    def handle(self, request: Request) -> tuple[int, Any]:
        method, parts, body = request.method, [p for p in request.path.split("/") if p], request.body
        missing = (404, {"error": {"type": "index_not_found_exception"}, "status": 404})
        if parts == ["_aliases"] and method == "POST":
            for action in body["actions"]:
                (kind, spec), *_ = action.items()
                if kind == "add":
                    self.aliases.setdefault(spec["alias"], set()).add(spec["index"])
                elif kind == "remove":
                    self.aliases.get(spec["alias"], set()).discard(spec["index"])
                elif kind == "remove_index":
                    self.indices.pop(spec["index"], None)
            return 200, {"acknowledged": True}
        if len(parts) == 1:
            name = parts[0]
            targets = self._resolve(name)
            if method == "HEAD":
                return (200, None) if targets else (404, None)
            if method == "GET":
                if not targets:
                    return missing
                return 200, {i: {"aliases": {}, **copy.deepcopy(self.indices[i])} for i in targets}
            if method == "PUT":
                if targets:
                    return 400, {"error": {"type": "resource_already_exists_exception"}, "status": 400}
                self.add_index(name, {"mappings": body.get("mappings", {}), "settings": body.get("settings", {})})
                return 200, {"acknowledged": True, "index": name}
            if method == "DELETE":
                if name not in self.indices:
                    return missing
                del self.indices[name]
                self.documents.pop(name, None)
                return 200, {"acknowledged": True}
        if len(parts) == 2:
            name, op = parts
            targets = self._resolve(name)
            if op == "_refresh":
                return (200, {"_shards": {}}) if targets else missing
            if op == "_count":
                return (200, {"count": sum(len(self.documents.get(t, {})) for t in targets)}) if targets else missing
            if op == "_mapping" and method == "GET":
                return (200, {t: {"mappings": self.indices[t]["mappings"]} for t in targets}) if targets else missing
            if op == "_bulk":
                if len(targets) != 1:
                    return missing
                items = []
                for action, source in zip(body[::2], body[1::2], strict=True):
                    (op_type, meta), *_ = action.items()
                    self.documents[targets[0]][meta["_id"]] = source
                    items.append({op_type: {"_index": targets[0], "_id": meta["_id"], "status": 201}})
                return 200, {"took": 1, "errors": False, "items": items}
            if op == "_search":
                hits = self.search(name, body) if self.search else []
                return 200, {"hits": {"total": {"value": len(hits)}, "hits": hits}}
        return 400, {"error": {"type": "unsupported_in_fake", "reason": f"{method} {request.path}"}, "status": 400}


def hit(doc_id: str, content: str, score: float, **meta: Any) -> dict[str, Any]:
    """One search hit as OpenSearch returns it for a Haystack document."""
    return {"_id": doc_id, "_score": score, "_source": {"id": doc_id, "content": content, **meta}}
