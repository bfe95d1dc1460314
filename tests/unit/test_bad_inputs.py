"""Bad inputs, table-driven: every ``syntriever`` command and every serving component fails *cleanly*.

Each row of :data:`CLI_CASES` is one command line given one bad input (a missing / empty / corrupt / non-UTF-8 /
binary file, a folder where a file is expected and the reverse, the wrong model kind, a number out of range,
an unknown enum value, a 100,000-character query, a symlink out of the input folder, a bad recipe value, a bad
system / judge / LLM spec). Every row asserts the four properties of a clean failure:

1. **exit code**: the command exits non-zero;
2. **message**: stderr has a short line (< 1000 characters) matching the row's regex (the option, key or file it
   is about), and the word "error" appears on stderr (argparse's ``...: error: argument --x`` counts);
3. **no traceback**: stderr has no ``Traceback (most recent call last)`` (in-process, an exception escaping
   ``main`` is rendered as the interpreter would print it, so it counts as one);
4. **no partial output**: nothing under the test's temporary folder (the ``--out`` folder, output files, the
   cache ``$SYNTRIEVER_CACHE``, the working directory) nor in the shared model folders was created, changed or
   deleted. Commands that only read must create nothing.

Rows marked ``may_succeed`` (huge queries, non-UTF-8 or symlinked input files) may instead exit 0, provided
there is no traceback, the run is fast and, for the symlink rows, nothing outside the input folder reached the
output (``leak``); when they succeed they must still print a warning matching the regex, unless it is ``None``.

:data:`COMPONENT_CASES` does the same for ``SyntrieverTextEmbedder``, ``SyntrieverDocumentEmbedder``,
``SyntrieverRanker`` and ``SyntrieverBM25Retriever``: the right exception type, a message matching the regex,
nothing written to the model folders.

Most rows run in-process through ``syntriever_haystack.cli.main(argv)`` (fast, sockets blocked by the unit-test
fixture); rows with ``sub=True`` run ``python -m syntriever_haystack`` in a child process to check the real exit
code and stderr of the installed entry point. No row reaches the network or starts a server: LLM options point at
``http://127.0.0.1:9`` with a dummy key, and every row fails (or should fail) before any call.

How to add a case: append ``cli("command-what-is-bad", "ARGV with {placeholders}", r"regex", setup=(...))`` to
:data:`CLI_CASES`. Placeholders: ``{r}`` the test's temporary folder (the current directory is ``{r}/work``),
``{beir}`` a small valid BEIR folder inside it, ``{bi}`` / ``{ce}`` exported bi-/cross-encoders, ``{src}`` /
``{srcce}`` their torch sources, ``{store}`` a built in-memory store file, ``{huge}`` a 100,000-character query.
``setup`` builds the bad input with :func:`file`, :func:`folder`, :func:`copy`, :func:`symlink`, :func:`beir`
before the snapshot is taken. A component case is ``comp("id", lambda c: ..., ExceptionType, r"regex")``.
"""

from __future__ import annotations

import json
import logging
import os
import pickle
import re
import shlex
import shutil
import subprocess
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import WORDS

TRACEBACK = "Traceback (most recent call last)"
NONUTF8 = "café iron blood\n".encode("latin-1") + b"\xff\xfe\x80 anaemia\n"
BINARY = bytes(range(256)) * 8
HUGE = ("iron deficiency causes anaemia " * 3500)[:100_000]
LLM = (
    "--llm openai:dummy-model --api-base-url http://127.0.0.1:9/v1 --api-key-env SYNTRIEVER_DUMMY_KEY "
    "--max-retries 0 --timeout 2 --quiet"
)
MAX_SECONDS = 60.0  # per row; a bad input must fail fast (the huge-query rows must answer fast)

Setup = Callable[[Path, dict[str, str]], None]


# --------------------------------------------------------------------------------------------- setup helpers
def file(rel: str, data: bytes | str) -> Setup:
    """Write ``data`` at ``{r}/rel`` (parents created)."""

    def make(root: Path, _: dict[str, str]) -> None:
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data if isinstance(data, bytes) else data.encode("utf-8"))

    return make


def folder(rel: str) -> Setup:
    """An (empty) folder at ``{r}/rel``."""
    return lambda root, _: (root / rel).mkdir(parents=True, exist_ok=True)


def copy(var: str, rel: str, *edits: tuple[str, bytes | str | None]) -> Setup:
    """Copy the fixture folder ``{var}`` to ``{r}/rel``, then write (or, with ``None``, delete) ``edits`` in it."""

    def make(root: Path, paths: dict[str, str]) -> None:
        target = root / rel
        shutil.copytree(paths[var], target)
        for name, data in edits:
            path = target / name
            if data is None:
                shutil.rmtree(path) if path.is_dir() else path.unlink()
            else:
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_bytes(data if isinstance(data, bytes) else data.encode("utf-8"))

    return make


def symlink(rel: str, target: str) -> Setup:
    """A symlink ``{r}/rel`` → ``{r}/target``."""

    def make(root: Path, _: dict[str, str]) -> None:
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).symlink_to(root / target)

    return make


def beir(rel: str, **files: bytes | str | None) -> Setup:
    """A copy of the valid BEIR folder at ``{r}/rel`` with some files replaced (``corpus_jsonl="..."``)."""
    return copy(
        "beir",
        rel,
        *(
            (name.replace("_jsonl", ".jsonl").replace("_tsv", ".tsv").replace("__", "/"), d)
            for name, d in files.items()
        ),
    )


def metadata_edit(var: str, rel: str, **changes: Any) -> Setup:
    """A copy of the exported model ``{var}`` whose ``syntriever.json`` has ``changes``."""

    def make(root: Path, paths: dict[str, str]) -> None:
        copy(var, rel)(root, paths)
        path = root / rel / "syntriever.json"
        data = json.loads(path.read_text(encoding="utf-8"))
        data.update(changes)
        path.write_text(json.dumps(data), encoding="utf-8")

    return make


