"""First-stage candidates for preference pairs and reranker hard negatives: any retriever, one interface.

- :class:`SpecRetriever`: the evaluation's SPEC strings (``bm25``, ``dense:EXPORTED_DIR``, ``hybrid:DIR``,
  ``...+rerank:DIR``) over an in-memory corpus, with the same embedding cache as ``syntriever evaluate``.
- :class:`HaystackRetriever`: any Haystack retriever component (``InMemoryBM25Retriever``,
  ``OpenSearchEmbeddingRetriever``, ...), optionally behind a text embedder.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol

from syntriever_haystack.data.beir import BeirDataset, Passage
from syntriever_haystack.evaluate.metrics import rank_documents
from syntriever_haystack.evaluate.systems import (
    EmbeddingCache,
    SystemRunner,
    check_system,
    default_cache_dir,
    parse_system,
)
from syntriever_haystack.specs import SystemSpec

Candidates = dict[str, list[tuple[str, float]]]  # query id → [(doc id, score)], best first


class CandidateRetriever(Protocol):
    name: str

    def retrieve(self, queries: Mapping[str, str], top_k: int) -> Candidates: ...


class SpecRetriever:
    """Retrieve with a SPEC string over ``corpus``.

    :param spec: ``bm25``, ``dense:EXPORTED_DIR``, ``hybrid:EXPORTED_DIR`` or any ``syntriever evaluate`` SPEC.
    :param corpus: Document id → :class:`Passage`.
    :param include_title: Index ``title + text`` (BEIR convention).
    :param cache: Embedding cache (default: the user cache folder, shared with ``syntriever evaluate``).
    """

    def __init__(
        self,
        spec: SystemSpec | str,
        corpus: Mapping[str, Passage],
        *,
        include_title: bool = True,
        cache: EmbeddingCache | None = None,
        progress: bool = True,
    ) -> None:
        self.system = spec if isinstance(spec, SystemSpec) else parse_system(spec)
        check_system(self.system)
        self.name = str(self.system)
        self.corpus = dict(corpus)
        self.include_title = include_title
        self.cache = cache
        self.progress = progress

    def retrieve(self, queries: Mapping[str, str], top_k: int) -> Candidates:
        if not queries:
            return {}
        dataset = BeirDataset(
            name="candidates", path=None, split="generated", corpus=self.corpus, queries=dict(queries), qrels={}
        )
        runner = SystemRunner(
            dataset,
            depth=top_k,
            include_title=self.include_title,
            cache=self.cache or EmbeddingCache(default_cache_dir() / "embeddings"),
            progress=self.progress,
            query_batch_size=32,  # candidates for training data, not served vectors: batched
        )
        run, _ = runner.run(self.system)
        return {qid: rank_documents(run.get(qid, {}))[:top_k] for qid in queries}


class HaystackRetriever:
    """Adapt a Haystack retriever component.

    :param retriever: A component whose ``run`` takes ``query`` (text retrievers) or ``query_embedding``.
    :param text_embedder: For embedding retrievers: a text embedder whose ``run(text)`` gives ``embedding``.
    :param id_field: Meta field holding the corpus id (default: ``Document.id``).
    """

    def __init__(self, retriever: Any, *, text_embedder: Any = None, id_field: str | None = None) -> None:
        self.retriever = retriever
        self.text_embedder = text_embedder
        self.id_field = id_field
        self.name = f"haystack:{type(retriever).__name__}"

    def retrieve(self, queries: Mapping[str, str], top_k: int) -> Candidates:
        for component in (self.retriever, self.text_embedder):
            if component is not None and hasattr(component, "warm_up"):
                component.warm_up()
        results: Candidates = {}
        for qid, text in queries.items():
            if self.text_embedder is not None:
                embedding = self.text_embedder.run(text=text)["embedding"]
                documents = self.retriever.run(query_embedding=embedding, top_k=top_k)["documents"]
            else:
                documents = self.retriever.run(query=text, top_k=top_k)["documents"]
            ranked = []
            for document in documents:
                doc_id = str(document.meta.get(self.id_field)) if self.id_field else document.id
                ranked.append((doc_id, float(document.score or 0.0)))
            results[qid] = ranked
        return results
