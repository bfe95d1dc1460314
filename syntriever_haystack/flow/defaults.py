"""The quickstart: the default recipe, its budgets, and the command-line switches that change it."""

from __future__ import annotations

from typing import Any, Literal

from syntriever_haystack.flow.recipe import Recipe, load_recipe

Budget = Literal["small", "medium"]

# ``small`` is the default recipe itself (every dataclass default): sized to finish in about 15 minutes on two CPU
# cores with the offline LLM (stage 1 on 16 synthetic examples + the gold pairs, no reranker). ``medium`` generates
# 4x more, trains 2 epochs, adds the LCE reranker and evaluates on a 2,000-document sample: about an hour.
BUDGETS: dict[str, dict[str, Any]] = {
    "small": {},
    "medium": {
        "generate": {"retriever_queries": 64, "reranker_passages": 64},
        "train": {"retriever": {"epochs": 2.0}, "reranker": {"enabled": True}},
        "evaluate": {
            "corpus_sample": 2000,
            "systems": ["bm25", "zero-shot", "trained", "hybrid", "hybrid+rerank"],
            "rerank_depth": 20,
        },
    },
}


def quickstart_recipe(
    *,
    dataset: str | None = None,
    llm: str | None = None,
    api_base_url: str | None = None,
    opensearch_url: str | None = None,
    budget: Budget = "small",
) -> Recipe:
    """The quickstart recipe with the command line's switches applied.

    :param dataset: BEIR folder or name (default ``scifact``, downloaded when missing).
    :param llm: LLM spec (default ``local``: the offline model); ``openai:MODEL`` for any OpenAI-compatible model,
        which then also judges relevance (``generate.judge: llm``).
    :param api_base_url: OpenAI-compatible server URL.
    :param opensearch_url: Serve from OpenSearch at this URL instead of the in-memory store.
    :param budget: ``small`` (default, ~15 min on 2 CPU cores) or ``medium``.
    """
    if budget not in BUDGETS:
        raise ValueError(f"unknown budget {budget!r}; use one of {', '.join(BUDGETS)}")
    overrides: dict[str, Any] = {"name": "quickstart", **BUDGETS[budget]}
    if dataset:
        overrides["dataset"] = {"path": dataset}
    if llm or api_base_url:
        overrides["llm"] = {k: v for k, v in (("spec", llm), ("api_base_url", api_base_url)) if v}
        if llm and not llm.startswith("local"):
            # A capable LLM judges relevance itself (the papers' setting); the offline 270M model judges at chance,
            # so the default judge is the base model's cosine.
            overrides["generate"] = {**overrides.get("generate", {}), "judge": "llm"}
    if opensearch_url:
        overrides["serve"] = {"store": "opensearch", "url": opensearch_url}
    return load_recipe(None, overrides=overrides)
