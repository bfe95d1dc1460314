"""Serve torch-free pipelines without torch, also where torch is installed.

Haystack imports torch at start-up when it is installed (``haystack.utils.device`` opens a ``LazyImport`` that
imports eagerly and only swallows an ``ImportError``): in a full install (training extras) every serving process
pays ~180 MB of RSS and seconds of start-up for a library no serving component calls. ``syntriever serve`` checks
the pipeline YAML; when every class it names is one of the torch-free ones below, it makes importing torch (and
transformers, sentence-transformers, optimum) fail in the serving process before Haystack is imported, as in the
slim serving image. ``SYNTRIEVER_SERVE_TORCH=1`` turns this off.
"""

from __future__ import annotations

import importlib.abc
import sys
from collections.abc import Iterator
from typing import Any

__all__ = ["BLOCKED", "TORCH_FREE_PREFIXES", "block_torch", "component_types", "is_torch_free"]

BLOCKED = ("torch", "transformers", "sentence_transformers", "optimum")

# Classes that never import torch (syntriever's ONNX components, Haystack's stores, retrievers, joiners, writers,
# builders and OpenSearch's integration).
TORCH_FREE_PREFIXES = (
    "haystack_integrations.components.embedders.syntriever.",
    "haystack_integrations.components.rankers.syntriever.",
    "haystack_integrations.components.retrievers.syntriever.",
    "haystack_integrations.components.joiners.syntriever.",
    "haystack_integrations.document_stores.syntriever.",
    "haystack_integrations.components.retrievers.opensearch.",
    "haystack_integrations.document_stores.opensearch.",
    "haystack.components.joiners.",
    "haystack.components.retrievers.in_memory.",
    "haystack.components.writers.",
    "haystack.components.builders.",
    "haystack.document_stores.in_memory.",
)


def component_types(data: Any) -> Iterator[str]:
    """Every ``type`` string of a loaded pipeline YAML (components, their document stores, nested objects)."""
    if isinstance(data, dict):
        if isinstance(data.get("type"), str):
            yield data["type"]
        for value in data.values():
            yield from component_types(value)
    elif isinstance(data, list):
        for value in data:
            yield from component_types(value)


def is_torch_free(yaml_text: str) -> bool:
    """Whether every class the pipeline YAML names is known not to need torch (an unreadable YAML: ``False``)."""
    import yaml

    try:
        data = yaml.safe_load(yaml_text)
    except yaml.YAMLError:
        return False
    types = list(component_types((data or {}).get("components") if isinstance(data, dict) else None))
    return bool(types) and all(t.startswith(TORCH_FREE_PREFIXES) for t in types)


class _Blocker(importlib.abc.MetaPathFinder):
    def find_spec(self, name: str, path: Any = None, target: Any = None) -> None:
        if name.split(".")[0] in BLOCKED:
            raise ModuleNotFoundError(f"No module named {name!r} (blocked: this serving process is torch-free)")
        return None


def block_torch() -> bool:
    """Make importing torch & co. fail in this process from now on. ``False`` (nothing done) if one is imported."""
    if any(name in sys.modules for name in BLOCKED):
        return False
    if not any(isinstance(finder, _Blocker) for finder in sys.meta_path):
        sys.meta_path.insert(0, _Blocker())
    return True
