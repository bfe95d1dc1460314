"""Synthetic training data from any chat LLM: prompts, cache, judges, generators (METHOD.md §1–4)."""
