"""Package an exported model as an OpenSearch ML Commons local model (ONNX zip + register body).

What ML Commons does with a local ONNX model (read in its source, see ``docs/ml-commons.md`` for commits):

- The zip is unpacked and its *top level* must hold exactly one ``*.onnx`` file and ``tokenizer.json``
  (``DLModel.loadModel``, ``ModelHelper.verifyModelZipFile``).
- ``TEXT_EMBEDDING`` (``ONNXSentenceTransformerTextEmbeddingTranslator``) tokenises one text at a time with
  DJL's Hugging Face tokenizer built from ``tokenizer.json`` (its ``truncation`` block sets the maximum
  length), feeds ``input_ids`` and ``attention_mask`` (+ ``token_type_ids`` when ``model_type`` is
  ``bert`` or ``albert``), reads the graph's *first* output as token embeddings, pools them itself
  (``pooling_mode``: mean, cls, max, ...) and L2-normalises when ``normalize_result`` is true.
- ``TEXT_SIMILARITY`` (``TextSimilarityTranslator``) tokenises (query, document) pairs and always feeds
  ``input_ids``, ``attention_mask`` and ``token_type_ids``; the first value of each output is the score.
- DJL's ONNX Runtime block refuses a feed whose number of tensors differs from the graph's inputs
  (``OrtSymbolBlock``: "Input mismatch"), so the graph's inputs must be exactly what the translator sends.
- ML Commons ships ONNX Runtime 1.16.3: the graph must have IR version <= 9 and opset <= 19.

:func:`build_bundle` therefore adapts our exported graph when needed (adds/drops ``token_type_ids``; bakes
last-token pooling, which the ONNX translator lacks, into the graph and registers it as ``cls``), writes
``tokenizer.json`` with truncation at the exported ``max_length``, and computes the register body
(sha256, size, number of 10 MB chunks). Torch-free: the standard library, ``tokenizers`` and
``onnxruntime``; the ``onnx`` package only when the graph has to be edited.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import zipfile
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from syntriever_haystack.errors import ExportedModelError
from syntriever_haystack.runtime.metadata import PRECISIONS, ModelMetadata, read_model_json

#: ML Commons rejects chunks larger than this (``ModelHelper.CHUNK_SIZE``).
CHUNK_SIZE = 10_000_000
#: opensearch-py-ml refuses zips above 4 GB (``MODEL_MAX_SIZE``); ML Commons stores chunks in an index.
MAX_MODEL_BYTES = 4_000_000_000
#: What ONNX Runtime 1.16.3 (the version ML Commons bundles) loads.
MAX_IR_VERSION = 9
MAX_OPSET = 19
#: ``model_type`` values for which the ONNX text-embedding translator also feeds ``token_type_ids``.
TOKEN_TYPE_MODEL_TYPES = ("bert", "albert")
#: Pooling modes of ``TextEmbeddingModelConfig.PoolingMode`` that the ONNX translator implements.
NATIVE_POOLING = {"mean": "mean", "cls": "cls", "max": "max"}

GRAPH_FILE = "model.onnx"
TOKENIZER_FILE = "tokenizer.json"
METADATA_FILE = "syntriever.json"
_ZIP_DATE = (2024, 1, 1, 0, 0, 0)  # fixed timestamps: the same model gives the same zip and hash


@dataclass
class MlCommonsBundle:
    """A built bundle: the zip, its register body and what a client needs to use the model.

    :param zip_path: The model zip to upload.
    :param config_path: The register body as JSON (next to the zip).
    :param register_body: Body of ``POST /_plugins/_ml/models/_register_meta`` (without ``model_group_id``).
    :param kind: ``bi-encoder`` or ``cross-encoder``.
    :param precision: ``fp32`` or ``int8``.
    :param chunk_size: Bytes per uploaded chunk.
    :param model_inputs: Input names of the bundled graph (what ML Commons will feed).
    :param graph_edits: Human-readable list of changes made to our exported graph.
    :param query_prefix: Prefix the model expects before queries (add it to ``query_text`` yourself unless
        the bundle is asymmetric).
    :param document_prefix: Prefix the model expects before documents.
    :param embedding_dim: Embedding dimension (bi-encoder).
    :param similarity: ``cosine`` / ``dot_product`` (bi-encoder) or ``logit``.
    :param asymmetric: Whether the prefixes are registered as ML Commons ``query_prefix`` / ``passage_prefix``.
    :param warnings: Things the user must know (e.g. a document prefix the rerank processor cannot add).
    """

    zip_path: Path
    config_path: Path
    register_body: dict[str, Any]
    kind: str
    precision: str
    chunk_size: int
    model_inputs: list[str]
    graph_edits: list[str] = field(default_factory=list)
    query_prefix: str = ""
    document_prefix: str = ""
    embedding_dim: int | None = None
    similarity: str = "cosine"
    asymmetric: bool = False
    warnings: list[str] = field(default_factory=list)

    @property
    def function_name(self) -> str:
        return str(self.register_body["function_name"])

    @property
    def size(self) -> int:
        return int(self.register_body["model_content_size_in_bytes"])

    @property
    def sha256(self) -> str:
        return str(self.register_body["model_content_hash_value"])

    @property
    def total_chunks(self) -> int:
        return int(self.register_body["total_chunks"])

    def chunks(self) -> Iterator[bytes]:
        """The zip's bytes in upload order, ``chunk_size`` bytes each (the last one shorter)."""
        with self.zip_path.open("rb") as handle:
            while True:
                data = handle.read(self.chunk_size)
                if not data:
                    return
                yield data


