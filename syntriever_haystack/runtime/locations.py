"""Relocatable paths in saved pipelines: a relative model folder or store file in a pipeline YAML resolves against
the pipeline's folder, so a run folder can be moved, copied or mounted elsewhere.

:func:`resolve_path` keeps an absolute path and resolves a relative one against, in order:

1. the folder of the innermost active :func:`pipeline_base` (``load_pipeline(path)`` sets the YAML's folder);
2. ``$SYNTRIEVER_PIPELINE_DIR`` (set it to the YAML's folder to load it with plain ``Pipeline.loads(text)``);
3. the current directory.

Components resolve their paths once, in ``__init__``, and serialise the path as they were given it.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from pathlib import Path

__all__ = ["PIPELINE_DIR_ENV", "pipeline_base", "relative_to_base", "resolve_path"]

PIPELINE_DIR_ENV = "SYNTRIEVER_PIPELINE_DIR"

_BASE: ContextVar[Path | None] = ContextVar("syntriever_pipeline_base", default=None)


@contextmanager
def pipeline_base(folder: str | Path) -> Iterator[Path]:
    """Within the block, relative paths resolve against ``folder`` (nestable, per thread / async task)."""
    base = Path(folder).expanduser().absolute()
    token = _BASE.set(base)
    try:
        yield base
    finally:
        _BASE.reset(token)


def _base() -> Path:
    active = _BASE.get()
    if active is not None:
        return active
    env = os.environ.get(PIPELINE_DIR_ENV)
    if env:
        return Path(env).expanduser().absolute()
    return Path.cwd()


def resolve_path(value: str | os.PathLike[str]) -> Path:
    """``value`` as an absolute, normalised path (``~`` expanded; a relative path joined to the current base, see
    above; symbolic links are kept)."""
    path = Path(value).expanduser()
    return Path(os.path.abspath(path if path.is_absolute() else _base() / path))  # "pipelines/../models" → "models"


def relative_to_base(value: str | os.PathLike[str], base: str | Path) -> str:
    """``value`` written relative to the folder ``base`` (e.g. ``../models/retriever-onnx``) when both lie in the
    same tree under ``base``'s parent; otherwise ``value`` unchanged."""
    path = Path(value).expanduser()
    if not path.is_absolute():
        return str(value)
    target, folder = path.resolve(), Path(base).expanduser().resolve()  # compare real paths (symlinked /tmp, ...)
    try:
        target.relative_to(folder.parent)
    except ValueError:
        return str(value)
    return os.path.relpath(target, folder)
