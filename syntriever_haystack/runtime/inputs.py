"""Input checks and text preparation shared by the serving components (torch-free)."""

from __future__ import annotations

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
