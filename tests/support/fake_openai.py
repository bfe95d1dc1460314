"""A scripted, OpenAI-compatible HTTP server for tests and benchmarks (pure standard library).

Speaks the subset of the OpenAI REST API that the ``openai`` Python client (v1+) and Haystack's
``OpenAIChatGenerator`` use for synthetic-data generation:

- ``POST /v1/chat/completions`` (``stream: false`` only), answered by a *responder* callable, with
  simulated model latency and scripted faults (HTTP status + ``Retry-After``, client timeouts,
  malformed / empty / truncated content, dropped connections);
- ``GET /v1/models``;
- the Batch API: ``/v1/files`` (multipart upload, retrieve, content, list, delete) and ``/v1/batches``
  (create, retrieve — each retrieve advances the job one step —, list, cancel);
- ``/_fake/stats``, ``/_fake/requests`` and ``POST /_fake/inject`` (JSON list of faults), so that a test
  can script and inspect a server running in another process.

In-process use::

    with FakeOpenAIServer(latency_s=0.05) as server:
        server.inject(Fault("status", status=429, retry_after=1), Fault("truncated"))
        client = openai.OpenAI(base_url=server.url, api_key="test", max_retries=0)
        ...
        assert len(server.requests) == 3

Standalone (kill/resume subprocess tests, throughput benchmark)::

    python tests/support/fake_openai.py --port 0 --latency-ms 100 --responder echo-json
    # prints "PORT=<n>" on stdout, then serves until SIGTERM / SIGINT

``--responder`` is ``default``, ``echo``, ``echo-json`` or ``package.module:function``.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import importlib
import json
import signal
import socket
import sys
import threading
import time
import traceback
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from email.message import Message
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Literal

__all__ = [
    "FAULT_KINDS",
    "RESPONDERS",
    "BatchLineError",
    "FakeOpenAIServer",
    "Fault",
    "chat_completion_envelope",
    "default_responder",
    "echo_json_responder",
    "echo_responder",
    "last_user_message",
    "main",
    "resolve_responder",
]

Responder = Callable[[dict[str, Any]], "str | dict[str, Any] | None"]
FaultKind = Literal["status", "timeout", "malformed", "empty", "truncated", "drop", "non_json"]
FAULT_KINDS: tuple[str, ...] = ("status", "timeout", "malformed", "empty", "truncated", "drop", "non_json")
CHAT_ENDPOINT = "/v1/chat/completions"


# --------------------------------------------------------------------------------------------- faults


@dataclass
class Fault:
    """One scripted misbehaviour, applied to exactly one chat-completion request.

    - ``status``: answer ``status`` with an OpenAI-style error JSON (or ``body`` verbatim if given), plus
      ``Retry-After`` (seconds) and ``retry-after-ms`` headers when ``retry_after`` is set;
    - ``timeout``: wait ``delay_s`` (make it longer than the client's timeout), then answer normally;
    - ``malformed``: 200 whose message content is ``body`` or ``"{not json"``;
    - ``empty``: 200 with ``content: ""``;
    - ``truncated``: 200 with the reply cut in half (or ``body``) and ``finish_reason: "length"``;
    - ``drop``: close the connection without sending any response;
    - ``non_json``: 200 with ``Content-Type: application/json`` but a body that is not JSON (``body`` or an HTML
      error page, as a misbehaving proxy sends).

    Every kind first waits ``delay_s``; all but ``status`` and ``drop`` then also wait the server's latency.
    """

    kind: FaultKind
    status: int = 500
    retry_after: float | None = None
    body: str | None = None
    delay_s: float = 0.0

    def __post_init__(self) -> None:
        if self.kind not in FAULT_KINDS:
            raise ValueError(f"unknown fault kind {self.kind!r}; expected one of {FAULT_KINDS}")


class BatchLineError(Exception):
    """Raise from a responder to fail one *batch* line with a non-HTTP error.

    The line then goes to the batch's error file as ``{"response": null, "error": {"code", "message"}}``
    (how the real API reports e.g. ``batch_expired``). Any *other* exception fails the line the way an
    HTTP error does: ``{"response": {"status_code": 500, "body": {"error": ...}}, "error": null}``. In a
    plain chat request, both become an HTTP error response.
    """

    def __init__(self, message: str = "request failed", code: str = "server_error", status_code: int = 500):
        super().__init__(message)
        self.message = message
        self.code = code
        self.status_code = status_code


# ------------------------------------------------------------------------------------------ responders


def _content_text(content: Any) -> str:
    """Text of a message ``content``: a string, or a list of parts (``{"type": "text", "text": ...}``)."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        texts = []
        for part in content:
            if isinstance(part, str):
                texts.append(part)
            elif isinstance(part, dict) and isinstance(part.get("text"), str):
                texts.append(part["text"])
        return " ".join(texts)
    return str(content)


def last_user_message(request: dict[str, Any]) -> str:
    """Text of the last ``user`` message of a chat-completion request ("" if there is none)."""
    for message in reversed(request.get("messages") or []):
        if isinstance(message, dict) and message.get("role") == "user":
            return _content_text(message.get("content"))
    return ""


def _word_count(text: str | None) -> int:
    return len(text.split()) if text else 0


def _prompt_words(request: dict[str, Any]) -> int:
    return sum(
        _word_count(_content_text(m.get("content"))) for m in request.get("messages") or [] if isinstance(m, dict)
    )


def _digest(text: str, n: int = 12) -> str:
    return hashlib.sha1(text.encode("utf-8")).hexdigest()[:n]


def echo_responder(request: dict[str, Any]) -> str:
    """``"echo: <last user message>"``."""
    return f"echo: {last_user_message(request)}"


def _schema_instance(schema: Any, *, text: str, defs: dict[str, Any], index: int = 0, depth: int = 0) -> Any:
    """A small deterministic instance of a JSON schema, with strings taken from ``text``."""
    if depth > 12 or not isinstance(schema, dict):
        return text
    if "$ref" in schema:
        target = defs.get(str(schema["$ref"]).rsplit("/", 1)[-1], {})
        return _schema_instance(target, text=text, defs=defs, index=index, depth=depth + 1)
    if "const" in schema:
        return schema["const"]
    if schema.get("enum"):
        return schema["enum"][0]
    for combinator in ("anyOf", "oneOf", "allOf"):
        options = [o for o in schema.get(combinator) or [] if not (isinstance(o, dict) and o.get("type") == "null")]
        if options:
            return _schema_instance(options[0], text=text, defs=defs, index=index, depth=depth + 1)
    kind = schema.get("type")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), "null")
    if kind is None:
        kind = "object" if "properties" in schema else "array" if "items" in schema else "string"
    if kind == "object":
        return {
            name: _schema_instance(sub, text=text, defs=defs, index=index, depth=depth + 1)
            for name, sub in (schema.get("properties") or {}).items()
        }
    if kind == "array":
        n = max(int(schema.get("minItems", 0)), 1)
        if "maxItems" in schema:
            n = min(n, int(schema["maxItems"]))
        return [
            _schema_instance(schema.get("items", {}), text=text, defs=defs, index=i, depth=depth + 1) for i in range(n)
        ]
    if kind in ("integer", "number"):
        value = schema.get("maximum", schema.get("minimum", 1))
        return int(value) if kind == "integer" else float(value)
    if kind == "boolean":
        return True
    if kind == "null":
        return None
    value = " ".join(text.split()[:12]) or "fake"
    if index:
        value = f"{value} ({index + 1})"
    if "maxLength" in schema:
        value = value[: int(schema["maxLength"])]
    return value