def total_chunks(size: int, chunk_size: int = CHUNK_SIZE) -> int:
    """Number of chunks ML Commons expects for a zip of ``size`` bytes (``ceil(size / chunk_size)``)."""
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}.")
    return max(1, math.ceil(size / chunk_size))


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file, as ML Commons and opensearch-py-ml compute ``model_content_hash_value``."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def build_bundle(
    exported_dir: str | Path,
    out_zip: str | Path,
    *,
    precision: str = "fp32",
    name: str | None = None,
    version: str = "1",
    description: str | None = None,
    asymmetric: bool = False,
    chunk_size: int = CHUNK_SIZE,
) -> MlCommonsBundle:
    """Build the ML Commons zip and register body for an exported bi-encoder or cross-encoder.

    :param exported_dir: OUTPUT_DIR of ``syntriever export`` (``syntriever.json``, ``tokenizer.json``, ONNX).
    :param out_zip: Zip to write; the register body goes next to it as ``<stem>.ml-commons.json``.
    :param precision: ``fp32`` (reference) or ``int8`` (smaller, faster, slightly less exact).
    :param name: Model name in OpenSearch (default: the exported folder's name).
    :param version: Model version string.
    :param description: Model description (default: kind, precision and folder name).
    :param asymmetric: Register the query/document prefixes as ML Commons ``query_prefix`` /
        ``passage_prefix``. Only for clusters whose neural-search plugin passes the content type
        (asymmetric support, OpenSearch 3.5+); otherwise a model with prefixes fails every inference.
    :param chunk_size: Upload chunk size in bytes (at most 10 MB, ML Commons' limit).
    :returns: The built :class:`MlCommonsBundle`.
    :raises ExportedModelError: When the folder is not a usable export or the graph cannot run in ML Commons.
    """
    exported = Path(exported_dir)
    _check_output(Path(out_zip))
    meta = ModelMetadata.load(exported)
    if precision not in PRECISIONS:
        raise ExportedModelError(f"precision must be one of {PRECISIONS}, got {precision!r}.")
    if precision not in meta.files:
        raise ExportedModelError(
            f"'{exported}' has no {precision} ONNX file (it has: {sorted(meta.files)}). "
            "Use --precision fp32, or re-export without --no-int8."
        )
    if not 1 <= chunk_size <= CHUNK_SIZE:
        raise ExportedModelError(f"chunk_size must be between 1 and {CHUNK_SIZE} bytes (ML Commons' limit).")
    graph_path = exported / meta.files[precision]
    tokenizer_path = exported / TOKENIZER_FILE
    for path in (graph_path, tokenizer_path):
        if not path.is_file():
            raise ExportedModelError(
                f"'{path}' is missing: the export is incomplete. "
                f"Re-run `syntriever export SOURCE_DIR {exported} --force`."
            )
    tokenizer_data = read_model_json(tokenizer_path)  # a damaged file fails here, before the graph work
    config = _read_config(exported)
    model_type = str(config.get("model_type") or "bert")
    function_name = "TEXT_EMBEDDING" if meta.kind == "bi-encoder" else "TEXT_SIMILARITY"
    if function_name == "TEXT_EMBEDDING":
        wanted = ["input_ids", "attention_mask"] + (["token_type_ids"] if model_type in TOKEN_TYPE_MODEL_TYPES else [])
    else:
        wanted = ["input_ids", "attention_mask", "token_type_ids"]
    pooling = (meta.pooling or "mean") if meta.kind == "bi-encoder" else None
    if pooling is not None and pooling not in NATIVE_POOLING and pooling != "lasttoken":
        raise ExportedModelError(f"{exported}/syntriever.json: pooling {pooling!r} cannot be packaged for ML Commons.")

    graph_bytes, inputs, edits = prepare_graph(
        graph_path.read_bytes(), wanted_inputs=wanted, pool_last_token=pooling == "lasttoken"
    )
    tokenizer_json = prepare_tokenizer(json.dumps(tokenizer_data), meta.max_length, config)

    out = Path(out_zip)
    out.parent.mkdir(parents=True, exist_ok=True)
    provenance = ModelMetadata.from_dict({**asdict(meta), "source_model": Path(meta.source_model).name})
    _write_zip(
        out,
        {
            GRAPH_FILE: graph_bytes,
            TOKENIZER_FILE: tokenizer_json.encode("utf-8"),
            METADATA_FILE: provenance.to_json().encode("utf-8"),  # no local paths inside the cluster
        },
    )
    size = out.stat().st_size
    if size > MAX_MODEL_BYTES:
        out.unlink()
        raise ExportedModelError(f"The bundle is {size / 1e9:.1f} GB; ML Commons models are limited to 4 GB.")

    model_config: dict[str, Any] = {
        "model_type": model_type,
        "embedding_dimension": int(meta.embedding_dim or 0) if meta.kind == "bi-encoder" else 1,
        "framework_type": "sentence_transformers" if meta.kind == "bi-encoder" else "huggingface_transformers",
        "all_config": json.dumps(config, sort_keys=True),
    }
    warnings: list[str] = []
    if meta.kind == "bi-encoder":
        model_config["pooling_mode"] = NATIVE_POOLING.get(str(pooling), "cls")
        model_config["normalize_result"] = bool(meta.normalize)
        model_config["model_max_length"] = int(meta.max_length)
        if asymmetric:
            model_config["query_prefix"] = meta.query_prefix
            model_config["passage_prefix"] = meta.document_prefix
        if not model_config["embedding_dimension"]:
            raise ExportedModelError(f"{exported}/syntriever.json has no embedding_dim; re-export the model.")
    else:
        if meta.query_prefix or meta.document_prefix:
            warnings.append(
                "The reranker expects prefixes (query "
                f"{meta.query_prefix!r}, document {meta.document_prefix!r}) that the rerank processor does not add; "
                "scores inside OpenSearch will differ from SyntrieverRanker."
            )
    folder = exported.resolve().name
    register_body: dict[str, Any] = {
        "name": name or folder,
        "version": str(version),
        "description": description or f"syntriever {meta.kind} ({precision}) exported to {folder}",
        "function_name": function_name,
        "model_format": "ONNX",
        "model_content_hash_value": sha256_file(out),
        "model_content_size_in_bytes": size,
        "total_chunks": total_chunks(size, chunk_size),
        "model_config": model_config,
    }
    config_path = out.with_name(f"{out.stem}.ml-commons.json")
    config_path.write_text(json.dumps(register_body, indent=2) + "\n", encoding="utf-8")
    return MlCommonsBundle(
        zip_path=out,
        config_path=config_path,
        register_body=register_body,
        kind=meta.kind,
        precision=precision,
        chunk_size=chunk_size,
        model_inputs=inputs,
        graph_edits=edits,
        query_prefix=meta.query_prefix,
        document_prefix=meta.document_prefix,
        embedding_dim=meta.embedding_dim,
        similarity=meta.similarity,
        asymmetric=asymmetric and meta.kind == "bi-encoder",
        warnings=warnings,
    )


