"""The ``syntriever mlcommons`` command: run exported models inside OpenSearch with ML Commons.

- ``syntriever mlcommons bundle EXPORTED_DIR OUT.zip [--precision int8]``: the zip + its register body.
- ``syntriever mlcommons deploy EXPORTED_DIR [EXPORTED_DIR] --opensearch-url URL [--dev-cluster-settings]
  [--ingest-pipeline NAME --field-map content:embedding] [--search-pipeline NAME --document-field content]``:
  register (chunked upload), deploy, create the pipelines, print the model ids and a neural query example.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path
from typing import Any

from syntriever_haystack.errors import SyntrieverError
from syntriever_haystack.opensearch.cli_args import (
    add_connection_arguments,
    connection_from_args,
    non_empty,
    positive_number,
)


def _cmd_bundle(args: argparse.Namespace) -> int:
    from syntriever_haystack.export.ml_commons_bundle import build_bundle

    bundle = build_bundle(
        args.model,
        args.output,
        precision=args.precision,
        name=args.name,
        version=args.version,
        asymmetric=args.asymmetric,
    )
    body = bundle.register_body
    print(
        f"{bundle.function_name} bundle → {bundle.zip_path}  "
        f"({bundle.size / 1e6:.1f} MB, {bundle.total_chunks} chunk(s))"
    )
    print(f"  register body: {bundle.config_path}")
    print(f"  sha256 {bundle.sha256}")
    print(f"  graph inputs {bundle.model_inputs}; model_config {json.dumps(_short_config(body['model_config']))}")
    for edit in bundle.graph_edits:
        print(f"  graph edit: {edit}")
    for warning in bundle.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    return 0


def _short_config(config: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in config.items() if k != "all_config"}


def _parse_field_map(pairs: list[str]) -> dict[str, str]:
    field_map: dict[str, str] = {}
    for pair in pairs:
        source, sep, target = pair.partition(":")
        if not sep or not source or not target:
            raise SyntrieverError(f"--field-map {pair!r} is not SOURCE:TARGET; use e.g. --field-map content:embedding")
        field_map[source] = target
    return field_map


def _cmd_deploy(args: argparse.Namespace) -> int:
    from syntriever_haystack.opensearch.errors import opensearch_errors
    from syntriever_haystack.opensearch.ml_commons import MLCommonsClient
    from syntriever_haystack.runtime.metadata import ModelMetadata

    kinds = [ModelMetadata.load(m).kind for m in args.models]  # fails early, naming the fix, on a wrong folder
    if kinds.count("bi-encoder") > 1 or kinds.count("cross-encoder") > 1:
        raise SyntrieverError("Pass at most one bi-encoder (retriever) and one cross-encoder (reranker).")
    if args.ingest_pipeline and "bi-encoder" not in kinds:
        raise SyntrieverError("--ingest-pipeline needs a bi-encoder EXPORTED_DIR (the text_embedding model).")
    if args.search_pipeline and "cross-encoder" not in kinds:
        raise SyntrieverError("--search-pipeline needs a cross-encoder EXPORTED_DIR (the rerank model).")
    _parse_field_map(args.field_map or [])  # validate before touching the cluster
    connection = connection_from_args(args)
    with opensearch_errors(connection.url):
        return _deploy(args, MLCommonsClient(connection.client(), poll_interval=args.poll_interval))


def _deploy(args: argparse.Namespace, ml: Any) -> int:
    from syntriever_haystack.export.ml_commons_bundle import build_bundle
    from syntriever_haystack.opensearch.ml_commons import ingest_pipeline_body, search_body, search_pipeline_body
    from syntriever_haystack.runtime.metadata import ModelMetadata

    kinds = {str(Path(m)): ModelMetadata.load(m).kind for m in args.models}
    bi = [m for m, kind in kinds.items() if kind == "bi-encoder"]
    ce = [m for m, kind in kinds.items() if kind == "cross-encoder"]
    field_map = _parse_field_map(args.field_map or ["content:embedding"])
    document_fields = args.document_field or list(field_map)
    if args.dev_cluster_settings:
        ml.apply_dev_cluster_settings()
        print("applied development cluster settings (see docs/ml-commons.md before using them elsewhere)")
    group_id = ml.register_model_group(args.model_group)
    deployed: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="syntriever-mlc-") as tmp:
        for model_dir in bi + ce:
            bundle = build_bundle(
                model_dir,
                Path(tmp) / f"{Path(model_dir).resolve().name}.zip",
                precision=args.precision,
                asymmetric=args.asymmetric,
            )
            for warning in bundle.warnings:
                print(f"warning: {warning}", file=sys.stderr)
            print(
                f"registering {bundle.function_name} {model_dir} "
                f"({bundle.size / 1e6:.1f} MB, {bundle.total_chunks} chunk(s))"
            )
            model = ml.register_and_deploy(bundle, model_group_id=group_id, timeout=args.deploy_timeout)
            deployed[bundle.kind] = model
            print(f"  deployed: model_id {model.model_id}")
    embedder = deployed.get("bi-encoder")
    reranker = deployed.get("cross-encoder")
    if embedder is not None:
        print(f"retriever model_id: {embedder.model_id}")
    if reranker is not None:
        print(f"reranker model_id: {reranker.model_id}")
    if args.ingest_pipeline and embedder is not None:
        prefix = "" if embedder.bundle.asymmetric else embedder.bundle.document_prefix
        ml.put_ingest_pipeline(
            args.ingest_pipeline, ingest_pipeline_body(embedder.model_id, field_map, document_prefix=prefix)
        )
        print(f"ingest pipeline {args.ingest_pipeline!r}: text_embedding {field_map}")
    if args.search_pipeline and reranker is not None:
        ml.put_search_pipeline(args.search_pipeline, search_pipeline_body(reranker.model_id, document_fields))
        print(f"search pipeline {args.search_pipeline!r}: rerank on {document_fields}")
    if embedder is not None:
        vector_field = next(iter(field_map.values()))
        prefix = "" if embedder.bundle.asymmetric else embedder.bundle.query_prefix
        body = search_body(
            vector_field, "your question", embedder.model_id, k=10, query_prefix=prefix, rerank=reranker is not None
        )
        target = "/INDEX/_search" + (f"?search_pipeline={args.search_pipeline}" if args.search_pipeline else "")
        print(
            f"\nexample query (the index needs a knn_vector field {vector_field!r} "
            f"of dimension {embedder.bundle.embedding_dim}):"
        )
        print(f"POST {target}\n{json.dumps(body, indent=2)}")
    elif reranker is not None:
        field = document_fields[0]
        rerank_body = {
            "query": {"match": {field: "your question"}},
            "ext": {"rerank": {"query_context": {"query_text": "your question"}}},
        }
        target = "/INDEX/_search" + (f"?search_pipeline={args.search_pipeline}" if args.search_pipeline else "")
        print(
            f"\nexample query (reranks the top hits in OpenSearch):\nPOST {target}\n{json.dumps(rerank_body, indent=2)}"
        )
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``mlcommons`` and its sub-commands to the ``syntriever`` parser."""
    mlc = sub.add_parser(
        "mlcommons",
        help="run exported models inside OpenSearch (ML Commons local models, ingest and rerank pipelines)",
        description="Package exported ONNX models as ML Commons local models (TEXT_EMBEDDING / TEXT_SIMILARITY), "
        "register and deploy them, and create the ingest (text_embedding) and search (rerank) pipelines. "
        "See docs/ml-commons.md.",
    )
    actions = mlc.add_subparsers(dest="mlcommons_command", required=True, metavar="ACTION")

    bundle = actions.add_parser("bundle", help="write the ML Commons zip and register body of an exported model")
    bundle.add_argument("model", metavar="EXPORTED_DIR", help="OUTPUT_DIR of `syntriever export`")
    bundle.add_argument("output", metavar="OUT.zip", help="zip to write (the register body goes next to it)")
    _add_bundle_options(bundle)
    bundle.add_argument("--name", help="model name in OpenSearch (default: the folder name)")
    bundle.add_argument("--version", type=non_empty, default="1", help="model version (default 1)")
    bundle.set_defaults(func=_cmd_bundle)

    deploy = actions.add_parser(
        "deploy",
        help="register + deploy exported models in OpenSearch and create the pipelines",
        description="Register (chunked upload), deploy and wire exported models into OpenSearch. Pass a bi-encoder "
        "for in-cluster embedding (ingest pipeline + neural queries) and/or a cross-encoder for the rerank processor.",
    )
    deploy.add_argument("models", nargs="+", metavar="EXPORTED_DIR", help="exported bi-encoder and/or cross-encoder")
    add_connection_arguments(deploy, timeout=120)
    _add_bundle_options(deploy)
    deploy.add_argument("--model-group", default="syntriever", help="model group name (created or reused)")
    deploy.add_argument(
        "--dev-cluster-settings",
        action="store_true",
        help="first set only_run_on_ml_node=false, allow_registering_model_via_local_file=true and memory "
        "thresholds 99/95 (single-node development clusters only)",
    )
    deploy.add_argument("--ingest-pipeline", metavar="NAME", help="create this ingest pipeline (text_embedding)")
    deploy.add_argument(
        "--field-map",
        action="append",
        metavar="SOURCE:VECTOR",
        help="text field → vector field for the ingest pipeline (repeat; default content:embedding)",
    )
    deploy.add_argument("--search-pipeline", metavar="NAME", help="create this search pipeline (rerank)")
    deploy.add_argument(
        "--document-field",
        action="append",
        metavar="FIELD",
        help="document field the reranker reads (repeat; default: the --field-map sources)",
    )
    deploy.add_argument(
        "--deploy-timeout",
        type=positive_number,
        default=600.0,
        help="seconds to wait for register / deploy (default 600)",
    )
    deploy.add_argument("--poll-interval", type=float, default=1.0, help=argparse.SUPPRESS)
    deploy.set_defaults(func=_cmd_deploy)


def _add_bundle_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--precision", choices=["fp32", "int8"], default="fp32", help="which ONNX file (default fp32)")
    parser.add_argument(
        "--asymmetric",
        action="store_true",
        help="register query/document prefixes in ML Commons (needs asymmetric support in neural-search, "
        "OpenSearch 3.5+); by default the prefixes are added by the pipelines and the example query instead",
    )
