"""What every stage works from: the texts of one dataset split, integer stage options, per-query progress bars."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from syntriever_haystack.data.beir import BeirDataset
from syntriever_haystack.specs import StageSpec

__all__ = ["SplitTexts", "int_option", "progress"]


@dataclass
class SplitTexts:
    """Documents and queries of a split, in corpus / query order.

    :param corpus_key: What identifies the indexed corpus in embedding-cache keys.
    """

    doc_ids: list[str]
    doc_texts: list[str]
    query_ids: list[str]
    query_texts: list[str]
    corpus_key: dict[str, Any] = field(default_factory=dict)
    text_of: dict[str, str] = field(init=False)

    def __post_init__(self) -> None:
        self.text_of = dict(zip(self.doc_ids, self.doc_texts, strict=True))

    @classmethod
    def from_dataset(cls, dataset: BeirDataset, *, include_title: bool = True) -> SplitTexts:
        """Index ``title + " " + text`` (BEIR convention) with ``include_title``, else the text alone."""
        doc_ids = dataset.doc_ids
        query_ids = list(dataset.queries)
        return cls(
            doc_ids=doc_ids,
            doc_texts=dataset.doc_texts(include_title=include_title),
            query_ids=query_ids,
            query_texts=[dataset.queries[q] for q in query_ids],
            corpus_key={
                "corpus": dataset.fingerprint(),
                "corpus_name": dataset.name,
                "documents": len(doc_ids),
                "include_title": include_title,
            },
        )

    def queries(self) -> list[tuple[str, str]]:
        """``(query id, query text)`` pairs."""
        return list(zip(self.query_ids, self.query_texts, strict=True))


def progress(items: list[Any], desc: str, *, enabled: bool) -> Any:
    """``items`` behind a per-query progress bar (hidden unless ``enabled``)."""
    from tqdm.auto import tqdm

    return tqdm(items, desc=desc, disable=not enabled, unit="query")


def int_option(stage: StageSpec, key: str, default: int) -> int:
    """The integer parameter ``key`` of ``stage``, or ``default`` when absent."""
    value = stage.int_option(key, default)
    assert value is not None
    return value
