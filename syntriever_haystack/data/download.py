"""Download the public BEIR datasets into a local cache, checksum-verified and atomically unpacked.

The registry :data:`BEIR_DATASETS` lists the zips that the BEIR project hosts at
``https://public.ukp.informatik.tu-darmstadt.de/thakur/BEIR/datasets/{name}.zip`` with the md5 checksums it
publishes in the "Available Datasets" table of its README (github.com/beir-cellar/beir). Only datasets whose
checksum is published there are listed; BioASQ, Signal-1M, TREC-NEWS and Robust04 are not downloadable.

A download is streamed into a temporary file inside the cache, verified, unpacked into a staging folder and
renamed into place in one step, so the cache never holds a half-written dataset: either ``<cache>/<name>``
is complete or it does not exist. Without network, download the zip elsewhere and pass the unzipped folder
with ``--dataset PATH`` (see :func:`resolve_dataset`).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import tempfile
import urllib.error
import urllib.request
import zipfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import BinaryIO

from tqdm import tqdm

from syntriever_haystack.errors import SyntrieverError
from syntriever_haystack.paths import CACHE_ENV, cache_root

BEIR_BASE_URL = "https://public.ukp.informatik.tu-darmstadt.de/thakur/BEIR/datasets"
_MARKER = ".syntriever-download.json"
_CHUNK = 1 << 20
_TIMEOUT_S = 60.0
_NO_NETWORK_HINT = "no network? download the zip elsewhere and pass the unzipped folder with --dataset PATH"
_SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


@dataclass(frozen=True)
class BeirSource:
    """Where a BEIR dataset zip lives and the md5 checksum the BEIR project publishes for it.

    :param name: The BEIR dataset name (also the folder name inside the zip and in the cache).
    :param url: The zip's download URL.
    :param md5: The published md5 hex digest of the zip.
    """

    name: str
    url: str
    md5: str


# md5 values copied from the "Available Datasets" table of the beir-cellar/beir README.md.
_PUBLISHED_MD5: dict[str, str] = {
    "msmarco": "444067daf65d982533ea17ebd59501e4",
    "trec-covid": "ce62140cb23feb9becf6270d0d1fe6d1",
    "nfcorpus": "a89dba18a62ef92f7d323ec890a0d38d",
    "nq": "d4d3d2e48787a744b6f6e691ff534307",
    "hotpotqa": "f412724f78b0d91183a0e86805e16114",
    "fiqa": "17918ed23cd04fb15047f73e6c3bd9d9",
    "arguana": "8ad3e3c2a5867cdced806d6503f29b99",
    "webis-touche2020": "46f650ba5a527fc69e0a6521c5a23563",
    "cqadupstack": "4e41456d7df8ee7760a7f866133bda78",
    "quora": "18fb154900ba42a600f84b839c173167",
    "dbpedia-entity": "c2a39eb420a3164af735795df012ac2c",
    "scidocs": "38121350fc3a4d2f48850f6aff52e4a9",
    "fever": "5a818580227bfb4b35bb6fa46d9b6c03",
    "climate-fever": "8b66f0a9126c521bae2bde127b4dc99d",
    "scifact": "5f7d1de60b170fc8027bb7898e2efca1",
}

BEIR_DATASETS: dict[str, BeirSource] = {
    name: BeirSource(name=name, url=f"{BEIR_BASE_URL}/{name}.zip", md5=md5) for name, md5 in _PUBLISHED_MD5.items()
}


def default_dataset_cache_dir() -> Path:
    """The dataset cache: ``$SYNTRIEVER_CACHE/datasets``, else ``~/.cache/syntriever/datasets``."""
    return cache_root() / "datasets"


def _known_names() -> str:
    return ", ".join(sorted(BEIR_DATASETS))


def _is_complete(folder: Path) -> bool:
    """A cached dataset folder is complete if it has a corpus or our marker (cqadupstack has only sub-folders)."""
    return (folder / "corpus.jsonl").is_file() or (folder / _MARKER).is_file()


def download_beir(
    name: str,
    *,
    cache_dir: str | Path | None = None,
    url: str | None = None,
    md5: str | None = None,
    progress: bool = True,
) -> Path:
    """Download and unpack one BEIR dataset, or return it from the cache without touching the network.

    :param name: A name from :data:`BEIR_DATASETS` (``scifact``, ``nfcorpus``, ...), or any folder-safe name
        when ``url`` is given.
    :param cache_dir: Cache folder; defaults to :func:`default_dataset_cache_dir`.
    :param url: Download from this URL instead of the registry's (``https://``, ``http://`` or ``file://``).
    :param md5: Expected md5 of the zip; defaults to the registry's published checksum. A custom ``url``
        without a known checksum is not verified.
    :param progress: Show a tqdm progress bar while downloading.
    :returns: The dataset folder ``<cache>/<name>`` (with ``corpus.jsonl``, ``queries.jsonl``, ``qrels/``).
    :raises SyntrieverError: Unknown name, network failure, checksum mismatch or a malformed zip. Nothing
        partial is left in the cache.
    """
    source = BEIR_DATASETS.get(name)
    if source is None and url is None:
        raise SyntrieverError(
            f"unknown BEIR dataset {name!r}; known names: {_known_names()}. "
            "For any other dataset pass --dataset PATH to a BEIR-layout folder "
            "(corpus.jsonl, queries.jsonl, qrels/<split>.tsv)."
        )
    if not _SAFE_NAME.match(name):
        raise SyntrieverError(
            f"dataset name {name!r} cannot be used as a cache folder name; use letters, digits, '.', '_' or '-'."
        )
    url = url or (source.url if source else "")
    expected = (md5 or (source.md5 if source else "")).lower()

    cache = Path(cache_dir).expanduser() if cache_dir is not None else default_dataset_cache_dir()
    target = cache / name
    if _is_complete(target):
        return target
    if target.exists():
        raise SyntrieverError(
            f"{target} exists but is not a complete dataset (no corpus.jsonl); delete it to download {name!r} "
            "again, or pass --cache-dir DIR to another folder."
        )

    try:
        cache.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(dir=cache, prefix=f".{name}.", suffix=".zip.part")
    except OSError as exc:
        raise SyntrieverError(
            f"cannot write to the dataset cache {cache}: {exc.strerror or exc}. Pass --cache-dir DIR (or set "
            f"${CACHE_ENV}) to a writable folder."
        ) from None
    tmp_zip = Path(tmp_name)
    staging: Path | None = None
    try:
        with os.fdopen(fd, "wb") as sink:
            actual = _stream(url, sink, name=name, progress=progress)
        if expected and actual != expected:
            raise SyntrieverError(
                f"checksum mismatch for {url}: expected md5 {expected}, got {actual}. The download is corrupt or "
                f"the file changed upstream; nothing was kept in {cache}. Retry, or download the zip yourself "
                "and pass the unzipped folder with --dataset PATH."
            )
        staging = Path(tempfile.mkdtemp(dir=cache, prefix=f".{name}.extract-"))
        root = _extract(tmp_zip, staging, url=url)
        (root / _MARKER).write_text(json.dumps({"name": name, "url": url, "md5": actual}) + "\n", encoding="utf-8")
        try:
            root.rename(target)
        except OSError:
            if not _is_complete(target):  # a concurrent download that finished first is fine
                raise
        return target
    except OSError as exc:
        raise SyntrieverError(
            f"could not store dataset {name!r} in {cache}: {exc.strerror or exc}. Free some disk space or pass "
            "--cache-dir DIR to another writable folder; nothing partial was kept."
        ) from None
    finally:
        tmp_zip.unlink(missing_ok=True)
        if staging is not None:
            shutil.rmtree(staging, ignore_errors=True)


def _stream(url: str, sink: BinaryIO, *, name: str, progress: bool) -> str:
    """Copy ``url`` into ``sink`` in chunks and return the md5 hex digest of the bytes written."""
    digest = hashlib.md5(usedforsecurity=False)
    try:
        with urllib.request.urlopen(url, timeout=_TIMEOUT_S) as response:
            length = response.headers.get("Content-Length")
            total = int(length) if length and length.isdigit() else None
            with tqdm(
                total=total,
                unit="B",
                unit_scale=True,
                unit_divisor=1024,
                desc=f"{name}.zip",
                disable=not progress,
            ) as bar:
                while chunk := response.read(_CHUNK):
                    digest.update(chunk)
                    sink.write(chunk)
                    bar.update(len(chunk))
    except (urllib.error.URLError, TimeoutError, OSError, ValueError) as exc:
        reason = getattr(exc, "reason", None) or exc
        raise SyntrieverError(f"download of {name!r} failed: {url} ({reason}); {_NO_NETWORK_HINT}.") from None
    return digest.hexdigest()


def _check_member(name: str, staging: Path, *, url: str) -> None:
    """Refuse zip members that would land outside ``staging`` (absolute paths, ``..``, drive letters)."""
    posix = PurePosixPath(name.replace("\\", "/"))
    resolved = (staging / posix).resolve()
    if (
        posix.is_absolute()
        or ".." in posix.parts
        or re.match(r"^[A-Za-z]:", name)
        or not resolved.is_relative_to(staging.resolve())
    ):
        raise SyntrieverError(
            f"refusing to unpack {url}: member {name!r} points outside the target folder (zip path traversal). "
            "The file is not a genuine BEIR zip; nothing was kept."
        )


def _extract(zip_path: Path, staging: Path, *, url: str) -> Path:
    """Unpack into ``staging`` and return the dataset root (the single top-level folder, or ``staging``)."""
    try:
        with zipfile.ZipFile(zip_path) as archive:
            for member in archive.namelist():
                _check_member(member, staging, url=url)
            archive.extractall(staging)
    except zipfile.BadZipFile as exc:
        raise SyntrieverError(f"{url} is not a valid zip file ({exc}); nothing was kept.") from None
    entries = [p for p in staging.iterdir() if p.name != "__MACOSX"]
    if len(entries) == 1 and entries[0].is_dir():
        root = entries[0]
    else:
        root = staging / f".root-{os.getpid()}"  # flat zip: gather the files into a folder we can rename
        root.mkdir()
        for entry in entries:
            entry.rename(root / entry.name)
    if not (root / "corpus.jsonl").is_file() and not any(root.glob("*/corpus.jsonl")):
        raise SyntrieverError(
            f"{url} does not contain a BEIR dataset (no corpus.jsonl at its top level or one folder down); "
            "nothing was kept."
        )
    return root


def resolve_dataset(spec: str | Path, *, cache_dir: str | Path | None = None) -> Path:
    """Turn a ``--dataset`` argument into a folder: an existing folder as is, else a BEIR name to download.

    ``spec`` may be ``NAME`` or ``beir:NAME``; ``cqadupstack/android`` (or ``beir:cqadupstack/android``)
    selects a sub-dataset of a zip that holds several. An existing folder always wins over a name.

    :param spec: A folder path or a BEIR dataset name.
    :param cache_dir: Cache folder for downloads; defaults to :func:`default_dataset_cache_dir`.
    :returns: The dataset folder.
    :raises SyntrieverError: ``spec`` is neither an existing folder nor a known name (the message lists the
        names), or the download failed.
    """
    path = Path(spec).expanduser()
    if path.is_dir():
        return path
    text = str(spec).strip()
    if text.startswith("beir:"):
        text = text[len("beir:") :]
    name, _, sub = text.partition("/")
    if name in BEIR_DATASETS and not sub.startswith("/"):
        folder = download_beir(name, cache_dir=cache_dir)
        if not sub:
            return folder
        chosen = folder / sub
        if (chosen / "corpus.jsonl").is_file():
            return chosen
        subs = sorted(p.parent.name for p in folder.glob("*/corpus.jsonl"))
        raise SyntrieverError(f"dataset {name!r} has no sub-dataset {sub!r}; available: {', '.join(subs) or '(none)'}.")
    raise SyntrieverError(
        f"dataset {str(spec)!r} is neither a folder nor a known BEIR dataset name; pass --dataset PATH to a "
        "BEIR-layout folder (corpus.jsonl, queries.jsonl, qrels/<split>.tsv) or one of: "
        f"{_known_names()}."
    )


__all__ = [
    "BEIR_BASE_URL",
    "BEIR_DATASETS",
    "BeirSource",
    "default_dataset_cache_dir",
    "download_beir",
    "resolve_dataset",
]
