"""Pairwise preferences over a query's top-K documents (Syntriever stage 2, METHOD.md §2)."""

from __future__ import annotations

import itertools
from typing import Any

from haystack import Document, component

from syntriever_haystack.generate.component_support import LLMComponentMixin, run_sync
from syntriever_haystack.generate.judges import PreferenceJudge, preference_judge


@component
class SyntrieverPreferenceJudge(LLMComponentMixin):
    """
    Compare every pair of the given documents for a query and return ``(preferred, rejected)`` verdicts.

    With an LLM judge each pair is asked in both orders (position-bias control) and, by default, only
    consistent verdicts are kept. Place it after a retriever (its ``documents`` are the top-K). Each
    preference is ``{"preferred_id", "rejected_id", "preferred_rank", "rejected_rank", "judge", "votes"}``;
    dropped pairs are counted in ``dropped`` by reason (``inconsistent``, ``tie``, ``failed:<cause>``).

    Usage example:
    ```python
    from haystack.components.generators.chat import OpenAIChatGenerator
    from haystack_integrations.components.generators.syntriever import SyntrieverPreferenceJudge

    judge = SyntrieverPreferenceJudge(chat_generator=OpenAIChatGenerator(model="gpt-4o-mini", max_retries=0))
    result = judge.run(query="causes of anemia", documents=top_5_documents)
    print(result["preferences"], result["dropped"])
    ```
    """

    _extra_init_parameters = ("judge", "both_orders", "require_consistent")

    def __init__(
        self,
        *,
        chat_generator: Any = None,
        judge: str = "llm",
        both_orders: bool = True,
        require_consistent: bool = True,
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
        :param judge: ``llm``, ``embedder:EXPORTED_DIR?margin=X`` or ``ranker:EXPORTED_DIR?margin=X``.
        :param both_orders: Ask each pair in both orders.
        :param require_consistent: Keep only verdicts that agree in both orders.
        :param prompts: Prompt overrides (``preference``).
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
            raise ValueError("judge='llm' needs a chat_generator; or use judge='embedder:DIR?margin=0.0'.")
        self.judge = judge
        self.both_orders = both_orders
        self.require_consistent = require_consistent
        self._judge: PreferenceJudge | None = None
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
            self._judge = preference_judge(
                "llm",
                client=self.client,
                prompt=self._templates["preference"],
                both_orders=self.both_orders,
                require_consistent=self.require_consistent,
            )
        else:
            self._judge = preference_judge(self.judge)

    @component.output_types(preferences=list[dict[str, Any]], dropped=dict[str, int])
    def run(self, query: str, documents: list[Document]) -> dict[str, Any]:
        """
        Judge all pairs of ``documents`` (in the given rank order) for ``query``.

        :param query: The query.
        :param documents: The top-K candidates, best first.
        :returns: ``preferences`` and ``dropped`` (counts by reason).
        """
        if self._client is not None:
            self._client.sync_calls = True
        self._reset_client_loop()
        return run_sync(lambda: self.run_async(query, documents))

    @component.output_types(preferences=list[dict[str, Any]], dropped=dict[str, int])
    async def run_async(self, query: str, documents: list[Document]) -> dict[str, Any]:
        """Asynchronous version of :meth:`run`."""
        import asyncio

        self.warm_up()
        assert self._judge is not None
        judge = self._judge
        pairs = list(itertools.combinations(range(len(documents)), 2))
        verdicts = await asyncio.gather(
            *(judge.compare(query, documents[i].content or "", documents[j].content or "") for i, j in pairs)
        )
        preferences: list[dict[str, Any]] = []
        dropped: dict[str, int] = {}
        for (i, j), verdict in zip(pairs, verdicts, strict=True):
            if verdict.winner is None:
                reason = verdict.reason or "no_verdict"
                dropped[reason] = dropped.get(reason, 0) + 1
                continue
            win, lose = (i, j) if verdict.winner == 0 else (j, i)
            preferences.append(
                {
                    "preferred_id": documents[win].id,
                    "rejected_id": documents[lose].id,
                    "preferred_rank": win + 1,
                    "rejected_rank": lose + 1,
                    "judge": verdict.judge,
                    "votes": verdict.votes,
                }
            )
        return {"preferences": preferences, "dropped": dropped}
