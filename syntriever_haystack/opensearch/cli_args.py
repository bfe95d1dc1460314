"""Command-line options for reaching OpenSearch, shared by ``syntriever index|search`` and ``syntriever mlcommons``.

Argparse only at import time (``syntriever --help`` stays fast); the connection is built when a command runs.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from syntriever_haystack.opensearch.connection import OpenSearchConnection


def int_at_least(low: int) -> Callable[[str], int]:
    """argparse type: a whole number >= ``low`` (argparse names the option in its error)."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be a whole number >= {low}, got {text!r}") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"must be a whole number >= {low}, got {text!r}")
        return value

    return parse


def positive_number(text: str) -> float:
    """argparse type: a finite number > 0 (seconds)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number > 0, got {text!r}") from None
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"must be a number > 0, got {text!r}")
    return value


def non_empty(text: str) -> str:
    """argparse type: a string with something in it."""
    if not text.strip():
        raise argparse.ArgumentTypeError("must not be empty")
    return text


def add_connection_arguments(parser: Any, *, timeout: int = 60) -> None:
    """Add ``--opensearch-url``, ``--no-verify-certs``, ``--ca-certs`` and ``--timeout`` to a parser or group."""
    parser.add_argument(
        "--opensearch-url",
        metavar="URL",
        help="OpenSearch URL (default: $OPENSEARCH_URL or http://localhost:9200); credentials only from "
        "OPENSEARCH_USERNAME / OPENSEARCH_PASSWORD",
    )
    parser.add_argument(
        "--no-verify-certs",
        action="store_true",
        help="do not verify TLS certificates (only for a local cluster with a self-signed certificate)",
    )
    parser.add_argument("--ca-certs", metavar="FILE", help="CA bundle for a private certificate authority")
    parser.add_argument(
        "--timeout",
        type=int_at_least(1),
        default=timeout,
        help=f"OpenSearch request timeout in seconds (default {timeout})",
    )


def connection_from_args(args: argparse.Namespace) -> OpenSearchConnection:
    """The connection the options describe (URL from the option, else ``$OPENSEARCH_URL``, else localhost)."""
    from syntriever_haystack.opensearch.connection import DEFAULT_URL, OpenSearchConnection

    url = args.opensearch_url or os.environ.get("OPENSEARCH_URL") or DEFAULT_URL
    if args.ca_certs and not Path(args.ca_certs).expanduser().is_file():
        from syntriever_haystack.errors import SyntrieverError

        raise SyntrieverError(f"--ca-certs {args.ca_certs}: no such file (pass a PEM CA bundle).")
    if args.no_verify_certs:
        print("warning: TLS certificate verification is off (--no-verify-certs)", file=sys.stderr)
    return OpenSearchConnection(
        url=url, verify_certs=not args.no_verify_certs, ca_certs=args.ca_certs, timeout=args.timeout
    )