def write_beir(folder_path: Path) -> Path:
    """A tiny valid BEIR folder in the tiny models' vocabulary."""
    folder_path.mkdir(parents=True, exist_ok=True)
    content = [w for w in WORDS if len(w) > 3]
    docs = [" ".join(content[(i * 7 + j) % len(content)] for j in range(25)) for i in range(12)]
    with (folder_path / "corpus.jsonl").open("w", encoding="utf-8") as f:
        for i, text in enumerate(docs):
            f.write(json.dumps({"_id": f"d{i}", "title": content[i], "text": text}) + "\n")
    with (folder_path / "queries.jsonl").open("w", encoding="utf-8") as f:
        for i in range(8):
            f.write(json.dumps({"_id": f"q{i}", "text": " ".join(docs[i].split()[:4])}) + "\n")
    (folder_path / "qrels").mkdir(exist_ok=True)
    for split, ids in (("train", range(0, 4)), ("test", range(4, 8))):
        lines = ["query-id\tcorpus-id\tscore"] + [f"q{i}\td{i}\t1" for i in ids]
        (folder_path / "qrels" / f"{split}.tsv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return folder_path


class _Exploit:
    """A pickle that creates a marker folder when unpickled: an unsafe ``torch.load`` shows up as partial output."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return (os.makedirs, (self.marker,))


def pickle_bomb(rel: str) -> Setup:
    """``{r}/rel``: a torch-style pickle whose loading would create ``{r}/PWNED``."""

    def make(root: Path, _: dict[str, str]) -> None:
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(pickle.dumps(_Exploit(str(root / "PWNED"))))

    return make


# ------------------------------------------------------------------------------------------------ the tables
@dataclass(frozen=True)
class CliCase:
    id: str
    argv: tuple[str, ...]
    match: str | None
    setup: tuple[Setup, ...] = ()
    sub: bool = False
    may_succeed: bool = False
    leak: str | None = None


def cli(
    id: str,
    argv: str | list[str],
    match: str | None,
    *,
    setup: tuple[Setup, ...] | Setup = (),
    sub: bool = False,
    may_succeed: bool = False,
    leak: str | None = None,
) -> Any:
    args = tuple(shlex.split(argv)) if isinstance(argv, str) else tuple(argv)
    setups = setup if isinstance(setup, tuple) else (setup,)
    return pytest.param(CliCase(id, args, match, setups, sub, may_succeed, leak), id=id)


A_TXT = file("a.txt", "iron deficiency causes anaemia\n")
ADIR = folder("adir")
EMPTY_DIR = folder("empty")
TRAIN_R = "train retriever --gold-only --dataset {beir} --base {src} --out {r}/out --max-steps 1 --quiet"
TRAIN_RR = (
    "train reranker --add-gold-groups --dataset {beir} --base {srcce} --out {r}/out --max-steps 1 --quiet "
    "--no-eval-at-start"
)
GEN_R = "generate retriever --dataset {beir} --out {r}/out " + LLM
GEN_P = "generate preferences --dataset {beir} --retriever bm25 --out {r}/out " + LLM
GEN_RR = "generate reranker --dataset {beir} --out {r}/out " + LLM
IDX = "index --model {bi} --dataset {beir} --store-path {r}/s.json --quiet"
SRCH = "search 'iron anaemia' --model {bi} --store-path {store}"
EVAL = "evaluate --dataset {beir} --system bm25 --quiet --no-cache"
FROM = "data from-folder {r}/docs --out {r}/out --quiet"
DOCS = file("docs/a.txt", "iron deficiency causes anaemia. " * 30)
DOCS_LEAK = (
    DOCS,
    file("outside/secret.txt", "TOPSECRET " * 50),
    symlink("docs/leak.txt", "outside/secret.txt"),
)
DOCS_LEAK_DIR = (DOCS, file("outside/secret.txt", "TOPSECRET " * 50), symlink("docs/linked", "outside"))
BAD_YAML = "dataset: [unclosed\n  - : :\n"


def recipe(text: str) -> Setup:
    return file("recipe.yaml", text)


CLI_CASES = [
    # ---------------------------------------------------------------------------------------------- top level
    cli("top-unknown-command", "frobnicate", r"frobnicate"),
    cli("top-no-command", "", r"COMMAND|command"),
    # ------------------------------------------------------------------------------------------------- export
    cli("export-source-missing", "export {r}/nope {r}/out", r"nope"),
    cli("export-source-is-file", "export {r}/a.txt {r}/out", r"a\.txt", setup=A_TXT),
    cli("export-source-empty-dir", "export {r}/empty {r}/out", r"empty", setup=EMPTY_DIR),
    cli(
        "export-source-corrupt-config",
        "export {r}/m {r}/out",
        r"config\.json",
        setup=copy("src", "m", ("config.json", "{oops")),
    ),
    cli(
        "export-source-nonutf8-config",
        "export {r}/m {r}/out",
        r"config\.json",
        setup=copy("src", "m", ("config.json", NONUTF8)),
    ),
    cli(
        "export-source-binary-weights",
        "export {r}/m {r}/out",
        r"model\.safetensors",
        setup=copy("src", "m", ("model.safetensors", BINARY)),
    ),
    cli(
        "export-source-pickle-weights",
        "export {r}/m {r}/out",
        r"pytorch_model\.bin",
        setup=(copy("src", "m", ("model.safetensors", None)), pickle_bomb("m/pytorch_model.bin")),
    ),
    cli(
        "export-source-is-onnx-export",
        "export {bi} {r}/out",
        r"(?i)syntriever\.json|already exported|model\.safetensors",
    ),
    cli("export-output-is-file", "export {src} {r}/a.txt", r"a\.txt", setup=A_TXT),
    cli("export-output-not-empty", "export {src} {r}/adir", r"adir|--force", setup=file("adir/keep.txt", "x")),
    cli("export-kind-enum", "export {src} {r}/out --kind tri-encoder", r"--kind"),
    cli("export-ce-as-bi-encoder", "export {srcce} {r}/out --kind bi-encoder", r"bi-encoder|cross-encoder"),
    cli("export-bi-as-cross-encoder", "export {src} {r}/out --kind cross-encoder", r"cross-encoder|bi-encoder"),
    cli("export-max-length-zero", "export {src} {r}/out --max-length 0", r"--max-length|max_length"),
    cli("export-max-length-negative", "export {src} {r}/out --max-length -5", r"--max-length|max_length"),
    cli("export-max-length-huge", "export {src} {r}/out --max-length 100000000", r"--max-length|max_length"),
    cli("export-max-length-nan", "export {src} {r}/out --max-length nan", r"--max-length"),
    cli("export-opset-zero", "export {src} {r}/out --opset 0", r"--opset|opset"),
    cli("export-opset-huge", "export {src} {r}/out --opset 999", r"--opset|opset"),
    cli("export-opset-text", "export {src} {r}/out --opset seventeen", r"--opset"),
    cli("export-probe-missing", "export {src} {r}/out --probe-file {r}/nope.txt", r"nope\.txt"),
    cli("export-probe-empty", "export {src} {r}/out --probe-file {r}/p.txt", r"p\.txt", setup=file("p.txt", "")),
    cli("export-probe-nonutf8", "export {src} {r}/out --probe-file {r}/p.txt", r"p\.txt", setup=file("p.txt", NONUTF8)),
    cli("export-probe-binary", "export {src} {r}/out --probe-file {r}/p.txt", r"p\.txt", setup=file("p.txt", BINARY)),
    cli("export-probe-is-dir", "export {src} {r}/out --probe-file {r}/adir", r"adir", setup=ADIR),
    # --------------------------------------------------------------------------------------------------- info
    cli("info-missing", "info {r}/nope", r"nope"),
    cli("info-is-file", "info {r}/a.txt", r"a\.txt", setup=A_TXT),
    cli("info-empty-dir", "info {r}/empty", r"syntriever\.json", setup=EMPTY_DIR),
    cli("info-torch-model", "info {src}", r"syntriever\.json|export"),
    cli("info-corrupt-json", "info {r}/m", r"syntriever\.json", setup=copy("bi", "m", ("syntriever.json", "{oops"))),
    cli("info-nonutf8-json", "info {r}/m", r"syntriever\.json", setup=copy("bi", "m", ("syntriever.json", NONUTF8))),
    cli("info-binary-json", "info {r}/m", r"syntriever\.json", setup=copy("bi", "m", ("syntriever.json", BINARY))),
    cli("info-json-is-list", "info {r}/m", r"syntriever\.json", setup=copy("bi", "m", ("syntriever.json", "[1, 2]"))),
    cli(
        "info-json-is-dir",
        "info {r}/m",
        r"syntriever\.json",
        setup=copy("bi", "m", ("syntriever.json", None), ("syntriever.json/x", "1")),
    ),
    cli("info-unknown-kind", "info {r}/m", r"kind", setup=metadata_edit("bi", "m", kind="tri-encoder")),
    cli("info-max-length-text", "info {r}/m", r"max_length", setup=metadata_edit("bi", "m", max_length="long")),
    # -------------------------------------------------------------------------------------------------- embed
    cli("embed-missing-model", "embed {r}/nope text", r"nope"),
    cli("embed-cross-encoder", "embed {ce} text", r"cross-encoder"),
    cli("embed-torch-model", "embed {src} text", r"syntriever\.json|export"),
    cli("embed-quantization-enum", "embed {bi} text --quantization fp16", r"--quantization"),
    cli("embed-onnx-missing", "embed {r}/m text", r"(?i)onnx", setup=copy("bi", "m", ("onnx", None))),
    cli("embed-onnx-garbage", "embed {r}/m text", r"(?i)onnx", setup=copy("bi", "m", ("onnx/model.onnx", BINARY))),
    cli("embed-onnx-empty", "embed {r}/m text", r"(?i)onnx", setup=copy("bi", "m", ("onnx/model.onnx", b""))),
    cli(
        "embed-tokenizer-corrupt", "embed {r}/m text", r"tokenizer", setup=copy("bi", "m", ("tokenizer.json", "{oops"))
    ),
    cli(
        "embed-tokenizer-nonutf8", "embed {r}/m text", r"tokenizer", setup=copy("bi", "m", ("tokenizer.json", NONUTF8))
    ),
    cli(
        "embed-metadata-max-length-zero",
        "embed {r}/m text",
        r"max_length",
        setup=metadata_edit("bi", "m", max_length=0),
    ),
    cli(
        "embed-int8-not-exported",
        "embed {r}/m text --quantization int8",
        r"int8",
        setup=metadata_edit("bi", "m", files={"fp32": "onnx/model.onnx"}),
    ),
    cli("embed-huge-text", ["embed", "{bi}", "{huge}", "--query"], r"query|text|characters", may_succeed=True),
    # ------------------------------------------------------------------------------------------------- rerank
    cli("rerank-missing-model", "rerank {r}/nope query doc", r"nope"),
    cli("rerank-bi-encoder", "rerank {bi} query doc", r"bi-encoder"),
    cli("rerank-quantization-enum", "rerank {ce} query doc --quantization fp64", r"--quantization"),
    cli("rerank-onnx-garbage", "rerank {r}/m q d", r"(?i)onnx", setup=copy("ce", "m", ("onnx/model.onnx", BINARY))),
    cli("rerank-huge-query", ["rerank", "{ce}", "{huge}", "iron", "anaemia"], r"query|characters", may_succeed=True),
    # ----------------------------------------------------------------------------------------------- evaluate
    cli("evaluate-dataset-missing", EVAL.replace("{beir}", "{r}/nope"), r"nope"),
    cli("evaluate-dataset-is-file", EVAL.replace("{beir}", "{r}/a.txt"), r"a\.txt", setup=A_TXT),
    cli("evaluate-dataset-empty-dir", EVAL.replace("{beir}", "{r}/empty"), r"corpus\.jsonl|qrels", setup=EMPTY_DIR),
    cli(
        "evaluate-corpus-nonutf8",
        EVAL.replace("{beir}", "{r}/b"),
        r"corpus\.jsonl",
        setup=beir("b", corpus_jsonl=NONUTF8),
    ),
    cli(
        "evaluate-corpus-binary",
        EVAL.replace("{beir}", "{r}/b"),
        r"corpus\.jsonl",
        setup=beir("b", corpus_jsonl=BINARY),
    ),
    cli(
        "evaluate-corpus-corrupt",
        EVAL.replace("{beir}", "{r}/b"),
        r"corpus\.jsonl",
        setup=beir("b", corpus_jsonl='{"_id": "d0", "text": \n'),
    ),
    cli(
        "evaluate-corpus-is-dir",
        EVAL.replace("{beir}", "{r}/b"),
        r"corpus\.jsonl",
        setup=beir("b", corpus_jsonl=None, corpus_jsonl__x="1"),
    ),
    cli(
        "evaluate-queries-empty",
        EVAL.replace("{beir}", "{r}/b"),
        r"queries\.jsonl|quer",
        setup=beir("b", queries_jsonl=""),
    ),
    cli(
        "evaluate-qrels-nonutf8",
        EVAL.replace("{beir}", "{r}/b"),
        r"test\.tsv",
        setup=beir("b", qrels__test_tsv=NONUTF8),
    ),
    cli("evaluate-split-missing", EVAL + " --split nosuch", r"nosuch"),
    cli("evaluate-system-unknown-kind", "evaluate --dataset {beir} --system foo:bar --no-cache", r"foo"),
    cli("evaluate-system-empty", ["evaluate", "--dataset", "{beir}", "--system", " ", "--no-cache"], r"system"),
    cli(
        "evaluate-system-dense-cross-encoder",
        "evaluate --dataset {beir} --system dense:{ce} --no-cache",
        r"cross-encoder",
    ),
    cli(
        "evaluate-system-rerank-bi-encoder",
        "evaluate --dataset {beir} --system bm25+rerank:{bi} --no-cache",
        r"bi-encoder",
    ),
    cli("evaluate-system-dense-missing", "evaluate --dataset {beir} --system dense:{r}/nope --no-cache", r"nope"),
    cli(
        "evaluate-system-precision-enum",
        "evaluate --dataset {beir} --system dense:{bi}?precision=fp16 --no-cache",
        r"precision",
    ),
    cli("evaluate-system-unknown-param", "evaluate --dataset {beir} --system bm25?depth=3 --no-cache", r"depth"),
    cli("evaluate-system-bm25-k1-nan", "evaluate --dataset {beir} --system bm25?k1=nan --no-cache --quiet", r"k1"),
    cli(
        "evaluate-system-rerank-top-k-zero",
        "evaluate --dataset {beir} --system bm25+rerank:{ce}?top_k=0 --no-cache --quiet",
        r"top_k",
    ),
    cli(
        "evaluate-system-pipeline-missing",
        "evaluate --dataset {beir} --system pipeline:{r}/query.yaml --no-cache",
        r"query\.yaml",
    ),
    cli(
        "evaluate-system-pipeline-corrupt",
        "evaluate --dataset {beir} --system pipeline:{r}/q.yaml --no-cache --quiet",
        r"q\.yaml",
        setup=file("q.yaml", BAD_YAML),
    ),
    cli(
        "evaluate-system-pipeline-nonutf8",
        "evaluate --dataset {beir} --system pipeline:{r}/q.yaml --no-cache --quiet",
        r"q\.yaml",
        setup=file("q.yaml", NONUTF8),
    ),
    cli(
        "evaluate-system-pipeline-top-k-zero",
        "evaluate --dataset {beir} --system pipeline:{r}/q.yaml?top_k=0 --no-cache",
        r"top_k",
        setup=file("q.yaml", "x"),
    ),
    cli("evaluate-alpha-zero", EVAL + " --alpha 0", r"--alpha|alpha"),
    cli("evaluate-alpha-negative", EVAL + " --alpha -0.5", r"--alpha|alpha"),
    cli("evaluate-alpha-above-one", EVAL + " --alpha 1.5", r"--alpha|alpha"),
    cli("evaluate-alpha-nan", EVAL + " --alpha nan", r"--alpha|alpha"),
    cli("evaluate-alpha-text", EVAL + " --alpha five", r"--alpha"),
    cli("evaluate-depth-zero", EVAL + " --depth 0", r"--depth|depth"),
    cli("evaluate-depth-negative", EVAL + " --depth -10", r"--depth|depth"),
    cli("evaluate-max-queries-zero", EVAL + " --max-queries 0", r"--max-queries|max_queries"),
    cli("evaluate-max-queries-negative", EVAL + " --max-queries -3", r"--max-queries|max_queries"),
    cli("evaluate-seed-negative", EVAL + " --seed -1", r"--seed|seed"),
    cli("evaluate-metric-unknown", EVAL + " --metric nDCG@banana", r"nDCG@banana|--metric"),
    cli("evaluate-test-enum", EVAL + " --test wilcoxon", r"--test"),
    cli("evaluate-baseline-unlisted", EVAL + " --baseline dense:{bi}", r"--baseline|baseline"),
    cli("evaluate-json-is-dir", EVAL + " --json {r}/adir", r"adir|--json", setup=ADIR),
    cli("evaluate-output-dir-is-file", EVAL + " --output-dir {r}/a.txt", r"a\.txt|--output-dir", setup=A_TXT),
    # ----------------------------------------------------------------------------------------------- generate
    cli("generate-retriever-no-dataset", "generate retriever --out {r}/out " + LLM, r"--dataset"),
    cli("generate-retriever-dataset-missing", GEN_R.replace("{beir}", "{r}/nope"), r"nope"),
    cli("generate-retriever-split-missing", GEN_R + " --split nosuch", r"nosuch"),
    cli("generate-llm-unknown-local-option", GEN_R + " --llm local?temperature=2", r"--llm"),
    cli("generate-llm-openai-without-model", GEN_R + " --llm openai:", r"--llm"),
    cli("generate-llm-missing-gguf", GEN_R + " --llm local:{r}/nope.gguf", r"nope\.gguf"),
    cli("generate-llm-corrupt-gguf", GEN_R + " --llm local:{r}/m.gguf", r"m\.gguf", setup=file("m.gguf", BINARY)),
    cli("generate-api-base-url-garbage", GEN_R + " --api-base-url not-a-url", r"--api-base-url|not-a-url"),
    cli("generate-judge-unknown", GEN_R + " --judge oracle", r"oracle|judge"),
    cli("generate-judge-missing-model", GEN_R + " --judge embedder:{r}/nope", r"nope"),
    cli("generate-judge-embedder-is-ce", GEN_R + " --judge embedder:{ce}?threshold=0.5", r"cross-encoder"),
    cli("generate-judge-ranker-is-bi", GEN_R + " --judge ranker:{bi}?threshold=0.5", r"bi-encoder"),
    cli("generate-judge-threshold-nan", GEN_R + " --judge embedder:{bi}?threshold=nan", r"threshold"),
    cli("generate-judge-threshold-text", GEN_R + " --judge embedder:{bi}?threshold=high", r"threshold"),
    cli("generate-judge-threshold-above-one", GEN_R + " --judge ranker:{ce}?threshold=7", r"threshold"),
    cli("generate-judge-precision-enum", GEN_R + " --judge embedder:{bi}?precision=fp16", r"precision"),
    cli("generate-concurrency-zero", GEN_R + " --concurrency 0", r"--concurrency"),
    cli("generate-concurrency-negative", GEN_R + " --concurrency -4", r"--concurrency"),
    cli("generate-rpm-zero", GEN_R + " --rpm 0", r"--rpm"),
    cli("generate-rpm-nan", GEN_R + " --rpm nan", r"--rpm"),
    cli("generate-tpm-negative", GEN_R + " --tpm -100", r"--tpm"),
    cli("generate-max-retries-negative", GEN_R + " --max-retries -1", r"--max-retries"),
    cli("generate-timeout-zero", GEN_R + " --timeout 0", r"--timeout"),
    cli("generate-timeout-nan", GEN_R + " --timeout nan", r"--timeout"),
    cli("generate-timeout-text", GEN_R + " --timeout soon", r"--timeout"),
    cli("generate-parse-retries-negative", GEN_R + " --parse-retries -2", r"--parse-retries"),
    # --batch-poll 0 is valid (poll again at once; tests/unit/test_generate_tasks.py runs --batch with it against a
    # fake server): the bad values are negative, NaN or infinite, rejected by argparse before anything is contacted
    cli("generate-batch-poll-negative", GEN_R + " --batch --batch-poll -1", r"--batch-poll"),
    cli("generate-batch-poll-nan", GEN_R + " --batch --batch-poll nan", r"--batch-poll"),
    cli("generate-max-batch-rounds-zero", GEN_R + " --max-batch-rounds 0", r"--max-batch-rounds"),
    cli("generate-generation-kwargs-bad-json", GEN_R + " --generation-kwargs {{oops", r"--generation-kwargs"),
    cli("generate-generation-kwargs-list", GEN_R + " --generation-kwargs [1,2]", r"--generation-kwargs"),
    cli("generate-prompts-missing", GEN_R + " --prompts {r}/nope.yaml", r"nope\.yaml"),
    cli("generate-prompts-nonutf8", GEN_R + " --prompts {r}/p.yaml", r"p\.yaml", setup=file("p.yaml", NONUTF8)),
    cli("generate-prompts-binary", GEN_R + " --prompts {r}/p.yaml", r"p\.yaml", setup=file("p.yaml", BINARY)),
    cli("generate-prompts-corrupt", GEN_R + " --prompts {r}/p.yaml", r"p\.yaml", setup=file("p.yaml", BAD_YAML)),
    cli("generate-prompts-is-dir", GEN_R + " --prompts {r}/adir", r"adir", setup=ADIR),
    cli(
        "generate-prices-corrupt",
        GEN_R + " --prices {r}/prices.json",
        r"prices\.json",
        setup=file("prices.json", "{oops"),
    ),
    cli("generate-prices-missing", GEN_R + " --prices {r}/nope.json", r"nope\.json"),
    cli("generate-cache-is-dir", GEN_R + " --cache {r}/adir", r"adir|--cache", setup=ADIR),
    cli("generate-cache-corrupt", GEN_R + " --cache {r}/c.sqlite", r"c\.sqlite", setup=file("c.sqlite", BINARY)),
    cli("generate-out-is-file", GEN_R.replace("{r}/out", "{r}/a.txt"), r"a\.txt|--out", setup=A_TXT),
    cli("generate-retriever-max-queries-zero", GEN_R + " --max-queries 0", r"--max-queries"),
    cli("generate-retriever-max-queries-negative", GEN_R + " --max-queries -1", r"--max-queries"),
    cli("generate-retriever-queries-file-missing", GEN_R + " --queries-file {r}/nope.jsonl", r"nope\.jsonl"),
    cli(
        "generate-retriever-queries-file-nonutf8",
        GEN_R + " --queries-file {r}/q.jsonl",
        r"q\.jsonl",
        setup=file("q.jsonl", NONUTF8),
    ),
    cli("generate-preferences-retriever-unknown", GEN_P.replace("bm25", "foo:bar"), r"foo"),
    cli("generate-preferences-retriever-dense-ce", GEN_P.replace("bm25", "dense:{ce}"), r"cross-encoder"),
    cli("generate-preferences-top-k-zero", GEN_P + " --top-k 0", r"--top-k\b|\btop_k\b"),
    cli("generate-preferences-top-k-one", GEN_P + " --top-k 1", r"--top-k\b|\btop_k\b"),
    cli("generate-preferences-judge-threshold", GEN_P + " --judge embedder:{bi}?threshold=0.5", r"threshold|margin"),
    cli("generate-preferences-margin-nan", GEN_P + " --judge embedder:{bi}?margin=nan", r"margin"),
    cli("generate-preferences-margin-negative", GEN_P + " --judge ranker:{ce}?margin=-1", r"margin"),
    cli("generate-reranker-passages-zero", GEN_RR + " --passages 0", r"--passages"),
    cli("generate-reranker-passages-negative", GEN_RR + " --passages -5", r"--passages"),
    cli("generate-reranker-min-words-negative", GEN_RR + " --min-words -1", r"--min-words"),
    cli("generate-reranker-queries-per-passage-zero", GEN_RR + " --queries-per-passage 0", r"--queries-per-passage"),
    cli("generate-reranker-query-types-unknown", GEN_RR + " --query-types question,haiku", r"haiku|--query-types"),
    cli("generate-reranker-candidates-zero", GEN_RR + " --candidates 0", r"--candidates|\bcandidates\b"),
    cli("generate-reranker-round-trip-zero", GEN_RR + " --round-trip 0", r"--round-trip"),
    cli("generate-reranker-retriever-rerank-bi", GEN_RR + " --retriever bm25+rerank:{bi}", r"bi-encoder"),
    cli("generate-reranker-documents-missing", "generate reranker --documents {r}/nope --out {r}/out " + LLM, r"nope"),
    cli(
        "generate-reranker-documents-binary",
        "generate reranker --documents {r}/docs --out {r}/out " + LLM,
        r"docs|text",
        setup=file("docs/a.pdf", BINARY),
    ),
    cli("generate-export-missing", "generate export {r}/nope.jsonl --format beir --out {r}/out", r"nope\.jsonl"),
    cli(
        "generate-export-empty",
        "generate export {r}/e.jsonl --format beir --out {r}/out",
        r"e\.jsonl|no record",
        setup=file("e.jsonl", ""),
    ),
    cli(
        "generate-export-nonutf8",
        "generate export {r}/e.jsonl --format beir --out {r}/out",
        r"e\.jsonl",
        setup=file("e.jsonl", NONUTF8),
    ),
    cli(
        "generate-export-binary",
        "generate export {r}/e.jsonl --format sentence-transformers --out {r}/o.jsonl",
        r"e\.jsonl",
        setup=file("e.jsonl", BINARY),
    ),
    cli(
        "generate-export-corrupt",
        "generate export {r}/e.jsonl --format flagembedding --out {r}/o.jsonl",
        r"e\.jsonl",
        setup=file("e.jsonl", '{"a": 1}\n{oops\n{"b": 2}\n'),
    ),
    cli("generate-export-is-dir", "generate export {r}/adir --format beir --out {r}/out", r"adir", setup=ADIR),
    cli(
        "generate-export-format-enum",
        "generate export {r}/e.jsonl --format csv --out {r}/out",
        r"--format",
        setup=file("e.jsonl", ""),
    ),
    cli(
        "generate-export-dataset-missing",
        "generate export {r}/e.jsonl --format beir --out {r}/out --dataset {r}/nope",
        r"nope",
        setup=file("e.jsonl", '{"query": "q"}\n'),
    ),
    # -------------------------------------------------------------------------------------------------- train
    cli(
        "train-retriever-nothing-to-train",
        "train retriever --base {src} --out {r}/out",
        r"--data|--dataset|--gold-only",
    ),
    cli(
        "train-retriever-data-missing",
        "train retriever --base {src} --data {r}/nope.jsonl --out {r}/out",
        r"nope\.jsonl",
    ),
    cli(
        "train-retriever-data-empty",
        "train retriever --base {src} --data {r}/d.jsonl --out {r}/out",
        r"d\.jsonl",
        setup=file("d.jsonl", ""),
    ),
    cli(
        "train-retriever-data-nonutf8",
        "train retriever --base {src} --data {r}/d.jsonl --out {r}/out",
        r"d\.jsonl",
        setup=file("d.jsonl", NONUTF8),
    ),
    cli(
        "train-retriever-data-binary",
        "train retriever --base {src} --data {r}/d.jsonl --out {r}/out",
        r"d\.jsonl",
        setup=file("d.jsonl", BINARY),
    ),
    cli(
        "train-retriever-data-is-dir", "train retriever --base {src} --data {r}/adir --out {r}/out", r"adir", setup=ADIR
    ),
    cli("train-retriever-base-missing", TRAIN_R.replace("{src}", "{r}/nope"), r"nope"),
    cli("train-retriever-base-is-onnx-export", TRAIN_R.replace("{src}", "{bi}"), r"--base|onnx|export"),
    cli(
        "train-retriever-base-pickle",
        TRAIN_R.replace("{src}", "{r}/m"),
        r"pytorch_model\.bin",
        setup=(copy("src", "m", ("model.safetensors", None)), pickle_bomb("m/pytorch_model.bin")),
    ),
    cli("train-retriever-stage-enum", TRAIN_R + " --stage 3", r"--stage"),
    cli("train-retriever-loss-enum", TRAIN_R + " --loss hinge", r"--loss"),
    cli("train-retriever-epochs-zero", TRAIN_R + " --epochs 0", r"--epochs|epochs"),
    cli("train-retriever-epochs-nan", TRAIN_R + " --epochs nan", r"--epochs|epochs"),
    cli("train-retriever-lr-negative", TRAIN_R + " --lr -0.001", r"--lr|learning"),
    cli("train-retriever-lr-nan", TRAIN_R + " --lr nan", r"--lr|learning"),
    cli("train-retriever-batch-size-zero", TRAIN_R + " --batch-size 0", r"--batch-size|batch"),
    cli("train-retriever-warmup-ratio-above-one", TRAIN_R + " --warmup-ratio 1.5", r"--warmup-ratio|warmup"),
    cli(
        "train-retriever-grad-accumulation-zero",
        TRAIN_R + " --grad-accumulation 0",
        r"--grad-accumulation|accumulation",
    ),
    cli("train-retriever-checkpoint-steps-zero", TRAIN_R + " --checkpoint-steps 0", r"--checkpoint-steps|checkpoint"),
    cli("train-retriever-dev-fraction-above-one", TRAIN_R + " --dev-fraction 1.5", r"--dev-fraction|dev"),
    cli("train-retriever-scale-zero", TRAIN_R + " --scale 0", r"--scale|scale"),
    cli("train-retriever-kl-weight-negative", TRAIN_R + " --kl-weight -1", r"--kl-weight|kl"),
    cli(
        "train-retriever-query-max-length-zero",
        TRAIN_R + " --query-max-length 0",
        r"--query-max-length|query_max_length",
    ),
    cli("train-retriever-max-steps-zero", TRAIN_R.replace("--max-steps 1", "--max-steps 0"), r"--max-steps|max_steps"),
    cli("train-retriever-mini-batch-negative", TRAIN_R + " --mini-batch-size -1", r"--mini-batch-size|mini"),
    cli(
        "train-reranker-data-missing",
        "train reranker --base {srcce} --data {r}/nope.jsonl --out {r}/out",
        r"nope\.jsonl",
    ),
    cli(
        "train-reranker-data-nonutf8",
        "train reranker --base {srcce} --data {r}/d.jsonl --out {r}/out",
        r"d\.jsonl",
        setup=file("d.jsonl", NONUTF8),
    ),
    cli("train-reranker-group-size-one", TRAIN_RR + " --group-size 1", r"--group-size|group"),
    cli("train-reranker-max-length-zero", TRAIN_RR + " --max-length 0", r"--max-length|max_length"),
    cli("train-reranker-gold-candidates-zero", TRAIN_RR + " --gold-candidates 0", r"--gold-candidates|candidates"),
    cli("train-reranker-gold-negatives-spec", TRAIN_RR + " --gold-negatives foo:bar", r"foo"),
    # --------------------------------------------------------------------------------------------------- data
    cli("data-from-folder-missing", FROM.replace("{r}/docs", "{r}/nope"), r"nope"),
    cli("data-from-folder-empty", FROM, r"docs|no .*files|text", setup=folder("docs")),
    cli("data-from-folder-binary-only", FROM, r"a\.txt|text", setup=file("docs/a.txt", BINARY)),
    cli("data-from-folder-nonutf8", FROM, r"b\.txt", setup=(DOCS, file("docs/b.txt", NONUTF8)), may_succeed=True),
    cli("data-from-folder-symlink-file-out", FROM, r"leak\.txt", setup=DOCS_LEAK, may_succeed=True, leak="TOPSECRET"),
    cli("data-from-folder-symlink-dir-out", FROM, r"linked", setup=DOCS_LEAK_DIR, may_succeed=True, leak="TOPSECRET"),
    cli("data-from-folder-split-length-zero", FROM + " --split-length 0", r"--split-length|split_length", setup=DOCS),
    cli(
        "data-from-folder-split-length-negative",
        FROM + " --split-length -3",
        r"--split-length|split_length",
        setup=DOCS,
    ),
    cli(
        "data-from-folder-split-overlap-negative",
        FROM + " --split-overlap -1",
        r"--split-overlap|split_overlap",
        setup=DOCS,
    ),
    cli(
        "data-from-folder-overlap-not-below-length",
        FROM + " --split-length 10 --split-overlap 10",
        r"--split-overlap|split_overlap",
        setup=DOCS,
    ),
    cli("data-from-folder-split-by-enum", FROM + " --split-by paragraph", r"--split-by", setup=DOCS),
    cli("data-from-folder-extension-unknown", FROM + " --extensions exe", r"exe|--extensions", setup=DOCS),
    cli("data-from-folder-out-is-file", FROM.replace("{r}/out", "{r}/a.txt"), r"a\.txt|--out", setup=(DOCS, A_TXT)),
    cli("data-download-unknown-name", "data download nosuchdataset --cache-dir {r}/c --quiet", r"nosuchdataset"),
    cli("data-medquad-missing", "data medquad-xml {r}/nope --out {r}/out --quiet", r"nope"),
    cli("data-medquad-empty", "data medquad-xml {r}/empty --out {r}/out --quiet", r"empty|XML|xml", setup=EMPTY_DIR),
    # -------------------------------------------------------------------------------------------------- index
    cli("index-model-cross-encoder", IDX.replace("{bi}", "{ce}"), r"cross-encoder"),
    cli("index-model-missing", IDX.replace("{bi}", "{r}/nope"), r"nope"),
    cli("index-dataset-missing", IDX.replace("{beir}", "{r}/nope"), r"nope"),
    cli("index-corpus-empty", IDX.replace("{beir}", "{r}/b"), r"corpus\.jsonl", setup=beir("b", corpus_jsonl="")),
    cli(
        "index-corpus-nonutf8", IDX.replace("{beir}", "{r}/b"), r"corpus\.jsonl", setup=beir("b", corpus_jsonl=NONUTF8)
    ),
    cli("index-input-missing", "index --model {bi} --input {r}/nope --store-path {r}/s.json --quiet", r"nope"),
    cli(
        "index-input-binary",
        "index --model {bi} --input {r}/docs --store-path {r}/s.json --quiet",
        r"a\.txt|text",
        setup=file("docs/a.txt", BINARY),
    ),
    cli(
        "index-input-symlink-out",
        "index --model {bi} --input {r}/docs --store-path {r}/s.json --quiet",
        r"leak\.txt",
        setup=DOCS_LEAK,
        may_succeed=True,
        leak="TOPSECRET",
    ),
    cli("index-split-length-zero", IDX + " --split-length 0", r"--split-length|split_length"),
    cli("index-split-overlap-negative", IDX + " --split-overlap -5", r"--split-overlap|split_overlap"),
    cli(
        "index-split-overlap-not-below-length",
        IDX + " --split-length 5 --split-overlap 9",
        r"--split-overlap|split_overlap",
    ),
    cli("index-batch-size-zero", IDX + " --batch-size 0", r"--batch-size|batch_size"),
    cli("index-batch-size-negative", IDX + " --batch-size -8", r"--batch-size|batch_size"),
    cli("index-replicas-negative", IDX + " --replicas -1", r"--replicas"),
    cli("index-store-enum", IDX + " --store sqlite", r"--store"),
    cli("index-quantization-enum", IDX + " --quantization int4", r"--quantization"),
    cli("index-split-by-enum", IDX + " --split-by chapter", r"--split-by"),
    cli("index-store-path-is-dir", IDX.replace("{r}/s.json", "{r}/adir"), r"adir", setup=ADIR),
    cli(
        "index-store-path-corrupt",
        IDX.replace("{r}/s.json", "{r}/bad.json"),
        r"bad\.json",
        setup=file("bad.json", "{oops"),
    ),
    cli(
        "index-store-path-nonutf8",
        IDX.replace("{r}/s.json", "{r}/bad.json"),
        r"bad\.json",
        setup=file("bad.json", NONUTF8),
    ),
    cli("index-pipelines-out-is-file", IDX + " --pipelines-out {r}/a.txt", r"a\.txt|--pipelines-out", setup=A_TXT),
    cli("index-ranker-bi-encoder", IDX + " --pipelines-out {r}/p --ranker {bi}", r"--ranker|bi-encoder"),
    cli("index-alias-with-memory", IDX + " --alias", r"--alias"),
    # ------------------------------------------------------------------------------------------------- search
    cli("search-empty-query", ["search", "  ", "--model", "{bi}", "--store-path", "{store}"], r"query"),
    cli(
        "search-huge-query",
        ["search", "{huge}", "--model", "{bi}", "--store-path", "{store}", "--json"],
        r"query|characters",
        may_succeed=True,
    ),
    cli(
        "search-huge-query-reranked",
        ["search", "{huge}", "--model", "{bi}", "--ranker", "{ce}", "--store-path", "{store}"],
        r"query|characters",
        may_succeed=True,
    ),
    cli("search-top-k-zero", SRCH + " --top-k 0", r"--top-k\b|\btop_k\b"),
    cli("search-top-k-negative", SRCH + " --top-k -3", r"--top-k\b|\btop_k\b"),
    cli("search-top-k-text", SRCH + " --top-k many", r"--top-k\b|\btop_k\b"),
    cli("search-top-k-bm25-zero", SRCH + " --top-k-bm25 0", r"--top-k-bm25\b|\btop_k_bm25\b"),
    cli("search-top-k-dense-negative", SRCH + " --top-k-dense -1", r"--top-k-dense\b|\btop_k_dense\b"),
    cli("search-candidates-zero", SRCH + " --candidates 0 --ranker {ce}", r"--candidates|\bcandidates\b"),
    cli("search-snippet-negative", SRCH + " --snippet -10", r"--snippet"),
    cli(
        "search-timeout-zero",
        SRCH + " --store opensearch --opensearch-url http://127.0.0.1:9 --timeout 0",
        r"--timeout",
    ),
    cli("search-model-cross-encoder", SRCH.replace("{bi}", "{ce}"), r"cross-encoder"),
    cli("search-ranker-bi-encoder", SRCH + " --ranker {bi}", r"--ranker|bi-encoder"),
    cli("search-store-missing", SRCH.replace("{store}", "{r}/nope.json"), r"nope\.json"),
    cli("search-store-corrupt", SRCH.replace("{store}", "{r}/bad.json"), r"bad\.json", setup=file("bad.json", "{oops")),
    cli("search-store-nonutf8", SRCH.replace("{store}", "{r}/bad.json"), r"bad\.json", setup=file("bad.json", NONUTF8)),
    cli("search-store-binary", SRCH.replace("{store}", "{r}/bad.json"), r"bad\.json", setup=file("bad.json", BINARY)),
    cli("search-store-is-dir", SRCH.replace("{store}", "{r}/adir"), r"adir", setup=ADIR),
    cli(
        "search-store-json-list",
        SRCH.replace("{store}", "{r}/bad.json"),
        r"bad\.json",
        setup=file("bad.json", "[1, 2, 3]"),
    ),
    cli("search-run-missing", "search 'iron' --run {r}/nope", r"nope"),
    cli("search-run-no-pipelines", "search 'iron' --run {r}/empty", r"query\.yaml", setup=EMPTY_DIR),
    cli(
        "search-run-corrupt-yaml",
        "search 'iron' --run {r}/run",
        r"query\.yaml",
        setup=file("run/pipelines/query.yaml", BAD_YAML),
    ),
    cli(
        "search-run-nonutf8-yaml",
        "search 'iron' --run {r}/run",
        r"query\.yaml",
        setup=file("run/pipelines/query.yaml", NONUTF8),
    ),
    cli(
        "search-run-binary-yaml",
        "search 'iron' --run {r}/run",
        r"query\.yaml",
        setup=file("run/pipelines/query.yaml", BINARY),
    ),
    cli(
        "search-run-yaml-not-pipeline",
        "search 'iron' --run {r}/run",
        r"query\.yaml",
        setup=file("run/pipelines/query.yaml", "- 1\n- 2\n"),
    ),
    cli(
        "search-run-with-model",
        "search 'iron' --run {r}/run --model {bi}",
        r"--model",
        setup=file("run/pipelines/query.yaml", "x: 1\n"),
    ),
    cli("search-rerank-without-run", SRCH + " --rerank", r"--rerank"),
    # -------------------------------------------------------------------------------------------------- serve
    cli("serve-missing", "serve {r}/nope --print-command", r"nope"),
    cli("serve-empty-run", "serve {r}/empty --print-command", r"query\.yaml", setup=EMPTY_DIR),
    cli(
        "serve-rerank-without-reranker",
        "serve {r}/run --rerank --print-command",
        r"query-rerank\.yaml|--rerank",
        setup=file("run/pipelines/query.yaml", "x: 1\n"),
    ),
    cli(
        "serve-port-negative",
        "serve {r}/run --port -1 --print-command",
        r"--port",
        setup=file("run/pipelines/query.yaml", "x: 1\n"),
    ),
    cli(
        "serve-port-huge",
        "serve {r}/run --port 70000 --print-command",
        r"--port",
        setup=file("run/pipelines/query.yaml", "x: 1\n"),
    ),
    cli("serve-port-text", "serve {r}/run --port http", r"--port", setup=file("run/pipelines/query.yaml", "x: 1\n")),
    # ---------------------------------------------------------------------------------------------- mlcommons
    cli("mlcommons-bundle-missing", "mlcommons bundle {r}/nope {r}/out.zip", r"nope"),
    cli("mlcommons-bundle-torch-model", "mlcommons bundle {src} {r}/out.zip", r"syntriever\.json|export"),
    cli("mlcommons-bundle-precision-enum", "mlcommons bundle {bi} {r}/out.zip --precision fp16", r"--precision"),
    cli("mlcommons-bundle-output-is-dir", "mlcommons bundle {bi} {r}/adir", r"adir", setup=ADIR),
    cli(
        "mlcommons-bundle-onnx-garbage",
        "mlcommons bundle {r}/m {r}/out.zip",
        r"(?i)onnx",
        setup=copy("bi", "m", ("onnx/model.onnx", BINARY)),
    ),
    cli(
        "mlcommons-bundle-tokenizer-corrupt",
        "mlcommons bundle {r}/m {r}/out.zip",
        r"tokenizer",
        setup=copy("bi", "m", ("tokenizer.json", "{oops")),
    ),
    cli(
        "mlcommons-bundle-int8-missing",
        "mlcommons bundle {r}/m {r}/out.zip --precision int8",
        r"int8",
        setup=copy("bi", "m", ("onnx/model_int8.onnx", None)),
    ),
    cli(
        "mlcommons-bundle-version-empty", ["mlcommons", "bundle", "{bi}", "{r}/out.zip", "--version", ""], r"--version"
    ),
    cli("mlcommons-deploy-missing", "mlcommons deploy {r}/nope --opensearch-url http://127.0.0.1:9", r"nope"),
    cli(
        "mlcommons-deploy-two-bi-encoders",
        "mlcommons deploy {bi} {bi} --opensearch-url http://127.0.0.1:9",
        r"bi-encoder",
    ),
    cli(
        "mlcommons-deploy-ingest-without-bi",
        "mlcommons deploy {ce} --ingest-pipeline p --opensearch-url http://127.0.0.1:9",
        r"--ingest-pipeline",
    ),
    cli(
        "mlcommons-deploy-search-without-ce",
        "mlcommons deploy {bi} --search-pipeline p --opensearch-url http://127.0.0.1:9",
        r"--search-pipeline",
    ),
    cli(
        "mlcommons-deploy-field-map-bad",
        "mlcommons deploy {bi} --field-map nocolon --opensearch-url http://127.0.0.1:9",
        r"--field-map",
    ),
    cli(
        "mlcommons-deploy-timeout-zero",
        "mlcommons deploy {bi} --deploy-timeout 0 --opensearch-url http://127.0.0.1:9",
        r"--deploy-timeout",
    ),
    cli(
        "mlcommons-deploy-request-timeout-negative",
        "mlcommons deploy {bi} --timeout -1 --opensearch-url http://127.0.0.1:9",
        r"--timeout",
    ),
    cli(
        "mlcommons-deploy-ca-certs-missing",
        "mlcommons deploy {bi} --ca-certs {r}/nope.pem --opensearch-url https://127.0.0.1:9",
        r"nope\.pem",
    ),
    # ------------------------------------------------------------------------------------------ recipe / run
    cli("recipe-check-missing", "recipe check {r}/nope.yaml", r"nope\.yaml"),
    cli("recipe-check-is-dir", "recipe check {r}/adir", r"adir", setup=ADIR),
    cli(
        "recipe-check-nonutf8",
        "recipe check {r}/recipe.yaml",
        r"recipe\.yaml",
        setup=file("recipe.yaml", NONUTF8),
        sub=True,
    ),
    cli("recipe-check-binary", "recipe check {r}/recipe.yaml", r"recipe\.yaml", setup=file("recipe.yaml", BINARY)),
    cli("recipe-check-invalid-yaml", "recipe check {r}/recipe.yaml", r"recipe\.yaml", setup=recipe(BAD_YAML)),
    cli("recipe-check-top-level-list", "recipe check {r}/recipe.yaml", r"mapping", setup=recipe("- a\n- b\n")),
    cli(
        "recipe-epochs-zero",
        "recipe check {r}/recipe.yaml",
        r"train\.retriever\.epochs",
        setup=recipe("train: {retriever: {epochs: 0}}\n"),
    ),
    cli(
        "recipe-epochs-nan",
        "recipe check {r}/recipe.yaml",
        r"train\.retriever\.epochs",
        setup=recipe("train: {retriever: {epochs: .nan}}\n"),
    ),
    cli(
        "recipe-epochs-infinite",
        "recipe check {r}/recipe.yaml",
        r"train\.reranker\.epochs",
        setup=recipe("train: {reranker: {epochs: .inf}}\n"),
    ),
    cli(
        "recipe-learning-rate-negative",
        "recipe check {r}/recipe.yaml",
        r"train\.retriever\.learning_rate",
        setup=recipe("train: {retriever: {learning_rate: -0.1}}\n"),
    ),
    cli(
        "recipe-learning-rate-nan",
        "recipe check {r}/recipe.yaml",
        r"train\.stage2\.learning_rate",
        setup=recipe("train: {stage2: {learning_rate: .nan}}\n"),
    ),
    cli(
        "recipe-batch-size-float",
        "recipe check {r}/recipe.yaml",
        r"train\.retriever\.batch_size",
        setup=recipe("train: {retriever: {batch_size: 1.0e+400}}\n"),
    ),
    cli(
        "recipe-batch-size-zero",
        "recipe check {r}/recipe.yaml",
        r"train\.retriever\.batch_size",
        setup=recipe("train: {retriever: {batch_size: 0}}\n"),
    ),
    cli(
        "recipe-batch-size-text",
        "recipe check {r}/recipe.yaml",
        r"train\.reranker\.batch_size",
        setup=recipe("train: {reranker: {batch_size: many}}\n"),
    ),
    cli(
        "recipe-query-max-length-zero",
        "recipe check {r}/recipe.yaml",
        r"query_max_length",
        setup=recipe("train: {retriever: {query_max_length: 0}}\n"),
    ),
    cli(
        "recipe-reranker-max-length-negative",
        "recipe check {r}/recipe.yaml",
        r"train\.reranker\.max_length",
        setup=recipe("train: {reranker: {max_length: -1}}\n"),
    ),
    cli(
        "recipe-llm-timeout-zero", "recipe check {r}/recipe.yaml", r"llm\.timeout", setup=recipe("llm: {timeout: 0}\n")
    ),
    cli(
        "recipe-llm-rpm-negative",
        "recipe check {r}/recipe.yaml",
        r"llm\.requests_per_minute",
        setup=recipe("llm: {requests_per_minute: -5}\n"),
    ),
    cli(
        "recipe-llm-parse-retries-negative",
        "recipe check {r}/recipe.yaml",
        r"llm\.parse_retries",
        setup=recipe("llm: {parse_retries: -1}\n"),
    ),
    cli(
        "recipe-llm-spec-bad",
        "recipe check {r}/recipe.yaml",
        r"llm\.spec",
        setup=recipe("llm: {spec: 'local?temperature=3'}\n"),
    ),
    cli(
        "recipe-threshold-nan",
        "recipe check {r}/recipe.yaml",
        r"generate\.threshold",
        setup=recipe("generate: {threshold: .nan}\n"),
    ),
    cli(
        "recipe-threshold-above-one",
        "recipe check {r}/recipe.yaml",
        r"generate\.threshold",
        setup=recipe("generate: {threshold: 2.5}\n"),
    ),
    cli(
        "recipe-margin-negative",
        "recipe check {r}/recipe.yaml",
        r"generate\.preferences\.margin",
        setup=recipe("generate: {preferences: {margin: -1}}\n"),
    ),
    cli(
        "recipe-min-words-negative",
        "recipe check {r}/recipe.yaml",
        r"generate\.min_words",
        setup=recipe("generate: {min_words: -3}\n"),
    ),
    cli(
        "recipe-judge-bad",
        "recipe check {r}/recipe.yaml",
        r"generate\.judge",
        setup=recipe("generate: {judge: oracle}\n"),
    ),
    cli(
        "recipe-candidate-retriever-bad",
        "recipe check {r}/recipe.yaml",
        r"generate\.candidate_retriever",
        setup=recipe("generate: {candidate_retriever: 'foo:bar'}\n"),
    ),
    cli(
        "recipe-system-spec-bad",
        "recipe check {r}/recipe.yaml",
        r"evaluate\.systems",
        setup=recipe("evaluate: {systems: [bm25, 'dense:x?precision=fp16'], baseline: bm25}\n"),
    ),
    cli(
        "recipe-kl-weight-nan",
        "recipe check {r}/recipe.yaml",
        r"kl_weight",
        setup=recipe("train: {stage2: {enabled: true, kl_weight: .nan}}\ngenerate: {preferences: {judge: llm}}\n"),
    ),
    cli(
        "recipe-dev-fraction-nan",
        "recipe check {r}/recipe.yaml",
        r"dev_fraction",
        setup=recipe("train: {retriever: {dev_fraction: .nan}}\n"),
    ),
    cli("recipe-seed-negative", "recipe check {r}/recipe.yaml", r"seed", setup=recipe("seed: -1\n")),
    cli(
        "recipe-train-seed-huge",
        "recipe check {r}/recipe.yaml",
        r"train\.seed",
        setup=recipe("train: {seed: 100000000000000000000000}\n"),
    ),
    cli(
        "recipe-export-precision-enum",
        "recipe check {r}/recipe.yaml",
        r"export\.precision",
        setup=recipe("export: {precision: fp16}\n"),
    ),
    cli(
        "recipe-serve-top-k-zero", "recipe check {r}/recipe.yaml", r"serve\.top_k", setup=recipe("serve: {top_k: 0}\n")
    ),
    cli(
        "recipe-corpus-sample-negative",
        "recipe check {r}/recipe.yaml",
        r"evaluate\.corpus_sample",
        setup=recipe("evaluate: {corpus_sample: -10}\n"),
    ),
    cli("recipe-unknown-key", "recipe check {r}/recipe.yaml", r"trian", setup=recipe("trian: {}\n")),
    cli("recipe-dump-budget-enum", "recipe dump --budget huge", r"--budget"),
    cli(
        "run-bad-recipe",
        "run {r}/recipe.yaml --out {r}/out",
        r"train\.retriever\.epochs",
        setup=recipe("train: {retriever: {epochs: -1}}\n"),
    ),
    cli("run-recipe-missing", "run {r}/nope.yaml --out {r}/out", r"nope\.yaml"),
    cli("run-recipe-nonutf8", "run {r}/recipe.yaml --out {r}/out", r"recipe\.yaml", setup=file("recipe.yaml", NONUTF8)),
    cli("run-until-enum", "run {r}/recipe.yaml --out {r}/out --until nothing", r"--until", setup=recipe("{}\n")),
    cli(
        "run-dataset-missing", "run {r}/recipe.yaml --out {r}/out", r"nope", setup=recipe("dataset: {path: NOPE_DIR}\n")
    ),
    cli(
        "run-out-is-file",
        "run {r}/recipe.yaml --out {r}/a.txt",
        r"a\.txt|--out",
        setup=(recipe("dataset: {path: BEIR_DIR}\n"), A_TXT),
    ),
    cli("quickstart-dataset-missing", "quickstart --dataset {r}/nope --out {r}/out --quiet", r"nope"),
    cli(
        "quickstart-llm-bad",
        "quickstart --dataset {beir} --llm local?temperature=3 --out {r}/out --quiet",
        r"--llm|llm\.spec",
    ),
    cli("quickstart-budget-enum", "quickstart --budget large --out {r}/out", r"--budget"),
    cli(
        "quickstart-opensearch-url-garbage",
        "quickstart --dataset {beir} --opensearch-url not-a-url --out {r}/out --quiet",
        r"--opensearch-url|not-a-url|serve\.url",
    ),
]


# ------------------------------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def shared(
    tiny_bi_encoder: Path,
    tiny_cross_encoder: Path,
    exported_bi_encoder: Path,
    exported_cross_encoder: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> dict[str, str]:
    """The read-only inputs every row may name: models, a BEIR folder, a built in-memory store."""
    base = tmp_path_factory.mktemp("bad-inputs-shared")
    beir_dir = write_beir(base / "beir")
    store = base / "store" / "store.json"
    from syntriever_haystack.cli import main

    argv = ["index", "--model", str(exported_bi_encoder), "--dataset", str(beir_dir), "--store-path", str(store)]
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("SYNTRIEVER_CACHE", str(base / "cache"))
        assert main([*argv, "--quiet"]) == 0, "building the shared store failed"
    return {
        "bi": str(exported_bi_encoder),
        "ce": str(exported_cross_encoder),
        "src": str(tiny_bi_encoder),
        "srcce": str(tiny_cross_encoder),
        "beir_src": str(beir_dir),
        "store": str(store),
        "store_dir": str(store.parent),
    }


def snapshot(*roots: Path) -> dict[str, str]:
    """Every path under ``roots`` → what it is (file size and modification time, link target, dir)."""
    state: dict[str, str] = {}
    for root in roots:
        if not root.exists():
            continue
        for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
            dirnames[:] = [d for d in dirnames if d != "__pycache__"]
            for name in dirnames + filenames:
                path = Path(dirpath) / name
                if path.is_symlink():
                    state[str(path)] = "link:" + os.readlink(path)
                elif path.is_dir():
                    state[str(path)] = "dir"
                else:
                    stat = path.stat()
                    state[str(path)] = f"{stat.st_size}:{stat.st_mtime_ns}"
    return state


def changes(before: dict[str, str], after: dict[str, str]) -> list[str]:
    created = sorted(set(after) - set(before))
    deleted = sorted(set(before) - set(after))
    changed = sorted(p for p in set(before) & set(after) if before[p] != after[p])
    return [f"created {p}" for p in created] + [f"deleted {p}" for p in deleted] + [f"changed {p}" for p in changed]


def prepare(case: CliCase, root: Path, shared: dict[str, str]) -> tuple[dict[str, str], list[str]]:
    (root / "work").mkdir(parents=True)
    (root / "cache").mkdir()
    shutil.copytree(shared["beir_src"], root / "beir")
    paths = {**shared, "beir": str(root / "beir"), "r": str(root), "huge": HUGE}
    for make in case.setup:
        make(root, {**paths, "beir": shared["beir_src"]})
    recipe_file = root / "recipe.yaml"  # recipes name folders by placeholders of their own
    if recipe_file.is_file():
        data = recipe_file.read_bytes().replace(b"NOPE_DIR", str(root / "nope").encode())
        recipe_file.write_bytes(data.replace(b"BEIR_DIR", str(root / "beir").encode()))
    argv = [a.format(**paths) if a != "{huge}" else HUGE for a in case.argv]
    return paths, argv


def run_in_process(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    """``main(argv)`` as the interpreter would run it: an escaping exception prints its traceback, exits 1."""
    from syntriever_haystack.cli import main

    code: int
    extra = ""
    try:
        code = int(main(argv))
    except SystemExit as exc:
        if exc.code is None or isinstance(exc.code, int):
            code = exc.code or 0
        else:
            code, extra = 1, f"{exc.code}\n"
    except KeyboardInterrupt:
        raise
    except BaseException:
        code, extra = 1, traceback.format_exc()
    out, err = capsys.readouterr()
    return code, out, err + extra


def run_subprocess(argv: list[str], cwd: Path, env: dict[str, str]) -> tuple[int, str, str]:
    proc = subprocess.run(
        [sys.executable, "-m", "syntriever_haystack", *argv],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        errors="replace",
        timeout=180,
    )
    return proc.returncode, proc.stdout, proc.stderr


def message_problem(err: str, pattern: str | None) -> str | None:
    """``None`` when stderr (before any traceback) names the problem on one short line, else what is wrong."""
    if pattern is None:
        return None
    text = err.split(TRACEBACK, 1)[0]
    lines = [line for line in text.splitlines() if re.search(pattern, line)]
    if not lines:
        return f"message: no stderr line matches {pattern!r}"
    if all(len(line) >= 1000 for line in lines):
        return f"message: the line naming {pattern!r} is {min(map(len, lines))} characters long"
    if not re.search(r"\berror\b", text, re.IGNORECASE):
        return "message: stderr does not say 'error'"
    return None


def tail(text: str, lines: int = 6) -> str:
    shown = [line if len(line) < 300 else line[:300] + "…" for line in text.strip().splitlines()[-lines:]]
    return " ⏎ ".join(shown)


# ---------------------------------------------------------------------------------------------------- tests
@pytest.mark.parametrize("case", CLI_CASES)
def test_cli_bad_input(
    case: CliCase,
    shared: dict[str, str],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    subprocess_env: dict[str, str],
) -> None:
    root = tmp_path / "t"
    _, argv = prepare(case, root, shared)
    watched = [root, *(Path(shared[k]) for k in ("bi", "ce", "src", "srcce", "beir_src", "store_dir"))]
    before = snapshot(*watched)
    env = {"SYNTRIEVER_CACHE": str(root / "cache"), "SYNTRIEVER_DUMMY_KEY": "dummy-key"}
    capsys.readouterr()
    started = time.perf_counter()
    if case.sub:
        proxy = {"HTTP_PROXY": "http://127.0.0.1:9", "HTTPS_PROXY": "http://127.0.0.1:9", "NO_PROXY": ""}
        code, out, err = run_subprocess(argv, root / "work", {**subprocess_env, **env, **proxy})
    else:
        for key, value in env.items():
            monkeypatch.setenv(key, value)
        monkeypatch.chdir(root / "work")
        code, out, err = run_in_process(argv, capsys)
    seconds = time.perf_counter() - started
    diff = changes(before, snapshot(*watched))

    problems: list[str] = []
    if TRACEBACK in err:
        problems.append(f"traceback: {tail(err, 3)}")
    if code == 0 and case.may_succeed:
        if case.leak:
            leaked = [p for p in diff if p.startswith("created") and _contains(Path(p.split(" ", 1)[1]), case.leak)]
            if leaked:
                problems.append(f"partial output: content from outside the input folder reached {leaked}")
        if seconds > MAX_SECONDS:
            problems.append(f"exit 0 after {seconds:.0f} s (too slow for one bad input)")
    else:
        if code == 0:
            problems.append(f"exit 0: stdout {tail(out, 2)!r}")
        if diff:
            problems.append("partial output: " + "; ".join(diff[:6]) + (" …" if len(diff) > 6 else ""))
        if (msg := message_problem(err, case.match)) and TRACEBACK not in err:
            problems.append(f"{msg}; stderr: {tail(err)!r}")
        elif msg:
            problems.append(msg)
    assert not problems, f"[{case.id}] exit {code}, {seconds:.1f} s\n" + "\n".join(problems)


def _contains(path: Path, needle: str) -> bool:
    if path.is_dir():
        return any(_contains(p, needle) for p in path.rglob("*") if p.is_file())
    try:
        return path.is_file() and needle.encode() in path.read_bytes()
    except OSError:
        return False


# ------------------------------------------------------------------------------------------------ components
@dataclass(frozen=True)
class ComponentCase:
    id: str
    call: Callable[[dict[str, Any]], Any]
    raises: type[BaseException] | tuple[type[BaseException], ...] | None
    match: str | None
    setup: tuple[Setup, ...] = field(default=())
    may_succeed: bool = False


def comp(
    id: str,
    call: Callable[[dict[str, Any]], Any],
    raises: type[BaseException] | tuple[type[BaseException], ...] | None,
    match: str | None,
    *,
    setup: tuple[Setup, ...] | Setup = (),
    may_succeed: bool = False,
) -> Any:
    setups = setup if isinstance(setup, tuple) else (setup,)
    return pytest.param(ComponentCase(id, call, raises, match, setups, may_succeed), id=id)


class _InvalidResultError(Exception):
    """A component answered a bad input without an error, but with an unusable result."""


def _valid(condition: bool, what: str) -> None:
    if not condition:
        raise _InvalidResultError(what)


def _te(c: dict[str, Any], model: str = "bi", text: Any = "iron anaemia", **init: Any) -> Any:
    from haystack_integrations.components.embedders.syntriever import SyntrieverTextEmbedder

    embedder = SyntrieverTextEmbedder(model=c[model], **init)
    embedder.warm_up()
    result = embedder.run(text=text)
    _valid(len(result["embedding"]) == 32 and all(x == x for x in result["embedding"]), "not a 32-d embedding")
    return result


def _de(c: dict[str, Any], documents: Any = None, model: str = "bi", **init: Any) -> Any:
    from haystack import Document

    from haystack_integrations.components.embedders.syntriever import SyntrieverDocumentEmbedder

    embedder = SyntrieverDocumentEmbedder(model=c[model], progress_bar=False, **init)
    embedder.warm_up()
    docs = [Document(content="iron deficiency")] if documents is None else documents
    result = embedder.run(documents=docs)
    _valid(all(d.embedding is not None and len(d.embedding) == 32 for d in result["documents"]), "missing embeddings")
    return result


def _rk(
    c: dict[str, Any], query: Any = "iron", documents: Any = None, model: str = "ce", run: Any = None, **init: Any
) -> Any:
    from haystack import Document

    from haystack_integrations.components.rankers.syntriever import SyntrieverRanker

    ranker = SyntrieverRanker(model=c[model], **init)
    ranker.warm_up()
    docs = [Document(content="iron deficiency"), Document(content="paris france")] if documents is None else documents
    result = ranker.run(query=query, documents=docs, **(run or {}))
    scores = [d.score for d in result["documents"]]
    _valid(all(s is not None and s == s for s in scores), f"missing or NaN scores {scores}")
    return result


class _Warnings(logging.Handler):
    """Collects the warnings logged while it is attached to the root logger."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())

    def __enter__(self) -> _Warnings:
        logging.getLogger().addHandler(self)
        return self

    def __exit__(self, *_: object) -> None:
        logging.getLogger().removeHandler(self)


def _de_textless(c: dict[str, Any], documents: list[Any]) -> Any:
    """The embedder returns every Document in order: those with ``content=None`` unchanged (no embedding), the
    others embedded; it logs a warning about the skipped ones."""
    from haystack_integrations.components.embedders.syntriever import SyntrieverDocumentEmbedder

    embedder = SyntrieverDocumentEmbedder(model=c["bi"], progress_bar=False)
    embedder.warm_up()
    with _Warnings() as caught:
        result = embedder.run(documents=documents)
    out = result["documents"]
    _valid([d.id for d in out] == [d.id for d in documents], "Documents lost or reordered")
    for doc in out:
        if doc.content is None:
            _valid(doc.embedding is None, "a Document without text got an embedding")
        else:
            _valid(doc.embedding is not None and len(doc.embedding) == 32, "missing embeddings")
    _valid(any("content=None" in m for m in caught.messages), f"no warning about content=None: {caught.messages}")
    return result


def _rk_textless(c: dict[str, Any], documents: list[Any]) -> Any:
    """The ranker puts Documents with ``content=None`` last with score ``None`` and logs a warning."""
    from haystack_integrations.components.rankers.syntriever import SyntrieverRanker

    ranker = SyntrieverRanker(model=c["ce"])
    ranker.warm_up()
    with _Warnings() as caught:
        result = ranker.run(query="iron", documents=documents)
    out = result["documents"]
    textless = sum(d.content is None for d in documents)
    _valid(len(out) == len(documents), f"{len(documents)} Documents in, {len(out)} out")
    scored, last = out[: len(out) - textless], out[len(out) - textless :]
    _valid(all(d.content is None and d.score is None for d in last), "Documents without text are not last")
    _valid(all(d.score is not None and d.score == d.score for d in scored), "missing or NaN scores")
    _valid(any("content=None" in m for m in caught.messages), f"no warning about content=None: {caught.messages}")
    return result


def _bm(c: dict[str, Any], query: Any = "iron", store_docs: Any = None, run: Any = None, **init: Any) -> Any:
    from haystack import Document
    from haystack.document_stores.in_memory import InMemoryDocumentStore

    from haystack_integrations.components.retrievers.syntriever import SyntrieverBM25Retriever

    store = InMemoryDocumentStore()
    docs = [Document(content="iron deficiency causes anaemia"), Document(content="paris is in france")]
    store.write_documents(docs if store_docs is None else store_docs)
    retriever = SyntrieverBM25Retriever(document_store=init.pop("document_store", store), **init)
    return retriever.run(query=query, **(run or {}))


def _docs(*contents: Any) -> list[Any]:
    from haystack import Document

    return [Document(content=c) for c in contents]


MODEL_ERR = "syntriever_haystack.errors.ExportedModelError"


def _model_error() -> type[BaseException]:
    from syntriever_haystack.errors import ExportedModelError

    return ExportedModelError


COMPONENT_CASES = [
    # SyntrieverTextEmbedder
    comp("text-embedder-missing-model", lambda c: _te(c, "nope"), MODEL_ERR, r"nope"),
    comp("text-embedder-cross-encoder", lambda c: _te(c, "ce"), MODEL_ERR, r"cross-encoder"),
    comp("text-embedder-file-as-model", lambda c: _te(c, "a_txt"), MODEL_ERR, r"a\.txt", setup=A_TXT),
    comp("text-embedder-torch-model", lambda c: _te(c, "src"), MODEL_ERR, r"syntriever\.json"),
    comp(
        "text-embedder-corrupt-metadata",
        lambda c: _te(c, "m"),
        MODEL_ERR,
        r"syntriever\.json",
        setup=copy("bi", "m", ("syntriever.json", "{oops")),
    ),
    comp(
        "text-embedder-nonutf8-metadata",
        lambda c: _te(c, "m"),
        MODEL_ERR,
        r"syntriever\.json",
        setup=copy("bi", "m", ("syntriever.json", NONUTF8)),
    ),
    comp(
        "text-embedder-metadata-list",
        lambda c: _te(c, "m"),
        MODEL_ERR,
        r"syntriever\.json",
        setup=copy("bi", "m", ("syntriever.json", "[]")),
    ),
    comp(
        "text-embedder-garbage-onnx",
        lambda c: _te(c, "m"),
        MODEL_ERR,
        r"(?i)onnx",
        setup=copy("bi", "m", ("onnx/model.onnx", BINARY)),
    ),
    comp(
        "text-embedder-corrupt-tokenizer",
        lambda c: _te(c, "m"),
        MODEL_ERR,
        r"tokenizer",
        setup=copy("bi", "m", ("tokenizer.json", "{oops")),
    ),
    comp(
        "text-embedder-quantization-enum",
        lambda c: _te(c, quantization="fp16"),
        ValueError,
        r"fp16|quantization|precision",
    ),
    comp("text-embedder-max-length-zero", lambda c: _te(c, max_length=0), ValueError, r"max_length"),
    comp("text-embedder-max-length-huge", lambda c: _te(c, max_length=10**9), ValueError, r"max_length"),
    comp("text-embedder-num-threads-zero", lambda c: _te(c, num_threads=0), ValueError, r"num_threads"),
    comp("text-embedder-text-none", lambda c: _te(c, text=None), TypeError, r"string"),
    comp("text-embedder-text-list", lambda c: _te(c, text=["a", "b"]), TypeError, r"SyntrieverDocumentEmbedder|string"),
    comp(
        "text-embedder-huge-query", lambda c: _te(c, text=HUGE), ValueError, r"characters|long|query", may_succeed=True
    ),
    # SyntrieverDocumentEmbedder
    comp("document-embedder-cross-encoder", lambda c: _de(c, model="ce"), MODEL_ERR, r"cross-encoder"),
    comp("document-embedder-string-input", lambda c: _de(c, documents="iron"), TypeError, r"list of Documents"),
    comp("document-embedder-strings-in-list", lambda c: _de(c, documents=["iron"]), TypeError, r"item 0"),
    # content=None (e.g. an image Document) is skipped, not an error: returned without an embedding, warning logged
    comp(
        "document-embedder-content-none", lambda c: _de_textless(c, _docs(None, "iron")), None, None, may_succeed=True
    ),
    comp(
        "document-embedder-all-content-none", lambda c: _de_textless(c, _docs(None, None)), None, None, may_succeed=True
    ),
    comp("document-embedder-batch-size-zero", lambda c: _de(c, batch_size=0), ValueError, r"batch_size"),
    comp(
        "document-embedder-huge-document",
        lambda c: _de(c, documents=_docs(HUGE)),
        ValueError,
        r"characters|long",
        may_succeed=True,
    ),
    # SyntrieverRanker
    comp("ranker-bi-encoder", lambda c: _rk(c, model="bi"), MODEL_ERR, r"bi-encoder"),
    comp("ranker-missing-model", lambda c: _rk(c, model="nope"), MODEL_ERR, r"nope"),
    comp("ranker-top-k-zero", lambda c: _rk(c, top_k=0), ValueError, r"top_k"),
    comp("ranker-run-top-k-negative", lambda c: _rk(c, run={"top_k": -1}), ValueError, r"top_k"),
    comp("ranker-batch-size-zero", lambda c: _rk(c, batch_size=0), ValueError, r"batch_size"),
    comp("ranker-score-threshold-nan", lambda c: _rk(c, score_threshold=float("nan")), ValueError, r"score_threshold"),
    comp("ranker-query-none", lambda c: _rk(c, query=None), TypeError, r"string"),
    comp("ranker-documents-string", lambda c: _rk(c, documents="iron"), TypeError, r"list of Documents"),
    # content=None is skipped, not an error: ranked last with score None, warning logged
    comp("ranker-content-none", lambda c: _rk_textless(c, _docs(None, "iron")), None, None, may_succeed=True),
    comp("ranker-huge-query", lambda c: _rk(c, query=HUGE), ValueError, r"characters|long|query", may_succeed=True),
    comp(
        "ranker-huge-document",
        lambda c: _rk(c, documents=_docs(HUGE, "iron")),
        ValueError,
        r"characters|long",
        may_succeed=True,
    ),
    # SyntrieverBM25Retriever
    comp("bm25-not-a-store", lambda c: _bm(c, document_store={"docs": []}), TypeError, r"InMemoryDocumentStore"),
    comp("bm25-top-k-zero", lambda c: _bm(c, top_k=0), ValueError, r"top_k"),
    comp("bm25-run-top-k-negative", lambda c: _bm(c, run={"top_k": -2}), ValueError, r"top_k"),
    comp("bm25-empty-query", lambda c: _bm(c, query=""), ValueError, r"[Qq]uery"),
    comp("bm25-query-none", lambda c: _bm(c, query=None), (TypeError, ValueError), r"[Qq]uery"),
    comp("bm25-bad-filters", lambda c: _bm(c, run={"filters": {"field": "meta.x"}}), ValueError, r"[Ff]ilter"),
    comp(
        "bm25-filter-policy-enum",
        lambda c: _bm(c, filter_policy="append"),
        ValueError,
        r"append|filter_policy|FilterPolicy",
    ),
    comp("bm25-k1-nan", lambda c: _bm(c, k1=float("nan")), ValueError, r"k1"),
    comp("bm25-b-above-one", lambda c: _bm(c, b=2.0), ValueError, r"\bb\b"),
    comp("bm25-method-unknown", lambda c: _bm(c, method="okapi-plus-plus"), ValueError, r"method|okapi"),
    comp("bm25-huge-query", lambda c: _bm(c, query=HUGE), ValueError, r"characters|long|query", may_succeed=True),
    comp(
        "bm25-content-none-documents",
        lambda c: _bm(c, store_docs=_docs(None, "iron deficiency")),
        ValueError,
        r"content",
        may_succeed=True,
    ),
]


@pytest.mark.parametrize("case", COMPONENT_CASES)
def test_component_bad_input(case: ComponentCase, shared: dict[str, str], tmp_path: Path) -> None:
    root = tmp_path / "t"
    root.mkdir()
    paths: dict[str, Any] = {**shared, "r": str(root), "nope": str(root / "nope")}
    for make in case.setup:
        make(root, paths)
    paths.update({"m": str(root / "m"), "a_txt": str(root / "a.txt")})
    expected = case.raises
    if expected == MODEL_ERR:
        expected = _model_error()
    watched = [root, *(Path(shared[k]) for k in ("bi", "ce", "src"))]
    before = snapshot(*watched)
    problems: list[str] = []
    started = time.perf_counter()
    try:
        case.call(paths)
    except _InvalidResultError as exc:
        problems.append(f"exit 0: it answered, but the answer is invalid: {exc}")
    except Exception as exc:
        first = str(exc).splitlines()[0] if str(exc) else ""
        if expected is None or not isinstance(exc, expected):
            problems.append(
                f"traceback (wrong exception type): {type(exc).__module__}.{type(exc).__name__}: {first[:300]}"
            )
        elif case.match and not re.search(case.match, first):
            problems.append(f"message: {first[:300]!r} does not match {case.match!r}")
        elif len(first) >= 1000:
            problems.append(f"message: {len(first)} characters long")
    else:
        if not case.may_succeed:
            problems.append(f"exit 0: no exception (expected {getattr(expected, '__name__', expected)})")
    seconds = time.perf_counter() - started
    if seconds > MAX_SECONDS:
        problems.append(f"too slow: {seconds:.0f} s")
    if diff := changes(before, snapshot(*watched)):
        problems.append("partial output: " + "; ".join(diff[:6]))
    assert not problems, f"[{case.id}] {seconds:.1f} s\n" + "\n".join(problems)


def test_the_tables_are_large_enough() -> None:
    """The suite is a to-do list of at least 100 bad inputs, every id unique."""
    ids = [p.id for p in CLI_CASES + COMPONENT_CASES]
    assert len(ids) >= 100
    assert len(set(ids)) == len(ids), sorted({i for i in ids if ids.count(i) > 1})
