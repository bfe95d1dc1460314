"""Syntriever stage-1 training examples (p+, p-, q_cot, self-verification) for queries (METHOD.md §1)."""

from __future__ import annotations

from typing import Any

from haystack import Document, component

from syntriever_haystack.generate.component_support import LLMComponentMixin, run_sync
from syntriever_haystack.generate.judges import relevance_judge
from syntriever_haystack.generate.retriever_data import QueryItem, RetrieverDataGenerator


@component
class SyntrieverTrainingExampleGenerator(LLMComponentMixin):
    """
    For each query, ask the chat model for a passage that answers it (``p+``), a plausible one that does not
    (``p-``) and its step-by-step reasoning (``q_cot``); a judge verifies ``p+`` and ``p-``.

    Each example is ``{"id", "query", "positives": [...], "negatives": [...], "provenance": {...}}`` (see
    ``syntriever_haystack.generate.records.RetrieverExample``): gold documents, a verified ``p+`` and ``q_cot``
    are positives; ``p-`` and a rejected ``p+`` are negatives; each entry records its source and judge.

    Usage example:
    ```python
    from haystack.components.generators.chat import OpenAIChatGenerator
    from haystack_integrations.components.generators.syntriever import SyntrieverTrainingExampleGenerator

    generator = SyntrieverTrainingExampleGenerator(
        chat_generator=OpenAIChatGenerator(model="gpt-4o-mini", max_retries=0), cache_path="llm-cache.sqlite"
    )
    examples = generator.run(queries=["what causes iron deficiency anemia"])["examples"]
    ```
    """

    _extra_init_parameters = ("judge", "use_cot", "verify_negative")

    def __init__(
        self,
        *,
        chat_generator: Any,
        judge: str = "llm",
        use_cot: bool = True,
        verify_negative: bool = True,
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

        :param chat_generator: Any Haystack chat generator.
        :param judge: Verifier: ``llm`` (``verify`` prompt), ``embedder:DIR?threshold=X`` or ``ranker:DIR?threshold=X``.
        :param use_cot: Generate ``q_cot`` and use it as a positive.
        :param verify_negative: Judge ``p-`` too and drop it when judged relevant.
        :param prompts: Prompt overrides.
        :param cache_path: SQLite response cache (``None``: no cache).
        :param concurrency: Requests in flight.
        :param requests_per_minute: Request budget per minute.
        :param tokens_per_minute: Token budget per minute.
        :param max_retries: Re-sends after 429/5xx/timeouts.
        :param parse_retries: New requests after an unparseable answer.
        :param structured_output: JSON-schema ``response_format``.
        :param generation_kwargs: Parameters for every request.
        """
        self.judge = judge
        self.use_cot = use_cot
        self.verify_negative = verify_negative
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

    @component.output_types(examples=list[dict[str, Any]], failures=list[dict[str, Any]])
    def run(self, queries: list[str], gold_documents: list[list[Document]] | None = None) -> dict[str, Any]:
        """
        Generate one example per query.

        :param queries: Training queries.
        :param gold_documents: Optional gold passages per query (same order), added as positives.
        :returns: ``examples`` and ``failures`` (``{"query", "step", "cause"}``; such queries have no example).
        """
        self.client.sync_calls = True
        self._reset_client_loop()
        return run_sync(lambda: self.run_async(queries, gold_documents))

    @component.output_types(examples=list[dict[str, Any]], failures=list[dict[str, Any]])
    async def run_async(self, queries: list[str], gold_documents: list[list[Document]] | None = None) -> dict[str, Any]:
        """Asynchronous version of :meth:`run`."""
        import asyncio

        if gold_documents is not None and len(gold_documents) != len(queries):
            raise ValueError(f"gold_documents has {len(gold_documents)} lists for {len(queries)} queries.")
        client = self.client
        judge = relevance_judge(self.judge, client=client, prompt=self._templates["verify"])
        generator = RetrieverDataGenerator(
            client=client,
            prompts=self._templates,
            judge=judge,
            use_cot=self.use_cot,
            verify_negative=self.verify_negative,
        )
        items = [
            QueryItem(
                f"q{i}",
                query,
                tuple((d.id, d.content or "") for d in (gold_documents[i] if gold_documents else [])),
            )
            for i, query in enumerate(queries)
        ]
        results = await asyncio.gather(*(generator.example(item) for item in items))
        examples: list[dict[str, Any]] = []
        failures: list[dict[str, Any]] = []
        for item, result in zip(items, results, strict=True):
            examples.extend(result.records)
            failures.extend({"query": item.query, **f} for f in result.failures)
        return {"examples": examples, "failures": failures}
