"""The ``syntriever`` command line.

Sub-commands import their heavy dependencies (torch, ...) only when they run, so ``syntriever --help``
and the serving-side commands stay fast and work in a torch-free install.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from syntriever_haystack.errors import SyntrieverError


def _cmd_export(args: argparse.Namespace) -> int:
    try:
        from syntriever_haystack.export import export_model, format_report
    except ImportError as exc:
        print(
            f"error: `syntriever export` needs the export extra ({exc.name} is missing): "
            "pip install 'syntriever-haystack[export]'",
            file=sys.stderr,
        )
        return 1
    from syntriever_haystack.models import resolve_model

    result = export_model(
        resolve_model(args.source),  # e.g. all-MiniLM-L6-v2 → the offline package's folder
        args.output,
        kind=args.kind,
        max_length=args.max_length,
        int8=not args.no_int8,
        query_prefix=args.query_prefix,
        document_prefix=args.document_prefix,
        probe_file=args.probe_file,
        opset=args.opset,
        force=args.force,
        require_int8=args.require_int8,
        measure_speed=not args.no_speed_check,
    )
    print(format_report(result))
    return 0


def _cmd_info(args: argparse.Namespace) -> int:
    from syntriever_haystack.export.exporter import length_summary
    from syntriever_haystack.runtime.metadata import METADATA_FILE, TOKENIZER_FILE, ModelMetadata, read_model_json

    meta = ModelMetadata.load(args.model)  # validates, with a clear error
    tokenizer = Path(args.model) / TOKENIZER_FILE
    if tokenizer.is_file():  # `info` vouches for the export: a damaged tokenizer is named here, not at serving time
        read_model_json(tokenizer)
    print((Path(args.model) / METADATA_FILE).read_text(encoding="utf-8"), end="")
    # the lengths in words on stderr, so stdout stays the JSON file (`syntriever info DIR | jq ...`)
    print("\n".join(length_summary(meta)), file=sys.stderr)
    return 0


def _cmd_embed(args: argparse.Namespace) -> int:
    from syntriever_haystack.runtime.onnx_model import load_onnx_model

    model = load_onnx_model(args.model, precision=args.quantization, expected_kind="bi-encoder")
    prefix = model.metadata.query_prefix if args.query else model.metadata.document_prefix
    texts = list(args.texts)
    if args.query:  # a query is cut at MAX_QUERY_CHARS with a warning; a document is read up to the model's window
        texts = [_bounded_query(t, f"query {i + 1}" if len(texts) > 1 else "the query") for i, t in enumerate(texts)]
    vectors = model.embed([prefix + t for t in texts], normalize=model.metadata.normalize)
    for text, vector in zip(args.texts, vectors, strict=True):
        print(json.dumps({"text": text, "embedding": [round(float(x), 6) for x in vector]}))
    return 0


def _bounded_query(query: str, name: str) -> str:
    """``query`` cut to ``MAX_QUERY_CHARS`` characters, with a one-line warning on stderr when it was cut."""
    from syntriever_haystack.runtime.inputs import bounded_query

    cut, warning = bounded_query(query, name=name)
    if warning:
        print(f"warning: {warning}", file=sys.stderr)
    return cut


def _cmd_rerank(args: argparse.Namespace) -> int:
    from haystack import Document

    from haystack_integrations.components.rankers.syntriever import SyntrieverRanker

    ranker = SyntrieverRanker(model=args.model, quantization=args.quantization, top_k=len(args.documents))
    ranker.warm_up()
    query = _bounded_query(args.query, "the query")
    for doc in ranker.run(query=query, documents=[Document(content=t) for t in args.documents])["documents"]:
        print(f"{doc.score:.4f}\t{doc.content}")
    return 0


def _cmd_evaluate(args: argparse.Namespace) -> int:
    from syntriever_haystack.data import load_beir
    from syntriever_haystack.data.download import resolve_dataset
    from syntriever_haystack.evaluate import EmbeddingCache, default_cache_dir, evaluate_systems, to_markdown
    from syntriever_haystack.evaluate.report import write_outputs
    from syntriever_haystack.flow.evaluation import saved_pipeline_runner

    folder = resolve_dataset(args.dataset, cache_dir=Path(args.cache_dir) / "datasets" if args.cache_dir else None)
    dataset = load_beir(folder, args.split)
    if args.max_queries is not None:
        dataset = dataset.sample_queries(args.max_queries, seed=args.seed)
    print(dataset.summary(), file=sys.stderr)
    for warning in dataset.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    cache_dir = None if args.no_cache else Path(args.cache_dir or default_cache_dir()) / "embeddings"
    report = evaluate_systems(
        dataset,
        args.system,
        metrics=args.metric,
        baseline=args.baseline,
        test=args.test,
        alpha=args.alpha,
        depth=args.depth,
        include_title=not args.no_title,
        cache=EmbeddingCache(cache_dir),
        progress=not args.quiet,
        seed=args.seed,
        pipeline_runner=saved_pipeline_runner,  # pipeline:PATH systems: load_pipeline + run_query
    )
    print(to_markdown(report))
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(report.summary(), indent=2) + "\n", encoding="utf-8")
        print(f"summary written to {args.json}", file=sys.stderr)
    if args.output_dir:
        written = write_outputs(report, args.output_dir)
        print(f"results written to {args.output_dir} ({len(written)} files)", file=sys.stderr)
    return 0


def _open_unit_float(text: str) -> float:
    """argparse type: a number strictly between 0 and 1 (a significance level)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number between 0 and 1 (exclusive), got {text!r}") from None
    if not 0.0 < value < 1.0:  # also rejects nan
        raise argparse.ArgumentTypeError(f"must be a number between 0 and 1 (exclusive), got {text!r}")
    return value


