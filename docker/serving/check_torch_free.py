"""Build-time check of the serving image: no torch stack is installed, and the serving path imports without it.

    python check_torch_free.py [--wrapper PIPELINE_WRAPPER_PY] [--skip-distribution-check]

Exits 1 naming what is wrong. It also imports (without running) the Hayhooks ``pipeline_wrapper.py`` shipped in
the installed package (``syntriever_haystack.serve.hayhooks.PIPELINES_DIR``), or the one ``--wrapper`` names.
``--skip-distribution-check`` only checks the imports: the test-suite runs it that way, in a process where importing
torch raises, because its own environment has torch installed.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.metadata
import importlib.util
import sys
from pathlib import Path

# Import names that must be absent from the image.
FORBIDDEN_MODULES = ("torch", "torchvision", "transformers", "sentence_transformers", "optimum", "tensorflow")
# What the serving process imports: Hayhooks, the components, both document stores, the pipeline factory.
SERVING_MODULES = (
    "hayhooks.server.app",
    "haystack.document_stores.in_memory",
    "haystack_integrations.document_stores.opensearch",
    "haystack_integrations.components.embedders.syntriever",
    "haystack_integrations.components.rankers.syntriever",
    "syntriever_haystack.opensearch.store",
    "syntriever_haystack.serve.memory_store",
    "syntriever_haystack.serve.pipelines",
    "syntriever_haystack.serve.hayhooks.search",
)


def installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except ImportError:  # an import blocker (the test-suite's) counts as absent
        return False


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--wrapper", type=Path, help="a Hayhooks pipeline_wrapper.py to import (default: the package's)"
    )
    parser.add_argument("--skip-distribution-check", action="store_true")
    args = parser.parse_args()
    problems: list[str] = []
    if not args.skip_distribution_check:
        problems += [f"module {name!r} is installed" for name in FORBIDDEN_MODULES if installed(name)]
        problems += [
            f"distribution {dist.metadata['Name']!r} is installed (CUDA libraries mean a torch build came along)"
            for dist in importlib.metadata.distributions()
            if (dist.metadata["Name"] or "").lower().startswith("nvidia-")
        ]
    for module in SERVING_MODULES:
        try:
            importlib.import_module(module)
        except Exception as exc:
            problems.append(f"import {module} failed: {type(exc).__name__}: {exc}")
    if args.wrapper is None:
        try:
            from syntriever_haystack.serve.hayhooks import PIPELINES_DIR

            args.wrapper = PIPELINES_DIR / "search" / "pipeline_wrapper.py"
        except Exception as exc:
            problems.append(f"import syntriever_haystack.serve.hayhooks failed: {type(exc).__name__}: {exc}")
    if args.wrapper is not None:
        try:
            spec = importlib.util.spec_from_file_location("pipeline_wrapper", args.wrapper)
            if spec is None or spec.loader is None:
                raise ImportError("not a Python file")
            spec.loader.exec_module(importlib.util.module_from_spec(spec))
        except Exception as exc:
            problems.append(f"import {args.wrapper} failed: {type(exc).__name__}: {exc}")
    loaded = sorted(name for name in FORBIDDEN_MODULES if name in sys.modules)
    if loaded:
        problems.append(f"the serving imports loaded {loaded}")
    for problem in problems:
        print(f"check_torch_free: {problem}", file=sys.stderr)
    if not problems:
        print(f"check_torch_free: ok ({len(SERVING_MODULES)} serving modules import without torch)")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