# ---------------------------------------------------------------------------------------------- tokenizer
def prepare_tokenizer(tokenizer_json: str, max_length: int, config: dict[str, Any] | None = None) -> str:
    """``tokenizer.json`` with truncation at ``max_length`` (and right padding) for DJL's tokenizer.

    DJL reads truncation and its maximum length from the file; without them it truncates at 512 tokens
    (or not at all in older versions). Same block opensearch-py-ml writes (``_fix_tokenizer``), but set to
    our exported ``max_length`` even when the file had another one, so OpenSearch and our runtime agree.
    """
    from tokenizers import Tokenizer

    data = json.loads(tokenizer_json)
    tokenizer = Tokenizer.from_str(tokenizer_json)
    tokenizer.enable_truncation(max_length=int(max_length), stride=0, strategy="longest_first", direction="right")
    if tokenizer.padding is None:
        pad_token, pad_id = _pad_token(tokenizer, config or {})
        tokenizer.enable_padding(direction="right", pad_id=pad_id, pad_token=pad_token)
    canonical = json.loads(tokenizer.to_str())
    data["truncation"] = canonical["truncation"]
    data["padding"] = canonical["padding"]
    return json.dumps(data, ensure_ascii=False)


def _pad_token(tokenizer: Any, config: dict[str, Any]) -> tuple[str, int]:
    for token in ("[PAD]", "<pad>", "<|pad|>"):
        token_id = tokenizer.token_to_id(token)
        if token_id is not None:
            return token, int(token_id)
    pad_id = int(config.get("pad_token_id") or 0)
    return tokenizer.id_to_token(pad_id) or "[PAD]", pad_id