def echo_json_responder(request: dict[str, Any]) -> str:
    """A JSON reply: an instance of the requested ``json_schema`` if any, else ``{"echo", "hash", "words"}``."""
    text = last_user_message(request)
    response_format = request.get("response_format") or {}
    if isinstance(response_format, dict) and response_format.get("type") == "json_schema":
        schema = (response_format.get("json_schema") or {}).get("schema") or {}
        defs = {**(schema.get("definitions") or {}), **(schema.get("$defs") or {})}
        return json.dumps(_schema_instance(schema, text=text, defs=defs))
    return json.dumps({"echo": text, "hash": _digest(text), "words": _word_count(text)})


def default_responder(request: dict[str, Any]) -> str:
    """JSON (``echo_json_responder``) when ``response_format`` asks for JSON, else ``echo_responder``."""
    response_format = request.get("response_format") or {}
    if isinstance(response_format, dict) and response_format.get("type") in ("json_schema", "json_object"):
        return echo_json_responder(request)
    return echo_responder(request)


RESPONDERS: dict[str, Responder] = {
    "default": default_responder,
    "echo": echo_responder,
    "echo-json": echo_json_responder,
}


def resolve_responder(spec: str) -> Responder:
    """A responder by name (``default``, ``echo``, ``echo-json``) or import path (``package.module:function``)."""
    if spec in RESPONDERS:
        return RESPONDERS[spec]
    module_name, sep, attribute = spec.partition(":")
    if not sep or not attribute:
        raise ValueError(f"unknown responder {spec!r}: use one of {sorted(RESPONDERS)} or 'package.module:function'")
    return getattr(importlib.import_module(module_name), attribute)


