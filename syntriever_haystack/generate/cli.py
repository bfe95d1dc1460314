"""The ``syntriever generate`` command.

- ``syntriever generate retriever --dataset D [--split train]``: stage-1 examples (p+, p-, q_cot, verification);
- ``syntriever generate preferences --dataset D --retriever SPEC``: stage-2 preference triples over the top-K;
- ``syntriever generate reranker --dataset D | --documents DIR``: synthetic queries, candidates, labels → LCE groups;
- ``syntriever generate export FILE --format beir|sentence-transformers|flagembedding --out PATH``.

Every run writes into ``--out`` (default ``runs/generate/<task>``): the JSONL records, ``summary.json`` and
``summary.md`` (calls, cache hits, tokens, cost, failures by cause), and the response cache
``llm-cache.sqlite`` (``--cache`` to share one between runs). Rerunning the same command makes no LLM calls;
a killed run resumes where it stopped.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

from syntriever_haystack.cli_types import NON_NEGATIVE_FLOAT, NON_NEGATIVE_INT, POSITIVE_FLOAT, POSITIVE_INT
from syntriever_haystack.errors import SyntrieverError
from syntriever_haystack.specs import JudgeSpec, LLMSpec, SystemSpec

# ------------------------------------------------------------------------------------------------ argument types


# ------------------------------------------------------------------------------------------------ shared setup
def _add_llm_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("LLM")
    group.add_argument(
        "--llm",
        default="local",
        help="local[:gemma3-270m|smollm2-135m|FILE.gguf] (offline, default) or openai:MODEL / MODEL "
        "(OpenAI or any OpenAI-compatible server with --api-base-url)",
    )
    group.add_argument("--api-base-url", default=None, help="OpenAI-compatible server, e.g. http://localhost:8000/v1")
    group.add_argument("--api-key-env", default="OPENAI_API_KEY", help="environment variable holding the API key")
    group.add_argument("--concurrency", type=POSITIVE_INT, default=8, help="requests in flight, >= 1 (default 8)")
    group.add_argument("--rpm", type=POSITIVE_FLOAT, default=None, help="requests per minute limit (> 0)")
    group.add_argument("--tpm", type=POSITIVE_FLOAT, default=None, help="tokens per minute limit (> 0)")
    group.add_argument(
        "--max-retries", type=NON_NEGATIVE_INT, default=6, help="re-sends after 429/5xx/timeouts, >= 0 (default 6)"
    )
    group.add_argument("--timeout", type=POSITIVE_FLOAT, default=120.0, help="seconds to wait for one response (> 0)")
    group.add_argument(
        "--parse-retries", type=NON_NEGATIVE_INT, default=2, help="new requests after an unparseable answer (>= 0)"
    )
    group.add_argument(
        "--structured-output", action="store_true", help="JSON-schema response_format (OpenAI and compatible servers)"
    )
    group.add_argument(
        "--max-tokens-param",
        default="max_tokens",
        help="output-length parameter name (max_completion_tokens for o-series/gpt-5)",
    )
    group.add_argument("--generation-kwargs", default=None, metavar="JSON", help="extra parameters for every request")
    group.add_argument("--prompts", type=Path, default=None, metavar="FILE", help="YAML/JSON prompt overrides")
    group.add_argument("--prices", type=Path, default=None, metavar="FILE", help="price table {model: {input, output}}")
    group.add_argument("--cache", type=Path, default=None, help="response cache (default OUT/llm-cache.sqlite)")
    group.add_argument("--batch", action="store_true", help="use the OpenAI Batch API (half price, hours of latency)")
    group.add_argument(
        "--batch-poll",
        type=NON_NEGATIVE_FLOAT,
        default=30.0,
        metavar="S",
        help="seconds between batch polls, >= 0 (default 30; 0 polls again at once)",
    )
    group.add_argument(
        "--max-batch-rounds", type=POSITIVE_INT, default=6, help="dependent rounds of batches (default 6)"
    )


def _add_common(parser: argparse.ArgumentParser, task: str) -> None:
    parser.add_argument("--dataset", default=None, help="BEIR folder or dataset name")
    parser.add_argument("--out", type=Path, default=Path("runs") / "generate" / task, help="output folder")
    parser.add_argument("--seed", type=int, default=13, help="sampling seed")
    parser.add_argument("--no-title", action="store_true", help="passage text without its title")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    _add_llm_options(parser)


class _Run:
    """The objects one command needs, built once from its arguments: typed specs, LLM client, prompts, accounting.

    Construction only validates and loads (specs, judge, prompts, prices, generation kwargs, the local model
    file, the cache file): it creates nothing, so a bad input leaves no ``--out`` behind. :meth:`start`, called
    once every input of the command has been read, creates ``--out`` and opens the response cache.
    """

    def __init__(self, args: argparse.Namespace, task: str) -> None:
        from syntriever_haystack.generate.accounting import PriceTable
        from syntriever_haystack.generate.backends import make_generator
        from syntriever_haystack.generate.cache import check_cache_file
        from syntriever_haystack.generate.prompts import load_prompts

        llm = LLMSpec.parse(
            args.llm, api_base_url=args.api_base_url, api_key_env=args.api_key_env, timeout_s=args.timeout
        )
        if args.structured_output and llm.is_local:
            # the embedded model has no JSON-schema mode: every request would fail on the response_format
            raise SyntrieverError(
                "--structured-output needs an OpenAI(-compatible) model (--llm openai:MODEL); the local model's "
                "plain-text answers are parsed tolerantly without it."
            )
        if args.api_base_url is not None:
            _check_api_base_url(args.api_base_url)
        if task == "preferences":
            self.judge = JudgeSpec.parse(args.judge, purpose="preference")
        else:
            self.judge = JudgeSpec.parse(args.judge, purpose="relevance")
        self.judge.check()  # a missing or wrong-kind judge model fails before any LLM call
        self.args = args
        self.task = task
        self.out: Path = args.out
        if self.out.exists() and not self.out.is_dir():
            raise SyntrieverError(f"--out {self.out} is a file; pass a folder (it is created if missing).")
        self.extra = _generation_kwargs(args.generation_kwargs)
        self.prompts = load_prompts(args.prompts)
        self.prices = PriceTable.load(args.prices) if args.prices else None
        if llm.is_local:
            _check_local_model(llm)
        self.generator = make_generator(llm)
        if args.batch and not hasattr(self.generator, "api_base_url"):
            raise SyntrieverError("--batch needs an OpenAI(-compatible) model: use --llm openai:MODEL.")
        self.cache_path: Path = args.cache or self.out / "llm-cache.sqlite"
        try:
            check_cache_file(self.cache_path)
        except SyntrieverError as error:
            raise SyntrieverError(f"--cache: {error}") from None
        self._started = False

    def start(self) -> None:
        """Open the response cache and create ``--out``: call once every input has been validated and read."""
        from syntriever_haystack.generate.accounting import Accounting
        from syntriever_haystack.generate.llm import LLMClient, LLMSettings
        from syntriever_haystack.generate.tasks import LLMSession

        args = self.args
        settings = LLMSettings(
            concurrency=args.concurrency,
            requests_per_minute=args.rpm,
            tokens_per_minute=args.tpm,
            max_retries=args.max_retries,
            request_timeout_s=args.timeout,
            parse_retries=args.parse_retries,
            structured_output=args.structured_output,
            max_tokens_param=args.max_tokens_param,
            generation_kwargs=self.extra,
        )
        self.client = LLMClient.open(
            self.generator, cache_path=self.cache_path, settings=settings, accounting=Accounting(self.prices)
        )
        self.out.mkdir(parents=True, exist_ok=True)
        self.accounting = self.client.accounting
        self.session = LLMSession(self.client, self.prompts, self.execute)
        self._started = True

    def task_run(self, parallel: int, **provenance: Any) -> Any:
        from syntriever_haystack.generate.tasks import TaskRun

        return TaskRun(parallel=max(parallel, 1), progress=not self.args.quiet, provenance=provenance)

    def dataset(self, split: str) -> Any:
        from syntriever_haystack.data.beir import load_beir

        return load_beir(self._folder(), split=split)

    def corpus(self) -> dict[str, Any]:
        from syntriever_haystack.data.beir import Passage, read_corpus

        corpus: dict[str, Passage] = read_corpus(self._folder() / "corpus.jsonl")
        return corpus

    def _folder(self) -> Path:
        from syntriever_haystack.data.download import resolve_dataset

        if not self.args.dataset:
            raise SyntrieverError("--dataset is required: a BEIR folder (corpus.jsonl, queries.jsonl, qrels/).")
        return resolve_dataset(self.args.dataset)

    def execute(self, job: Callable[[], Coroutine[Any, Any, Any]]) -> Any:
        """Run ``job``; with ``--batch``, in collect/submit/ingest rounds until nothing is pending."""
        if not self.args.batch:
            return asyncio.run(job())
        from syntriever_haystack.generate.batch import BatchRunner

        assert self.client.cache is not None
        runner = BatchRunner.from_generator(
            self.generator,
            self.client.cache,
            self.out / "batches",
            accounting=self.accounting,
            poll_interval_s=self.args.batch_poll,
        )
        result = None
        for round_index in range(1, self.args.max_batch_rounds + 1):
            self.client.mode = "collect"
            self.client.pending.clear()
            self.client.reset_loop_state()
            result = asyncio.run(job())
            if not self.client.pending:
                break
            print(f"[batch] round {round_index}: {len(self.client.pending)} requests to submit")
            runner.run(self.client.pending)
        else:
            raise SyntrieverError(
                f"Requests still pending after {self.args.max_batch_rounds} batch rounds; rerun to continue."
            )
        return result

    def finish(self, extra: dict[str, Any]) -> int:
        """Write the accounting and report; non-zero when the run was stopped, or produced nothing because every
        item or every request failed (the message names the cause and the fix)."""
        config = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(self.args).items() if k not in {"func"}}
        self.accounting.write(self.out, extra={"task": self.task, "config": config, **extra})
        print(self.accounting.to_markdown(f"syntriever generate {self.task}"))
        print(f"outputs in {self.out}")
        if self.client.cache is not None:
            self.client.cache.close()
        problem = self.failed_run()
        if problem is not None:
            print(f"error: syntriever generate {self.task}: {problem}", file=sys.stderr)
            return 1
        failures = sum(self.accounting.failures.values())
        if failures:
            print(
                f"{failures} answers failed (see summary.md and *.failures.jsonl). Rerun the command to retry "
                "transport failures (HTTP errors, timeouts); unparseable answers are cached, so raise --parse-retries "
                "(new requests) or improve the prompt (--prompts) for those."
            )
        return 0

    def failed_run(self) -> str | None:
        """Why the run failed as a whole (``None``: it did not): stopped by a failure no retry can fix, every
        request failed, or no item succeeded."""
        acc = self.accounting
        stopped = self.client.stopped
        failures = sum(acc.failures.values())
        every_request_failed = failures > 0 and acc.answers == 0
        no_item_done = acc.items.get("failed", 0) > 0 and acc.items.get("done", 0) == 0
        if stopped is None and not every_request_failed and not no_item_done:
            return None
        cause = stopped.cause if stopped is not None else acc.failures.most_common(1)[0][0]
        if stopped is not None:
            what = f"stopped early after {cause} ({acc.not_sent} requests not sent)"
        elif every_request_failed:
            what = f"every request failed ({failures} failures, mostly {cause})"
        else:
            what = f"no item succeeded ({acc.items['failed']} failed, mostly {cause})"
        counts = ", ".join(f"{k} {v}" for k, v in acc.failures.most_common())
        return f"{what}. Failures by cause: {counts}. {_cause_fix(cause, self.args)}"


def _cause_fix(cause: str, args: argparse.Namespace) -> str:
    """What to do about a failure cause, naming the options involved."""
    server = args.api_base_url or "the OpenAI API"
    if cause in ("http_401", "http_403"):
        return (
            f"The server refused the API key (HTTP {cause[5:]}): check the key in the environment variable "
            f"{args.api_key_env} (or pass --api-key-env with the variable that holds it) and its permissions."
        )
    if cause == "http_404":
        return (
            f"Not found (HTTP 404) at {server}: check the model name (--llm {args.llm}) and --api-base-url "
            "(an OpenAI-compatible server's URL usually ends in /v1)."
        )
    if cause == "connection":
        return f"Could not connect to {server}: start the server, or fix --api-base-url."
    if cause == "timeout":
        return f"No answer within --timeout {args.timeout:g} s: check that the server is up, or raise --timeout."
    if cause == "rate_limited":
        return "The server kept answering 429 (rate limited): lower --rpm / --concurrency, or rerun later."
    if cause.startswith("http_5") or cause == "bad_response":
        return f"The server kept failing ({cause}): rerun later; answers already received are cached."
    if cause.startswith(("http_", "error:")):
        return f"The request itself was rejected ({cause}): check --llm, --generation-kwargs and the server's logs."
    return (
        f"The model's answers could not be used ({cause}): try a stronger model (--llm), --structured-output, "
        "more --parse-retries, or clearer prompts (--prompts)."
    )


def _check_api_base_url(url: str) -> None:
    from urllib.parse import urlsplit

    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError on a bad port
    except ValueError:
        parts = None
    if parts is None or parts.scheme not in ("http", "https") or not parts.hostname:
        raise SyntrieverError(
            f"--api-base-url {url!r} is not an http(s) URL; give the server's URL, e.g. http://localhost:8000/v1."
        )


def _generation_kwargs(text: str | None) -> dict[str, Any] | None:
    """``--generation-kwargs`` as a dict (``None`` when not given)."""
    if not text:
        return None
    example = "'{\"temperature\": 0.5}'"
    try:
        extra = json.loads(text)
    except (json.JSONDecodeError, RecursionError) as error:
        why = error.msg if isinstance(error, json.JSONDecodeError) else "nested too deeply"
        raise SyntrieverError(
            f"--generation-kwargs is not valid JSON ({why}): pass an object, e.g. {example}."
        ) from None
    if not isinstance(extra, dict):
        raise SyntrieverError(
            f"--generation-kwargs must be a JSON object, got a {type(extra).__name__}: e.g. {example}."
        )
    return extra


def _check_local_model(llm: LLMSpec) -> None:
    """A local model given as a path must exist and look like a model (a GGUF file is checked by its magic)
    before anything is created; registry names are fetched on first use."""
    from syntriever_haystack.generate.local_llm import MODELS, resolve_model
    from syntriever_haystack.generate.local_llm.registry import default_cache_dir

    if llm.model in MODELS:
        return
    try:
        resolve_model(llm.model, default_cache_dir())
    except ValueError as error:
        raise SyntrieverError(f"--llm {llm}: {error}") from None


def _check_query_types(text: str) -> tuple[str, ...]:
    from syntriever_haystack.generate.reranker_data import QUERY_TYPES

    types = tuple(t.strip() for t in text.split(","))
    unknown = [t for t in types if t not in QUERY_TYPES]
    if unknown or not types:
        raise SyntrieverError(
            f"--query-types: unknown type(s) {', '.join(repr(t) for t in unknown)}; use a comma-separated list of "
            f"{', '.join(QUERY_TYPES)}."
        )
    return types


# --------------------------------------------------------------------------------------------------- commands
def _check_input_file(option: str, path: Path) -> None:
    if not path.is_file():
        problem = "is a folder, not a file" if path.is_dir() else "does not exist"
        raise SyntrieverError(f"{option} {path} {problem}: check the path.")


def _cmd_retriever(args: argparse.Namespace) -> int:
    from syntriever_haystack.generate import tasks

    if args.queries_file is not None:
        _check_input_file("--queries-file", args.queries_file)
    run = _Run(args, "retriever")
    include_title = not args.no_title
    if args.queries_file is not None:
        items = tasks.synthetic_query_items(args.queries_file, run.corpus(), include_title=include_title)
    else:
        items = tasks.split_query_items(run.dataset(args.split), include_title=include_title)
    items = tasks.seeded_sample(items, args.max_queries, args.seed)
    run.start()  # every input read: now --out and the response cache are created
    result = tasks.generate_retriever_examples(
        items,
        run.out / "retriever.jsonl",
        session=run.session,
        judge=run.judge,
        use_cot=not args.no_cot,
        verify_negative=not args.no_verify_negative,
        run=run.task_run(args.concurrency, dataset=str(args.dataset), split=args.split),
    )
    return run.finish({"records": result.stats.records, "items": result.items, "judge": result.judge})


def _cmd_preferences(args: argparse.Namespace) -> int:
    from syntriever_haystack.generate import tasks
    from syntriever_haystack.generate.candidates import SpecRetriever

    if args.top_k < 2:
        raise SyntrieverError(f"--top-k must be >= 2 (preferences compare pairs of candidates), got {args.top_k}.")
    run = _Run(args, "preferences")
    system = SystemSpec.parse(args.retriever)
    system.check()  # a missing or wrong-kind model fails before anything is created
    dataset = run.dataset(args.split)
    queries = dict(dataset.queries)
    if args.max_queries is not None:
        queries = {q: queries[q] for q in tasks.seeded_sample(sorted(queries), args.max_queries, args.seed)}
    include_title = not args.no_title
    retriever = SpecRetriever(system, dataset.corpus, include_title=include_title, progress=not args.quiet)
    items = tasks.candidate_sets(queries, retriever, dataset.corpus, top_k=args.top_k, include_title=include_title)
    run.start()
    result = tasks.generate_preferences(
        items,
        run.out / "preferences.jsonl",
        judge=run.judge,
        session=run.session,
        retriever=str(system),
        both_orders=not args.single_order,
        require_consistent=not args.keep_inconsistent,
        run=run.task_run(args.concurrency // 2, dataset=str(args.dataset), split=args.split, top_k=args.top_k),
    )
    return run.finish(
        {"records": result.stats.records, "items": result.items, "judge": result.judge, "retriever": str(system)}
    )


def _cmd_reranker(args: argparse.Namespace) -> int:
    from syntriever_haystack.data.beir import Passage
    from syntriever_haystack.generate import tasks
    from syntriever_haystack.generate.candidates import SpecRetriever

    query_types = _check_query_types(args.query_types)
    run = _Run(args, "reranker")
    system = SystemSpec.parse(args.retriever)
    system.check()  # a missing or wrong-kind model fails before anything is created
    if args.documents is not None:
        from syntriever_haystack.data.documents import load_documents

        documents = load_documents(args.documents, progress=not args.quiet)
        corpus = {d.id: Passage("", d.content or "", dict(d.meta)) for d in documents}
    else:
        corpus = run.corpus()
    include_title = not args.no_title
    passages = tasks.sample_passages(
        corpus, args.passages, min_words=args.min_words, seed=args.seed, include_title=include_title
    )
    retriever = SpecRetriever(system, corpus, include_title=include_title, progress=not args.quiet)
    run.start()
    result = tasks.generate_reranker_groups(
        passages,
        run.out,
        session=run.session,
        judge=run.judge,
        retriever=retriever,
        corpus=corpus,
        queries_per_passage=args.queries_per_passage,
        query_types=query_types,
        candidates=args.candidates,
        round_trip_k=args.round_trip,
        verify_source=not args.no_verify_source,
        include_title=include_title,
        run=run.task_run(args.concurrency, dataset=str(args.dataset or args.documents)),
    )
    return run.finish(
        {"stats": result.stats, "passages": result.items, "judge": result.judge, "retriever": str(system)}
    )


def _cmd_export(args: argparse.Namespace) -> int:
    from syntriever_haystack.generate import exporters
    from syntriever_haystack.generate.records import read_records

    records = read_records(args.file, what="generated file")  # reading never creates the file or its folders
    if args.format == "beir":
        corpus = None
        if args.dataset:
            from syntriever_haystack.data.beir import read_corpus
            from syntriever_haystack.data.download import resolve_dataset

            corpus = read_corpus(resolve_dataset(args.dataset) / "corpus.jsonl")
        count = exporters.to_beir(records, args.out, corpus=corpus)
    elif args.format == "sentence-transformers":
        count = exporters.to_sentence_transformers(records, args.out)
    else:
        count = exporters.to_flagembedding(records, args.out)
    print(f"wrote {count} rows to {args.out}")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``generate`` and its sub-commands to the ``syntriever`` parser."""
    generate = sub.add_parser("generate", help="synthetic training data from an LLM (retriever, preferences, reranker)")
    tasks = generate.add_subparsers(dest="generate_command", required=True, metavar="TASK")

    retriever = tasks.add_parser("retriever", help="stage 1: p+, p-, q_cot and self-verification per training query")
    _add_common(retriever, "retriever")
    retriever.add_argument("--split", default="train", help="qrels split with the training queries (default train)")
    retriever.add_argument("--max-queries", type=POSITIVE_INT, default=None, help="sample this many queries")
    retriever.add_argument(
        "--queries-file",
        type=Path,
        default=None,
        help="fully synthetic setting: queries.jsonl of `generate reranker` (source passage = gold) instead of --split",
    )
    retriever.add_argument(
        "--judge", default="llm", help="verifier: llm | embedder:DIR?threshold=X | ranker:DIR?threshold=X"
    )
    retriever.add_argument("--no-cot", action="store_true", help="do not generate q_cot")
    retriever.add_argument("--no-verify-negative", action="store_true", help="do not judge p-")
    retriever.set_defaults(func=_cmd_retriever)

    preferences = tasks.add_parser("preferences", help="stage 2: pairwise preferences over a retriever's top-K")
    _add_common(preferences, "preferences")
    preferences.add_argument("--split", default="train", help="qrels split with the training queries")
    preferences.add_argument("--retriever", required=True, help="candidate SPEC, e.g. dense:models/stage1-onnx or bm25")
    preferences.add_argument("--top-k", type=POSITIVE_INT, default=5, help="K candidates per query (default 5)")
    preferences.add_argument("--max-queries", type=POSITIVE_INT, default=None, help="sample this many queries")
    preferences.add_argument("--judge", default="llm", help="llm | embedder:DIR?margin=X | ranker:DIR?margin=X")
    preferences.add_argument("--single-order", action="store_true", help="ask each pair in one order only")
    preferences.add_argument("--keep-inconsistent", action="store_true", help="keep the first order's verdict")
    preferences.set_defaults(func=_cmd_preferences)

    reranker = tasks.add_parser("reranker", help="synthetic queries + candidates + labels → LCE groups")
    _add_common(reranker, "reranker")
    reranker.add_argument(
        "--documents", type=Path, default=None, help="a folder of your own files instead of --dataset"
    )
    reranker.add_argument("--passages", type=POSITIVE_INT, default=200, help="passages to sample (default 200)")
    reranker.add_argument("--min-words", type=NON_NEGATIVE_INT, default=20, help="skip passages shorter than this")
    reranker.add_argument(
        "--queries-per-passage", type=POSITIVE_INT, default=3, help="n queries per passage (default 3)"
    )
    reranker.add_argument("--query-types", default="question,keywords,claim", help="comma-separated, cycled")
    reranker.add_argument("--retriever", default="bm25", help="first-stage SPEC for candidates (default bm25)")
    reranker.add_argument(
        "--candidates", type=POSITIVE_INT, default=20, help="m candidates judged per query (default 20)"
    )
    reranker.add_argument(
        "--round-trip", type=POSITIVE_INT, default=None, metavar="K", help="keep queries whose source is in the top K"
    )
    reranker.add_argument(
        "--judge", default="llm", help="labeller: llm | embedder:DIR?threshold=X | ranker:DIR?threshold=X"
    )
    reranker.add_argument(
        "--no-verify-source", action="store_true", help="take the source passage as positive unchecked"
    )
    reranker.set_defaults(func=_cmd_reranker)

    export = tasks.add_parser("export", help="convert generated JSONL to BEIR / sentence-transformers / FlagEmbedding")
    export.add_argument("file", type=Path, help="a generated JSONL file (retriever, preferences or reranker)")
    export.add_argument("--format", choices=["beir", "sentence-transformers", "flagembedding"], required=True)
    export.add_argument("--out", type=Path, required=True, help="output folder (beir) or JSONL file")
    export.add_argument("--dataset", default=None, help="BEIR folder whose corpus resolves doc ids (beir format)")
    export.set_defaults(func=_cmd_export)