def _non_negative_int(text: str) -> int:
    """argparse type: a whole number >= 0 (a random seed)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a whole number >= 0, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be a whole number >= 0, got {text!r}")
    return value


def _missing_extra_command(sub: argparse._SubParsersAction, name: str, extra: str, missing: str) -> None:
    def fail(args: argparse.Namespace) -> int:
        print(
            f"error: `syntriever {name}` needs the {extra} extra ({missing} is not installed): "
            f"pip install 'syntriever-haystack[{extra}]'",
            file=sys.stderr,
        )
        return 1

    parser = sub.add_parser(name, help=f"(needs the {extra} extra: {missing} is not installed)", add_help=False)
    parser.add_argument("rest", nargs=argparse.REMAINDER)
    parser.set_defaults(func=fail)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="syntriever",
        description="Synthetic-data retrievers and rerankers: generate → train → export → serve → evaluate.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    export = sub.add_parser(
        "export",
        help="export a sentence-transformers bi-encoder or a cross-encoder to a verified ONNX folder",
        description="Export a local model folder to ONNX (fp32 fused for CPU + int8), verify parity against "
        "torch on a probe set, and write a self-describing folder. Exits non-zero, writing nothing, on failure.",
    )
    export.add_argument("source", metavar="SOURCE_DIR", help="local model folder")
    export.add_argument("output", metavar="OUTPUT_DIR", help="folder to create")
    export.add_argument("--kind", choices=["bi-encoder", "cross-encoder"], help="force the model kind")
    export.add_argument("--max-length", type=int, help="maximum tokens (default: the source's)")
    export.add_argument("--no-int8", action="store_true", help="skip the int8 variant")
    export.add_argument(
        "--require-int8",
        action="store_true",
        help="fail when int8 fails its parity gate (default: drop int8, keep the fp32 export)",
    )
    export.add_argument(
        "--no-speed-check",
        action="store_true",
        help="skip timing the variants (quantization='auto' then runs fp32)",
    )
    export.add_argument("--query-prefix", help="query prefix to record (default: the source's prompts)")
    export.add_argument("--document-prefix", help="document prefix to record")
    export.add_argument(
        "--probe-file",
        help="probe texts replacing the built-in set, one per line ('query<TAB>passage' for cross-encoders)",
    )
    export.add_argument("--opset", type=int, default=17, help="ONNX opset (default 17)")
    export.add_argument("--force", action="store_true", help="replace OUTPUT_DIR if it exists")
    export.set_defaults(func=_cmd_export)

    info = sub.add_parser("info", help="print the metadata of an exported model")
    info.add_argument("model", metavar="EXPORTED_DIR")
    info.set_defaults(func=_cmd_info)

    embed = sub.add_parser("embed", help="embed texts with an exported bi-encoder (JSON lines out)")
    embed.add_argument("model", metavar="EXPORTED_DIR")
    embed.add_argument("texts", nargs="+", metavar="TEXT")
    embed.add_argument("--quantization", "--precision", choices=["fp32", "int8"], default="fp32", help="ONNX weights")
    embed.add_argument("--query", action="store_true", help="apply the query prefix instead of the document one")
    embed.set_defaults(func=_cmd_embed)

    rerank = sub.add_parser("rerank", help="rerank texts for a query with an exported cross-encoder")
    rerank.add_argument("model", metavar="EXPORTED_DIR")
    rerank.add_argument("query", metavar="QUERY")
    rerank.add_argument("documents", nargs="+", metavar="DOCUMENT")
    rerank.add_argument("--quantization", "--precision", choices=["fp32", "int8"], default="fp32", help="ONNX weights")
    rerank.set_defaults(func=_cmd_rerank)

    evaluate = sub.add_parser(
        "evaluate",
        help="evaluate retrieval systems (BM25, dense, hybrid, +rerank) on a BEIR split",
        description="Run one or more systems on the same split and score every judged query with ir_measures "
        "(nDCG@10, R@100, RR@10, Judged@10 by default), with paired significance against a baseline. "
        "SPEC: bm25 | dense:EXPORTED_DIR | st:MODEL | hybrid:EXPORTED_DIR | pipeline:QUERY_PIPELINE_YAML "
        "| FIRST_STAGE+rerank:EXPORTED_RANKER_DIR, parameters after '?', e.g. dense:models/minilm?precision=int8, "
        "bm25+rerank:models/ce?top_k=50 or pipeline:runs/quickstart/pipelines/query.yaml?top_k=100 (a saved Haystack "
        "query pipeline, loaded with load_pipeline and run per query; top_k: documents it returns).",
    )
    evaluate.add_argument(
        "--dataset", required=True, metavar="DIR|NAME", help="BEIR folder, or a BEIR name to download"
    )
    evaluate.add_argument("--split", default="test", help="qrels split (default: test)")
    evaluate.add_argument("--system", action="append", required=True, metavar="SPEC", help="system to run (repeat)")
    evaluate.add_argument("--metric", action="append", metavar="NAME", help="metric (repeat; ir_measures names)")
    evaluate.add_argument(
        "--baseline", metavar="SPEC", help="system to test the others against (default: the first; 'none')"
    )
    evaluate.add_argument("--test", choices=["t-test", "permutation", "bootstrap"], default="t-test")
    evaluate.add_argument("--alpha", type=_open_unit_float, default=0.05, help="significance level (Holm-adjusted)")
    evaluate.add_argument("--depth", type=int, help="documents retrieved per query (default: max(100, cut-offs))")
    evaluate.add_argument("--max-queries", type=int, help="evaluate a random sample of this many queries")
    evaluate.add_argument("--seed", type=_non_negative_int, default=0, help="seed for sampling and resampling tests")
    evaluate.add_argument("--no-title", action="store_true", help="index document text without its title")
    evaluate.add_argument("--json", metavar="FILE", help='write {"<spec>": {"nDCG@10": x, ...}} here')
    evaluate.add_argument("--output-dir", metavar="DIR", help="write Markdown, full JSON, TREC runs and a PNG here")
    evaluate.add_argument(
        "--cache-dir", metavar="DIR", help="cache root (default: $SYNTRIEVER_CACHE or ~/.cache/syntriever)"
    )
    evaluate.add_argument("--no-cache", action="store_true", help="do not read or write cached corpus embeddings")
    evaluate.add_argument("--quiet", action="store_true", help="no progress bars")
    evaluate.set_defaults(func=_cmd_evaluate)

    try:
        from syntriever_haystack.data.cli import register as register_data
    except ImportError:  # pragma: no cover - the data CLI ships with the package
        pass
    else:
        register_data(sub)
    # Commands whose dependencies are optional extras: a missing extra leaves a command that says how to install it,
    # so `syntriever` itself (index, search, rerank, info, ...) runs in a torch-free serving install.
    import importlib

    for command, module, extra in (
        ("generate", "syntriever_haystack.generate.cli", "llm"),
        ("train", "syntriever_haystack.train.cli", "train"),
        ("index/search", "syntriever_haystack.opensearch.cli", "opensearch"),
        ("mlcommons", "syntriever_haystack.opensearch.ml_cli", "opensearch"),
        ("run/quickstart", "syntriever_haystack.flow.cli", "all"),
        ("serve", "syntriever_haystack.serve.cli", "serve"),
    ):
        try:
            importlib.import_module(module).register(sub)
        except ModuleNotFoundError as exc:
            if exc.name is None or module.startswith(exc.name):
                continue  # the module itself is not part of this install
            for name in command.split("/"):
                _missing_extra_command(sub, name, extra, exc.name)
    return parser


TELEMETRY_VARIABLE = "HAYSTACK_TELEMETRY_ENABLED"
_REPORT = "https://github.com/syntriever-haystack/syntriever-haystack/issues"


def disable_telemetry_by_default() -> None:
    """Turn Haystack's usage telemetry off for this process unless the user chose (``HAYSTACK_TELEMETRY_ENABLED``
    set, to anything): the ``syntriever`` commands send nothing anywhere unless asked to. Library imports of
    ``syntriever_haystack`` never call this; there the user's Haystack settings apply as they are."""
    if TELEMETRY_VARIABLE in os.environ:
        return
    os.environ[TELEMETRY_VARIABLE] = "False"  # read by haystack.telemetry when it is first imported
    module = sys.modules.get("haystack.telemetry._telemetry")
    if module is not None:  # haystack already imported in this process (main() called from Python)
        module.telemetry = None  # type: ignore[attr-defined]


