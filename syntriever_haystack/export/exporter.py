"""``syntriever export``: a torch model folder in, a self-describing, verified ONNX folder out.

Output layout (what sentence-transformers ``backend="onnx"``, text-embeddings-inference and infinity read)::

    OUTPUT_DIR/
      syntriever.json            ours: kind, dim, pooling, normalisation, max length, prefixes, parity, ...
      config.json                Hugging Face config
      tokenizer.json, tokenizer_config.json, special_tokens_map.json, vocab files
      modules.json, sentence_bert_config.json, 1_Pooling/config.json, [2_Normalize/]   (bi-encoder)
      onnx/model.onnx            fp32, transformer ops fused for CPU
      onnx/model_int8.onnx       dynamic int8 quantisation (weight MatMuls and the embedding table)

The folder is built in a hidden sibling directory and renamed into place only after the parity check
passed: a failed or interrupted export leaves nothing half-written behind.
"""

from __future__ import annotations

import json
import platform
import shutil
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from syntriever_haystack.errors import ExportError
from syntriever_haystack.export import onnx_graph, parity, variants
from syntriever_haystack.export.source import SourceModel, inspect_source
from syntriever_haystack.runtime.metadata import ModelMetadata

FP32_FILE = "onnx/model.onnx"
INT8_FILE = "onnx/model_int8.onnx"


@dataclass
class ExportResult:
    """What :func:`export_model` wrote and measured."""

    output_dir: Path
    metadata: ModelMetadata
    seconds: float
    files: dict[str, int] = field(default_factory=dict)  # relative path -> bytes


def _versions() -> dict[str, str]:
    import onnxruntime
    import torch
    import transformers

    from syntriever_haystack._version import __version__

    return {
        "syntriever_haystack": __version__,
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "onnxruntime": onnxruntime.__version__,
        "python": platform.python_version(),
    }


def _write_sentence_transformers_files(source: SourceModel, out: Path, max_length: int) -> None:
    """Flat sentence-transformers layout: Transformer at the root, then Pooling (and Normalize)."""
    modules: list[dict[str, Any]] = [
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"}
    ]
    pooling = source.pooling_config or {
        "word_embedding_dimension": int(source.config.get("hidden_size", 0)),
        "pooling_mode_cls_token": source.pooling == "cls",
        "pooling_mode_mean_tokens": source.pooling == "mean",
        "pooling_mode_max_tokens": source.pooling == "max",
        "pooling_mode_mean_sqrt_len_tokens": False,
        "pooling_mode_weightedmean_tokens": False,
        "pooling_mode_lasttoken": source.pooling == "lasttoken",
        "include_prompt": True,
    }
    (out / "1_Pooling").mkdir(parents=True, exist_ok=True)
    (out / "1_Pooling" / "config.json").write_text(json.dumps(pooling, indent=2) + "\n", encoding="utf-8")
    modules.append({"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"})
    if source.normalize:
        (out / "2_Normalize").mkdir(exist_ok=True)
        modules.append({"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"})
    (out / "modules.json").write_text(json.dumps(modules, indent=2) + "\n", encoding="utf-8")
    (out / "sentence_bert_config.json").write_text(
        json.dumps({"max_seq_length": max_length, "do_lower_case": False}, indent=2) + "\n", encoding="utf-8"
    )
    st_config = source.path / "config_sentence_transformers.json"
    if st_config.exists():
        shutil.copy2(st_config, out / "config_sentence_transformers.json")


def _read_probe_file(path: Path, kind: str) -> list[Any]:
    if not path.is_file():
        raise ExportError(f"Probe file '{path}' does not exist; pass a text file with one probe per line.")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise ExportError(
            f"Probe file '{path}' is not UTF-8 text (byte {exc.start}: {exc.reason}); save it as UTF-8, "
            f"e.g. iconv -f latin1 -t utf-8 {path} > converted"
        ) from exc
    except OSError as exc:
        raise ExportError(f"Probe file '{path}' cannot be read ({exc.strerror or exc}); check the file.") from exc
    probes: list[Any] = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        if kind == "cross-encoder":
            if "\t" not in line:
                raise ExportError(f"{path}:{number}: cross-encoder probes are 'query<TAB>passage' lines.")
            query, passage = line.split("\t", 1)
            probes.append((query, passage))
        else:
            probes.append(line)
    if not probes:
        raise ExportError(f"Probe file '{path}' has no probes; write one probe per line (or drop --probe-file).")
    return probes


