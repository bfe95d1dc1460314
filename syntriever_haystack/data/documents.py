"""A user's own files as Haystack ``Document`` chunks with stable ids, and the way back to a BEIR corpus.

:func:`load_documents` reads a folder (or one file) of ``.txt``, ``.md``, ``.pdf``, ``.html``/``.htm`` and
``.docx`` through Haystack's converters and splits the text with Haystack's ``DocumentSplitter``. Every chunk
gets an id derived from its file's path relative to the folder and its split index, so indexing the same
folder twice gives the same ids (a document store then overwrites instead of duplicating).

Converters whose optional package is missing (``pypdf``, ``trafilatura``, ``python-docx``) do not stop the run:
their files are skipped with one counted warning that names the ``pip install`` to fix it. Markdown without
``mdit_plain`` is read as plain text.

:func:`write_beir_corpus` writes the chunks as ``corpus.jsonl``, so a user's folder becomes a BEIR corpus for
the rest of the tool; :func:`documents_from_store` reads documents back from any Haystack document store.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import logging
import math
import os
import tempfile
import warnings
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from haystack import Document
from tqdm import tqdm

from syntriever_haystack.errors import SyntrieverError

if TYPE_CHECKING:
    from haystack.document_stores.types import DocumentStore

logger = logging.getLogger(__name__)

SUPPORTED_EXTENSIONS: tuple[str, ...] = (".txt", ".md", ".pdf", ".html", ".htm", ".docx")
SPLIT_UNITS: tuple[str, ...] = ("word", "sentence", "passage", "line", "period", "page")

_KIND = {".txt": "text", ".md": "markdown", ".pdf": "pdf", ".html": "html", ".htm": "html", ".docx": "docx"}
_FIX = {
    "markdown": "pip install markdown-it-py mdit_plain",
    "pdf": "pip install pypdf",
    "html": "pip install trafilatura",
    "docx": "pip install python-docx",
}


def _stable_id(*parts: str) -> str:
    """A 64-hex id that depends only on ``parts`` (the relative path, and the split index for chunks)."""
    return hashlib.sha256("\x1f".join(("syntriever-document", *parts)).encode("utf-8")).hexdigest()


def _jsonable(value: Any) -> Any:
    """``value`` made JSON-serialisable: containers recursed, dates as ISO strings, anything else ``str()``."""
    if value is None or isinstance(value, (str, bool, int)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [_jsonable(v) for v in value]
    if isinstance(value, (datetime.date, datetime.datetime, datetime.time)):
        return value.isoformat()
    return str(value)


def _normalise_extensions(extensions: Iterable[str] | None) -> tuple[str, ...]:
    if extensions is None:
        return SUPPORTED_EXTENSIONS
    wanted = tuple(dict.fromkeys(e.lower() if e.startswith(".") else f".{e.lower()}" for e in extensions))
    unknown = [e for e in wanted if e not in _KIND]
    if unknown or not wanted:
        raise SyntrieverError(
            f"unsupported extension(s) {', '.join(unknown) or '(none given)'}; choose from "
            f"{', '.join(SUPPORTED_EXTENSIONS)}."
        )
    return wanted


def _make_converter(kind: str) -> Any:
    """The Haystack converter for ``kind``; raises ``ImportError`` when its optional package is missing."""
    if kind == "text":
        from haystack.components.converters.txt import TextFileToDocument

        return TextFileToDocument()
    if kind == "markdown":
        from haystack.components.converters.markdown import MarkdownToDocument

        return MarkdownToDocument(progress_bar=False)
    if kind == "pdf":
        from haystack.components.converters.pypdf import PyPDFToDocument

        return PyPDFToDocument()
    if kind == "html":
        from haystack.components.converters.html import HTMLToDocument

        return HTMLToDocument()
    from haystack.components.converters.docx import DOCXToDocument

    return DOCXToDocument()


def _make_splitter(split_by: str, split_length: int, split_overlap: int) -> Any:
    from haystack.components.preprocessors import DocumentSplitter

    if split_by not in SPLIT_UNITS:
        raise SyntrieverError(f"split_by={split_by!r} is not supported; choose one of {', '.join(SPLIT_UNITS)}.")
    if split_length < 1 or not 0 <= split_overlap < split_length:
        raise SyntrieverError(
            f"invalid split: length {split_length}, overlap {split_overlap}; the length must be at least 1 and the "
            "overlap between 0 and length - 1 (e.g. --split-length 200 --split-overlap 20)."
        )
    try:
        splitter = DocumentSplitter(split_by=split_by, split_length=split_length, split_overlap=split_overlap)  # type: ignore[arg-type]
        if hasattr(splitter, "warm_up"):
            splitter.warm_up()
    except ImportError:
        raise SyntrieverError(
            f"split_by={split_by!r} needs nltk, which is not installed: pip install nltk (or use --split-by word)."
        ) from None
    except (LookupError, OSError) as exc:  # nltk data that cannot be downloaded offline
        raise SyntrieverError(
            f"split_by={split_by!r} could not load its sentence tokenizer ({exc}); use --split-by word offline."
        ) from None
    return splitter


def _list_files(root: Path, extensions: Sequence[str], recursive: bool) -> tuple[Path, list[Path], list[str]]:
    """(base folder for relative paths, matching files sorted by relative path, skipped links).

    Hidden paths are skipped. A symlinked file is read only when it resolves inside the folder: a link to a file
    elsewhere (``notes.txt -> /etc/hostname``) would put that file into the corpus. Symlinked folders are never
    entered: one pointing out of the folder would do the same, one pointing into it reads files twice or loops.
    Both are returned (relative paths) so the caller warns about them.
    """
    if root.is_file():
        if root.suffix.lower() not in extensions:
            raise SyntrieverError(f"{root} is not one of the supported file types ({', '.join(extensions)}).")
        return root.parent, [root], []
    real_root = root.resolve()
    files: list[Path] = []
    skipped: list[str] = []
    for dirpath, dirnames, filenames in os.walk(root):  # does not follow symlinked folders
        folder = Path(dirpath)
        for name in [*dirnames, *filenames]:
            path = folder / name
            if name.startswith(".") or not path.is_symlink():
                continue
            if path.is_dir() and recursive:
                skipped.append(path.relative_to(root).as_posix() + "/")
            elif path.suffix.lower() in extensions and not path.resolve().is_relative_to(real_root):
                skipped.append(path.relative_to(root).as_posix())
        dirnames[:] = [d for d in dirnames if recursive and not d.startswith(".")]
        files += [
            folder / name
            for name in filenames
            if not name.startswith(".")
            and Path(name).suffix.lower() in extensions
            and (folder / name).is_file()
            and (folder / name).relative_to(root).as_posix() not in skipped
        ]
    return root, sorted(files, key=lambda p: p.relative_to(root).as_posix()), sorted(skipped)


def _warn(message: str) -> None:
    warnings.warn(message, UserWarning, stacklevel=3)


def _examples(names: Sequence[str], limit: int = 3) -> str:
    shown = ", ".join(names[:limit])
    return f"{shown}, ..." if len(names) > limit else shown


def load_documents(
    path: str | Path,
    *,
    split_by: str = "word",
    split_length: int = 200,
    split_overlap: int = 20,
    extensions: Iterable[str] | None = None,
    recursive: bool = True,
    progress: bool = True,
) -> list[Document]:
    """Read a folder (or a single file) of documents and split them into chunks with deterministic ids.

    Every chunk has ``meta["file_path"]`` (relative to the folder, ``/``-separated), ``meta["file_name"]``,
    ``meta["source_id"]`` (the id of the unsplit file: ``sha256`` of the relative path) and
    ``meta["split_id"]``; its id is a ``sha256`` of the relative path and the split index, stable across runs.

    :param path: A folder (searched recursively unless ``recursive=False``; hidden files and folders are
        skipped) or one file.
    :param split_by: ``DocumentSplitter`` unit: ``word``, ``sentence`` (needs ``nltk``), ``passage`` (blank-line
        separated), ``line``, ``period`` or ``page``.
    :param split_length: Units per chunk.
    :param split_overlap: Units shared by consecutive chunks.
    :param extensions: File types to read (default: :data:`SUPPORTED_EXTENSIONS`).
    :param recursive: Also read sub-folders.
    :param progress: Show a progress bar while converting.
    :returns: The chunks, ordered by file path and split index.
    :raises SyntrieverError: The path does not exist, the split parameters are invalid, or no text was found
        (the message names the folder and the extensions looked for).
    """
    root = Path(path).expanduser()
    exts = _normalise_extensions(extensions)
    if not root.exists():
        raise SyntrieverError(f"{root} does not exist; pass a folder (or a file) of {', '.join(exts)} documents.")
    splitter = _make_splitter(split_by, split_length, split_overlap)
    base, files, outside = _list_files(root, exts, recursive)
    if outside:
        _warn(
            f"skipped {len(outside)} symlink(s) to a file outside {root} or to a folder (never followed): "
            f"{_examples(outside)}; copy the files into the folder to include them"
        )

    converters: dict[str, Any] = {}
    missing: dict[str, list[str]] = {}
    empty: list[str] = []
    failed: list[str] = []
    unsplit: list[Document] = []
    for file in tqdm(files, desc="Converting files", unit="file", disable=not progress):
        rel = file.relative_to(base).as_posix()
        kind = _KIND[file.suffix.lower()]
        if kind not in converters:
            try:
                converters[kind] = _make_converter(kind)
            except ImportError:
                if kind == "markdown":  # plain text is a fine reading of markdown
                    logger.info("markdown converter unavailable (%s); reading .md files as plain text", _FIX[kind])
                    converters[kind] = _make_converter("text")
                else:
                    converters[kind] = None
        converter = converters[kind]
        if converter is None:
            missing.setdefault(kind, []).append(rel)
            continue
        try:
            converted: list[Document] = converter.run(sources=[file])["documents"]
        except Exception as exc:  # a corrupt file must not stop the whole folder
            logger.debug("converting %s failed: %s", file, exc)
            converted = []
        if not converted:
            failed.append(rel)
            continue
        text = "\n\n".join(d.content for d in converted if d.content)
        if not text.strip():
            empty.append(rel)
            continue
        meta = {k: _jsonable(v) for k, v in converted[0].meta.items() if k != "file_path"}
        meta.update({"file_path": rel, "file_name": file.name})
        unsplit.append(Document(id=_stable_id(rel), content=text, meta=meta))

    if missing:
        parts = [
            f"{len(names)} {kind} file(s) (e.g. {_examples(names)}): {_FIX[kind]}" for kind, names in missing.items()
        ]
        _warn(
            f"skipped {sum(len(n) for n in missing.values())} file(s) whose converter is not installed: "
            + "; ".join(parts)
        )
    if empty:
        _warn(f"skipped {len(empty)} empty file(s) with no text: {_examples(empty)}")
    if failed:
        _warn(f"skipped {len(failed)} file(s) that could not be read or converted: {_examples(failed)}")

    chunks: list[Document] = splitter.run(documents=unsplit)["documents"] if unsplit else []
    if not chunks:
        notes = []
        if missing:
            notes.append(f"{sum(len(n) for n in missing.values())} skipped for a missing converter")
        if empty:
            notes.append(f"{len(empty)} empty")
        if failed:
            notes.append(f"{len(failed)} unreadable")
        detail = f" ({len(files)} matching file(s): {', '.join(notes)})" if files else ""
        raise SyntrieverError(
            f"no documents with text found in {root}{detail}; looked for {', '.join(exts)} files"
            f"{' in all sub-folders' if recursive and root.is_dir() else ''}. Pass a folder that contains some."
        )

    new_ids = {c.id: _stable_id(str(c.meta["file_path"]), str(c.meta["split_id"])) for c in chunks}
    documents: list[Document] = []
    for chunk in chunks:
        meta = dict(chunk.meta)
        overlaps = meta.get("_split_overlap")
        if isinstance(overlaps, list):
            meta["_split_overlap"] = [
                {**o, "doc_id": new_ids[o["doc_id"]]} if isinstance(o, dict) and o.get("doc_id") in new_ids else o
                for o in overlaps
            ]
        documents.append(Document(id=new_ids[chunk.id], content=chunk.content, meta=meta))
    return documents


def documents_from_store(store: DocumentStore, *, filters: dict[str, Any] | None = None) -> list[Document]:
    """All documents of a Haystack document store (optionally filtered).

    :param store: Any Haystack ``DocumentStore`` (in-memory, OpenSearch, ...).
    :param filters: Haystack metadata filters, e.g. ``{"field": "meta.file_path", "operator": "==", "value": "a.txt"}``.
    :returns: The documents, in the store's order.
    :raises SyntrieverError: The store returned no documents.
    """
    documents = store.filter_documents(filters=filters)
    if not documents:
        which = " matching the filters" if filters else ""
        raise SyntrieverError(
            f"the {type(store).__name__} holds no documents{which}; index some first "
            "(e.g. load_documents(folder) and a DocumentWriter)."
        )
    return list(documents)


def write_beir_corpus(documents: Iterable[Document], out_dir: str | Path) -> Path:
    """Write documents as a BEIR ``corpus.jsonl`` (atomically: a temporary file renamed into place).

    Each line is ``{"_id": doc.id, "title": ..., "text": doc.content, "metadata": {...}}``; the title is
    ``meta["title"]`` if set, else the file name without extension (from ``meta["file_path"]``), else empty.
    The metadata is the document's meta made JSON-serialisable, without internal keys starting with ``_``.
    Documents without text are skipped with a counted warning.

    :param documents: The documents to write (e.g. from :func:`load_documents` or :func:`documents_from_store`).
    :param out_dir: The folder to write ``corpus.jsonl`` into (created if needed).
    :returns: The path of the written ``corpus.jsonl``.
    :raises SyntrieverError: Duplicate document ids, no document with text, or the folder is not writable.
    """
    out = Path(out_dir).expanduser()
    lines: list[str] = []
    seen: set[str] = set()
    no_text = 0
    for doc in documents:
        if doc.id in seen:
            raise SyntrieverError(
                f"duplicate document id {doc.id!r} (file {doc.meta.get('file_path', '?')}); ids must be unique."
            )
        seen.add(doc.id)
        if not doc.content or not doc.content.strip():
            no_text += 1
            continue
        file_path = doc.meta.get("file_path")
        title = doc.meta.get("title") or (Path(str(file_path)).stem if file_path else "")
        metadata = {str(k): _jsonable(v) for k, v in doc.meta.items() if not str(k).startswith("_")}
        record = {"_id": doc.id, "title": str(title), "text": doc.content, "metadata": metadata}
        lines.append(json.dumps(record, ensure_ascii=False))
    if not lines:
        raise SyntrieverError(f"nothing to write to {out / 'corpus.jsonl'}: none of the documents has text.")
    if no_text:
        _warn(f"skipped {no_text} document(s) without text while writing {out / 'corpus.jsonl'}")
    target = out / "corpus.jsonl"
    try:
        out.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(dir=out, prefix=".corpus.", suffix=".jsonl.tmp")
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                handle.write("\n".join(lines) + "\n")
            os.replace(tmp_name, target)
        finally:
            Path(tmp_name).unlink(missing_ok=True)
    except OSError as exc:
        raise SyntrieverError(f"could not write {target}: {exc.strerror or exc}.") from None
    return target


__all__ = [
    "SPLIT_UNITS",
    "SUPPORTED_EXTENSIONS",
    "documents_from_store",
    "load_documents",
    "write_beir_corpus",
]
