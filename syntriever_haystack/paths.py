"""Where syntriever keeps what it caches between runs (one rule for every cache)."""

from __future__ import annotations

import os
from pathlib import Path

CACHE_ENV = "SYNTRIEVER_CACHE"


def cache_root() -> Path:
    """``$SYNTRIEVER_CACHE`` or ``~/.cache/syntriever``: datasets, embeddings, stores and LLM files go below it."""
    root = os.environ.get(CACHE_ENV)
    return Path(root).expanduser() if root else Path.home() / ".cache" / "syntriever"
