"""The two engines behind the local chat model: transformers (torch, always available) and llama.cpp (optional).

* ``transformers``: GGUF weights are dequantised to fp32 torch once (~40 s for Gemma 270M) and the converted
  model is kept in the cache directory (~1 GB), so later loads take a few seconds. ``precision="bf16"`` halves
  the time per query on CPUs with AMX / AVX512-BF16.
* ``llama_cpp`` (when ``llama-cpp-python`` is installed): the quantised file runs as is, 4-5x faster than fp32
  transformers, with a third of the memory.

Both answer ``generate(messages, few_shot, params)`` with a :class:`Generation`.
"""

from __future__ import annotations

import hashlib
import importlib
import logging
import os
import shutil
import time
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

from haystack.dataclasses import ChatMessage

from syntriever_haystack.generate.local_llm import tokenizer as gguf_tokenizer
from syntriever_haystack.generate.local_llm.params import LLM_LOCAL_HINT, Generation, GenerationParams, Precision
from syntriever_haystack.generate.local_llm.prompting import (
    FEW_SHOT_STOP,
    chat_dicts,
    cut_at_stop,
    render_few_shot_prompt,
)
from syntriever_haystack.generate.local_llm.registry import ResolvedModel

__all__ = ["LlamaCppBackend", "TransformersBackend", "converted_dir", "llama_cpp_available"]

logger = logging.getLogger(__name__)


def llama_cpp_available() -> bool:
    """Whether ``llama-cpp-python`` imports (and its native library loads)."""
    try:
        importlib.import_module("llama_cpp")
    except (ImportError, OSError):  # OSError: the native library failed to load
        return False
    return True


# Bump when the conversion changes, so stale converted copies in the cache are not reused.
_CONVERSION_VERSION = 1


def converted_dir(gguf: Path, cache_dir: Path) -> Path:
    """Where the transformers conversion of ``gguf`` is cached (keyed by its path, size and mtime)."""
    stat = gguf.stat()
    key = hashlib.sha256(f"{gguf}|{stat.st_size}|{stat.st_mtime_ns}|{_CONVERSION_VERSION}".encode()).hexdigest()[:12]
    return cache_dir / "converted" / f"{gguf.stem}-{key}"


class TransformersBackend:
    """fp32 torch inference through ``transformers`` (GGUF files are dequantised once and cached)."""

    name = "transformers"

    def __init__(
        self, resolved: ResolvedModel, cache_dir: Path, n_threads: int | None, precision: Precision = "fp32"
    ) -> None:
        try:
            import torch
            import transformers
        except ImportError as error:
            raise ImportError(f"The transformers backend needs torch and transformers: {LLM_LOCAL_HINT}") from error
        del transformers  # imported only to check that it is installed
        self._torch = torch
        if n_threads:
            torch.set_num_threads(int(n_threads))
        self.dtype = torch.bfloat16 if precision == "bf16" else torch.float32
        self.model, self.tokenizer = self._load(resolved, cache_dir)
        if self.model.dtype != self.dtype:
            self.model.to(self.dtype)
        self.model.eval()
        config = self.model.config
        self.context_length: int | None = getattr(config, "max_position_embeddings", None)
        self.eos_token_ids = self._eos_ids()
        self.pad_token_id = self.tokenizer.pad_token_id
        if self.pad_token_id is None:
            self.pad_token_id = min(self.eos_token_ids) if self.eos_token_ids else 0

    def _load(self, resolved: ResolvedModel, cache_dir: Path) -> tuple[Any, Any]:
        from transformers import AutoModelForCausalLM, AutoTokenizer

        torch = self._torch
        if resolved.kind == "transformers":
            directory = resolved.path
        else:
            directory = converted_dir(resolved.path, cache_dir)
            if not (directory / "config.json").is_file():
                started = time.perf_counter()
                logger.info(
                    "Converting %s to an fp32 transformers model (once; cached in %s)", resolved.path, directory
                )
                model, tokenizer = gguf_tokenizer.load_gguf_with_transformers(resolved.path, torch)
                try:
                    self._save_atomically(model, tokenizer, directory)
                except OSError as error:  # read-only cache: keep the in-memory conversion
                    logger.warning("Could not cache the converted model in %s (%s)", directory, error)
                logger.info("Converted in %.1f s", time.perf_counter() - started)
                return model, tokenizer
        tokenizer = AutoTokenizer.from_pretrained(str(directory))
        model = AutoModelForCausalLM.from_pretrained(str(directory), dtype=self.dtype)
        return model, tokenizer

    @staticmethod
    def _save_atomically(model: Any, tokenizer: Any, directory: Path) -> None:
        directory.parent.mkdir(parents=True, exist_ok=True)
        tmp = directory.parent / f".{directory.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp"
        try:
            model.save_pretrained(str(tmp))
            tokenizer.save_pretrained(str(tmp))
            try:
                os.rename(tmp, directory)
            except OSError:
                if not (directory / "config.json").is_file():  # not a concurrent writer that won the race
                    raise
        finally:
            shutil.rmtree(tmp, ignore_errors=True)

    def _eos_ids(self) -> set[int]:
        ids: set[int] = set()
        configured = getattr(self.model.generation_config, "eos_token_id", None)
        if isinstance(configured, int):
            ids.add(configured)
        elif configured:
            ids.update(int(i) for i in configured)
        if self.tokenizer.eos_token_id is not None:
            ids.add(int(self.tokenizer.eos_token_id))
        # End-of-turn markers of common chat templates end a reply too.
        special = set(self.tokenizer.all_special_tokens) | set(getattr(self.tokenizer, "added_tokens_encoder", {}))
        for marker in ("<end_of_turn>", "<|im_end|>", "<|eot_id|>", "<|end|>"):
            if marker in special:
                ids.add(int(self.tokenizer.convert_tokens_to_ids(marker)))
        return ids

    @property
    def chat_template(self) -> str | None:
        return getattr(self.tokenizer, "chat_template", None)

    def generate(self, messages: Sequence[ChatMessage], few_shot: bool, params: GenerationParams) -> Generation:
        torch = self._torch
        from transformers import GenerationConfig, StoppingCriteria, StoppingCriteriaList

        if few_shot:
            prompt = render_few_shot_prompt(messages)
            stops = (*params.stop, *FEW_SHOT_STOP)
            add_special_tokens = True
        else:
            prompt = self.tokenizer.apply_chat_template(
                chat_dicts(messages), tokenize=False, add_generation_prompt=True
            )
            stops = params.stop
            add_special_tokens = False  # the template writes its own BOS
        encoded = self.tokenizer(
            prompt, return_tensors="pt", add_special_tokens=add_special_tokens, return_token_type_ids=False
        )
        input_ids = encoded["input_ids"]
        n_prompt = int(input_ids.shape[1])
        max_new = params.max_tokens
        if self.context_length:
            if n_prompt >= self.context_length:
                raise ValueError(
                    f"The prompt is {n_prompt} tokens; the model's context is {self.context_length}. Shorten it."
                )
            max_new = min(max_new, self.context_length - n_prompt)
        tokenizer = self.tokenizer

        class StopOnStrings(StoppingCriteria):  # decodes the new tokens only; nothing is re-tokenised
            def __call__(self, ids: Any, scores: Any, **kwargs: Any) -> Any:
                text = tokenizer.decode(ids[0, n_prompt:], skip_special_tokens=True)
                hit = any(stop in text for stop in stops)
                return torch.full((ids.shape[0],), hit, dtype=torch.bool, device=ids.device)

        config = GenerationConfig(
            max_new_tokens=max_new,
            do_sample=not params.greedy,
            bos_token_id=self.model.generation_config.bos_token_id,
            eos_token_id=sorted(self.eos_token_ids) or None,
            pad_token_id=self.pad_token_id,
        )
        if not params.greedy:
            config.temperature = params.temperature
            config.top_k = 0  # OpenAI semantics: temperature and top_p only
            config.top_p = params.top_p if params.top_p is not None else 1.0
        if params.seed is not None:
            torch.manual_seed(params.seed)
        with torch.inference_mode():
            output = self.model.generate(
                **encoded,
                generation_config=config,
                stopping_criteria=StoppingCriteriaList([StopOnStrings()]) if stops else None,
            )
        new_ids = output[0, n_prompt:].tolist()
        text, stopped = cut_at_stop(tokenizer.decode(new_ids, skip_special_tokens=True), stops)
        ended = bool(new_ids) and new_ids[-1] in self.eos_token_ids
        finish: Literal["stop", "length"] = "stop" if stopped or ended or len(new_ids) < max_new else "length"
        return Generation(text.strip(), finish, n_prompt, len(new_ids))


