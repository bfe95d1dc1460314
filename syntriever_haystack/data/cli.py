"""The ``syntriever data`` command: get data into BEIR folders.

- ``syntriever data download NAME [--cache-dir DIR]``: a public BEIR dataset, checksum-verified;
- ``syntriever data medquad-xml REPO_DIR --out DIR [--liveqa-questions F --liveqa-qrels F]``: the original
  MedQuAD repository (XML) as a BEIR folder;
- ``syntriever data from-folder DIR --out DIR``: your own ``.txt``/``.md``/``.pdf``/``.html``/``.docx`` files,
  split into passages, as a BEIR ``corpus.jsonl``.

Heavy imports (Haystack converters) happen inside the handlers, so registering the command is cheap.
"""

from __future__ import annotations

import argparse
from pathlib import Path


def _cmd_download(args: argparse.Namespace) -> int:
    from syntriever_haystack.data.download import download_beir

    folder = download_beir(args.name, cache_dir=args.cache_dir, progress=not args.quiet)
    print(f"{args.name}: {folder}")
    return 0


def _cmd_medquad_xml(args: argparse.Namespace) -> int:
    from syntriever_haystack.data.medquad_xml import convert_medquad_xml

    summary = convert_medquad_xml(
        args.repo_dir,
        args.out,
        liveqa_questions=args.liveqa_questions,
        liveqa_qrels=args.liveqa_qrels,
        liveqa_answers=args.liveqa_answers,
        overwrite=args.force,
        progress=not args.quiet,
    )
    print(
        f"wrote {summary['out_dir']}: {summary['documents']:,} documents, {summary['queries']:,} queries, "
        f"{summary['qa_judgments']:,} qa judgments from {summary['files']:,} XML files"
    )
    print(
        f"skipped {summary['skipped_empty']:,} QA pairs with an empty answer (removed from the XML release for "
        f"copyright) and {summary['duplicates']:,} duplicate answer ids"
    )
    if summary["liveqa_questions"]:
        print(
            f"LiveQA: {summary['liveqa_questions']} test questions, {summary['test_judgments']:,} graded judgments "
            f"in qrels/test.tsv ({summary['liveqa_answers_added']:,} judged answers added to the corpus, "
            f"{summary['test_dropped']:,} judgments dropped for lack of answer text)"
        )
    return 0


def _cmd_from_folder(args: argparse.Namespace) -> int:
    from syntriever_haystack.data.documents import load_documents, write_beir_corpus

    documents = load_documents(
        args.folder,
        split_by=args.split_by,
        split_length=args.split_length,
        split_overlap=args.split_overlap,
        extensions=args.extensions,
        recursive=not args.no_recursive,
        progress=not args.quiet,
    )
    corpus = write_beir_corpus(documents, args.out)
    files = len({d.meta.get("file_path") for d in documents})
    print(f"wrote {corpus}: {len(documents):,} passages from {files:,} files")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``data`` command and its sub-commands to the top-level sub-parsers.

    :param sub: The object returned by ``parser.add_subparsers()`` of the ``syntriever`` parser.
    """
    data = sub.add_parser("data", help="get datasets into BEIR folders (download, MedQuAD XML, your own files)")
    data_sub = data.add_subparsers(dest="data_command", required=True, metavar="SUBCOMMAND")

    download = data_sub.add_parser("download", help="download a public BEIR dataset (md5-verified) into the cache")
    download.add_argument("name", metavar="NAME", help="BEIR dataset name, e.g. scifact, nfcorpus, fiqa")
    download.add_argument(
        "--cache-dir",
        type=Path,
        default=None,
        help="cache folder (default: $SYNTRIEVER_CACHE/datasets or ~/.cache/syntriever/datasets)",
    )
    download.add_argument("--quiet", action="store_true", help="no progress bar")
    download.set_defaults(func=_cmd_download)

    medquad = data_sub.add_parser("medquad-xml", help="convert a clone of github.com/abachaa/MedQuAD to a BEIR folder")
    medquad.add_argument("repo_dir", metavar="REPO_DIR", type=Path, help="the MedQuAD repository folder")
    medquad.add_argument("--out", type=Path, required=True, help="output BEIR folder")
    medquad.add_argument(
        "--liveqa-questions",
        type=Path,
        default=None,
        metavar="F",
        help="TREC-2017-LiveQA-Medical-Test-Questions-w-summaries.xml (adds the queries TQ1..TQ104)",
    )
    medquad.add_argument(
        "--liveqa-qrels",
        type=Path,
        default=None,
        metavar="F",
        help="the judged answers: All-qrels_LiveQAMed2017-TestQuestions_2479_Judged-Answers.txt, its folder or "
        "QA-TestSet-LiveQA-Med-Qrels-2479-Answers.zip (writes qrels/test.tsv)",
    )
    medquad.add_argument(
        "--liveqa-answers",
        type=Path,
        default=None,
        metavar="F",
        help="All-2479-Answers-retrieved-from-MedQuAD.csv when it is not next to the qrels file",
    )
    medquad.add_argument("--force", action="store_true", help="replace an existing output folder")
    medquad.add_argument("--quiet", action="store_true", help="no progress bar")
    medquad.set_defaults(func=_cmd_medquad_xml)

    folder = data_sub.add_parser("from-folder", help="split your own files into passages and write a BEIR corpus")
    folder.add_argument("folder", metavar="DIR", type=Path, help="folder (or file) of .txt/.md/.pdf/.html/.docx files")
    folder.add_argument("--out", type=Path, required=True, help="output folder for corpus.jsonl")
    folder.add_argument("--split-by", choices=("word", "sentence", "passage"), default="word", help="split unit")
    folder.add_argument("--split-length", type=int, default=200, metavar="N", help="units per passage (default 200)")
    folder.add_argument("--split-overlap", type=int, default=20, metavar="N", help="overlapping units (default 20)")
    folder.add_argument(
        "--extensions", nargs="+", default=None, metavar="EXT", help="only these file types, e.g. --extensions txt md"
    )
    folder.add_argument("--no-recursive", action="store_true", help="do not read sub-folders")
    folder.add_argument("--quiet", action="store_true", help="no progress bar")
    folder.set_defaults(func=_cmd_from_folder)


__all__ = ["register"]
