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
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

from syntriever_haystack.errors import SyntrieverError
from syntriever_haystack.specs import JudgeSpec, LLMSpec, SystemSpec


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
    group.add_argument("--concurrency", type=int, default=8, help="requests in flight (default 8)")
    group.add_argument("--rpm", type=float, default=None, help="requests per minute limit")
    group.add_argument("--tpm", type=float, default=None, help="tokens per minute limit")
    group.add_argument("--max-retries", type=int, default=6, help="re-sends after 429/5xx/timeouts (default 6)")
    group.add_argument("--timeout", type=float, default=120.0, help="seconds to wait for one response")
    group.add_argument("--parse-retries", type=int, default=2, help="new requests after an unparseable answer")
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
    group.add_argument("--batch-poll", type=float, default=30.0, metavar="S", help="seconds between batch polls")
    group.add_argument("--max-batch-rounds", type=int, default=6, help="dependent rounds of batches (default 6)")


def _add_common(parser: argparse.ArgumentParser, task: str) -> None:
    parser.add_argument("--dataset", default=None, help="BEIR folder or dataset name")
    parser.add_argument("--out", type=Path, default=Path("runs") / "generate" / task, help="output folder")
    parser.add_argument("--seed", type=int, default=13, help="sampling seed")
    parser.add_argument("--no-title", action="store_true", help="passage text without its title")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    _add_llm_options(parser)


class _Run:
    """The objects one command needs, built once from its arguments: typed specs, LLM client, prompts, accounting."""

    def __init__(self, args: argparse.Namespace, task: str) -> None:
        from syntriever_haystack.generate.accounting import Accounting, PriceTable
        from syntriever_haystack.generate.backends import make_generator
        from syntriever_haystack.generate.llm import LLMClient, LLMSettings
        from syntriever_haystack.generate.prompts import load_prompts
        from syntriever_haystack.generate.tasks import LLMSession

        llm = LLMSpec.parse(
            args.llm, api_base_url=args.api_base_url, api_key_env=args.api_key_env, timeout_s=args.timeout
        )
        if args.structured_output and llm.is_local:
            # the embedded model has no JSON-schema mode: every request would fail on the response_format
            raise SyntrieverError(
                "--structured-output needs an OpenAI(-compatible) model (--llm openai:MODEL); the local model's "
                "plain-text answers are parsed tolerantly without it."
            )
        if task == "preferences":
            self.judge = JudgeSpec.parse(args.judge, purpose="preference")
        else:
            self.judge = JudgeSpec.parse(args.judge, purpose="relevance")
        self.judge.check()  # a missing judge model fails before any LLM call
        self.args = args
        self.task = task
        self.out: Path = args.out
        self.out.mkdir(parents=True, exist_ok=True)
        extra = json.loads(args.generation_kwargs) if args.generation_kwargs else None
        if extra is not None and not isinstance(extra, dict):
            raise SyntrieverError("--generation-kwargs must be a JSON object, e.g. '{\"temperature\": 0.5}'.")
        self.generator = make_generator(llm)
        if args.batch and not hasattr(self.generator, "api_base_url"):
            raise SyntrieverError("--batch needs an OpenAI(-compatible) model: use --llm openai:MODEL.")
        settings = LLMSettings(
            concurrency=args.concurrency,
            requests_per_minute=args.rpm,
            tokens_per_minute=args.tpm,
            max_retries=args.max_retries,
            request_timeout_s=args.timeout,
            parse_retries=args.parse_retries,
            structured_output=args.structured_output,
            max_tokens_param=args.max_tokens_param,
            generation_kwargs=extra,
        )
        self.client = LLMClient.open(
            self.generator,
            cache_path=args.cache or self.out / "llm-cache.sqlite",
            settings=settings,
            accounting=Accounting(PriceTable.load(args.prices) if args.prices else None),
        )
        self.accounting = self.client.accounting
        self.session = LLMSession(self.client, load_prompts(args.prompts), self.execute)

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
        config = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(self.args).items() if k not in {"func"}}
        self.accounting.write(self.out, extra={"task": self.task, "config": config, **extra})
        print(self.accounting.to_markdown(f"syntriever generate {self.task}"))
        print(f"outputs in {self.out}")
        if self.client.cache is not None:
            self.client.cache.close()
        failures = sum(self.accounting.failures.values())
        if failures:
            print(
                f"{failures} answers failed (see summary.md and *.failures.jsonl). Rerun the command to retry "
                "transport failures (HTTP errors, timeouts); unparseable answers are cached, so raise --parse-retries "
                "(new requests) or improve the prompt (--prompts) for those."
            )
        return 0


