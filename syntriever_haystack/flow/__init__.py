"""The end-to-end flow: ``syntriever run RECIPE.yaml`` and ``syntriever quickstart``.

A recipe (:mod:`~syntriever_haystack.flow.recipe`) lists every choice; the runner
(:mod:`~syntriever_haystack.flow.runner`) runs the steps (:mod:`~syntriever_haystack.flow.steps`) from the corpus
to a served, evaluated search, skipping what is up to date and resuming what stopped half-way.
"""

from syntriever_haystack.flow.defaults import BUDGETS, quickstart_recipe
from syntriever_haystack.flow.recipe import Recipe, RecipeError, dump_recipe, load_recipe
from syntriever_haystack.flow.runner import FlowRunner
from syntriever_haystack.flow.summary import RunSummary

__all__ = [
    "BUDGETS",
    "FlowRunner",
    "Recipe",
    "RecipeError",
    "RunSummary",
    "dump_recipe",
    "load_recipe",
    "quickstart_recipe",
]
