"""A real OpenSearch for integration tests: ``OPENSEARCH_URL`` if set, else a pinned testcontainers image when
Docker answers, else a skip that says which of the two is missing."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

# Pinned: the version the index mappings, ML Commons bundles and pipelines are written for.
OPENSEARCH_IMAGE = "opensearchproject/opensearch:3.3.2"


def _docker_answers() -> bool:
    try:
        import docker

        docker.from_env(timeout=3).ping()
        return True
    except Exception:
        return False


@pytest.fixture(scope="session")
def opensearch_url() -> Iterator[str]:
    """URL of a running OpenSearch (security plugin disabled in the container; auth via env for OPENSEARCH_URL)."""
    url = os.environ.get("OPENSEARCH_URL")
    if url:
        yield url
        return
    if not _docker_answers():
        pytest.skip("needs OpenSearch: set OPENSEARCH_URL=http://host:9200, or run where Docker answers")
    from testcontainers.community.opensearch import OpenSearchContainer

    with OpenSearchContainer(OPENSEARCH_IMAGE, security_enabled=False) as container:
        config = container.get_config()
        yield f"http://{config['host']}:{config['port']}"
