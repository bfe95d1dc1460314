"""Relevance labels for (query, document) pairs by a pluggable judge: an LLM or a model score."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from haystack import Document, component

from syntriever_haystack.generate.component_support import LLMComponentMixin, run_sync
from syntriever_haystack.generate.judges import RelevanceJudge, relevance_judge


@component
class SyntrieverRelevanceLabeler(LLMComponentMixin):
    """
    Label retrieved documents as relevant or not to a query, and record which judge decided.

    ``judge="llm"`` asks the chat model (``relevance`` prompt, yes/no); ``judge="embedder:DIR?threshold=0.5"``
    or ``"ranker:DIR?threshold=0.5"`` thresholds the score of an exported model instead — the reliable choice
    with small local LLMs, which judge relevance at chance. Output documents are copies with
    ``meta["relevance_label"]`` (``True``/``False``/``None`` if the judge failed), ``meta["relevance_judge"]``
    and ``meta["relevance_score"]`` (score judges).

    Usage example:
    ```python
    from haystack import Document
    from haystack.components.generators.chat import OpenAIChatGenerator
    from haystack_integrations.components.generators.syntriever import SyntrieverRelevanceLabeler

    labeler = SyntrieverRelevanceLabeler(chat_generator=OpenAIChatGenerator(model="gpt-4o-mini", max_retries=0))
    docs = labeler.run(query="causes of anemia", documents=[Document(content="Iron deficiency ...")])["documents"]
    print(docs[0].meta["relevance_label"], docs[0].meta["relevance_judge"])
    ```
    """

    _extra_init_parameters = ("judge", "prompt_name")

    def __init__(
        self,
        *,
        chat_generator: Any = None,
        judge: str = "llm",
        prompt_name: str = "relevance",
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

        :param chat_generator: Any Haystack chat generator (required for ``judge="llm"``).
        :param judge: ``llm``, ``embedder:EXPORTED_DIR?threshold=X`` or ``ranker:EXPORTED_DIR?threshold=X``.
        :param prompt_name: ``relevance`` (is it relevant) or ``verify`` (does it answer the query).
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
        if judge == "llm" and chat_generator is None:
            raise ValueError("judge='llm' needs a chat_generator; or use judge='embedder:DIR?threshold=0.5'.")
        self.judge = judge
        self.prompt_name = prompt_name
        self._judge: RelevanceJudge | None = None
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

    def warm_up(self) -> None:
        """Load the judge (and the chat generator for ``judge="llm"``); idempotent."""
        if self._judge is not None:
            return
        if self.judge == "llm":
            LLMComponentMixin.warm_up(self)
            self._judge = relevance_judge("llm", client=self.client, prompt=self._templates[self.prompt_name])
        else:
            self._judge = relevance_judge(self.judge)

    @component.output_types(documents=list[Document])
    def run(self, query: str, documents: list[Document]) -> dict[str, list[Document]]:
        """
        Label ``documents`` for ``query``.

        :param query: The query.
        :param documents: Candidates (``content`` is judged).
        :returns: ``documents``: copies with ``relevance_label``, ``relevance_judge`` and ``relevance_score`` in meta.
        """
        if self._client is not None:
            self._client.sync_calls = True
        self._reset_client_loop()
        return run_sync(lambda: self.run_async(query, documents))

    @component.output_types(documents=list[Document])
    async def run_async(self, query: str, documents: list[Document]) -> dict[str, list[Document]]:
        """Asynchronous version of :meth:`run`."""
        self.warm_up()
        assert self._judge is not None
        verdicts = await self._judge.judge(query, [d.content or "" for d in documents])
        labelled = [
            replace(
                d,
                meta={
                    **d.meta,
                    "relevance_label": v.label,
                    "relevance_judge": v.judge,
                    "relevance_score": v.score,
                    **({"relevance_failure": v.failure} if v.failure else {}),
                },
            )
            for d, v in zip(documents, verdicts, strict=True)
        ]
        return {"documents": labelled}
