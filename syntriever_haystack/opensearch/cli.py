"""The ``syntriever index`` and ``syntriever search`` commands.

- ``syntriever index --model EXPORTED_EMBEDDER (--dataset DIR|NAME | --input PATH...) [--store memory|opensearch]``
  splits, embeds and writes a corpus; the in-memory store is saved to a JSON file that ``search`` reloads.
- ``syntriever search "QUERY" --model EXPORTED_EMBEDDER [--ranker EXPORTED_RERANKER] [--store ...] [--json]``
  runs the hybrid (BM25 + dense, score fusion) query pipeline, optionally reranked;
  ``syntriever search "QUERY" --run runs/quickstart [--rerank]`` runs a run folder's saved
  ``pipelines/query.yaml`` (``query-rerank.yaml``) as it is, on the run's store.

OpenSearch credentials come only from the environment (``OPENSEARCH_USERNAME`` / ``OPENSEARCH_PASSWORD``) and
TLS certificates are verified unless ``--no-verify-certs`` is given. Haystack, onnxruntime and opensearch-py are
imported inside the command functions, so registering the commands costs nothing.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from syntriever_haystack.cli_types import ranged
from syntriever_haystack.errors import SyntrieverError
from syntriever_haystack.opensearch.cli_args import add_connection_arguments, connection_from_args, int_at_least
from syntriever_haystack.paths import cache_root
from syntriever_haystack.specs import DEFAULT_FUSION, FUSIONS

if TYPE_CHECKING:
    from haystack import Document, Pipeline


DEFAULT_INDEX = "syntriever"
BATCH_DOCUMENTS = 256


def _store_kind(args: argparse.Namespace) -> str:
    return str(args.store or ("opensearch" if args.opensearch_url else "memory"))


def _store_path(args: argparse.Namespace) -> Path:
    if args.store_path:
        return Path(args.store_path).expanduser()
    if any(sep in args.index for sep in ("/", "\\")) or args.index in ("", ".", ".."):
        raise SyntrieverError(f"--index {args.index!r} is not a valid store name; pass --store-path FILE instead.")
    return cache_root() / "stores" / f"{args.index}.json"


def _beir_documents(args: argparse.Namespace) -> list[Document]:
    from haystack import Document

    from syntriever_haystack.data.beir import read_corpus
    from syntriever_haystack.data.download import resolve_dataset

    folder = resolve_dataset(args.dataset)
    corpus = read_corpus(folder / "corpus.jsonl")
    documents = []
    for doc_id, passage in corpus.items():
        text = passage.model_text(not args.no_title)
        if text.strip():
            documents.append(Document(id=doc_id, content=text, meta={"title": passage.title, **passage.metadata}))
    if not documents:
        raise SyntrieverError(f"{folder / 'corpus.jsonl'} has no document with text.")
    return documents


def _file_chunks(args: argparse.Namespace) -> list[Document]:
    from syntriever_haystack.data.documents import load_documents

    chunks: dict[str, Document] = {}
    for path in args.input:
        for chunk in load_documents(
            path,
            split_by=args.split_by,
            split_length=args.split_length,
            split_overlap=args.split_overlap,
            progress=not args.quiet,
        ):
            if chunk.id in chunks:
                raise SyntrieverError(
                    f"two inputs hold a file at the same relative path {chunk.meta.get('file_path')!r}; index them "
                    "separately or from their common parent folder."
                )
            chunks[chunk.id] = chunk
    return list(chunks.values())


def _run_indexing(pipeline: Pipeline, documents: list[Document], *, quiet: bool) -> int:
    from syntriever_haystack.serve.indexing import index_documents

    return index_documents(pipeline, documents, batch_size=BATCH_DOCUMENTS, progress=not quiet).written


def _check_index_flags(args: argparse.Namespace, kind: str) -> None:
    if kind == "memory":
        used = [flag for flag, on in (("--alias", args.alias), ("--replace-index", args.replace_index)) if on]
        used += ["--delete-old"] if args.delete_old else []
        if used:
            raise SyntrieverError(f"{', '.join(used)} only apply to --store opensearch.")
    if args.alias and args.recreate:
        raise SyntrieverError("--alias builds a new index anyway; drop --recreate.")
    if (args.replace_index or args.delete_old) and not args.alias:
        raise SyntrieverError("--replace-index and --delete-old only apply with --alias.")
    if args.input and args.split_by == "none":
        raise SyntrieverError("files are always split; --split-by none only applies to --dataset.")


def _check_pipelines_out(args: argparse.Namespace) -> None:
    """``--pipelines-out`` must be a folder (or creatable), ``--ranker`` an exported cross-encoder."""
    from syntriever_haystack.runtime.metadata import ModelMetadata

    if args.ranker:
        ranker = ModelMetadata.load(args.ranker)
        if ranker.kind != "cross-encoder":
            raise SyntrieverError(
                f"--ranker {args.ranker} is a {ranker.kind}; the query pipeline's ranker must be an exported "
                "cross-encoder."
            )
    if args.pipelines_out:
        out = Path(args.pipelines_out)
        for folder in (out, *out.parents):
            if folder.exists():
                if not folder.is_dir():
                    raise SyntrieverError(f"--pipelines-out {out}: {folder} is a file, not a folder.")
                break


def _cmd_index(args: argparse.Namespace) -> int:
    from syntriever_haystack.runtime.metadata import ModelMetadata
    from syntriever_haystack.runtime.vector_space import vector_space
    from syntriever_haystack.serve.pipelines import indexing_pipeline, query_pipeline, save_pipeline

    kind = _store_kind(args)
    _check_index_flags(args, kind)
    metadata = ModelMetadata.load(args.model)
    space = vector_space(metadata)  # a cross-encoder or an unsupported similarity fails here, before reading
    _check_pipelines_out(args)  # before anything is indexed or written
    if args.dataset:
        documents = _beir_documents(args)
        split_by = None if args.split_by == "none" else args.split_by
        sources = len(documents)
    else:
        documents = _file_chunks(args)
        split_by = None  # load_documents split the files, with ids stable across runs
        sources = len({d.meta.get("file_path") for d in documents})

    def build(store: Any) -> Pipeline:
        return indexing_pipeline(
            store,
            args.model,
            split_by=split_by,
            split_length=args.split_length,
            split_overlap=args.split_overlap,
            quantization=args.quantization,
            batch_size=args.batch_size,
        )

    spec_options: dict[str, Any] = {"model_name": str(args.model)}
    if args.replicas is not None:
        spec_options["replicas"] = args.replicas
    started = time.perf_counter()
    summary: dict[str, Any] = {"store": kind, "index": args.index}
    if kind == "memory":
        from syntriever_haystack.serve.memory_store import (
            check_memory_store,
            load_memory_store,
            memory_document_store,
            save_memory_store,
            store_record,
        )

        path = _store_path(args)
        if path.exists() and not args.recreate:
            store, record = load_memory_store(path)
            check_memory_store(store, record, metadata, label=f"store file {path}")
        else:
            store = memory_document_store(metadata, index=args.index)
            store.delete_all_documents()  # same-named shared storage of this process starts empty too
        chunks = _run_indexing(build(store), documents, quiet=args.quiet)
        save_memory_store(store, path, store_record(metadata, model_name=str(args.model)))
        summary.update(store_path=str(path), total_chunks=store.count_documents())
        query_store: Any = store
    else:
        from syntriever_haystack.opensearch.errors import opensearch_errors
        from syntriever_haystack.opensearch.index import reindex_via_alias
        from syntriever_haystack.opensearch.store import opensearch_document_store

        connection = connection_from_args(args)
        summary["url"] = connection.url
        with opensearch_errors(connection.url):
            if args.alias:
                written: list[int] = []

                def fill(name: str) -> None:
                    target = opensearch_document_store(connection, name, metadata, ensure=False, create=False)
                    written.append(_run_indexing(build(target), documents, quiet=args.quiet))

                swap = reindex_via_alias(
                    connection.client(),
                    args.index,
                    metadata,
                    fill,
                    delete_old=args.delete_old,
                    replace_index=args.replace_index,
                    engine=args.engine,
                    **spec_options,
                )
                chunks = sum(written)
                summary.update(alias=swap.alias, physical_index=swap.index, previous=list(swap.previous))
                summary.update(deleted=list(swap.deleted))
                query_store = opensearch_document_store(connection, args.index, metadata, ensure=False, create=False)
            else:
                query_store = opensearch_document_store(
                    connection, args.index, metadata, recreate=args.recreate, engine=args.engine, **spec_options
                )
                chunks = _run_indexing(build(query_store), documents, quiet=args.quiet)
    seconds = time.perf_counter() - started
    summary.update(
        documents=sources,
        chunks=chunks,
        seconds=round(seconds, 3),
        docs_per_second=round(sources / seconds, 1) if seconds > 0 else None,
        dimension=space.dimension,
        space_type=space.space_type,
    )
    if args.pipelines_out:
        out = Path(args.pipelines_out)
        indexing_store, yaml_store = query_store, query_store
        if kind == "memory":  # stores that load the saved file themselves: the YAML answers in any process
            from syntriever_haystack.serve.memory_store import file_document_store

            saved = _store_path(args).absolute()
            indexing_store = file_document_store(metadata, saved, index=query_store.index, missing="empty", load=False)
            yaml_store = file_document_store(metadata, saved, index=query_store.index, load=False)
        save_pipeline(build(indexing_store), out / "indexing.yaml")
        save_pipeline(
            query_pipeline(yaml_store, args.model, args.ranker, quantization=args.quantization, fusion=args.fusion),
            out / "query.yaml",
        )
        summary["pipelines"] = [str(out / "indexing.yaml"), str(out / "query.yaml")]
    if args.json:
        print(json.dumps(summary))
    else:
        where = summary.get("store_path") or (
            f"index {summary['physical_index']} (alias {args.index})" if args.alias else f"index {args.index}"
        )
        print(
            f"indexed {sources:,} documents as {chunks:,} chunks into {where} in {seconds:.1f} s "
            f"({summary['docs_per_second']} docs/s; {space.dimension}-d vectors, {space.space_type})"
        )
        if args.alias and summary.get("previous"):
            print(f"alias {args.index} moved from {', '.join(summary['previous'])}", end="")
            print(f" (deleted: {', '.join(summary['deleted'])})" if summary.get("deleted") else "")
        for path in summary.get("pipelines", []):
            print(f"pipeline written to {path}")
    return 0


def _snippet(text: str | None, width: int) -> str:
    flat = " ".join((text or "").split())
    return flat if len(flat) <= width else flat[: width - 1].rstrip() + "…"


def _run_pipeline(args: argparse.Namespace) -> Path:
    """The saved query pipeline of ``--run``: ``pipelines/query.yaml``, or ``query-rerank.yaml`` with ``--rerank``."""
    folder = Path(args.run).expanduser()
    name = "query-rerank.yaml" if args.rerank else "query.yaml"
    path = folder / "pipelines" / name
    if not path.is_file():
        if not folder.is_dir():
            raise SyntrieverError(f"--run {folder}: no such run folder (a folder written by `syntriever run`).")
        hint = (
            " (this run has no reranker: drop --rerank)"
            if args.rerank and (folder / "pipelines" / "query.yaml").is_file()
            else "; build it with `syntriever run RECIPE --until index`"
        )
        raise SyntrieverError(f"--run {folder}: {path} does not exist{hint}.")
    return path


def _search_run(args: argparse.Namespace) -> tuple[list[Document], dict[str, Any]]:
    from syntriever_haystack.serve.pipelines import load_pipeline, run_query

    used = [
        flag
        for flag, value in (
            ("--model", args.model),
            ("--ranker", args.ranker),
            ("--store-path", args.store_path),
            ("--first-stage-weight", args.first_stage_weight),
        )
        if value
    ]
    if used:
        raise SyntrieverError(f"--run searches with the run's saved pipeline: drop {', '.join(used)}.")
    path = _run_pipeline(args)
    pipeline = load_pipeline(path)
    components = dict(pipeline.walk())
    last = components.get("ranker", components.get("joiner"))
    if last is not None and hasattr(last, "top_k"):
        setattr(last, "top_k", args.top_k)  # noqa: B010 - a Component protocol
    documents = run_query(pipeline, args.query)[: args.top_k]
    return documents, {"run": str(Path(args.run)), "pipeline": str(path)}


def _cmd_search(args: argparse.Namespace) -> int:
    from syntriever_haystack.runtime.metadata import ModelMetadata
    from syntriever_haystack.serve.pipelines import query_pipeline, run_query

    if not args.query.strip():
        raise SyntrieverError("the query is empty.")
    from syntriever_haystack.runtime.inputs import bounded_query

    args.query, warning = bounded_query(args.query)  # a 100,000-character query: cut (BM25 and the models), warned
    if warning:
        print(f"warning: {warning}", file=sys.stderr)
    started = time.perf_counter()
    if args.run:
        found, saved = _search_run(args)
        return _print_results(args, found, saved, time.perf_counter() - started)
    if args.rerank:
        raise SyntrieverError("--rerank picks a run's query-rerank.yaml: use it with --run (or pass --ranker DIR).")
    if args.first_stage_weight and not args.ranker:
        raise SyntrieverError("--first-stage-weight weighs the first stage against --ranker: pass --ranker DIR too.")
    if not args.model:
        raise SyntrieverError(
            "say what to search: --run RUN_FOLDER (a `syntriever run` folder, e.g. runs/quickstart), or --model "
            "EXPORTED_DIR with a store (--store-path FILE, or --store opensearch)."
        )
    metadata = ModelMetadata.load(args.model)
    kind = _store_kind(args)
    options: dict[str, Any] = {
        "top_k": args.top_k,
        "top_k_bm25": args.top_k_bm25,
        "top_k_dense": args.top_k_dense,
        "candidates": args.candidates,
        "quantization": args.quantization,
        "fusion": args.fusion,
        "ranker_first_stage_weight": args.first_stage_weight,
    }
    if kind == "memory":
        from syntriever_haystack.serve.memory_store import check_memory_store, load_memory_store

        path = _store_path(args)
        if not args.store_path and not path.is_file():
            raise SyntrieverError(
                f"no in-memory store named {args.index!r} ({path} does not exist). Search a run folder with "
                "`--run runs/quickstart`, or a store file with `--store-path FILE` (build one with "
                "`syntriever index`)."
            )
        store, record = load_memory_store(path)
        check_memory_store(store, record, metadata, label=f"store file {path}")
        documents = run_query(query_pipeline(store, args.model, args.ranker, **options), args.query)
        where: dict[str, Any] = {"store": "memory", "store_path": str(path)}
    else:
        from syntriever_haystack.opensearch.errors import opensearch_errors
        from syntriever_haystack.opensearch.store import opensearch_document_store

        connection = connection_from_args(args)
        with opensearch_errors(connection.url):
            os_store = opensearch_document_store(connection, args.index, metadata, create=False)
            documents = run_query(query_pipeline(os_store, args.model, args.ranker, **options), args.query)
        where = {"store": "opensearch", "url": connection.url, "index": args.index}
    return _print_results(args, documents, where, time.perf_counter() - started)


def _print_results(args: argparse.Namespace, documents: list[Document], where: dict[str, Any], seconds: float) -> int:
    results = [
        {
            "rank": rank,
            "score": doc.score,
            "id": str(doc.meta.get("source_id") or doc.id),
            "chunk_id": doc.id,
            "title": doc.meta.get("title") or doc.meta.get("file_name") or "",
            "content": doc.content or "",
        }
        for rank, doc in enumerate(documents, start=1)
    ]
    if args.json:
        print(json.dumps({"query": args.query, **where, "seconds": round(seconds, 3), "results": results}))
        return 0
    if not results:
        print("no results")
        return 0
    for r in results:
        title = f"  {r['title']}" if r["title"] else ""
        print(f"{r['rank']:>2}. {r['score']:.4f}  {r['id']}{title}")
        print(f"    {_snippet(str(r['content']), args.snippet)}")
    return 0


def _add_store_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("document store")
    group.add_argument(
        "--store",
        choices=["memory", "opensearch"],
        default=None,
        help="document store (default: opensearch when --opensearch-url is given, else memory)",
    )
    group.add_argument(
        "--index",
        default=DEFAULT_INDEX,
        metavar="NAME",
        help=f"OpenSearch index (or alias), or in-memory store name (default {DEFAULT_INDEX})",
    )
    group.add_argument(
        "--store-path",
        metavar="FILE",
        help="in-memory store file (default: $SYNTRIEVER_CACHE/stores/NAME.json, ~/.cache/syntriever/...; a "
        "`syntriever run` folder keeps its store in data/document_store.json: search it with --run)",
    )
    add_connection_arguments(group, timeout=60)


def _add_fusion(parser: argparse.ArgumentParser, what: str) -> None:
    parser.add_argument(
        "--fusion",
        choices=FUSIONS,
        default=DEFAULT_FUSION,
        help=f"fusion {what}: dbsf (distribution-based score fusion, default) or rrf (reciprocal rank fusion)",
    )


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``index`` and ``search`` to the ``syntriever`` parser.

    :param sub: The object returned by ``parser.add_subparsers()`` of the ``syntriever`` parser.
    """
    index = sub.add_parser(
        "index",
        help="split, embed and write a corpus into an in-memory or OpenSearch store",
        description="Index a BEIR corpus (--dataset) or your own files (--input) with an exported bi-encoder. "
        "An existing OpenSearch index is checked against the model (dimension, space type) before anything is "
        "written; --alias re-indexes into a new index and swaps the alias atomically.",
    )
    index.add_argument("--model", required=True, metavar="EXPORTED_DIR", help="exported bi-encoder")
    source = index.add_mutually_exclusive_group(required=True)
    source.add_argument("--dataset", metavar="DIR|NAME", help="BEIR folder (corpus.jsonl), or a BEIR name to download")
    source.add_argument(
        "--input", nargs="+", metavar="PATH", help="files or folders of .txt/.md/.pdf/.html/.docx documents"
    )
    index.add_argument("--no-title", action="store_true", help="BEIR: index the text without its title")
    index.add_argument(
        "--split-by",
        choices=["word", "sentence", "passage", "line", "none"],
        default="word",
        help="chunk unit (default word; sentence needs nltk; none: index BEIR passages whole)",
    )
    index.add_argument("--split-length", type=int, default=200, metavar="N", help="units per chunk (default 200)")
    index.add_argument("--split-overlap", type=int, default=20, metavar="N", help="overlapping units (default 20)")
    index.add_argument(
        "--quantization", "--precision", choices=["fp32", "int8"], default="fp32", help="ONNX weights: fp32 or int8"
    )
    index.add_argument("--batch-size", type=int, default=32, help="texts per ONNX Runtime call (default 32)")
    _add_store_options(index)
    os_group = index.add_argument_group("OpenSearch index management")
    os_group.add_argument("--recreate", action="store_true", help="delete and recreate the index (documents lost)")
    os_group.add_argument(
        "--alias",
        action="store_true",
        help="--index names an alias: build a new index NAME-TIMESTAMP, fill it, then swap the alias atomically",
    )
    os_group.add_argument("--delete-old", action="store_true", help="with --alias: delete the indices it pointed at")
    os_group.add_argument(
        "--replace-index",
        action="store_true",
        help="with --alias: if NAME is a concrete index, replace it by the alias (the old index is deleted)",
    )
    os_group.add_argument("--engine", choices=["lucene", "faiss"], default=None, help="k-NN engine (default lucene)")
    os_group.add_argument("--replicas", type=int_at_least(0), default=None, help="number_of_replicas of a new index")
    index.add_argument(
        "--pipelines-out", metavar="DIR", help="write indexing.yaml and query.yaml (Haystack YAML) for this store"
    )
    index.add_argument(
        "--ranker", metavar="EXPORTED_DIR", help="cross-encoder to include in the query.yaml of --pipelines-out"
    )
    _add_fusion(index, "of the query.yaml of --pipelines-out")
    index.add_argument("--json", action="store_true", help="print the summary as JSON")
    index.add_argument("--quiet", action="store_true", help="no progress bars")
    index.set_defaults(func=_cmd_index)

    search = sub.add_parser(
        "search",
        help="hybrid search (BM25 + dense, score fusion), optionally reranked",
        description="Run the query pipeline on a store built by `syntriever index` and print ranked results, or "
        "a `syntriever run` folder's saved query pipeline (--run).",
    )
    search.add_argument("query", metavar="QUERY")
    search.add_argument(
        "--run",
        metavar="RUN_DIR",
        help="a `syntriever run` folder (e.g. runs/quickstart): answer with its saved pipelines/query.yaml and store",
    )
    search.add_argument(
        "--rerank", action="store_true", help="with --run: use the run's pipelines/query-rerank.yaml (reranked)"
    )
    search.add_argument(
        "--model", metavar="EXPORTED_DIR", help="the bi-encoder the store was built with (required without --run)"
    )
    search.add_argument("--ranker", metavar="EXPORTED_DIR", help="exported cross-encoder to rerank with")
    search.add_argument("--top-k", type=int, default=5, help="results to print (default 5)")
    search.add_argument("--top-k-bm25", type=int, default=100, help="BM25 candidates (default 100)")
    search.add_argument("--top-k-dense", type=int, default=100, help="dense candidates (default 100)")
    _add_fusion(search, "of BM25 and dense")
    search.add_argument(
        "--candidates", type=int_at_least(1), default=50, help="best fused candidates given to the ranker (default 50)"
    )
    search.add_argument(
        "--first-stage-weight",
        type=ranged(float, 0),
        default=0.0,
        metavar="W",
        help="--ranker's score fused with the first stage's (DBSF), the first stage weighted W to 1 (default 0: the "
        "cross-encoder alone; a `syntriever run` reranker is served with 2)",
    )
    search.add_argument(
        "--quantization", "--precision", choices=["fp32", "int8"], default="fp32", help="ONNX weights: fp32 or int8"
    )
    search.add_argument(
        "--snippet", type=int_at_least(1), default=160, metavar="CHARS", help="snippet width (default 160)"
    )
    search.add_argument("--json", action="store_true", help="print the results as JSON")
    _add_store_options(search)
    search.set_defaults(func=_cmd_search)


__all__ = ["register"]