# ---------------------------------------------------------------------------------------------- bodies


def _usage(request: dict[str, Any], content: str | None) -> dict[str, int]:
    prompt, completion = _prompt_words(request), _word_count(content)
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


def chat_completion_envelope(
    request: dict[str, Any],
    content: str | None,
    *,
    finish_reason: str = "stop",
    usage: dict[str, int] | None = None,
    model: str | None = None,
) -> dict[str, Any]:
    """A ``chat.completion`` object as the real API returns it (``n`` identical choices)."""
    given = {k: v for k, v in (usage or {}).items() if v is not None}
    usage = {**_usage(request, content), **given}
    if "total_tokens" not in given:
        usage["total_tokens"] = usage["prompt_tokens"] + usage["completion_tokens"]
    n = request.get("n") or 1
    return {
        "id": f"chatcmpl-{uuid.uuid4().hex[:24]}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model or request.get("model") or "fake-model",
        "choices": [
            {
                "index": i,
                "message": {"role": "assistant", "content": content, "refusal": None},
                "finish_reason": finish_reason,
                "logprobs": None,
            }
            for i in range(int(n))
        ],
        "usage": usage,
        "system_fingerprint": "fp_fake",
    }


_ERROR_TYPES = {
    400: ("invalid_request_error", None),
    401: ("invalid_request_error", "invalid_api_key"),
    403: ("invalid_request_error", None),
    404: ("invalid_request_error", "not_found"),
    408: ("server_error", "timeout"),
    409: ("invalid_request_error", "conflict"),
    422: ("invalid_request_error", None),
    429: ("requests", "rate_limit_exceeded"),
}


def _error_body(status: int, message: str | None = None, *, type_: str | None = None, code: str | None = None) -> dict:
    default_type, default_code = _ERROR_TYPES.get(status, ("server_error", "server_error" if status >= 500 else None))
    return {
        "error": {
            "message": message or f"Fake OpenAI server: scripted HTTP {status}",
            "type": type_ or default_type,
            "param": None,
            "code": code if code is not None else default_code,
        }
    }


def _normalise_reply(result: Any) -> dict[str, Any]:
    """A responder's result as ``{"content", "finish_reason", "usage"}`` or ``{"error", "status_code"}``."""
    if result is None or isinstance(result, str):
        return {"content": result, "finish_reason": "stop", "usage": None}
    if isinstance(result, dict):
        if result.get("error") is not None:
            error = result["error"]
            message = error.get("message") if isinstance(error, dict) else str(error)
            return {"error": message, "status_code": int(result.get("status_code", 500))}
        return {
            "content": result.get("content"),
            "finish_reason": result.get("finish_reason") or "stop",
            "usage": result.get("usage"),
        }
    raise TypeError(f"a responder must return str, dict or None, not {type(result).__name__}")


def _parse_multipart(body: bytes, content_type: str) -> dict[str, tuple[str | None, bytes]]:
    """``{field name: (filename or None, raw bytes)}`` of a ``multipart/form-data`` body."""
    header = Message()
    header["content-type"] = content_type
    boundary = header.get_param("boundary")
    if not isinstance(boundary, str) or not boundary:
        raise ValueError("multipart body without a boundary")
    fields: dict[str, tuple[str | None, bytes]] = {}
    for part in body.split(b"--" + boundary.encode("latin-1"))[1:]:
        if part.startswith(b"--"):
            break
        part = part.removeprefix(b"\r\n")
        head, sep, data = part.partition(b"\r\n\r\n")
        if not sep:
            continue
        part_headers = Message()
        for line in head.decode("utf-8", "replace").split("\r\n"):
            name, colon, value = line.partition(":")
            if colon:
                part_headers[name.strip()] = value.strip()
        name = part_headers.get_param("name", header="content-disposition")
        if isinstance(name, str):
            fields[name] = (part_headers.get_filename(), data.removesuffix(b"\r\n"))
    return fields


