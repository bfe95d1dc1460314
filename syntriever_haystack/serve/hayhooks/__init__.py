"""A saved syntriever query pipeline served by Hayhooks (Haystack's pipeline server) as ``POST /search/run``.

:data:`PIPELINES_DIR` is the folder to hand Hayhooks (``HAYHOOKS_PIPELINES_DIR`` or ``hayhooks run
--pipelines-dir``): it holds one pipeline, ``search``, whose ``pipeline_wrapper.py`` serves the YAML named by the
environment (:func:`pipeline_path`). ``syntriever serve RUN_DIR`` and the Docker image both serve that same file.

Environment:

- ``SYNTRIEVER_PIPELINE``: the query pipeline YAML (e.g. ``runs/quickstart/pipelines/query-rerank.yaml``); a
  relative path is taken relative to ``SYNTRIEVER_RUN`` when that is set, else to the current directory.
- ``SYNTRIEVER_RUN``: a run folder (``syntriever quickstart`` / ``syntriever run``); without
  ``SYNTRIEVER_PIPELINE`` its ``pipelines/query.yaml`` is served.

This module imports neither Hayhooks nor Haystack (the CLI reads it to say what to install); the wrapper class is
:class:`syntriever_haystack.serve.hayhooks.search.SearchWrapper`.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

from syntriever_haystack.errors import SyntrieverError

__all__ = ["PIPELINES_DIR", "PIPELINE_ENV", "PIPELINE_NAME", "QUERY_YAML", "RUN_ENV", "pipeline_path"]

PIPELINES_DIR = Path(__file__).resolve().parent / "pipelines"
PIPELINE_NAME = "search"
PIPELINE_ENV = "SYNTRIEVER_PIPELINE"
RUN_ENV = "SYNTRIEVER_RUN"
QUERY_YAML = Path("pipelines") / "query.yaml"
RERANK_YAML = Path("pipelines") / "query-rerank.yaml"


def pipeline_path(environ: Mapping[str, str] | None = None) -> Path:
    """The query pipeline YAML the ``search`` wrapper serves: ``$SYNTRIEVER_PIPELINE``, else
    ``$SYNTRIEVER_RUN/pipelines/query.yaml``.

    :param environ: The environment (default: ``os.environ``).
    :raises SyntrieverError: Neither variable is set.
    """
    env = os.environ if environ is None else environ
    pipeline = (env.get(PIPELINE_ENV) or "").strip()
    run = (env.get(RUN_ENV) or "").strip()
    if pipeline:
        path = Path(pipeline).expanduser()
        return path if path.is_absolute() or not run else Path(run).expanduser() / path
    if run:
        return Path(run).expanduser() / QUERY_YAML
    raise SyntrieverError(
        f"nothing to serve: set {RUN_ENV} to a run folder (its {QUERY_YAML} is served) or {PIPELINE_ENV} to a query "
        "pipeline YAML (e.g. RUN/pipelines/query-rerank.yaml), or start it with `syntriever serve RUN_DIR`."
    )
