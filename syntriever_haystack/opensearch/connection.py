"""How every part of the project reaches an OpenSearch cluster: one URL, auth from the environment, TLS verified.

Credentials are Haystack :class:`~haystack.utils.Secret` objects (by default the ``OPENSEARCH_USERNAME`` /
``OPENSEARCH_PASSWORD`` environment variables, as ``OpenSearchDocumentStore`` uses), so they never end up in
YAML, JSON reports or logs. Certificates are verified unless the user turns it off explicitly. Credentials sent
over plain ``http://`` to a host other than this machine are readable by anyone on the network: that is logged
as a warning (the default URL stays ``http://localhost:9200``, the out-of-the-box local cluster, where they do not
leave the machine).
"""

from __future__ import annotations

import ipaddress
import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from haystack.utils import Secret

from syntriever_haystack.errors import SyntrieverError

if TYPE_CHECKING:
    from opensearchpy import OpenSearch

DEFAULT_URL = "http://localhost:9200"

logger = logging.getLogger(__name__)


def _is_loopback(hostname: str) -> bool:
    if hostname.lower() in ("localhost", "localhost.localdomain") or hostname.lower().endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(hostname).is_loopback
    except ValueError:
        return False


def _default_username() -> Secret:
    return Secret.from_env_var("OPENSEARCH_USERNAME", strict=False)


def _default_password() -> Secret:
    return Secret.from_env_var("OPENSEARCH_PASSWORD", strict=False)


@dataclass
class OpenSearchConnection:
    """Where and how to connect.

    :param url: ``http(s)://host:port``; several nodes as a comma-separated list.
    :param username: Secret for the basic-auth user (unset → no auth).
    :param password: Secret for the basic-auth password.
    :param verify_certs: verify TLS certificates (on by default; turn off only for a local self-signed cluster).
    :param ca_certs: path to a CA bundle for a private certificate authority.
    :param timeout: request timeout in seconds.

    Usage example:

    ```python
    connection = OpenSearchConnection(url="https://search.internal:9200")
    client = connection.client()  # opensearchpy.OpenSearch, auth from OPENSEARCH_USERNAME/PASSWORD
    store = OpenSearchDocumentStore(**connection.document_store_kwargs(), index="docs", embedding_dim=384)
    ```
    """

    url: str = DEFAULT_URL
    username: Secret = field(default_factory=_default_username)
    password: Secret = field(default_factory=_default_password)
    verify_certs: bool = True
    ca_certs: str | None = None
    timeout: int = 60

    def __post_init__(self) -> None:
        for host in self.hosts:
            parts = urlsplit(host)
            if parts.scheme not in ("http", "https") or not parts.hostname:
                raise SyntrieverError(
                    f"OpenSearch URL {host!r} is not an http(s) URL. Pass e.g. --opensearch-url https://localhost:9200"
                )

    @property
    def hosts(self) -> list[str]:
        return [h.strip() for h in self.url.split(",") if h.strip()]

    @property
    def use_ssl(self) -> bool:
        return urlsplit(self.hosts[0]).scheme == "https"

    def http_auth(self) -> tuple[str, str] | None:
        user, password = self.username.resolve_value(), self.password.resolve_value()
        if user and password is None:
            raise SyntrieverError("OPENSEARCH_USERNAME is set but OPENSEARCH_PASSWORD is not: set both, or neither.")
        return (str(user), str(password)) if user else None

    def plaintext_credential_hosts(self) -> list[str]:
        """The ``http://`` hosts, other than this machine, that HTTP Basic credentials would be sent to unencrypted
        (empty when no credentials are set)."""
        if not self.username.resolve_value():
            return []
        return [
            host
            for host in self.hosts
            if urlsplit(host).scheme == "http" and not _is_loopback(urlsplit(host).hostname or "")
        ]

    def _warn_plaintext_credentials(self) -> None:
        hosts = self.plaintext_credential_hosts()
        if hosts:
            logger.warning(
                "OpenSearch credentials (OPENSEARCH_USERNAME/PASSWORD) will be sent unencrypted over plain http to "
                "%s: anyone on the network can read them. Use an https:// URL (--opensearch-url https://...).",
                ", ".join(hosts),
            )

    def client(self) -> OpenSearch:
        """An ``opensearchpy.OpenSearch`` client."""
        try:
            from opensearchpy import OpenSearch
        except ImportError as exc:  # pragma: no cover - depends on the install
            raise SyntrieverError(
                "OpenSearch support needs the opensearch extra: pip install 'syntriever-haystack[opensearch]'"
            ) from exc
        kwargs: dict[str, Any] = {
            "hosts": self.hosts,
            "use_ssl": self.use_ssl,
            "verify_certs": self.verify_certs if self.use_ssl else False,
            "ssl_show_warn": self.verify_certs,
            "timeout": self.timeout,
        }
        if self.ca_certs:
            kwargs["ca_certs"] = self.ca_certs
        auth = self.http_auth()
        if auth:
            self._warn_plaintext_credentials()
            kwargs["http_auth"] = auth
        return OpenSearch(**kwargs)

    def document_store_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for ``OpenSearchDocumentStore`` (Secrets passed through, so its YAML stays secret-free)."""
        self._warn_plaintext_credentials()
        kwargs: dict[str, Any] = {
            "hosts": self.hosts,
            "use_ssl": self.use_ssl,
            "verify_certs": self.verify_certs if self.use_ssl else False,
            "timeout": self.timeout,
            "http_auth": (self.username, self.password),
        }
        if self.ca_certs:
            kwargs["ca_certs"] = self.ca_certs
        return kwargs

    def to_dict(self) -> dict[str, Any]:
        return {
            "url": self.url,
            "username": self.username.to_dict(),
            "password": self.password.to_dict(),
            "verify_certs": self.verify_certs,
            "ca_certs": self.ca_certs,
            "timeout": self.timeout,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> OpenSearchConnection:
        data = dict(data)
        for key in ("username", "password"):
            if isinstance(data.get(key), dict):
                data[key] = Secret.from_dict(data[key])
        return cls(**data)
