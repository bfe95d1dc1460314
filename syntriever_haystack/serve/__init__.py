"""Serving: Haystack pipeline factories (indexing, query, hybrid + rerank) and the saved in-memory store.

Above the components (``haystack_integrations.components.*.syntriever``), which run on ``syntriever_haystack.runtime``.
"""
