"""The self-describing metadata file (``syntriever.json``) written next to every exported model.

Torch-free: this module only needs the standard library.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from syntriever_haystack.errors import ExportedModelError

METADATA_FILE = "syntriever.json"
TOKENIZER_FILE = "tokenizer.json"
FORMAT_VERSION = 1

ModelKind = Literal["bi-encoder", "cross-encoder"]
KINDS: tuple[str, ...] = ("bi-encoder", "cross-encoder")
Precision = Literal["fp32", "int8"]
PRECISIONS: tuple[str, ...] = ("fp32", "int8")
Quantization = Literal["auto", "fp32", "int8"]
QUANTIZATIONS: tuple[str, ...] = ("auto", *PRECISIONS)
"""What a component may ask for: a precision, or ``auto`` (the variant the export measured fastest)."""
POOLING_MODES: tuple[str, ...] = ("mean", "cls", "max", "lasttoken")


@dataclass
class ModelMetadata:
    """Everything a server needs to know to run an exported model, without torch.

    :param kind: ``"bi-encoder"`` (embeds texts) or ``"cross-encoder"`` (scores query/document pairs).
    :param max_length: Maximum number of tokens; longer inputs are truncated (the *served* length).
    :param files: Precision name (``"fp32"``, ``"int8"``) → ONNX file path relative to the model directory.
    :param embedding_dim: Embedding dimension (bi-encoder only).
    :param pooling: Pooling of token embeddings: ``mean``, ``cls``, ``max`` or ``lasttoken`` (bi-encoder only).
    :param normalize: Whether the source model L2-normalises its embeddings (bi-encoder only).
    :param similarity: Similarity function the model was trained with: ``cosine`` or ``dot_product``.
    :param query_prefix: Text prepended to queries (e.g. ``"query: "`` for E5 models).
    :param document_prefix: Text prepended to documents (e.g. ``"passage: "``).
    :param source_model: Where the model was exported from.
    :param train_max_length: Tokens per input the source model was trained with, when its folder says:
        ``{"query": 64, "passage": 160}`` (syntriever retriever), ``{"pair": 192}`` (syntriever reranker) or
        ``{"text": 256}`` (sentence-transformers' ``max_seq_length`` of a model trained elsewhere); empty when
        unknown (and in files written before this field).
    :param train_max_length_from: The source file ``train_max_length`` was read from (``train_summary.json``,
        ``train_config.json`` or ``sentence_bert_config.json``).
    :param parity: Parity figures measured against the torch model at export time, incl. ``long_probes`` (texts
        truncated at ``max_length``) and, when ``train_max_length`` differs from it, ``train_length`` (the torch
        model at its training length against the export at ``max_length``, on those texts).
    :param export: Provenance of the export (versions, opset, fused operators, timings).
    :param serving: What the export measured for serving on the machine it ran on: ``docs_per_s`` per variant
        that passed parity, ``default`` (the fastest of them, which ``quantization="auto"`` runs) and ``machine``.
    """

    kind: ModelKind
    max_length: int
    files: dict[str, str]
    embedding_dim: int | None = None
    pooling: str | None = None
    normalize: bool = False
    similarity: str = "cosine"
    query_prefix: str = ""
    document_prefix: str = ""
    source_model: str = ""
    train_max_length: dict[str, int] = field(default_factory=dict)
    train_max_length_from: str = ""
    parity: dict[str, Any] = field(default_factory=dict)
    export: dict[str, Any] = field(default_factory=dict)
    serving: dict[str, Any] = field(default_factory=dict)
    format_version: int = FORMAT_VERSION

    def resolve_quantization(self, quantization: str) -> str:
        """The precision that ``quantization`` runs: itself, or for ``"auto"`` the export's measured ``default``
        when this folder has that file, else ``"fp32"`` (exact; exports older than the measurement)."""
        if quantization != "auto":
            return quantization
        default = self.serving.get("default")
        return default if isinstance(default, str) and default in self.files else "fp32"

    @property
    def document_train_max_length(self) -> int | None:
        """The training length of the documents (passages, pairs), or ``None`` when unknown."""
        for key in ("passage", "pair", "text"):
            if key in self.train_max_length:
                return int(self.train_max_length[key])
        return None

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, sort_keys=False) + "\n"

    def save(self, directory: str | Path) -> Path:
        path = Path(directory) / METADATA_FILE
        path.write_text(self.to_json(), encoding="utf-8")
        return path

    @classmethod
    def from_dict(cls, data: dict[str, Any], *, source: str = METADATA_FILE) -> ModelMetadata:
        kind = data.get("kind")
        if kind not in KINDS:
            raise ExportedModelError(f"{source}: 'kind' must be one of {KINDS}, got {kind!r}.")
        version = int(data.get("format_version", FORMAT_VERSION))
        if version > FORMAT_VERSION:
            raise ExportedModelError(
                f"{source} has format_version {version}, this syntriever-haystack reads up to {FORMAT_VERSION}. "
                "Upgrade syntriever-haystack (pip install -U syntriever-haystack)."
            )
        max_length = data.get("max_length")
        if isinstance(max_length, bool) or not isinstance(max_length, int) or max_length < 1:
            raise ExportedModelError(
                f"{source}: 'max_length' must be a whole number >= 1, got {max_length!r}. "
                "Fix it, or re-run `syntriever export SOURCE_DIR EXPORTED_DIR --force`."
            )
        known = {f for f in cls.__dataclass_fields__}
        return cls(**{k: v for k, v in data.items() if k in known})

    @classmethod
    def load(cls, directory: str | Path) -> ModelMetadata:
        """Read ``syntriever.json`` from an exported model directory, with errors that name the fix."""
        directory = Path(directory)
        if not directory.exists():
            raise ExportedModelError(
                f"Model directory '{directory}' does not exist. Pass the OUTPUT_DIR of "
                "`syntriever export SOURCE_DIR OUTPUT_DIR` (a folder with syntriever.json and onnx/model.onnx)."
            )
        if not directory.is_dir():
            raise ExportedModelError(f"'{directory}' is a file; pass the exported model *directory* instead.")
        path = directory / METADATA_FILE
        if not path.exists():
            hint = ""
            if (directory / "config.json").exists() and not (directory / "onnx").exists():
                hint = " It looks like a torch/Hugging Face model:"
            raise ExportedModelError(
                f"'{directory}' has no {METADATA_FILE}, so it is not a syntriever ONNX export.{hint} "
                f"Run `syntriever export {directory} <OUTPUT_DIR>` and point the component at OUTPUT_DIR."
            )
        data = read_model_json(path)
        if not isinstance(data, dict):
            raise ExportedModelError(
                f"{path} holds a JSON {type(data).__name__}, not an object; re-run `syntriever export` to rewrite it."
            )
        return cls.from_dict(data, source=str(path))


def read_model_json(path: Path) -> Any:
    """The JSON of an exported model's file (``syntriever.json``, ``tokenizer.json``), with errors naming the file
    and the fix instead of a ``UnicodeDecodeError`` / ``JSONDecodeError`` traceback.

    :raises ExportedModelError: The file cannot be read, is not UTF-8 text or not JSON.
    """
    fix = "re-run `syntriever export SOURCE_DIR EXPORTED_DIR --force` to rewrite it"
    try:
        return json.loads(path.read_bytes().decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise ExportedModelError(
            f"{path} is not UTF-8 text (byte {exc.start}: {exc.reason}), so not a file `syntriever export` wrote; "
            f"{fix}."
        ) from None
    except json.JSONDecodeError as exc:
        raise ExportedModelError(f"{path} is not valid JSON ({exc}); {fix}.") from None
    except OSError as exc:
        raise ExportedModelError(f"{path} cannot be read ({exc.strerror or exc}); check its permissions.") from None
