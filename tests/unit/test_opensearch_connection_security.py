"""HTTP Basic credentials over plain http:// to another machine are warned about; loopback and https are not."""

from __future__ import annotations

import logging

import pytest
from haystack.utils import Secret

from syntriever_haystack.opensearch.connection import DEFAULT_URL, OpenSearchConnection

LOGGER = "syntriever_haystack.opensearch.connection"


def _connection(url: str, *, user: str | None = "admin") -> OpenSearchConnection:
    if user is None:
        return OpenSearchConnection(url=url, username=Secret.from_env_var("SYNTRIEVER_TEST_UNSET_USER", strict=False))
    return OpenSearchConnection(url=url, username=Secret.from_token(user), password=Secret.from_token("s3cret"))


def test_credentials_over_http_to_a_remote_host_are_warned_about(caplog: pytest.LogCaptureFixture) -> None:
    connection = _connection("https://safe.example:9200,http://search.internal:9200")
    assert connection.plaintext_credential_hosts() == ["http://search.internal:9200"]
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        connection.document_store_kwargs()
    assert "unencrypted over plain http to http://search.internal:9200" in caplog.text
    assert "https://" in caplog.text
    assert "s3cret" not in caplog.text


def test_client_warns_too(caplog: pytest.LogCaptureFixture) -> None:
    pytest.importorskip("opensearchpy")
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        _connection("http://10.1.2.3:9200").client()
    assert "unencrypted" in caplog.text


@pytest.mark.parametrize(
    ("url", "user"),
    [
        (DEFAULT_URL, "admin"),  # the default stays the local cluster: credentials never leave the machine
        ("http://127.0.0.1:9200", "admin"),
        ("http://[::1]:9200", "admin"),
        ("https://search.internal:9200", "admin"),
        ("http://search.internal:9200", None),  # no credentials, nothing to leak
    ],
)
def test_no_warning_for_loopback_https_or_no_credentials(
    caplog: pytest.LogCaptureFixture, url: str, user: str | None
) -> None:
    connection = _connection(url, user=user)
    assert connection.plaintext_credential_hosts() == []
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        connection.document_store_kwargs()
    assert "unencrypted" not in caplog.text