def _read_config(exported: Path) -> dict[str, Any]:
    path = exported / "config.json"
    if not path.is_file():
        return {}
    data = read_model_json(path)
    return data if isinstance(data, dict) else {}


def _check_output(out: Path) -> None:
    """Fail before any work when the zip or its register body cannot be written where asked."""
    register = out.with_name(f"{out.stem}.ml-commons.json")
    for path, what in ((out, "OUT.zip"), (register, "the register body")):
        if path.is_dir():
            raise ExportedModelError(
                f"{path} is a folder; {what} is a file: pass a zip path such as {path / 'model.zip'}"
                if path == out
                else f"{path} is a folder, and the register body is written there; remove it or choose another OUT.zip"
            )
    for parent in out.parents:
        if parent.exists():
            if not parent.is_dir():
                raise ExportedModelError(f"{parent} is a file, so {out} cannot be created in it; choose another path.")
            break


def _write_zip(path: Path, files: dict[str, bytes]) -> None:
    """Write the zip through a hidden ``.partial`` file renamed into place; nothing is left behind on failure."""
    tmp = path.with_name(f".{path.name}.partial")
    try:
        with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED) as archive:
            for arcname, payload in files.items():
                info = zipfile.ZipInfo(arcname, date_time=_ZIP_DATE)
                info.compress_type = zipfile.ZIP_DEFLATED
                info.external_attr = 0o644 << 16
                archive.writestr(info, payload)
        tmp.replace(path)
    except OSError as exc:
        raise ExportedModelError(
            f"could not write {path}: {exc.strerror or exc}; choose a writable file path."
        ) from None
    finally:
        tmp.unlink(missing_ok=True)