def _add_debug_option(parser: argparse.ArgumentParser, *, top: bool = False) -> None:
    """``--debug`` on the top-level parser and on every sub-command, so it works before or after the command."""
    if top:
        parser.add_argument(
            "--debug", action="store_true", help="show the full traceback of an error (also: SYNTRIEVER_DEBUG=1)"
        )
    elif "--debug" not in parser._option_string_actions:
        parser.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help=argparse.SUPPRESS)
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for child in dict.fromkeys(action.choices.values()):
                _add_debug_option(child)


def _fail(exc: BaseException, *, debug: bool) -> int:
    """One line (problem; fix) for an expected failure, exit 1; a traceback and where to report it for a bug."""
    import traceback

    from syntriever_haystack.errors import describe_failure

    message = describe_failure(exc)
    if message is None:  # unexpected: a bug, keep everything needed to fix it
        traceback.print_exception(exc, file=sys.stderr)
        print(
            f"error: unexpected {type(exc).__name__} (a bug in syntriever-haystack or a library it uses); "
            f"please report it with the traceback above at {_REPORT}",
            file=sys.stderr,
        )
        return 1
    if debug:
        traceback.print_exception(exc, file=sys.stderr)
    hint = "" if debug or "\n" in message or "--debug" in message else " (--debug shows the traceback)"
    print(f"error: {message}{hint}", file=sys.stderr)
    return 1


def _serve_parser() -> argparse.ArgumentParser | None:
    """The parser of ``syntriever serve`` alone: building every command's parser imports the training modules, and
    with them torch, before ``serve`` can keep torch out of a torch-free pipeline's process. ``None`` when the serve
    extra is missing (the full parser then names it)."""
    try:
        from syntriever_haystack.serve.cli import register
    except ModuleNotFoundError:
        return None
    parser = argparse.ArgumentParser(prog="syntriever")
    register(parser.add_subparsers(dest="command", required=True, metavar="COMMAND"))
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    disable_telemetry_by_default()  # before anything imports haystack
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = (_serve_parser() if argv[:1] == ["serve"] else None) or build_parser()
    _add_debug_option(parser, top=True)
    args = parser.parse_args(argv)
    debug = bool(getattr(args, "debug", False)) or os.environ.get("SYNTRIEVER_DEBUG", "") not in ("", "0")
    try:
        return int(args.func(args))
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except SyntrieverError as exc:
        if debug:
            import traceback

            traceback.print_exception(exc, file=sys.stderr)
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except Exception as exc:  # expected failures become one line; a bug keeps its traceback
        return _fail(exc, debug=debug)


if __name__ == "__main__":
    raise SystemExit(main())
