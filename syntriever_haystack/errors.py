"""Exceptions raised by syntriever-haystack. Every message names the problem *and* the fix."""

from __future__ import annotations

from typing import Any


class SyntrieverError(Exception):
    """Base class of all syntriever-haystack errors."""


class ExportedModelError(SyntrieverError, ValueError):
    """An exported model directory is missing, incomplete, or of the wrong kind for the component."""


class ExportError(SyntrieverError, RuntimeError):
    """Exporting a model to ONNX failed (bad source, failed parity check, ...). Nothing was written.

    :param details: Machine-readable figures behind the failure (e.g. the parity report).
    """

    def __init__(self, message: str, *, details: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.details = details or {}