# ---------------------------------------------------------------------------------------------- graph
def graph_inputs_outputs(graph_bytes: bytes) -> tuple[list[str], list[str]]:
    """Input and output names of an ONNX graph, read with ONNX Runtime (always installed)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    session = ort.InferenceSession(graph_bytes, options, providers=["CPUExecutionProvider"])
    return [i.name for i in session.get_inputs()], [o.name for o in session.get_outputs()]


def prepare_graph(
    graph_bytes: bytes, *, wanted_inputs: list[str], pool_last_token: bool = False
) -> tuple[bytes, list[str], list[str]]:
    """Make the graph's inputs exactly ``wanted_inputs`` (and optionally pool the last token in-graph).

    :param graph_bytes: Serialized ONNX model.
    :param wanted_inputs: Input names ML Commons will feed (a subset of input_ids/attention_mask/token_type_ids).
    :param pool_last_token: Replace the token-embedding output by the last real token's embedding, shaped
        ``[batch, 1, hidden]`` (ML Commons' ``cls`` pooling then returns it unchanged).
    :returns: ``(graph bytes, input names, edits made)``.
    :raises ExportedModelError: When the graph cannot be adapted or would not load in ML Commons.
    """
    inputs, outputs = graph_inputs_outputs(graph_bytes)
    missing_core = [n for n in ("input_ids", "attention_mask") if n not in inputs]
    if missing_core:
        raise ExportedModelError(
            f"The ONNX graph has inputs {inputs} but ML Commons feeds input_ids and attention_mask; "
            "re-export the model with `syntriever export`."
        )
    unknown = [n for n in inputs if n not in ("input_ids", "attention_mask", "token_type_ids")]
    if unknown:
        raise ExportedModelError(f"The ONNX graph has inputs {unknown} that ML Commons never feeds; re-export it.")
    add = [n for n in wanted_inputs if n not in inputs]
    drop = [n for n in inputs if n not in wanted_inputs]
    try:
        import onnx
    except ImportError as exc:
        if add or drop or pool_last_token:
            raise ExportedModelError(
                "This model's graph must be adapted for ML Commons (inputs or pooling), which needs the `onnx` "
                "package: pip install onnx"
            ) from exc
        return graph_bytes, inputs, []

    model = onnx.load_from_string(graph_bytes)
    if model.ir_version > MAX_IR_VERSION:
        raise ExportedModelError(
            f"The ONNX graph has IR version {model.ir_version}; ML Commons' ONNX Runtime 1.16 loads up to "
            f"{MAX_IR_VERSION}. Re-export with `syntriever export --opset 17`."
        )
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)
    if opset > MAX_OPSET:
        raise ExportedModelError(
            f"The ONNX graph uses opset {opset}; ML Commons' ONNX Runtime 1.16 supports up to {MAX_OPSET}. "
            "Re-export with `syntriever export --opset 17`."
        )
    edits: list[str] = []
    for input_name in drop:
        _replace_input_by_zeros(model, input_name)
        edits.append(f"input {input_name} removed (zeros, as our runtime feeds for one sentence)")
    for input_name in add:
        _add_ignored_input(model, input_name)
        edits.append(f"input {input_name} added (ignored by the graph, as in our runtime)")
    if pool_last_token:
        _pool_last_token(model, outputs[0])
        edits.append("last-token pooling baked into the graph (registered as pooling_mode cls)")
    if not edits:
        return graph_bytes, inputs, edits
    edited = model.SerializeToString()
    new_inputs, _ = graph_inputs_outputs(edited)  # the edited graph must load
    order = {n: i for i, n in enumerate(wanted_inputs)}
    if sorted(new_inputs, key=order.__getitem__) != wanted_inputs:
        raise ExportedModelError(f"Adapting the graph's inputs failed: got {new_inputs}, wanted {wanted_inputs}.")
    return edited, new_inputs, edits


def _int64_zero(model: Any, name: str) -> str:
    from onnx import TensorProto, helper

    if not any(init.name == name for init in model.graph.initializer):
        model.graph.initializer.append(helper.make_tensor(name, TensorProto.INT64, [], [0]))
    return name


def _replace_input_by_zeros(model: Any, input_name: str) -> None:
    """Remove graph input ``input_name``; its consumers get ``input_ids * 0`` (same shape and dtype)."""
    from onnx import helper

    graph = model.graph
    kept = [i for i in graph.input if i.name != input_name]
    del graph.input[:]
    graph.input.extend(kept)
    zero = _int64_zero(model, "syntriever_zero_i64")
    graph.node.insert(
        0, helper.make_node("Mul", ["input_ids", zero], [input_name], name=f"syntriever_{input_name}_zeros")
    )


def _add_ignored_input(model: Any, input_name: str) -> None:
    """Add graph input ``input_name`` shaped like ``input_ids``, consumed as ``input_ids + 0 * input``.

    Consumed so that no runtime prunes it: DJL needs the session to declare every fed tensor.
    """
    from onnx import helper

    graph = model.graph
    if any(input_name in node.output for node in graph.node):  # an internal value of that name: rename it
        _rename_value(graph, input_name, f"syntriever_{input_name}_internal")
    like = next(i for i in graph.input if i.name == "input_ids")
    new_input = type(like)()
    new_input.CopyFrom(like)
    new_input.name = input_name
    graph.input.append(new_input)
    zero = _int64_zero(model, "syntriever_zero_i64")
    renamed = "syntriever_input_ids"
    for node in graph.node:
        for i, name in enumerate(node.input):
            if name == "input_ids":
                node.input[i] = renamed
    scaled = f"syntriever_{input_name}_times_zero"
    graph.node.insert(0, helper.make_node("Add", ["input_ids", scaled], [renamed], name="syntriever_input_ids_plus"))
    graph.node.insert(0, helper.make_node("Mul", [input_name, zero], [scaled], name=f"syntriever_{input_name}_mul"))


def _rename_value(graph: Any, old: str, new: str) -> None:
    for node in graph.node:
        for names in (node.input, node.output):
            for i, name in enumerate(names):
                if name == old:
                    names[i] = new
    for output in graph.output:
        if output.name == old:
            output.name = new


def _pool_last_token(model: Any, hidden_name: str) -> None:
    """Output ``[batch, 1, hidden]``: the embedding at position ``sum(attention_mask) - 1`` of each row."""
    from onnx import TensorProto, helper

    graph = model.graph
    one = "syntriever_one_i64"
    if not any(init.name == one for init in graph.initializer):
        graph.initializer.append(helper.make_tensor(one, TensorProto.INT64, [], [1]))
    for axis_name, values in (("syntriever_axis1", [1]), ("syntriever_axis_last", [-1])):
        graph.initializer.append(helper.make_tensor(axis_name, TensorProto.INT64, [len(values)], values))
    zero = _int64_zero(model, "syntriever_zero_i64")
    axis_scalar = "syntriever_axis1_scalar"
    graph.initializer.append(helper.make_tensor(axis_scalar, TensorProto.INT64, [], [1]))
    p = "syntriever_lt_"
    nodes = [
        helper.make_node("Cast", ["attention_mask"], [p + "mask"], to=TensorProto.INT64),
        helper.make_node("ReduceSum", [p + "mask", "syntriever_axis1"], [p + "count"], keepdims=1),
        helper.make_node("Sub", [p + "count", one], [p + "last"]),  # [B, 1]
        helper.make_node("Mul", [p + "mask", zero], [p + "zeros"]),
        helper.make_node("Add", [p + "zeros", one], [p + "ones"]),
        helper.make_node("CumSum", [p + "ones", axis_scalar], [p + "positions1"]),
        helper.make_node("Sub", [p + "positions1", one], [p + "positions"]),  # [B, S]: 0..S-1
        helper.make_node("Equal", [p + "positions", p + "last"], [p + "is_last"]),
        helper.make_node("Cast", [p + "is_last"], [p + "weight"], to=TensorProto.FLOAT),
        helper.make_node("Unsqueeze", [p + "weight", "syntriever_axis_last"], [p + "weight3"]),  # [B, S, 1]
        helper.make_node("Mul", [hidden_name, p + "weight3"], [p + "masked"]),
        helper.make_node("ReduceSum", [p + "masked", "syntriever_axis1"], ["sentence_embedding"], keepdims=1),
    ]
    graph.node.extend(nodes)
    hidden_out = next(o for o in graph.output if o.name == hidden_name)
    dims = hidden_out.type.tensor_type.shape.dim
    hidden_size = dims[2].dim_value if len(dims) == 3 and dims[2].dim_value else "hidden_size"
    pooled = helper.make_tensor_value_info("sentence_embedding", TensorProto.FLOAT, ["batch_size", 1, hidden_size])
    kept = [o for o in graph.output if o.name != hidden_name]
    del graph.output[:]
    graph.output.extend([pooled, *kept])


def read_bundle_zip(path: str | Path) -> dict[str, bytes]:
    """The files of a bundle zip (for checks and tests)."""
    with zipfile.ZipFile(io.BytesIO(Path(path).read_bytes())) as archive:
        return {name: archive.read(name) for name in archive.namelist()}
