"""The ``syntriever run``, ``syntriever quickstart`` and ``syntriever recipe`` commands.

- ``syntriever quickstart [--dataset PATH|NAME] [--llm SPEC] [--opensearch-url URL] [--budget small|medium]``:
  the embedded default recipe, from the corpus to a served, evaluated search;
- ``syntriever run RECIPE.yaml [--out DIR] [--force-step STEP] [--until STEP]``: any recipe;
- ``syntriever recipe dump`` prints the default recipe (every setting, with its default) to start one from;
  ``syntriever recipe check RECIPE.yaml`` validates one and prints it resolved.

Rerunning a command skips the steps whose outputs are up to date and resumes an interrupted one.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from syntriever_haystack.flow.steps import STEP_NAMES

_STEPS_HELP = ", ".join(STEP_NAMES)


def _add_run_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--force-step",
        action="append",
        default=[],
        metavar="STEP",
        choices=STEP_NAMES,
        help=f"rerun STEP (and everything after it) even if up to date; repeatable. Steps: {_STEPS_HELP}",
    )
    parser.add_argument("--until", metavar="STEP", choices=STEP_NAMES, help="stop after STEP")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")


def _execute(recipe: object, out: Path, args: argparse.Namespace) -> int:
    from syntriever_haystack.flow.runner import FlowRunner

    runner = FlowRunner(recipe, out, progress=not args.quiet)  # type: ignore[arg-type]
    summary = runner.run(force_steps=args.force_step, until=args.until)
    return 0 if summary.complete or args.until else 1


def _cmd_run(args: argparse.Namespace) -> int:
    from syntriever_haystack.flow.recipe import load_recipe

    recipe = load_recipe(args.recipe)
    out = Path(args.out) if args.out else Path("runs") / recipe.name
    return _execute(recipe, out, args)


def _cmd_quickstart(args: argparse.Namespace) -> int:
    from syntriever_haystack.flow.defaults import quickstart_recipe

    recipe = quickstart_recipe(
        dataset=args.dataset,
        llm=args.llm,
        api_base_url=args.api_base_url,
        opensearch_url=args.opensearch_url,
        budget=args.budget,
        use_training_labels=args.use_training_labels,
    )
    return _execute(recipe, Path(args.out), args)


def _cmd_recipe_dump(args: argparse.Namespace) -> int:
    from syntriever_haystack.flow.defaults import quickstart_recipe
    from syntriever_haystack.flow.recipe import dump_recipe

    recipe = quickstart_recipe(dataset=args.dataset, budget=args.budget)
    print(
        dump_recipe(recipe, header=f"# syntriever recipe ({args.budget} budget); run it with: syntriever run FILE"),
        end="",
    )
    return 0


def _cmd_recipe_check(args: argparse.Namespace) -> int:
    from syntriever_haystack.flow.recipe import dump_recipe, load_recipe

    print(dump_recipe(load_recipe(args.recipe), header=f"# {args.recipe}: valid; resolved:"), end="")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``run``, ``quickstart`` and ``recipe`` to the ``syntriever`` parser."""
    run = sub.add_parser(
        "run",
        help="run a recipe: corpus → synthetic data → retriever + reranker → ONNX → pipelines → index → evaluation",
        description="Run every step of RECIPE.yaml. A step whose output is up to date is skipped, a changed setting "
        "reruns its step and everything downstream, an interrupted step resumes. Outputs: models/ (ONNX), "
        "pipelines/ (YAML), data/ (JSONL), report/ (Markdown, JSON, PNG), flow.json (timings).",
    )
    run.add_argument("recipe", metavar="RECIPE.yaml", help="the recipe (`syntriever recipe dump` prints one)")
    run.add_argument("--out", default=None, help="output folder (default: runs/<recipe name>)")
    _add_run_options(run)
    run.set_defaults(func=_cmd_run)

    quick = sub.add_parser(
        "quickstart",
        help="the default recipe on SciFact (or --dataset): ~13.5 min on 2 CPU cores, offline",
        description="Run the embedded default recipe, label-free: the offline local LLM writes queries for sampled "
        "passages of the corpus, sentence queries and mined hard negatives add volume, the offline MiniLM base is "
        "trained on them (Syntriever stage 1), exported to ONNX, checked by the ship gate on held-out synthetic "
        "queries, served in Haystack pipelines (in-memory store), evaluated against BM25 and the zero-shot base model "
        "when the dataset has judgments, and a sample query is answered. --budget medium also trains the LCE "
        "reranker (fused with the first stage, served only if it passes the gate). Rerun to resume or to skip what is "
        "done.",
    )
    quick.add_argument(
        "--dataset",
        default="scifact",
        metavar="PATH|NAME",
        help="a folder of documents (txt/md/html/pdf/docx), a BEIR folder, or a BEIR name to download (scifact)",
    )
    quick.add_argument(
        "--use-training-labels",
        action="store_true",
        help="opt in: also train on the dataset's training split (its queries and judgments); reported as such",
    )
    quick.add_argument("--out", default=str(Path("runs") / "quickstart"), help="output folder (runs/quickstart)")
    quick.add_argument(
        "--llm",
        default=None,
        metavar="SPEC",
        help="LLM: local (default, offline) or openai:MODEL (any OpenAI-compatible; it then judges relevance too)",
    )
    quick.add_argument("--api-base-url", default=None, metavar="URL", help="OpenAI-compatible server for --llm")
    quick.add_argument("--opensearch-url", default=None, metavar="URL", help="serve from OpenSearch instead of memory")
    quick.add_argument("--budget", choices=["small", "medium"], default="small", help="small (default) or medium")
    _add_run_options(quick)
    quick.set_defaults(func=_cmd_quickstart)

    recipe = sub.add_parser("recipe", help="print the default recipe, or check one")
    actions = recipe.add_subparsers(dest="recipe_command", required=True, metavar="ACTION")
    dump = actions.add_parser("dump", help="print the default (quickstart) recipe as YAML")
    dump.add_argument("--budget", choices=["small", "medium"], default="small")
    dump.add_argument("--dataset", default=None, metavar="PATH|NAME", help="dataset to put in the recipe")
    dump.set_defaults(func=_cmd_recipe_dump)
    check = actions.add_parser("check", help="validate a recipe and print it with every default filled in")
    check.add_argument("recipe", metavar="RECIPE.yaml")
    check.set_defaults(func=_cmd_recipe_check)
