"""``data``: resolve (download) the BEIR dataset, check both splits, restrict the training queries."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from syntriever_haystack.flow.context import FlowContext, FlowError, write_json
from syntriever_haystack.flow.recipe import Recipe
from syntriever_haystack.flow.step import Step, as_dict


def _dataset_inputs(ctx: FlowContext) -> list[Path]:
    folder = Path(ctx.recipe.dataset.path).expanduser()
    if not folder.is_dir():
        return []  # a BEIR name: downloaded and checksum-verified, so the name identifies the data
    folder = folder.resolve()  # however the path is spelled
    splits = {ctx.recipe.dataset.train_split, ctx.recipe.dataset.eval_split}
    return [folder / "corpus.jsonl", folder / "queries.jsonl", *(folder / "qrels" / f"{s}.tsv" for s in sorted(splits))]


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


def run_data(ctx: FlowContext, resume: bool) -> dict[str, Any]:
    """Resolve the dataset (downloading a BEIR name), check both splits, restrict the training queries."""
    from syntriever_haystack.data.beir import available_splits, load_beir
    from syntriever_haystack.data.download import resolve_dataset

    section = ctx.recipe.dataset
    folder = resolve_dataset(section.path).resolve()
    splits = available_splits(folder)
    for key, split in (("dataset.train_split", section.train_split), ("dataset.eval_split", section.eval_split)):
        if split not in splits:
            raise FlowError(f"{key}: {folder} has no split {split!r}; available: {', '.join(splits) or 'none'}")
    result: dict[str, Any] = {"path": str(folder), "name": folder.name}
    ctx.results["data"] = result
    train = load_beir(folder, section.train_split)
    if section.max_train_queries is not None and section.max_train_queries < len(train.qrels):
        keep = set(ctx.sample(sorted(train.qrels), section.max_train_queries))
        _write_train_view(folder, ctx.layout.train_view, section.train_split, keep)
        result["train_view"] = True
        train = load_beir(ctx.layout.train_view, section.train_split)
    evaluation = ctx.full_eval_dataset()
    overlap = set(train.queries) & set(evaluation.queries)
    if overlap:
        ctx.warn(f"{len(overlap)} queries are in both the training and the evaluation split")
    result.update(
        documents=len(evaluation.corpus),
        train_queries=len(train.queries),
        eval_queries=len(evaluation.queries),
        warnings=[*train.warnings, *evaluation.warnings],
    )
    write_json(ctx.layout.dataset_json, result)
    ctx.echo(
        f"        {result['name']}: {result['documents']:,} documents, {result['train_queries']:,} training queries "
        f"({section.train_split}), {result['eval_queries']:,} evaluation queries ({section.eval_split})"
    )
    return result


DATA = Step(
    "data",
    "load the corpus and the training / evaluation queries",
    run_data,
    config=lambda r: {"dataset": _dataset_key(r), "seed": r.seed},
    outputs=lambda lay: [lay.dataset_json],
    inputs=_dataset_inputs,
    clean=lambda lay: [lay.train_view],
)