def export_model(
    source_dir: str | Path,
    output_dir: str | Path,
    *,
    kind: str | None = None,
    max_length: int | None = None,
    int8: bool = True,
    query_prefix: str | None = None,
    document_prefix: str | None = None,
    probe_file: str | Path | None = None,
    opset: int = 17,
    force: bool = False,
    fp32_min_cosine: float = 0.9999,
    int8_min_cosine: float = 0.99,
    min_spearman: float = 0.99,
    min_ranking_ndcg: float = 0.98,
    require_int8: bool = False,
    measure_speed: bool = True,
) -> ExportResult:
    """Export a sentence-transformers bi-encoder or a 1-logit cross-encoder to a verified ONNX folder.

    :param source_dir: Local model folder (sentence-transformers bi-encoder or HF cross-encoder).
    :param output_dir: Folder to create. Must not exist unless ``force``.
    :param kind: ``"bi-encoder"`` or ``"cross-encoder"``; detected from the folder when ``None``.
    :param max_length: Maximum tokens; defaults to the source's ``max_seq_length`` / tokenizer limit.
    :param int8: Also write the int8 variant (and verify it).
    :param query_prefix: Query prefix to record (default: the source's ``prompts["query"]``).
    :param document_prefix: Document prefix to record (default: the source's document/passage prompt).
    :param probe_file: Probe texts replacing the built-in (general English) set, one per line
        (``query<TAB>passage`` for cross-encoders). Use texts of your domain: a cross-encoder's ranking
        parity is only meaningful on pairs whose scores it actually separates.
    :param opset: ONNX opset.
    :param force: Replace an existing ``output_dir`` (only after the new export passed its checks).
    :param fp32_min_cosine: Fail when any probe's fp32 embedding cosine to torch is lower.
    :param int8_min_cosine: Fail when the mean int8 embedding cosine to torch over the probes is lower
        (see :func:`syntriever_haystack.export.parity.check_bi_encoder` for why the mean).
    :param min_spearman: Fail when the fp32 cross-encoder ranks probe pairs with a lower Spearman to torch.
    :param min_ranking_ndcg: Fail the int8 cross-encoder when its ranking of each probe query's candidates scores a
        lower mean nDCG@10 against torch's scores (see :func:`syntriever_haystack.export.parity.ranking_agreement`).
    :param require_int8: Fail the export when int8 fails its gate. By default a failed int8 variant is dropped
        (its file is not written, ``export.int8.dropped`` says why) and the fp32 export is kept.
    :param measure_speed: Time each variant that passed on this machine and record the fastest as the default of
        ``quantization="auto"`` (``serving`` in ``syntriever.json``); about ``32 / docs_per_s`` seconds each.
    :raises ExportError: On any failure; nothing is left at ``output_dir``.
    """
    started = time.perf_counter()
    output = Path(output_dir)
    if output.exists() and not force:
        raise ExportError(f"Output directory '{output}' already exists. Pass --force to replace it, or pick a new one.")
    source = inspect_source(source_dir, kind=kind, max_length=max_length)
    custom_probes = _read_probe_file(Path(probe_file), source.kind) if probe_file else None

    output.parent.mkdir(parents=True, exist_ok=True)
    staging = output.parent / f".{output.name}.partial-{uuid.uuid4().hex[:8]}"
    staging.mkdir()
    try:
        metadata = _build(
            source, staging, int8=int8, opset=opset, query_prefix=query_prefix, document_prefix=document_prefix
        )
        metadata.save(staging)  # the parity check loads the staged folder exactly as a server would
        precisions = ["fp32", "int8"] if int8 else ["fp32"]
        required = precisions if require_int8 else ["fp32"]
        # long probes: cut at the served length, and compared with the model at its training length when it differs
        trained_at = source.document_train_max_length
        trained_at = trained_at if trained_at != source.max_length else None
        if source.kind == "bi-encoder":
            short = custom_probes or list(parity.PROBE_TEXTS)
            long = parity.long_probes(short, source.max_length)
            texts = short + long

            def embed(batch: list[str], length: int) -> Any:
                return parity.reference_embeddings(
                    source.path, batch, max_length=length, st_modules=source.has_st_modules
                )

            metadata.parity = parity.check_bi_encoder(
                staging,
                embed(texts, source.max_length),
                texts,
                precisions=precisions,
                thresholds={"fp32": fp32_min_cosine, "int8": int8_min_cosine},
                long_count=len(long),
                trained=(trained_at, embed(long, trained_at)) if trained_at else None,
                required=required,
            )
            timed: list[Any] = long or texts
        else:
            short_pairs = custom_probes or parity.probe_pairs()
            long_pairs = parity.long_probe_pairs(short_pairs, source.max_length)
            pairs = short_pairs + long_pairs

            def logits(batch: list[tuple[str, str]], length: int) -> Any:
                return parity.reference_logits(source.transformer_dir, batch, max_length=length)

            metadata.parity = parity.check_cross_encoder(
                staging,
                logits(pairs, source.max_length),
                pairs,
                precisions=precisions,
                threshold=min_spearman,
                ranking_threshold=min_ranking_ndcg,
                long_count=len(long_pairs),
                trained=(trained_at, logits(long_pairs, trained_at)) if trained_at else None,
                required=required,
            )
            timed = long_pairs or pairs
        dropped = metadata.parity.get("failed", {}).get("int8")
        if dropped and "int8" in metadata.files:
            (staging / metadata.files.pop("int8")).unlink()
            metadata.export["int8"] = {**(metadata.export.get("int8") or {}), "dropped": dropped}
        if measure_speed:
            metadata.serving = variants.measure_variants(staging, list(metadata.files), timed)
        metadata.export["seconds"] = round(time.perf_counter() - started, 2)
        metadata.save(staging)
        files = {str(p.relative_to(staging)): p.stat().st_size for p in sorted(staging.rglob("*")) if p.is_file()}
        if output.exists():
            retired = output.parent / f".{output.name}.old-{uuid.uuid4().hex[:8]}"
            output.rename(retired)
            staging.rename(output)
            shutil.rmtree(retired, ignore_errors=True)
        else:
            staging.rename(output)
    except ExportError:
        raise
    except Exception as exc:
        raise ExportError(f"Export of '{source.path}' failed: {type(exc).__name__}: {exc}") from exc
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
    return ExportResult(output_dir=output, metadata=metadata, seconds=time.perf_counter() - started, files=files)


