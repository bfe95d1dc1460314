"""Corpus embeddings cached on disk per (model fingerprint, embedding settings, corpus fingerprint)."""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from syntriever_haystack.paths import cache_root

__all__ = ["EmbeddingCache", "default_cache_dir", "onnx_model_fingerprint"]


def _hash_files(paths: Iterable[Path]) -> str:
    digest = hashlib.sha256()
    for path in sorted(paths):
        digest.update(path.name.encode())
        with path.open("rb") as handle:
            while chunk := handle.read(1 << 20):
                digest.update(chunk)
    return digest.hexdigest()


def onnx_model_fingerprint(model_dir: Path, onnx_file: Path) -> str:
    """The content hash that keys cached corpus embeddings of an exported model: the ONNX file in use, plus the
    folder's ``tokenizer.json`` and ``syntriever.json`` (so a re-export or a new tokenizer is a new key)."""
    extra = [p for p in (model_dir / n for n in ("tokenizer.json", "syntriever.json")) if p.exists()]
    return _hash_files([onnx_file, *extra])


def default_cache_dir() -> Path:
    """``$SYNTRIEVER_CACHE`` or ``~/.cache/syntriever`` (:func:`syntriever_haystack.paths.cache_root`)."""
    return cache_root()


@dataclass
class EmbeddingCache:
    """Corpus embeddings cached per (model fingerprint, embedding settings, corpus fingerprint).

    Files are ``<key>.npy`` (float32) plus ``<key>.json`` (what produced them), written atomically. With
    ``directory=None`` embeddings are only shared within the process.
    """

    directory: Path | None
    hits: int = 0
    misses: int = 0
    _memory: dict[str, np.ndarray] = field(default_factory=dict)

    @staticmethod
    def key_of(key_parts: dict[str, Any]) -> str:
        """The file stem of ``key_parts``: a hash of their sorted JSON."""
        return hashlib.sha256(json.dumps(key_parts, sort_keys=True).encode()).hexdigest()[:32]

    def lookup(self, key_parts: dict[str, Any], rows: int) -> np.ndarray | None:
        """The cached array for ``key_parts`` if there is one with ``rows`` rows (counted as a hit), else ``None``
        (nothing is counted or computed)."""
        key = self.key_of(key_parts)
        if key in self._memory:
            self.hits += 1
            return self._memory[key]
        if self.directory is not None:
            path = self.directory / f"{key}.npy"
            if path.is_file():
                try:
                    array = np.load(path)
                except (OSError, ValueError):
                    array = None
                if array is not None and array.ndim == 2 and array.shape[0] == rows:
                    self.hits += 1
                    self._memory[key] = array
                    return array
        return None

    def get_or_compute(
        self, key_parts: dict[str, Any], rows: int, compute: Callable[[], np.ndarray]
    ) -> tuple[np.ndarray, bool]:
        """Return the cached array for ``key_parts`` or compute, store and return it; second value: cache hit."""
        cached = self.lookup(key_parts, rows)
        if cached is not None:
            return cached, True
        key = self.key_of(key_parts)
        self.misses += 1
        array = np.ascontiguousarray(compute(), dtype=np.float32)
        self._memory[key] = array
        if self.directory is not None:
            self.directory.mkdir(parents=True, exist_ok=True)
            tmp = self.directory / f".{key}.{os.getpid()}.tmp.npy"
            np.save(tmp, array)
            os.replace(tmp, self.directory / f"{key}.npy")
            meta = {**key_parts, "shape": list(array.shape), "created": time.strftime("%Y-%m-%dT%H:%M:%S")}
            (self.directory / f"{key}.json").write_text(json.dumps(meta, indent=2), encoding="utf-8")
        return array, False
