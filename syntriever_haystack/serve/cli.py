"""``syntriever serve RUN_DIR``: a run folder's saved query pipeline behind Hayhooks, on 127.0.0.1 by default.

The server is Hayhooks (the ``serve`` extra) in durable mode, serving the ``search`` wrapper shipped in
:data:`syntriever_haystack.serve.hayhooks.PIPELINES_DIR`: the same file the Docker image serves. ``--print-command``
prints the equivalent ``hayhooks run`` line instead of starting it.
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys
from pathlib import Path

from syntriever_haystack.errors import SyntrieverError
from syntriever_haystack.serve.hayhooks import PIPELINE_ENV, PIPELINES_DIR, QUERY_YAML, RERANK_YAML, RUN_ENV
from syntriever_haystack.serve.torch_free import block_torch, is_torch_free

TORCH_ENV = "SYNTRIEVER_SERVE_TORCH"  # "1": let the serving process import torch (a pipeline that needs it)

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 1416
LOOPBACK = ("127.0.0.1", "localhost", "::1")
INSTALL_HINT = "pip install 'syntriever-haystack[serve]'"


def served_yaml(run: str | Path, *, rerank: bool = False) -> Path:
    """The query pipeline YAML of ``run`` (a run folder, or a YAML file itself), absolute.

    :raises SyntrieverError: The folder or its YAML is missing.
    """
    path = Path(run).expanduser().absolute()
    if path.is_file():
        if rerank:
            raise SyntrieverError(f"--rerank picks RUN_DIR/{RERANK_YAML}; {path} is already a pipeline file.")
        return path
    if not path.is_dir():
        raise SyntrieverError(f"{path} is neither a run folder nor a pipeline YAML.")
    yaml = path / (RERANK_YAML if rerank else QUERY_YAML)
    if not yaml.is_file():
        hint = (
            "this run has no reranker (serve it without --rerank)"
            if rerank and (path / QUERY_YAML).is_file()
            else "write it with `syntriever run RECIPE --until pipelines` (or `syntriever quickstart`)"
        )
        raise SyntrieverError(f"{yaml} does not exist: {hint}.")
    return yaml


def _port(text: str) -> int:
    """argparse type: a TCP port, 1..65535."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a port number between 1 and 65535, got {text!r}") from None
    if not 1 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"must be a port number between 1 and 65535, got {text!r}")
    return value


def server_environment(yaml: Path, *, host: str = DEFAULT_HOST, port: int = DEFAULT_PORT) -> dict[str, str]:
    """The environment under which ``hayhooks run`` serves ``yaml`` as ``POST /search/run``.

    Durable mode: the pipeline loads before the server listens (a failing ``setup()`` stops it, instead of a
    warning and an empty server) and the ``/deploy*`` routes, which accept Python code, are not mounted. The local
    trace API and durable monitoring are off (the search API needs neither).
    """
    return {
        PIPELINE_ENV: str(yaml),
        "HAYHOOKS_PIPELINES_DIR": str(PIPELINES_DIR),
        "HAYHOOKS_DURABLE_MODE": "true",
        "HAYHOOKS_HOST": host,
        "HAYHOOKS_PORT": str(port),
        "HAYHOOKS_TRACING_ENABLED": "false",
        "HAYHOOKS_TRACING_INCLUDE_HAYSTACK_SPANS": "false",
        "HAYHOOKS_MONITORING_ENABLED": "false",
        "HAYSTACK_TELEMETRY_ENABLED": "False",
    }


def hayhooks_command(yaml: Path, *, host: str = DEFAULT_HOST, port: int = DEFAULT_PORT) -> str:
    """The shell line that serves ``yaml`` with plain ``hayhooks run``."""
    env = server_environment(yaml, host=host, port=port)
    settings = " ".join(f"{key}={shlex.quote(value)}" for key, value in env.items() if key not in ("HAYHOOKS_HOST",))
    return f"{settings} hayhooks run --host {shlex.quote(host)} --port {port}"


def _root_message(exc: BaseException) -> str:
    """The innermost SyntrieverError's message in ``exc``'s chain (Hayhooks wraps setup errors twice), else ``exc``."""
    current: BaseException | None = exc
    found = str(exc)
    seen: set[int] = set()
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, SyntrieverError):
            found = str(current)
        current = current.__cause__ or current.__context__
    return found


def _cmd_serve(args: argparse.Namespace) -> int:
    yaml = served_yaml(args.run, rerank=args.rerank)
    if args.print_command:
        print(hayhooks_command(yaml, host=args.host, port=args.port))
        return 0
    env = server_environment(yaml, host=args.host, port=args.port)
    if os.environ.get(TORCH_ENV) != "1" and is_torch_free(yaml.read_text(encoding="utf-8")):
        block_torch()  # before Haystack is imported: it would import an installed torch (~180 MB) for nothing
    os.environ.pop(RUN_ENV, None)
    os.environ.update(env)  # before hayhooks.settings is imported: it reads HAYHOOKS_* once
    try:
        from hayhooks.server.app import create_app, run_app
        from hayhooks.settings import settings
    except ModuleNotFoundError as exc:
        print(
            f"error: `syntriever serve` needs the serve extra ({exc.name} is missing): {INSTALL_HINT}", file=sys.stderr
        )
        return 1
    settings.pipelines_dir = str(PIPELINES_DIR)  # also when hayhooks was imported before this function ran
    settings.durable_mode = True
    settings.host, settings.port = args.host, args.port
    settings.tracing_enabled = settings.tracing_include_haystack_spans = settings.monitoring_enabled = False
    if args.host not in LOOPBACK:
        print(
            f"warning: listening on {args.host}: the search API has no authentication; put a reverse proxy with "
            "authentication and TLS in front of it (docker/README.md, Security).",
            file=sys.stderr,
        )
    try:
        app = create_app()  # durable mode: runs the wrapper's setup() now
    except Exception as exc:
        print(f"error: cannot serve {yaml}: {_root_message(exc)}", file=sys.stderr)
        return 1
    print(f"serving {yaml} at http://{args.host}:{args.port}/search/run (OpenAPI: /docs)", file=sys.stderr)
    run_app(app, host=args.host, port=args.port)
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``syntriever serve`` to the ``syntriever`` command line."""
    serve = sub.add_parser(
        "serve",
        help="serve a run folder's query pipeline over HTTP (Hayhooks, POST /search/run) on 127.0.0.1",
        description="Serve RUN_DIR/pipelines/query.yaml (query-rerank.yaml with --rerank; or a pipeline YAML given "
        "instead of RUN_DIR) as POST /search/run with Hayhooks, in the foreground until Ctrl-C. Request: "
        '{"query": "...", "top_k": 5, "filters": {...}}. Needs the serve extra: ' + INSTALL_HINT + ". A pipeline "
        "whose components are all torch-free is served with importing torch blocked (Haystack would load an "
        f"installed torch, ~180 MB, for nothing); {TORCH_ENV}=1 turns that off.",
    )
    serve.add_argument("run", metavar="RUN_DIR", help="run folder (syntriever quickstart / run), or a pipeline YAML")
    serve.add_argument("--host", default=DEFAULT_HOST, help=f"address to listen on (default {DEFAULT_HOST})")
    serve.add_argument("--port", type=_port, default=DEFAULT_PORT, help=f"port (default {DEFAULT_PORT})")
    serve.add_argument("--rerank", action="store_true", help=f"serve RUN_DIR/{RERANK_YAML} (with the reranker)")
    serve.add_argument(
        "--print-command", action="store_true", help="print the equivalent `hayhooks run` command line and exit"
    )
    serve.set_defaults(func=_cmd_serve)