# ---------------------------------------------------------------------------------------------- server


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128
    allow_reuse_address = True
    fake: FakeOpenAIServer

    def handle_error(self, request: Any, client_address: Any) -> None:
        if isinstance(sys.exc_info()[1], (ConnectionError, TimeoutError, OSError)):
            return  # the client went away (e.g. it timed out first): nothing to report
        super().handle_error(request, client_address)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as httpx expects; every response carries Content-Length
    server_version = "FakeOpenAI/1.0"
    disable_nagle_algorithm = True
    sys_version = ""
    server: _HTTPServer

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def setup(self) -> None:
        super().setup()
        self.server.fake._track_connection(self.connection, add=True)

    def finish(self) -> None:
        with contextlib.suppress(OSError):
            super().finish()
        self.server.fake._track_connection(self.connection, add=False)

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_POST(self) -> None:
        self._dispatch("POST")

    def do_DELETE(self) -> None:
        self._dispatch("DELETE")

    # -- plumbing

    def _read_body(self) -> bytes:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            chunks = []
            while True:
                size = int(self.rfile.readline(65537).split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline(65537) not in (b"\r\n", b"\n", b""):
                        pass
                    return b"".join(chunks)
                chunks.append(self.rfile.read(size))
                self.rfile.readline(65537)
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length > 0 else b""

    def _send(self, status: int, body: bytes, content_type: str, headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("x-request-id", f"req_{uuid.uuid4().hex[:24]}")
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        # Headers and body in one write: two small writes meet the peer's delayed ACK (~40 ms per response).
        self._headers_buffer.append(b"\r\n" + body)
        self.flush_headers()

    def _send_json(self, status: int, obj: Any, headers: dict[str, str] | None = None) -> None:
        self._send(status, json.dumps(obj).encode("utf-8"), "application/json", headers)

    def _send_error(self, status: int, message: str, **kwargs: Any) -> None:
        self._send_json(status, _error_body(status, message, **kwargs))

    def _dispatch(self, method: str) -> None:
        try:
            body = self._read_body()
            path = self.path.split("?", 1)[0].rstrip("/")
            path = path.removeprefix("/v1")
            parts = [p for p in path.split("/") if p]
            self.server.fake._route(self, method, parts, body)
        except (ConnectionError, TimeoutError):
            self.close_connection = True
        except Exception as exc:  # a bug in the fake itself: say so, keep serving
            self.close_connection = True
            with contextlib.suppress(OSError):
                self._send_error(500, f"fake server error: {exc!r}\n{traceback.format_exc()}")


class FakeOpenAIServer:
    """An OpenAI-compatible server on ``127.0.0.1:<free port>``, serving from a daemon thread.

    :param responder: ``request_json -> str | dict | None``. A ``str`` is the reply text; a dict is
        ``{"content": str | None, "finish_reason": "stop" | "length", "usage": {...}}`` (every key optional)
        or ``{"error": message, "status_code": int}`` to fail the request. Raising also fails it (see
        ``BatchLineError``). Default: ``default_responder``. Called concurrently from handler threads.
    :param latency_s: simulated model latency, slept by each chat request in its own handler thread.
    :param model: the model reported by ``GET /v1/models`` (replies echo the request's ``model``).
    :param batch_polls_to_complete: how many ``GET /v1/batches/{id}`` a batch takes to reach ``completed``.
    """

    def __init__(
        self,
        responder: Responder | None = None,
        *,
        latency_s: float = 0.0,
        model: str = "fake-model",
        batch_polls_to_complete: int = 2,
        host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        self.responder: Responder = responder or default_responder
        self.latency_s = latency_s
        self.model = model
        self.batch_polls_to_complete = batch_polls_to_complete
        self.host = host
        self._requested_port = port
        self.requests: list[dict[str, Any]] = []  # chat-completion bodies, in arrival order (incl. faulted ones)
        self.batch_requests: list[dict[str, Any]] = []  # bodies of the batch lines answered
        self.batch_requests_answered = 0
        self.files: dict[str, dict[str, Any]] = {}  # id -> File object as served
        self.file_contents: dict[str, bytes] = {}  # id -> raw content
        self.batches: dict[str, dict[str, Any]] = {}  # id -> Batch object (latest state) as served
        self.max_concurrency_seen = 0
        self.in_flight = 0
        self._faults: deque[Fault] = deque()
        self._batch_polls: dict[str, int] = {}
        self._lock = threading.Lock()
        self._batch_lock = threading.Lock()  # one batch transition at a time (polls may race)
        self._stopping = threading.Event()
        self._connections: set[socket.socket] = set()
        self._httpd: _HTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle

    def start(self) -> FakeOpenAIServer:
        if self._httpd is not None:
            return self
        self._stopping.clear()
        httpd = _HTTPServer((self.host, self._requested_port), _Handler)
        httpd.fake = self
        self._httpd = httpd
        self._thread = threading.Thread(
            target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, name="fake-openai", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        httpd, self._httpd = self._httpd, None
        if httpd is None:
            return
        self._stopping.set()  # wakes handlers sleeping on latency / timeout faults
        httpd.shutdown()
        with self._lock:
            connections = list(self._connections)
        for connection in connections:  # idle keep-alive connections would otherwise linger
            with contextlib.suppress(OSError):
                connection.shutdown(socket.SHUT_RDWR)
        httpd.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self) -> FakeOpenAIServer:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    @property
    def port(self) -> int:
        if self._httpd is None:
            raise RuntimeError("the server is not running; call start() first")
        return int(self._httpd.server_address[1])

    @property
    def url(self) -> str:
        """Base URL to pass as ``base_url`` / ``api_base_url``: ``http://127.0.0.1:PORT/v1``."""
        return f"http://{self.host}:{self.port}/v1"

    # -- scripting and inspection

    def inject(self, *faults: Fault) -> None:
        """Queue faults for the next chat-completion requests, one per request, in arrival order."""
        for fault in faults:
            if not isinstance(fault, Fault):
                raise TypeError(f"expected Fault, got {type(fault).__name__}")
        with self._lock:
            self._faults.extend(faults)

    @property
    def pending_faults(self) -> int:
        with self._lock:
            return len(self._faults)

    def reset(self) -> None:
        """Forget recorded requests, counters and queued faults (files and batches are kept)."""
        with self._lock:
            self.requests.clear()
            self.batch_requests.clear()
            self.batch_requests_answered = 0
            self.max_concurrency_seen = self.in_flight
            self._faults.clear()

    def stats(self) -> dict[str, int]:
        with self._lock:
            return {
                "chat_requests": len(self.requests),
                "batch_requests_answered": self.batch_requests_answered,
                "max_concurrency_seen": self.max_concurrency_seen,
                "in_flight": self.in_flight,
                "pending_faults": len(self._faults),
                "files": len(self.files),
                "batches": len(self.batches),
            }

    # -- internals

    def _track_connection(self, connection: socket.socket, *, add: bool) -> None:
        with self._lock:
            if add:
                self._connections.add(connection)
            else:
                self._connections.discard(connection)

    def _sleep(self, seconds: float) -> None:
        if seconds > 0:
            self._stopping.wait(seconds)

    def _route(self, h: _Handler, method: str, parts: list[str], body: bytes) -> None:
        n = len(parts)
        if method == "POST" and parts == ["chat", "completions"]:
            return self._chat(h, body)
        if method == "GET" and n >= 1 and parts[0] == "models":
            if n == 1:
                return h._send_json(200, {"object": "list", "data": [self._model_object()]})
            return h._send_json(200, self._model_object("/".join(parts[1:])))
        if n >= 1 and parts[0] == "files":
            return self._files(h, method, parts[1:], body)
        if n >= 1 and parts[0] == "batches":
            return self._batches(h, method, parts[1:], body)
        if n == 2 and parts[0] == "_fake":
            return self._control(h, method, parts[1], body)
        return h._send_error(404, f"Unknown request URL: {method} {h.path}", code="unknown_url")

    def _model_object(self, model: str | None = None) -> dict[str, Any]:
        return {"id": model or self.model, "object": "model", "created": 0, "owned_by": "fake-openai"}

    def _control(self, h: _Handler, method: str, what: str, body: bytes) -> None:
        if method == "GET" and what == "stats":
            return h._send_json(200, self.stats())
        if method == "GET" and what == "requests":
            with self._lock:
                data = list(self.requests)
            return h._send_json(200, {"object": "list", "data": data})
        if method == "POST" and what == "inject":
            payload = json.loads(body or b"[]")
            specs = payload.get("faults", []) if isinstance(payload, dict) else payload
            try:
                faults = [Fault(**spec) for spec in specs]
            except (TypeError, ValueError) as exc:
                return h._send_error(400, f"bad fault spec: {exc}")
            self.inject(*faults)
            return h._send_json(200, {"queued": len(faults), "pending": self.pending_faults})
        return h._send_error(404, f"Unknown control URL: {method} {h.path}")

    def _answer(self, request: dict[str, Any]) -> dict[str, Any]:
        """The responder's reply, normalised; exceptions become ``{"error", "status_code"}``."""
        try:
            return _normalise_reply(self.responder(request))
        except Exception as exc:
            return {"error": f"fake responder failed: {exc!r}", "status_code": getattr(exc, "status_code", 500)}

    # -- chat completions

    def _chat(self, h: _Handler, body: bytes) -> None:
        try:
            request = json.loads(body)
        except ValueError:
            return h._send_error(400, "We could not parse the JSON body of your request.")
        if not isinstance(request, dict):
            return h._send_error(400, "The request body must be a JSON object.")
        with self._lock:
            self.requests.append(request)
            self.in_flight += 1
            self.max_concurrency_seen = max(self.max_concurrency_seen, self.in_flight)
        try:
            if request.get("stream"):
                return h._send_error(
                    400, "The fake OpenAI server does not support streaming: send stream=false.", code="stream"
                )
            if not isinstance(request.get("messages"), list):
                return h._send_error(400, "'messages' is a required property", code="missing_messages")
            with self._lock:
                fault = self._faults.popleft() if self._faults else None
            self._chat_reply(h, request, fault)
        finally:
            with self._lock:
                self.in_flight -= 1

    def _chat_reply(self, h: _Handler, request: dict[str, Any], fault: Fault | None) -> None:
        if fault is not None:
            self._sleep(fault.delay_s)
            if fault.kind == "drop":
                h.close_connection = True
                with contextlib.suppress(OSError):
                    h.connection.shutdown(socket.SHUT_RDWR)
                return
            if fault.kind == "status":
                headers = {}
                if fault.retry_after is not None:
                    seconds = fault.retry_after
                    headers["Retry-After"] = str(int(seconds)) if float(seconds).is_integer() else str(seconds)
                    headers["retry-after-ms"] = str(round(seconds * 1000))
                if fault.body is not None:
                    content_type = "application/json"
                    try:
                        json.loads(fault.body)
                    except ValueError:
                        content_type = "text/plain; charset=utf-8"
                    return h._send(fault.status, fault.body.encode("utf-8"), content_type, headers)
                return h._send_json(fault.status, _error_body(fault.status), headers)
            if fault.kind == "non_json":
                page = fault.body if fault.body is not None else "<html><body>502 Bad Gateway</body></html>"
                return h._send(200, page.encode("utf-8"), "application/json")
        self._sleep(self.latency_s)
        if self._stopping.is_set():
            h.close_connection = True
            return
        reply = self._answer(request)
        if "error" in reply:
            return h._send_error(reply["status_code"], reply["error"], code="responder_error")
        content, finish_reason, usage = reply["content"], reply["finish_reason"], reply["usage"]
        if fault is not None and fault.kind != "timeout":
            usage = None  # the responder's usage no longer describes the content
            if fault.kind == "malformed":
                content = fault.body if fault.body is not None else "{not json"
            elif fault.kind == "empty":
                content = ""
            elif fault.kind == "truncated":
                text = content or ""
                content = fault.body if fault.body is not None else text[: max(1, len(text) // 2)]
                finish_reason = "length"
        elif fault is not None and fault.body is not None:
            content = fault.body
        envelope = chat_completion_envelope(
            request, content, finish_reason=finish_reason, usage=usage, model=request.get("model") or self.model
        )
        h._send_json(200, envelope)

    # -- files

    def _file_object(self, filename: str, purpose: str, content: bytes) -> dict[str, Any]:
        file_id = f"file-{uuid.uuid4().hex[:24]}"
        obj = {
            "id": file_id,
            "object": "file",
            "bytes": len(content),
            "created_at": int(time.time()),
            "filename": filename,
            "purpose": purpose,
            "status": "processed",
            "status_details": None,
            "expires_at": None,
        }
        with self._lock:
            self.files[file_id] = obj
            self.file_contents[file_id] = content
        return obj

    def _files(self, h: _Handler, method: str, rest: list[str], body: bytes) -> None:
        if method == "POST" and not rest:
            try:
                fields = _parse_multipart(body, h.headers.get("Content-Type", ""))
            except ValueError as exc:
                return h._send_error(400, f"expected a multipart/form-data upload: {exc}")
            if "file" not in fields:
                return h._send_error(400, "'file' is a required property", code="missing_file")
            filename, content = fields["file"]
            purpose = fields.get("purpose", (None, b"batch"))[1].decode("utf-8")
            return h._send_json(200, self._file_object(filename or "upload.jsonl", purpose, content))
        if method == "GET" and not rest:
            with self._lock:
                data = list(self.files.values())
            return h._send_json(200, {"object": "list", "data": data, "has_more": False})
        file_id = rest[0] if rest else ""
        with self._lock:
            obj, content = self.files.get(file_id), self.file_contents.get(file_id)
        if obj is None or content is None:
            return h._send_error(404, f"No such File object: {file_id}", code="file_not_found")
        if method == "GET" and len(rest) == 1:
            return h._send_json(200, obj)
        if method == "GET" and rest[1:] == ["content"]:
            return h._send(200, content, "application/octet-stream")
        if method == "DELETE" and len(rest) == 1:
            with self._lock:
                self.files.pop(file_id, None)
                self.file_contents.pop(file_id, None)
            return h._send_json(200, {"id": file_id, "object": "file", "deleted": True})
        return h._send_error(404, f"Unknown request URL: {method} {h.path}", code="unknown_url")

    # -- batches

    def _batches(self, h: _Handler, method: str, rest: list[str], body: bytes) -> None:
        if method == "POST" and not rest:
            return self._create_batch(h, body)
        if method == "GET" and not rest:
            with self._lock:
                data = [dict(b) for b in self.batches.values()]
            return h._send_json(200, {"object": "list", "data": data, "has_more": False})
        batch_id = rest[0]
        if batch_id not in self.batches:
            return h._send_error(404, f"No batch found with id '{batch_id}'.", code="batch_not_found")
        if method == "GET" and len(rest) == 1:
            return h._send_json(200, self._advance_batch(batch_id))
        if method == "POST" and rest[1:] == ["cancel"]:
            with self._batch_lock, self._lock:
                batch = self.batches[batch_id]
                if batch["status"] not in ("validating", "in_progress"):
                    status = batch["status"]
                    batch = None
                else:
                    batch["status"], batch["cancelling_at"] = "cancelling", int(time.time())
                    batch = dict(batch)
            if batch is None:
                return h._send_error(400, f"Cannot cancel a batch with status '{status}'.", code="invalid_status")
            return h._send_json(200, batch)
        return h._send_error(404, f"Unknown request URL: {method} {h.path}", code="unknown_url")

    def _create_batch(self, h: _Handler, body: bytes) -> None:
        try:
            params = json.loads(body)
        except ValueError:
            return h._send_error(400, "We could not parse the JSON body of your request.")
        input_file_id = params.get("input_file_id")
        if input_file_id not in self.files:
            return h._send_error(404, f"No such File object: {input_file_id}", code="file_not_found")
        endpoint = params.get("endpoint")
        if endpoint != CHAT_ENDPOINT:
            return h._send_error(400, f"The fake server only batches {CHAT_ENDPOINT}, not {endpoint!r}.")
        now = int(time.time())
        batch_id = f"batch_{uuid.uuid4().hex[:24]}"
        batch = {
            "id": batch_id,
            "object": "batch",
            "endpoint": endpoint,
            "errors": None,
            "input_file_id": input_file_id,
            "completion_window": params.get("completion_window", "24h"),
            "status": "validating",
            "output_file_id": None,
            "error_file_id": None,
            "created_at": now,
            "in_progress_at": None,
            "expires_at": now + 86400,
            "finalizing_at": None,
            "completed_at": None,
            "failed_at": None,
            "expired_at": None,
            "cancelling_at": None,
            "cancelled_at": None,
            "request_counts": {"total": 0, "completed": 0, "failed": 0},
            "metadata": params.get("metadata"),
            "model": None,
        }
        with self._lock:
            self.batches[batch_id] = batch
            self._batch_polls[batch_id] = 0
            served = dict(batch)
        h._send_json(200, served)

    def _batch_lines(self, batch: dict[str, Any]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        """The input file's request lines, and validation errors (``BatchError`` dicts)."""
        lines: list[dict[str, Any]] = []
        errors: list[dict[str, Any]] = []
        seen: set[str] = set()
        text = self.file_contents.get(batch["input_file_id"], b"").decode("utf-8", "replace")
        for number, raw in enumerate(text.splitlines(), start=1):
            if not raw.strip():
                continue
            try:
                line = json.loads(raw)
            except ValueError:
                errors.append({"code": "invalid_json_line", "line": number, "message": "not valid JSON", "param": None})
                continue
            custom_id = line.get("custom_id") if isinstance(line, dict) else None
            if not isinstance(custom_id, str) or not isinstance(line.get("body"), dict):
                errors.append(
                    {"code": "invalid_request", "line": number, "message": "needs custom_id and body", "param": None}
                )
            elif custom_id in seen:
                errors.append(
                    {"code": "duplicate_custom_id", "line": number, "message": "duplicate custom_id", "param": None}
                )
            elif line.get("url", CHAT_ENDPOINT) != batch["endpoint"]:
                errors.append(
                    {"code": "mismatched_url", "line": number, "message": "url differs from endpoint", "param": "url"}
                )
            else:
                seen.add(custom_id)
                lines.append(line)
        if not lines and not errors:
            errors.append({"code": "empty_file", "line": None, "message": "the input file is empty", "param": None})
        return lines, errors

    def _advance_batch(self, batch_id: str) -> dict[str, Any]:
        """One poll: validating -> in_progress -> completed (after ``batch_polls_to_complete`` polls)."""
        with self._batch_lock:
            return self._advance_batch_locked(batch_id)

    def _advance_batch_locked(self, batch_id: str) -> dict[str, Any]:
        with self._lock:
            self._batch_polls[batch_id] += 1
            polls = self._batch_polls[batch_id]
            batch = self.batches[batch_id]
            status = batch["status"]
        now = int(time.time())
        if status == "cancelling":
            with self._lock:
                batch.update(status="cancelled", cancelled_at=now)
        elif status in ("validating", "in_progress"):
            lines, errors = self._batch_lines(batch)
            if errors:
                with self._lock:
                    batch.update(status="failed", failed_at=now, errors={"object": "list", "data": errors})
            elif polls >= max(self.batch_polls_to_complete, 1):
                self._complete_batch(batch, lines)
            else:
                with self._lock:
                    batch.update(status="in_progress", in_progress_at=batch["in_progress_at"] or now)
                    batch["request_counts"] = {"total": len(lines), "completed": 0, "failed": 0}
                    batch["model"] = lines[0]["body"].get("model")
        with self._lock:
            return dict(batch)

    def _complete_batch(self, batch: dict[str, Any], lines: list[dict[str, Any]]) -> None:
        outputs: list[dict[str, Any]] = []
        failures: list[dict[str, Any]] = []
        for line in lines:
            request = line["body"]
            record: dict[str, Any] = {"id": f"batch_req_{uuid.uuid4().hex[:24]}", "custom_id": line["custom_id"]}
            request_id = f"req_{uuid.uuid4().hex[:24]}"
            try:
                reply = _normalise_reply(self.responder(request))
            except BatchLineError as exc:
                failures.append({**record, "response": None, "error": {"code": exc.code, "message": exc.message}})
                continue
            except Exception as exc:
                reply = {"error": f"fake responder failed: {exc!r}", "status_code": getattr(exc, "status_code", 500)}
            finally:
                with self._lock:
                    self.batch_requests.append(request)
                    self.batch_requests_answered += 1
            if "error" in reply:
                status = int(reply["status_code"])
                error_body = _error_body(status, reply["error"], code="responder_error")
                response = {"status_code": status, "request_id": request_id, "body": error_body}
                failures.append({**record, "response": response, "error": None})
                continue
            envelope = chat_completion_envelope(
                request,
                reply["content"],
                finish_reason=reply["finish_reason"],
                usage=reply["usage"],
                model=request.get("model") or self.model,
            )
            response = {"status_code": 200, "request_id": request_id, "body": envelope}
            outputs.append({**record, "response": response, "error": None})

        def jsonl(records: list[dict[str, Any]]) -> bytes:
            return "".join(json.dumps(r) + "\n" for r in records).encode("utf-8")

        output = self._file_object(f"{batch['id']}_output.jsonl", "batch_output", jsonl(outputs)) if outputs else None
        error = self._file_object(f"{batch['id']}_error.jsonl", "batch_output", jsonl(failures)) if failures else None
        now = int(time.time())
        with self._lock:
            batch.update(
                status="completed",
                in_progress_at=batch["in_progress_at"] or now,
                finalizing_at=now,
                completed_at=now,
                output_file_id=output["id"] if output else None,
                error_file_id=error["id"] if error else None,
                request_counts={"total": len(lines), "completed": len(outputs), "failed": len(failures)},
                model=lines[0]["body"].get("model") if lines else None,
            )


# ------------------------------------------------------------------------------------------ standalone


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Scripted OpenAI-compatible server; prints PORT=<n>, then serves.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0: a free port")
    parser.add_argument("--latency-ms", type=float, default=0.0, help="simulated model latency per chat request")
    parser.add_argument("--responder", default="default", help="default | echo | echo-json | package.module:function")
    parser.add_argument("--model", default="fake-model")
    parser.add_argument("--batch-polls-to-complete", type=int, default=2)
    args = parser.parse_args(argv)

    server = FakeOpenAIServer(
        resolve_responder(args.responder),
        latency_s=args.latency_ms / 1000.0,
        model=args.model,
        batch_polls_to_complete=args.batch_polls_to_complete,
        host=args.host,
        port=args.port,
    ).start()
    stop = threading.Event()

    def _on_signal(signum: int, frame: object) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGINT, _on_signal)
    print(f"PORT={server.port}", flush=True)
    try:
        while not stop.wait(0.5):
            pass
    finally:
        server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