def _build(
    source: SourceModel,
    out: Path,
    *,
    int8: bool,
    opset: int,
    query_prefix: str | None,
    document_prefix: str | None,
) -> ModelMetadata:
    """Write tokenizer, configs and ONNX files into ``out``; return metadata (parity still empty)."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(source.transformer_dir), use_fast=True)
    if not getattr(tokenizer, "is_fast", False):
        raise ExportError(
            f"'{source.path}' has no fast (Rust) tokenizer, which the torch-free runtime needs. "
            "Install `tokenizers` and re-save the tokenizer with AutoTokenizer(..., use_fast=True)."
        )
    tokenizer.model_max_length = source.max_length
    tokenizer.save_pretrained(str(out))
    model = onnx_graph.load_torch_model(source)
    model.config.save_pretrained(str(out))
    input_names = [n for n in ("input_ids", "attention_mask", "token_type_ids") if n in tokenizer.model_input_names]
    if "input_ids" not in input_names:
        input_names.insert(0, "input_ids")

    raw = out / "onnx" / "model_unoptimized.onnx"
    onnx_graph.export_graph(model, source, input_names, raw, opset=opset)
    fused = onnx_graph.fuse_for_cpu(raw, out / FP32_FILE, source)
    files = {"fp32": FP32_FILE}
    if int8:
        onnx_graph.quantize_int8(raw, out / INT8_FILE)
        files["int8"] = INT8_FILE
    raw.unlink()

    embedding_dim = None
    if source.kind == "bi-encoder":
        _write_sentence_transformers_files(source, out, source.max_length)
        embedding_dim = int(source.config.get("hidden_size", 0))
    return ModelMetadata(
        kind=source.kind,  # type: ignore[arg-type]
        max_length=source.max_length,
        files=files,
        embedding_dim=embedding_dim,
        pooling=source.pooling,
        normalize=source.normalize,
        similarity=source.similarity if source.kind == "bi-encoder" else "logit",
        query_prefix=source.query_prefix if query_prefix is None else query_prefix,
        document_prefix=source.document_prefix if document_prefix is None else document_prefix,
        source_model=str(source.path.resolve()),
        train_max_length=dict(source.train_max_length),
        train_max_length_from=source.train_max_length_from,
        export={
            "opset": opset,
            "inputs": input_names,
            "fused_operators": fused,
            "int8": {"method": "dynamic", "weights": "QInt8", "per_channel": True, "ops": list(onnx_graph.INT8_OPS)}
            if int8
            else None,
            "versions": _versions(),
            "exported_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        },
    )


def _figures(block: dict[str, Any], precision: str) -> str:
    figures = block.get(precision, {})
    if "spearman" in figures:
        return f"Spearman {figures['spearman']:.4f}"
    if "mean_cosine" in figures:
        return f"cosine mean {figures['mean_cosine']:.4f} (min {figures['min_cosine']:.4f})"
    return "not measured"


def length_summary(meta: ModelMetadata, *, indent: str = "") -> list[str]:
    """What the lengths mean for a user: trained at N tokens, served at M, and the agreement measured."""
    lengths = ", ".join(f"{k} {v}" for k, v in meta.train_max_length.items())
    saved_only = meta.train_max_length_from == "sentence_bert_config.json"  # no training record in the source
    if not lengths:
        trained = "training length unknown"
    elif saved_only:
        saved = meta.train_max_length.get("text")
        trained = f"the source was saved with max_seq_length {saved} (sentence_bert_config.json, no training record)"
    else:
        trained = f"trained at {lengths} tokens ({meta.train_max_length_from})"
    lines = [f"{indent}max length: served at {meta.max_length} tokens; {trained}"]
    long = meta.parity.get("long_probes")
    if long:
        shown = "; ".join(f"{p} {_figures(long, p)}" for p in meta.files)
        lines.append(
            f"{indent}  {long['probes']} long probes cut at {long['max_length']} tokens, export vs torch: {shown}"
        )
    train = meta.parity.get("train_length")
    if train:
        shown = "; ".join(f"{p} {_figures(train, p)}" for p in meta.files)
        what = "its saved length" if saved_only else "its training length"
        lines.append(
            f"{indent}  torch at {what} {train['train_max_length']} vs export at {train['served_max_length']} "
            f"tokens, on texts longer than both (not gated): {shown}"
        )
    return lines


def format_report(result: ExportResult) -> str:
    """A short human summary of an export (the CLI prints it)."""
    meta = result.metadata
    lines = [f"Exported {meta.kind} → {result.output_dir}  ({result.seconds:.1f} s)"]
    if meta.kind == "bi-encoder":
        lines.append(
            f"  dim {meta.embedding_dim}, pooling {meta.pooling}, normalize {meta.normalize}, "
            f"similarity {meta.similarity}, max_length {meta.max_length}"
        )
    else:
        lines.append(f"  max_length {meta.max_length}")
    lines.append("  parity against torch:")
    dropped = (meta.export.get("int8") or {}).get("dropped")
    if dropped:
        lines.append(f"    int8 not written: {dropped} (fp32 only; --require-int8 makes this an error)")
    for precision in meta.files:
        figures = meta.parity.get(precision, {})
        shown = ", ".join(f"{k} {v:.6f}" for k, v in figures.items() if isinstance(v, float))
        gate = meta.parity.get("gated_on", {}).get(precision, "spearman")
        lines.append(f"    {precision:5s} {shown}   (gate: {gate} >= {meta.parity['thresholds'][precision]})")
    speeds = meta.serving.get("docs_per_s") or {}
    if speeds:
        shown = ", ".join(f"{p} {v}/s" for p, v in speeds.items())
        lines.append(f"  speed here ({meta.serving['inputs']} inputs at {meta.max_length} tokens): {shown}")
        lines.append(f"  quantization='auto' runs: {meta.serving['default']}")
    lines += length_summary(meta, indent="  ")
    for rel, size in result.files.items():
        if rel.endswith(".onnx"):
            lines.append(f"  {rel}: {size / 1e6:.1f} MB")
    return "\n".join(lines)
