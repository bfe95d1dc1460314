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


class InputFileError(SyntrieverError, ValueError):
    """An input file cannot be used as it is (not UTF-8 text, not JSON, unreadable); the message names it."""


def not_utf8(path: object, exc: UnicodeDecodeError, what: str = "file") -> InputFileError:
    """The error for a ``what`` at ``path`` that is not UTF-8 text: where it breaks, and how to convert it."""
    return InputFileError(
        f"{path}: the {what} is not UTF-8 text (byte {exc.start}: {exc.reason}); save it as UTF-8, "
        f"e.g. iconv -f latin1 -t utf-8 {path} > converted"
    )


_OS_FIXES = {
    "ENOENT": "check the path",
    "EACCES": "check its permissions",
    "EPERM": "check its permissions",
    "EISDIR": "it is a folder: pass a file",
    "ENOTDIR": "a part of the path is a file, not a folder",
    "EEXIST": "it already exists: remove it or choose another path",
    "ENOSPC": "the disk is full: free some space",
    "EROFS": "the file system is read-only: choose a writable path",
    "ENOTEMPTY": "the folder is not empty: remove it or choose another path",
}


def _os_failure(exc: OSError) -> str:
    import errno

    name = errno.errorcode.get(exc.errno or -1, "")
    fix = _OS_FIXES.get(name, "check the path and its permissions")
    if exc.filename is None:  # e.g. transformers' OSError("Unable to load weights from ...")
        return f"{' '.join(str(exc).split())} ({fix})"
    where = f"{exc.filename} → {exc.filename2}" if exc.filename2 else str(exc.filename)
    return f"{where}: {exc.strerror or exc}; {fix}"


def _type_names(exc: BaseException) -> set[str]:
    return {f"{cls.__module__}.{cls.__qualname__}" for cls in type(exc).__mro__}


# Failures of the libraries we load files with, by class (no import: a library not loaded raised nothing).
_LIBRARY_FAILURES = {
    "onnxruntime.capi.onnxruntime_pybind11_state.InvalidProtobuf": "the ONNX file is damaged or not an ONNX model",
    "onnxruntime.capi.onnxruntime_pybind11_state.InvalidGraph": "the ONNX graph is invalid",
    "onnxruntime.capi.onnxruntime_pybind11_state.NoSuchFile": "an ONNX file is missing",
    "onnxruntime.capi.onnxruntime_pybind11_state.Fail": "ONNX Runtime could not load the model",
    "safetensors._safetensors_rust.SafetensorError": "the .safetensors weights are damaged or not safetensors",
    "safetensors_rust.SafetensorError": "the .safetensors weights are damaged or not safetensors",
    "_pickle.UnpicklingError": "the torch weights (.bin/.pt) are damaged or not a torch file",
    "pickle.UnpicklingError": "the torch weights (.bin/.pt) are damaged or not a torch file",
    "yaml.error.YAMLError": "invalid YAML",
}
_LIBRARY_FIXES = {
    "ONNX": "re-export the model with `syntriever export SOURCE_DIR EXPORTED_DIR --force`",
    "safetensors": "download or save the model again",
    "torch": "download or save the model again",
    "YAML": "fix the file (a YAML linter shows where)",
}


def describe_failure(exc: BaseException) -> str | None:
    """A one-line message (problem; fix) for an *expected* failure — a file that is missing, unreadable, not UTF-8,
    not JSON/YAML, a damaged model — or ``None`` for anything else (a bug: the caller shows the traceback)."""
    import json

    if isinstance(exc, SyntrieverError):
        return str(exc)
    if isinstance(exc, UnicodeDecodeError):
        return (
            f"a file is not UTF-8 text (byte {exc.start}: {exc.reason}); save it as UTF-8 "
            "(e.g. iconv -f latin1 -t utf-8 FILE > converted); --debug shows which file"
        )
    if isinstance(exc, json.JSONDecodeError):
        return f"invalid JSON ({exc.msg} at line {exc.lineno}, column {exc.colno}); fix the file (--debug shows which)"
    if isinstance(exc, OSError):
        return _os_failure(exc)
    names = _type_names(exc)
    text = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:300]
    for name, problem in _LIBRARY_FAILURES.items():
        if name in names:
            fix = next(f for key, f in _LIBRARY_FIXES.items() if key in problem)
            return f"{problem} ({text}); {fix}"
    if isinstance(exc, RuntimeError) and "PytorchStreamReader" in text:
        return f"the torch weights are damaged or not a torch file ({text}); download or save the model again"
    if isinstance(exc, ValueError) and _raised_by_us(exc):
        return " ".join(str(exc).split())  # our own validation
    return None


def _raised_by_us(exc: BaseException) -> bool:
    """Whether the innermost frame of ``exc`` is in this project's packages (a check of ours, not a library bug)."""
    from pathlib import Path

    tb = exc.__traceback__
    if tb is None:
        return False
    while tb.tb_next is not None:
        tb = tb.tb_next
    root = Path(__file__).resolve().parent
    source = Path(tb.tb_frame.f_code.co_filename).resolve()
    return any(source.is_relative_to(folder) for folder in (root, root.parent / "haystack_integrations"))
