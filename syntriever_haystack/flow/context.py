"""What every step of a run shares: the recipe, the output folder's layout, loaded data, the LLM, results so far."""

from __future__ import annotations

import json
import os
import random
import shutil
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from syntriever_haystack.errors import SyntrieverError
from syntriever_haystack.flow.recipe import LLMSection, Recipe

if TYPE_CHECKING:
    from syntriever_haystack.data.beir import BeirDataset, Passage
    from syntriever_haystack.generate.llm import LLMClient
    from syntriever_haystack.specs import JudgeSpec, LLMSpec, Precision

GeneratorFactory = Callable[[LLMSection], Any]


class FlowError(SyntrieverError, RuntimeError):
    """A step cannot run; the message names the cause and the fix."""


class Layout:
    """Where everything of a run lives, relative to its output folder.

    ``models/`` holds the ONNX models, ``pipelines/`` the Haystack YAML, ``data/`` the JSONL (and the saved
    in-memory document store), ``report/`` Markdown + JSON + PNG; ``training/`` keeps the torch models and their
    checkpoints (what a resumed training continues from), ``.flow/`` the step stamps.
    """

    def __init__(self, out: Path) -> None:
        self.out = out
        self.stamps = out / ".flow"
        self.data = out / "data"
        self.models = out / "models"
        self.pipelines = out / "pipelines"
        self.report = out / "report"
        self.training = out / "training"
        self.dataset_json = self.data / "dataset.json"
        self.train_view = self.data / "train-split"
        self.gen_retriever = self.data / "retriever"
        self.gen_reranker = self.data / "reranker"
        self.gen_queries = self.data / "queries"
        self.mined = self.data / "mined"
        self.gen_preferences = self.data / "preferences"
        self.document_store = self.data / "document_store.json"
        self.index_dir = self.data / "index"
        self.base_onnx = self.models / "base-onnx"
        self.stage1_onnx = self.models / "stage1-onnx"
        self.retriever_onnx = self.models / "retriever-onnx"
        self.reranker_onnx = self.models / "reranker-onnx"
        self.stage1 = self.training / "retriever-stage1"
        self.stage1_interpolated = self.training / "retriever-stage1-interpolated"
        self.stage2 = self.training / "retriever-stage2"
        self.reranker = self.training / "reranker"
        self.indexing_yaml = self.pipelines / "indexing.yaml"
        self.query_yaml = self.pipelines / "query.yaml"
        self.query_rerank_yaml = self.pipelines / "query-rerank.yaml"
        self.evaluation = self.report / "evaluation"
        self.flow_json = out / "flow.json"
        self.recipe_yaml = out / "recipe.yaml"