class LlamaCppBackend:
    """The quantised GGUF file run by ``llama-cpp-python`` (only used when it is installed)."""

    name = "llama_cpp"
    n_ctx = 4096

    def __init__(self, resolved: ResolvedModel, n_threads: int | None) -> None:
        if resolved.kind != "gguf":
            raise ValueError(f"The llama_cpp backend runs .gguf files only; {resolved.path} is a transformers model.")
        try:
            import llama_cpp  # type: ignore[import-not-found,unused-ignore]
        except (ImportError, OSError) as error:
            raise ImportError(
                "backend='llama_cpp' needs llama-cpp-python (it builds from source; see the docs), "
                f"or use backend='transformers' ({LLM_LOCAL_HINT})."
            ) from error
        threads = int(n_threads or os.cpu_count() or 1)
        # Typed Any: the code must type-check with and without llama-cpp-python installed.
        self.llm: Any = llama_cpp.Llama(
            model_path=str(resolved.path), n_ctx=self.n_ctx, n_threads=threads, n_threads_batch=threads, verbose=False
        )

    @property
    def chat_template(self) -> str | None:
        template = self.llm.metadata.get("tokenizer.chat_template")
        return str(template) if template else None

    def generate(self, messages: Sequence[ChatMessage], few_shot: bool, params: GenerationParams) -> Generation:
        sampling: dict[str, Any] = {
            "max_tokens": params.max_tokens,
            "temperature": params.temperature,
            "top_p": 1.0 if params.top_p is None else params.top_p,
            "top_k": 0,
            "min_p": 0.0,
            "repeat_penalty": 1.0,
            "seed": params.seed,
        }
        if few_shot:
            stops = [*params.stop, *FEW_SHOT_STOP]
            response = self.llm.create_completion(render_few_shot_prompt(messages), stop=stops, **sampling)
            choice = response["choices"][0]
            raw = choice["text"]
        else:
            stops = list(params.stop)
            response = self.llm.create_chat_completion(chat_dicts(messages), stop=stops or None, **sampling)
            choice = response["choices"][0]
            raw = choice["message"]["content"] or ""
        text, _ = cut_at_stop(raw, stops)
        usage = response.get("usage") or {}
        finish: Literal["stop", "length"] = "length" if choice.get("finish_reason") == "length" else "stop"
        return Generation(
            text.strip(), finish, int(usage.get("prompt_tokens", 0)), int(usage.get("completion_tokens", 0))
        )
