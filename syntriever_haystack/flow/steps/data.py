"""``data``: resolve the corpus (a BEIR folder or name, or a folder of documents converted into passages), check the
evaluation split, and — only with ``dataset.use_training_labels`` — the training split."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from syntriever_haystack.flow.context import FlowContext, FlowError, write_json
from syntriever_haystack.flow.recipe import Recipe
from syntriever_haystack.flow.step import Step, as_dict


def is_document_folder(folder: Path) -> bool:
    """A folder of the user's own files rather than a BEIR folder (no ``corpus.jsonl``)."""
    return folder.is_dir() and not (folder / "corpus.jsonl").is_file()


def _dataset_inputs(ctx: FlowContext) -> list[Path]:
    folder = Path(ctx.recipe.dataset.path).expanduser()
    if not folder.is_dir():
        return []  # a BEIR name: downloaded and checksum-verified, so the name identifies the data
    folder = folder.resolve()  # however the path is spelled
    if is_document_folder(folder):
        return sorted(p for p in folder.rglob("*") if p.is_file() and not any(x.startswith(".") for x in p.parts))
    section = ctx.recipe.dataset
    splits = {s for s in (section.eval_split, section.use_training_labels and section.train_split) if s}
    files = [folder / "corpus.jsonl", *(folder / "qrels" / f"{s}.tsv" for s in sorted(splits))]
    return [*files, folder / "queries.jsonl"] if splits else files


def _dataset_key(recipe: Recipe) -> dict[str, Any]:
    """The dataset section with a folder path made absolute: ``../data/x`` and ``/abs/data/x`` are the same data."""
    section = as_dict(recipe.dataset)
    folder = Path(recipe.dataset.path).expanduser()
    if folder.is_dir():
        section["path"] = str(folder.resolve())
    return section


def _write_train_view(folder: Path, view: Path, split: str, keep: set[str]) -> None:
    """A BEIR folder with only the ``keep`` training queries (the corpus is linked, not copied)."""
    from syntriever_haystack.data.beir import read_qrels, read_queries

    (view / "qrels").mkdir(parents=True, exist_ok=True)
    corpus = view / "corpus.jsonl"
    if corpus.exists() or corpus.is_symlink():
        corpus.unlink()
    try:
        corpus.symlink_to((folder / "corpus.jsonl").resolve())
    except OSError:  # pragma: no cover - file systems without symlinks
        import shutil

        shutil.copyfile(folder / "corpus.jsonl", corpus)
    queries = read_queries(folder / "queries.jsonl")
    with (view / "queries.jsonl").open("w", encoding="utf-8") as handle:
        for qid in sorted(keep):
            handle.write(json.dumps({"_id": qid, "text": queries[qid]}, ensure_ascii=False) + "\n")
    qrels = read_qrels(folder / "qrels" / f"{split}.tsv")
    with (view / "qrels" / f"{split}.tsv").open("w", encoding="utf-8") as handle:
        handle.write("query-id\tcorpus-id\tscore\n")
        for qid in sorted(keep):
            for doc_id, grade in qrels.get(qid, {}).items():
                handle.write(f"{qid}\t{doc_id}\t{grade}\n")


def _convert_documents(ctx: FlowContext, folder: Path) -> Path:
    """A folder of documents → ``data/corpus/corpus.jsonl`` (passages of ~200 words, as ``data from-folder``)."""
    from syntriever_haystack.data.documents import load_documents, write_beir_corpus

    documents = load_documents(folder, progress=ctx.progress)
    if not documents:
        raise FlowError(
            f"dataset.path: {folder} has no readable document (.txt, .md, .html, .pdf, .docx) and no corpus.jsonl; "
            "point it at a folder of documents or a BEIR folder"
        )
    target = ctx.layout.data / "corpus"
    write_beir_corpus(documents, target)
    return target


def run_data(ctx: FlowContext, resume: bool) -> dict[str, Any]:
    """Resolve the corpus (downloading a BEIR name, converting a folder of documents), check the splits; with
    ``dataset.use_training_labels`` restrict the training queries."""
    from syntriever_haystack.data.beir import available_splits, load_beir, read_corpus
    from syntriever_haystack.data.download import resolve_dataset

    section = ctx.recipe.dataset
    source = resolve_dataset(section.path).resolve()
    documents = is_document_folder(source)
    folder = _convert_documents(ctx, source) if documents else source
    splits = available_splits(folder)
    eval_split = section.eval_split
    if eval_split is not None and eval_split not in splits:
        if splits:
            raise FlowError(
                f"dataset.eval_split: {folder} has no split {eval_split!r}; available: {', '.join(splits)} "
                "(or null: no evaluation)"
            )
        eval_split = None  # a corpus without judgments: nothing to evaluate against
    if section.use_training_labels and section.train_split not in splits:
        raise FlowError(
            f"dataset.train_split: {folder} has no split {section.train_split!r} for dataset.use_training_labels; "
            f"available: {', '.join(splits) or 'none'} (or drop --use-training-labels: the default needs none)"
        )
    result: dict[str, Any] = {
        "path": str(folder),
        "name": source.name,
        "source": "documents" if documents else "beir",
        "eval_split": eval_split,
        "labels": "training split (opt-in)" if section.use_training_labels else "none (label-free)",
    }
    ctx.results["data"] = result
    if not section.use_training_labels:
        corpus = read_corpus(folder / "corpus.jsonl")
        eval_queries = len(ctx.full_eval_dataset().queries) if eval_split else 0
        result.update(documents=len(corpus), train_queries=0, eval_queries=eval_queries)
        write_json(ctx.layout.dataset_json, result)
        evaluated = (
            f"{eval_queries:,} evaluation queries ({eval_split}: used only to evaluate)"
            if eval_split
            else "no evaluation split: the report shows the label-free checks only"
        )
        ctx.echo(f"        {result['name']}: {len(corpus):,} documents; no training labels read; {evaluated}")
        return result
    train = load_beir(folder, section.train_split)
    if section.max_train_queries is not None and section.max_train_queries < len(train.qrels):
        keep = set(ctx.sample(sorted(train.qrels), section.max_train_queries))
        _write_train_view(folder, ctx.layout.train_view, section.train_split, keep)
        result["train_view"] = True
        train = load_beir(ctx.layout.train_view, section.train_split)
    evaluation = ctx.full_eval_dataset() if eval_split else None
    overlap = set(train.queries) & set(evaluation.queries if evaluation else ())
    if overlap:
        ctx.warn(f"{len(overlap)} queries are in both the training and the evaluation split")
    result.update(
        documents=len(train.corpus),
        train_queries=len(train.queries),
        eval_queries=len(evaluation.queries) if evaluation else 0,
        warnings=[*train.warnings, *(evaluation.warnings if evaluation else [])],
    )
    write_json(ctx.layout.dataset_json, result)
    ctx.echo(
        f"        {result['name']}: {result['documents']:,} documents, {result['train_queries']:,} training queries "
        f"({section.train_split}, --use-training-labels), {result['eval_queries']:,} evaluation queries ({eval_split})"
    )
    return result


DATA = Step(
    "data",
    "load the corpus and the training / evaluation queries",
    run_data,
    config=lambda r: {"dataset": _dataset_key(r), "seed": r.seed},
    outputs=lambda lay: [lay.dataset_json],
    inputs=_dataset_inputs,
    clean=lambda lay: [lay.train_view, lay.data / "corpus"],
    version=2,
)
