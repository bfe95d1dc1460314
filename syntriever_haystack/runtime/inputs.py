"""Input checks and text preparation shared by the serving components (torch-free)."""

from __future__ import annotations

import logging
from typing import Any

from haystack import Document

from syntriever_haystack.runtime.encode import passage_text


def check_text(component: str, text: Any, *, hint: str) -> None:
    """Raise a ``TypeError`` that names the fix when ``text`` is not a string."""
    if not isinstance(text, str):
        raise TypeError(f"{component} expects a string, got {type(text).__name__}. {hint}")


def check_documents(component: str, documents: Any, *, hint: str) -> None:
    """Raise a ``TypeError`` that names the fix when ``documents`` is not a list of ``Document``."""
    if not isinstance(documents, list):
        raise TypeError(f"{component} expects a list of Documents, got {type(documents).__name__}. {hint}")
    for i, doc in enumerate(documents):
        if not isinstance(doc, Document):
            raise TypeError(f"{component} expects a list of Documents, but item {i} is a {type(doc).__name__}. {hint}")
        if doc.content is not None and not isinstance(doc.content, str):
            raise TypeError(
                f"{component}: Document {doc.id} has non-string content ({type(doc.content).__name__}). "
                "Convert it to text first (e.g. with a Haystack converter)."
            )


MAX_QUERY_CHARS = 8192
"""Characters of a query the command line passes on (it warns and cuts a longer one at a word boundary): far more
than any model window (256-512 tokens, 1,000-3,000 characters) or a sensible keyword query."""

_logger = logging.getLogger("syntriever_haystack.runtime.inputs")


def check_count(component: str, name: str, value: Any, *, optional: bool = False) -> None:
    """Raise a ``ValueError`` naming ``name`` and the allowed range unless ``value`` is an integer >= 1 (or
    ``None`` when ``optional``): checked in ``__init__``, so a bad value fails when the pipeline is built."""
    if value is None and optional:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        allowed = "an integer >= 1" + (" or None" if optional else "")
        raise ValueError(f"{component}: {name} must be {allowed}, got {value!r}.")


def split_textless(component: str, documents: list[Document]) -> tuple[list[int], list[int]]:
    """Positions of the Documents with text and of those with ``content=None`` (logged as a warning: they are
    returned without an embedding or score, like Haystack's DocumentCleaner passes them through)."""
    textless = [i for i, doc in enumerate(documents) if doc.content is None]
    if textless:
        ids = ", ".join(documents[i].id for i in textless[:5]) + (", ..." if len(textless) > 5 else "")
        _logger.warning(
            "%s: %d Document(s) have no text (content=None) and are returned without an embedding or score: %s",
            component,
            len(textless),
            ids,
        )
    textless_set = set(textless)
    return [i for i in range(len(documents)) if i not in textless_set], textless


def cut_query(query: str, limit: int = MAX_QUERY_CHARS) -> str:
    """``query`` cut to at most ``limit`` characters, before a whitespace run when there is one in its second half."""
    if len(query) <= limit:
        return query
    end = limit
    while end > limit // 2 and not query[end].isspace():
        end -= 1
    if end <= limit // 2:
        return query[:limit]
    return query[:end].rstrip()


def bounded_query(query: str, *, name: str = "the query") -> tuple[str, str | None]:
    """``query`` cut to :data:`MAX_QUERY_CHARS` (see :func:`cut_query`) and the one-line warning to show when it
    was cut (``None`` when it was not)."""
    cut = cut_query(query)
    if len(cut) == len(query):
        return query, None
    return cut, (
        f"{name} has {len(query):,} characters; using its first {len(cut):,} "
        f"(at most {MAX_QUERY_CHARS:,}: the models read only their first few hundred tokens)."
    )


def document_text(doc: Document, *, meta_fields: list[str], separator: str, prefix: str = "", suffix: str = "") -> str:
    """The text a model sees for ``doc``: selected meta values, then the content, joined by ``separator``.

    Same convention as the sentence-transformers Haystack components, so embeddings are interchangeable.
    """
    return prefix + passage_text(doc.content, doc.meta, meta_fields=meta_fields, separator=separator) + suffix


def documents_texts(documents: list[Document], *, meta_fields: list[str], separator: str) -> list[str]:
    """:func:`~syntriever_haystack.runtime.encode.passage_text` of each Document (prefixes are added later)."""
    return [passage_text(doc.content, doc.meta, meta_fields=meta_fields, separator=separator) for doc in documents]


def legacy_quantization(data: dict[str, Any]) -> dict[str, Any]:
    """A serialised component of syntriever-haystack < 0.2 with ``precision`` (the ONNX weights variant) read as
    ``quantization``: the parameter was renamed so that it is not confused with sentence-transformers-haystack's
    ``precision`` (the precision of the embedding itself)."""
    params = data.get("init_parameters") or {}
    if "precision" not in params:
        return data
    import warnings

    params = dict(params)
    value = params.pop("precision")
    params.setdefault("quantization", value)
    warnings.warn(
        f"{data.get('type', 'component')}: 'precision' is now 'quantization' (which ONNX weights run); "
        "re-save the pipeline to update it.",
        DeprecationWarning,
        stacklevel=2,
    )
    return {**data, "init_parameters": params}
