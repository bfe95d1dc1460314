"""The quickstart: the default recipe, its budgets, and the command-line switches that change it."""

from __future__ import annotations

from typing import Any, Literal

from syntriever_haystack.flow.recipe import Recipe, load_recipe

Budget = Literal["small", "medium"]

# ``small`` is the default recipe itself (every dataclass default): label-free, sized to finish in about 13.5 minutes
# on two CPU cores with the offline LLM (LLM queries for 150 passages + 600 sentence queries, stage 1, the gate, no
# reranker; 804 s fresh on SciFact). ``medium`` writes 4x the LLM queries, uses 4,000 sentence queries and adds the LCE
# reranker (started from the stage-1 encoder, fused with the first stage, served only through the gate): 74 minutes
# on SciFact on 2 cores, run end to end (docs/training.md).
BUDGETS: dict[str, dict[str, Any]] = {
    "small": {},
    "medium": {
        "generate": {"passages": 600, "sentence_queries": 4000},
        "train": {"reranker": {"enabled": True}},
        "evaluate": {"rerank_depth": 20},
    },
}


def quickstart_recipe(
    *,
    dataset: str | None = None,
    llm: str | None = None,
    api_base_url: str | None = None,
    opensearch_url: str | None = None,
    budget: Budget = "small",
    use_training_labels: bool = False,
) -> Recipe:
    """The quickstart recipe with the command line's switches applied.

    :param dataset: BEIR folder or name (default ``scifact``, downloaded when missing).
    :param llm: LLM spec (default ``local``: the offline model); ``openai:MODEL`` for any OpenAI-compatible model,
        which then also judges relevance (``generate.judge: llm``).
    :param api_base_url: OpenAI-compatible server URL.
    :param opensearch_url: Serve from OpenSearch at this URL instead of the in-memory store.
    :param budget: ``small`` (default, ~13.5 min on 2 CPU cores) or ``medium`` (~75 min).
    :param use_training_labels: Opt in to the training split's queries and judgments (the Syntriever paper's
        setting: synthetic examples for the training queries plus their gold pairs).
    """
    if budget not in BUDGETS:
        raise ValueError(f"unknown budget {budget!r}; use one of {', '.join(BUDGETS)}")
    overrides: dict[str, Any] = {"name": "quickstart", **BUDGETS[budget]}
    if dataset or use_training_labels:
        overrides["dataset"] = {
            **({"path": dataset} if dataset else {}),
            **({"use_training_labels": True} if use_training_labels else {}),
        }
    if llm or api_base_url:
        overrides["llm"] = {k: v for k, v in (("spec", llm), ("api_base_url", api_base_url)) if v}
        if llm and not llm.startswith("local"):
            # A capable LLM judges relevance itself (the papers' setting); the offline 270M model judges at chance,
            # so the default judge is the base model's cosine.
            overrides["generate"] = {**overrides.get("generate", {}), "judge": "llm"}
    if opensearch_url:
        overrides["serve"] = {"store": "opensearch", "url": opensearch_url}
    return load_recipe(None, overrides=overrides)
