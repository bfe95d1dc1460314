"""Synthetic queries for documents, written by any chat model (METHOD.md §3 step 1)."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from haystack import Document, component

from syntriever_haystack.generate.component_support import LLMComponentMixin, run_sync
from syntriever_haystack.generate.filters import QueryFilter, normalize_text
from syntriever_haystack.generate.records import stable_id
from syntriever_haystack.generate.reranker_data import QUERY_TYPES


@component
class SyntrieverQueryGenerator(LLMComponentMixin):
    """
    Write ``n`` search queries per document (question, keywords, claim), filtered for quality.

    Each output document is a copy of the input with ``meta["synthetic_queries"]``: a list of
    ``{"query", "query_type", "query_id", "rejected"}`` where ``rejected`` is ``None`` or the filter's reason
    (``empty``, ``truncated``, ``copies_passage``, ``copies_example``, ``duplicate``, ``near_duplicate``,
    ``too_long``). The
    ``queries`` output lists only the accepted ones, with ``source_id``. Answers the model could not give in
    the expected format are retried and then reported in ``failures``; nothing is guessed.

    Usage example:
    ```python
    from haystack import Document
    from haystack.components.generators.chat import OpenAIChatGenerator
    from haystack_integrations.components.generators.syntriever import SyntrieverQueryGenerator

    generator = SyntrieverQueryGenerator(chat_generator=OpenAIChatGenerator(model="gpt-4o-mini", max_retries=0),
                                         queries_per_document=3, cache_path="llm-cache.sqlite")
    result = generator.run(documents=[Document(content="Iron deficiency anemia is caused by blood loss...")])
    print(result["queries"])
    ```
    """

    _extra_init_parameters = ("queries_per_document", "query_types")

    def __init__(
        self,
        *,
        chat_generator: Any,
        queries_per_document: int = 3,
        query_types: list[str] | None = None,
        prompts: dict[str, dict[str, Any]] | None = None,
        cache_path: str | None = None,
        concurrency: int = 8,
        requests_per_minute: float | None = None,
        tokens_per_minute: float | None = None,
        max_retries: int = 6,
        parse_retries: int = 2,
        structured_output: bool = False,
        generation_kwargs: dict[str, Any] | None = None,
    ) -> None:
        """
        Create the component.

        :param chat_generator: Any Haystack chat generator (``OpenAIChatGenerator`` with ``max_retries=0`` for
            OpenAI and OpenAI-compatible servers, ``GGUFChatGenerator`` offline).
        :param queries_per_document: ``n`` queries per document; their types cycle through ``query_types``.
        :param query_types: Default ``["question", "keywords", "claim"]``.
        :param prompts: Prompt overrides ``{name: {field: value}}`` (see ``syntriever_haystack.generate.prompts``).
        :param cache_path: SQLite response cache: a rerun makes no LLM calls. ``None``: no cache.
        :param concurrency: Requests in flight.
        :param requests_per_minute: Request budget per minute.
        :param tokens_per_minute: Token budget per minute.
        :param max_retries: Re-sends after 429/5xx/timeouts (honouring ``Retry-After``).
        :param parse_retries: New requests after an unparseable answer.
        :param structured_output: Ask for JSON with a JSON-schema ``response_format``.
        :param generation_kwargs: Parameters for every request (override the prompt's defaults).
        """
        self.queries_per_document = queries_per_document
        self.query_types = query_types or list(QUERY_TYPES)
        self._init_llm(
            chat_generator=chat_generator,
            prompts=prompts,
            cache_path=cache_path,
            concurrency=concurrency,
            requests_per_minute=requests_per_minute,
            tokens_per_minute=tokens_per_minute,
            max_retries=max_retries,
            parse_retries=parse_retries,
            structured_output=structured_output,
            generation_kwargs=generation_kwargs,
        )

    @component.output_types(documents=list[Document], queries=list[dict[str, Any]], failures=list[dict[str, Any]])
    def run(self, documents: list[Document], queries_per_document: int | None = None) -> dict[str, Any]:
        """
        Generate queries for ``documents``.

        :param documents: Source passages (``content`` is used).
        :param queries_per_document: Overrides the init value for this run.
        :returns: ``documents`` (copies with ``meta["synthetic_queries"]``), ``queries`` (accepted ones) and
            ``failures`` (``{"document_id", "sample", "cause"}``).
        """
        self.client.sync_calls = True
        self._reset_client_loop()
        return run_sync(lambda: self.run_async(documents, queries_per_document))

    @component.output_types(documents=list[Document], queries=list[dict[str, Any]], failures=list[dict[str, Any]])
    async def run_async(self, documents: list[Document], queries_per_document: int | None = None) -> dict[str, Any]:
        """Asynchronous version of :meth:`run`."""
        import asyncio

        n = queries_per_document or self.queries_per_document
        prompt = self._templates["queries"]
        query_filter = QueryFilter()
        example_outputs = {normalize_text(e.output) for e in prompt.examples}
        client = self.client

        async def one(document: Document) -> list[Any]:
            calls = [
                client.ask(
                    prompt,
                    {"passage": document.content or "", "query_type": self.query_types[i % len(self.query_types)]},
                    sample=i,
                )
                for i in range(n)
            ]
            return list(await asyncio.gather(*calls))

        answers_per_document = await asyncio.gather(*(one(d) for d in documents))
        out_documents: list[Document] = []
        queries: list[dict[str, Any]] = []
        failures: list[dict[str, Any]] = []
        for document, answers in zip(documents, answers_per_document, strict=True):
            generated = []
            for sample, answer in enumerate(answers):
                query_type = self.query_types[sample % len(self.query_types)]
                if not answer.ok:
                    failures.append({"document_id": document.id, "sample": sample, "cause": answer.failure})
                    continue
                reason = query_filter.check(answer.value, passage=document.content, passage_id=document.id)
                if reason is None and normalize_text(answer.value) in example_outputs:
                    reason = "copies_example"
                entry = {
                    "query": answer.value,
                    "query_type": query_type,
                    "query_id": stable_id("query", document.id, str(sample)),
                    "rejected": reason,
                    "prompt": answer.prompt,
                    "model": answer.model,
                }
                generated.append(entry)
                if reason is None:
                    queries.append({**entry, "source_id": document.id})
            out_documents.append(replace(document, meta={**document.meta, "synthetic_queries": generated}))
        return {"documents": out_documents, "queries": queries, "failures": failures}