# --------------------------------------------------------------------------------------------------- commands
def _cmd_retriever(args: argparse.Namespace) -> int:
    from syntriever_haystack.generate import tasks

    run = _Run(args, "retriever")
    include_title = not args.no_title
    if args.queries_file is not None:
        items = tasks.synthetic_query_items(args.queries_file, run.corpus(), include_title=include_title)
    else:
        items = tasks.split_query_items(run.dataset(args.split), include_title=include_title)
    items = tasks.seeded_sample(items, args.max_queries, args.seed)
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

    run = _Run(args, "preferences")
    system = SystemSpec.parse(args.retriever)
    dataset = run.dataset(args.split)
    queries = dict(dataset.queries)
    if args.max_queries is not None:
        queries = {q: queries[q] for q in tasks.seeded_sample(sorted(queries), args.max_queries, args.seed)}
    include_title = not args.no_title
    retriever = SpecRetriever(system, dataset.corpus, include_title=include_title, progress=not args.quiet)
    items = tasks.candidate_sets(queries, retriever, dataset.corpus, top_k=args.top_k, include_title=include_title)
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

    run = _Run(args, "reranker")
    system = SystemSpec.parse(args.retriever)
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
    result = tasks.generate_reranker_groups(
        passages,
        run.out,
        session=run.session,
        judge=run.judge,
        retriever=retriever,
        corpus=corpus,
        queries_per_passage=args.queries_per_passage,
        query_types=tuple(args.query_types.split(",")),
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
    from syntriever_haystack.generate.records import JsonlStore

    with JsonlStore(args.file) as store:
        records = list(store.records())
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
    retriever.add_argument("--max-queries", type=int, default=None, help="sample this many queries")
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
    preferences.add_argument("--top-k", type=int, default=5, help="K candidates per query (default 5)")
    preferences.add_argument("--max-queries", type=int, default=None, help="sample this many queries")
    preferences.add_argument("--judge", default="llm", help="llm | embedder:DIR?margin=X | ranker:DIR?margin=X")
    preferences.add_argument("--single-order", action="store_true", help="ask each pair in one order only")
    preferences.add_argument("--keep-inconsistent", action="store_true", help="keep the first order's verdict")
    preferences.set_defaults(func=_cmd_preferences)

    reranker = tasks.add_parser("reranker", help="synthetic queries + candidates + labels → LCE groups")
    _add_common(reranker, "reranker")
    reranker.add_argument(
        "--documents", type=Path, default=None, help="a folder of your own files instead of --dataset"
    )
    reranker.add_argument("--passages", type=int, default=200, help="passages to sample (default 200)")
    reranker.add_argument("--min-words", type=int, default=20, help="skip passages shorter than this")
    reranker.add_argument("--queries-per-passage", type=int, default=3, help="n queries per passage (default 3)")
    reranker.add_argument("--query-types", default="question,keywords,claim", help="comma-separated, cycled")
    reranker.add_argument("--retriever", default="bm25", help="first-stage SPEC for candidates (default bm25)")
    reranker.add_argument("--candidates", type=int, default=20, help="m candidates judged per query (default 20)")
    reranker.add_argument(
        "--round-trip", type=int, default=None, metavar="K", help="keep queries whose source is in the top K"
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
