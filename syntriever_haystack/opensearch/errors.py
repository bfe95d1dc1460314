"""OpenSearch client errors turned into messages that name the cluster and the fix."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from syntriever_haystack.errors import SyntrieverError

START_HINT = (
    "Start OpenSearch (the compose file under docker/ in the syntriever-haystack repository, or e.g. "
    "`docker run -d -p 9200:9200 -e discovery.type=single-node -e DISABLE_SECURITY_PLUGIN=true "
    "opensearchproject/opensearch:3.3.2`), then pass its address with --opensearch-url URL or OPENSEARCH_URL."
)


def _causes(exc: BaseException) -> Iterator[BaseException]:
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        current = current.__cause__ or current.__context__


def translate_error(exc: BaseException, url: str) -> SyntrieverError | None:
    """A :class:`SyntrieverError` for an opensearch-py error anywhere in ``exc``'s cause chain, else ``None``.

    Haystack wraps component failures in ``PipelineRuntimeError``; the chain is walked to find the client error.

    :param exc: The raised exception.
    :param url: The cluster URL, for the message.
    """
    try:
        from opensearchpy.exceptions import (
            AuthenticationException,
            AuthorizationException,
            ConnectionError,
            ConnectionTimeout,
            SSLError,
        )
    except ImportError:  # pragma: no cover - depends on the install
        return None
    for cause in _causes(exc):
        if isinstance(cause, SSLError):
            return SyntrieverError(
                f"TLS verification failed for OpenSearch at {url} ({cause.info or cause.error}). Pass --ca-certs FILE "
                "for a private certificate authority; only for a local cluster with a self-signed certificate, "
                "--no-verify-certs."
            )
        if isinstance(cause, ConnectionTimeout):
            return SyntrieverError(f"OpenSearch at {url} did not answer in time. {START_HINT}")
        if isinstance(cause, ConnectionError):
            return SyntrieverError(f"cannot connect to OpenSearch at {url}. {START_HINT}")
        if isinstance(cause, AuthenticationException):
            return SyntrieverError(
                f"OpenSearch at {url} refused the credentials (401). Set OPENSEARCH_USERNAME and OPENSEARCH_PASSWORD "
                "in the environment."
            )
        if isinstance(cause, AuthorizationException):
            return SyntrieverError(
                f"the OpenSearch user lacks a permission at {url} (403): {cause.error}. Grant it index and alias "
                "management on the index, or use another OPENSEARCH_USERNAME."
            )
    return None


@contextmanager
def opensearch_errors(url: str) -> Iterator[None]:
    """Re-raise opensearch-py connection, TLS and auth errors as :class:`SyntrieverError` naming ``url`` and the fix.

    :param url: The cluster URL, for the message.
    """
    try:
        yield
    except SyntrieverError:
        raise
    except Exception as exc:
        translated = translate_error(exc, url)
        if translated is None:
            raise
        raise translated from exc


__all__ = ["START_HINT", "opensearch_errors", "translate_error"]