@dataclass
class FlowContext:
    """State shared by the steps of one ``syntriever run``.

    :param recipe: The validated recipe.
    :param out: The output folder.
    :param progress: Show progress bars.
    :param generator_factory: Builds the chat generator from the ``llm`` section (default:
        :func:`syntriever_haystack.generate.backends.make_generator`); tests plug a scripted LLM in here.
    :param echo: Where step messages go.
    """

    recipe: Recipe
    out: Path
    progress: bool = True
    generator_factory: GeneratorFactory | None = None
    echo: Callable[[str], None] = field(default=lambda text: print(text, file=sys.stderr, flush=True))
    results: dict[str, dict[str, Any]] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    _generator: Any = None
    _generator_clients: int = 0
    _datasets: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.layout = Layout(self.out)

    # ------------------------------------------------------------------------------------------- data
    def dataset_folder(self) -> Path:
        """The resolved BEIR folder (from the ``data`` step)."""
        data = self.results.get("data")
        if not data:
            raise FlowError("the data step has not run; run the flow from the start")
        return Path(data["path"])

    def train_folder(self) -> Path:
        """The BEIR folder training reads: the dataset, or its restricted view with ``max_train_queries``."""
        data = self.results["data"]
        return self.layout.train_view if data.get("train_view") else Path(data["path"])

    def _load(self, key: str, folder: Path, split: str) -> BeirDataset:
        if key not in self._datasets:
            from syntriever_haystack.data.beir import load_beir

            self._datasets[key] = load_beir(folder, split)
        dataset: BeirDataset = self._datasets[key]
        return dataset

    def train_dataset(self) -> BeirDataset:
        """The training split (restricted to ``max_train_queries`` when set)."""
        return self._load("train", self.train_folder(), self.recipe.dataset.train_split)

    def eval_split(self) -> str | None:
        """The split the evaluation scores (``None``: the dataset has none, or the recipe turned it off)."""
        data = self.results.get("data") or {}
        split: str | None = data.get("eval_split", self.recipe.dataset.eval_split)
        return split

    def full_eval_dataset(self) -> BeirDataset:
        """The evaluation split over the full corpus."""
        split = self.eval_split()
        if split is None:
            raise FlowError("this run has no evaluation split (dataset.eval_split); there is nothing to evaluate")
        dataset = self._load("eval-full", self.dataset_folder(), split)
        if self.recipe.evaluate.max_queries is not None:
            key = "eval-queries"
            if key not in self._datasets:
                self._datasets[key] = dataset.sample_queries(self.recipe.evaluate.max_queries, seed=self.recipe.seed)
            sampled: BeirDataset = self._datasets[key]
            return sampled
        return dataset

    def corpus(self) -> dict[str, Passage]:
        """The full corpus."""
        if "corpus" not in self._datasets:
            from syntriever_haystack.data.beir import read_corpus

            self._datasets["corpus"] = read_corpus(self.dataset_folder() / "corpus.jsonl")
        corpus: dict[str, Passage] = self._datasets["corpus"]
        return corpus

    def corpus_dataset(self) -> BeirDataset:
        """The full corpus as a dataset without queries (what is indexed and served when nothing is evaluated)."""
        from syntriever_haystack.data.beir import BeirDataset

        data = self.results.get("data") or {}
        return BeirDataset(
            name=str(data.get("name", "corpus")),
            path=self.dataset_folder(),
            split="corpus",
            corpus=self.corpus(),
            queries={},
            qrels={},
        )

    def eval_dataset(self) -> BeirDataset:
        """The evaluation split over the evaluation corpus: the full one, or the sample ``evaluate.corpus_sample``."""
        if "eval" not in self._datasets:
            from syntriever_haystack.data.beir import sample_corpus

            if self.eval_split() is None:
                return self.corpus_dataset()
            full = self.full_eval_dataset()
            size = self.recipe.evaluate.corpus_sample
            self._datasets["eval"] = full if size is None else sample_corpus(full, size, seed=self.recipe.seed)
        dataset: BeirDataset = self._datasets["eval"]
        return dataset

    def passage_text(self, passage: Passage) -> str:
        """A passage as the models see it (``title + " " + text`` with ``dataset.include_title``)."""
        return passage.model_text(self.recipe.dataset.include_title)

    def sample(self, items: list[Any], n: int) -> list[Any]:
        """A seeded sample of ``n`` items (all of them when ``n`` is larger)."""
        return random.Random(self.recipe.seed).sample(items, min(n, len(items)))

    # -------------------------------------------------------------------------------------------- LLM
    def llm_spec(self) -> LLMSpec:
        """The recipe's ``llm`` section as a typed spec (validated when the recipe was loaded)."""
        from syntriever_haystack.specs import LLMSpec

        llm = self.recipe.llm
        return LLMSpec.parse(
            llm.spec, api_base_url=llm.api_base_url, api_key_env=llm.api_key_env, timeout_s=llm.timeout
        )

    def generator(self) -> Any:
        """The chat generator of ``llm`` (built once per run, shared by the generation steps)."""
        if self._generator is None:
            if self.generator_factory is not None:
                self._generator = self.generator_factory(self.recipe.llm)
            else:
                from syntriever_haystack.generate.backends import make_generator

                self._generator = make_generator(self.llm_spec())
        return self._generator

    def llm_client(self, folder: Path, *, generation_kwargs: dict[str, Any] | None = None) -> LLMClient:
        """An LLM client with its response cache at ``folder/llm-cache.sqlite`` (kept when a step reruns)."""
        from syntriever_haystack.generate.llm import LLMClient, LLMSettings

        llm = self.recipe.llm
        settings = LLMSettings(
            concurrency=llm.concurrency,
            requests_per_minute=llm.requests_per_minute,
            request_timeout_s=llm.timeout,
            parse_retries=llm.parse_retries,
            generation_kwargs=generation_kwargs,
        )
        generator = self.generator()
        # Async HTTP clients are bound to the event loop of their first use: after the first step (one
        # asyncio.run each), call the shared generator's synchronous run in worker threads.
        sync_calls = self._generator_clients > 0
        self._generator_clients += 1
        return LLMClient.open(
            generator, cache_path=folder / "llm-cache.sqlite", settings=settings, sync_calls=sync_calls
        )

    def judge(self, name: str, *, purpose: Literal["relevance", "preference"], value: float) -> JudgeSpec:
        """A recipe judge as a typed spec: ``embedder`` → the base model, ``reranker`` → the trained reranker (each
        at the precision its export wrote), with the recipe's threshold / margin ``value``; ``llm`` or a SPEC as is."""
        from syntriever_haystack.specs import JudgeSpec

        score = {"threshold": value} if purpose == "relevance" else {"margin": value}
        if name == "embedder":
            return JudgeSpec("embedder", self.layout.base_onnx, precision=self.precision("base-model"), **score)
        if name == "reranker":
            return JudgeSpec("ranker", self.layout.reranker_onnx, precision=self.precision("export-reranker"), **score)
        return JudgeSpec.parse(name, purpose=purpose)

    # ------------------------------------------------------------------------------------------ other
    def precision(self, step: str) -> Precision:
        """The precision the model exported by ``step`` is served at: ``export.precision``, unless that export
        fell back to fp32 (an int8 variant that failed its parity check). The one place the flow derives it."""
        from syntriever_haystack.specs import parse_precision

        exported = self.results.get(step) or {}
        return parse_precision(exported.get("precision") or self.recipe.export.precision, key=f"{step} precision")

    def served_retriever(self) -> tuple[Path, Precision]:
        """The dense model the pipelines serve: the trained retriever when it passed the gate, else the base model."""
        gate = self.results.get("gate") or {}
        if gate.get("served_retriever", "trained") == "trained":
            return self.layout.retriever_onnx, self.precision("export-retriever")
        return self.layout.base_onnx, self.precision("base-model")

    def serves_reranker(self) -> bool:
        """Whether the served query pipeline reranks: ``serve.reranker``, and with ``auto`` the gate's decision."""
        mode = self.recipe.serve.reranker
        if not self.recipe.train.reranker.enabled or mode == "never":
            return False
        if mode == "always":
            return True
        return bool((self.results.get("gate") or {}).get("served_reranker", False))

    def relative(self, path: Path) -> str:
        """``path`` relative to the output folder (how results name the run's own files)."""
        try:
            return path.relative_to(self.out).as_posix()
        except ValueError:
            return str(path)

    def short(self, text: str) -> str:
        """``text`` (a judge or system name) with the output folder's prefix dropped from the paths in it."""
        for prefix in {str(self.out.resolve()), str(self.out)}:
            text = text.replace(prefix + "/", "")
        return text

    def warn(self, message: str) -> None:
        """Record a warning (shown in the report) and print it."""
        self.warnings.append(message)
        self.echo(f"        warning: {message}")

    def set_threads(self) -> None:
        """Apply ``train.threads`` to torch."""
        if self.recipe.train.threads:
            import torch

            torch.set_num_threads(self.recipe.train.threads)


def remove(*paths: Path) -> None:
    """Delete files and folders (missing ones are fine)."""
    for path in paths:
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        elif path.exists() or path.is_symlink():
            path.unlink()


def write_json(path: Path, data: Any) -> None:
    """Write ``data`` as indented JSON, atomically (a temporary file, then a rename)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    os.replace(tmp, path)
