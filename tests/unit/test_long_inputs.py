"""Huge inputs cost little, out-of-range settings fail in ``__init__``, text-less Documents are not ranked."""

from __future__ import annotations

import json
import logging
import random
import re
import subprocess
import textwrap
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from haystack import Document

from syntriever_haystack import SyntrieverDocumentEmbedder, SyntrieverRanker, SyntrieverTextEmbedder
from syntriever_haystack.runtime.inputs import MAX_QUERY_CHARS
from syntriever_haystack.runtime.onnx_model import OnnxModel, longest_first
from tests.conftest import PYTHON, ROOT, WORDS

HUGE = ("iron deficiency causes anaemia " * 3500)[:100_000]


def _words(rng: random.Random, n: int) -> str:
    return " ".join(rng.choices(WORDS, k=n))


# ------------------------------------------------------------------ 1. memory and exactness of long inputs
PEAK = textwrap.dedent(
    """
    import json, random, resource, sys
    resource.setrlimit(resource.RLIMIT_AS, (8 << 30, 8 << 30))  # today's code must not take the machine down

    def hwm_mb():
        for line in open("/proc/self/status"):
            if line.startswith("VmHWM"):
                return int(line.split()[1]) / 1024

    from haystack import Document
    from syntriever_haystack import SyntrieverRanker

    words = sys.argv[3].split()
    rng = random.Random(0)
    docs = [Document(content=" ".join(rng.choices(words, k=40))) for _ in range(50)]
    ranker = SyntrieverRanker(model=sys.argv[1], top_k=5)
    ranker.run(query="iron anaemia", documents=docs)  # warm: session, tokenizer, arena
    base = hwm_mb()
    query = " ".join(rng.choices(words, k=30000))[: int(sys.argv[2])]
    ranker.run(query=query, documents=docs)
    print(json.dumps({"delta_mb": hwm_mb() - base}))
    """
)


def test_a_100000_character_query_through_the_ranker_stays_small(
    exported_cross_encoder: Path, subprocess_env: dict[str, str]
) -> None:
    """The tokenizer kept every overflow piece of a truncated pair: 931 MB for this on the tiny model (max length
    64), 24 GB with MiniLM. Each pair is now cut to the window before pairing."""
    out = subprocess.run(
        [PYTHON, "-c", PEAK, str(exported_cross_encoder), "100000", " ".join(WORDS)],
        cwd=ROOT,
        env=subprocess_env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    delta = json.loads(out.stdout.strip().splitlines()[-1])["delta_mb"]
    assert delta < 200, f"peak memory grew by {delta:.0f} MB for one long query"


@pytest.fixture(scope="module")
def cross(exported_cross_encoder: Path) -> OnnxModel:
    return OnnxModel(exported_cross_encoder)


@pytest.fixture(scope="module")
def bi(exported_bi_encoder: Path) -> OnnxModel:
    return OnnxModel(exported_bi_encoder)


def _ids(model: OnnxModel, items: list[Any]) -> list[list[int]]:
    return [list(e.ids) for e in model.tokenizer.encode_batch(items)]  # today's path: the tokenizer's truncation


def test_longest_first_is_the_tokenizers_rule(cross: OnnxModel) -> None:
    room = cross._pair_room
    for a in [*range(0, 2 * room + 3, 7), room - 1, room, room + 1]:
        for b in [*range(0, 2 * room + 3, 5), room - 1, room, room + 1, a]:
            enc = cross.tokenizer.encode("iron " * a, "iron " * b)
            types = np.asarray(enc.type_ids)[np.asarray(enc.special_tokens_mask) == 0]
            assert (int((types == 0).sum()), int((types == 1).sum())) == longest_first(a, b, room), (a, b)


def test_fitted_pairs_are_encoded_as_before_when_the_query_fits(cross: OnnxModel) -> None:
    rng = random.Random(3)
    room = cross._pair_room
    pairs = []
    for _ in range(300):
        query = _words(rng, rng.choice([1, 3, room // 2, room // 2 + 1, room - 2, room]))
        doc = _words(rng, rng.choice([0, 2, 10, room // 2, room, room + 1, 2 * room, 600]))
        pairs.append((query, doc))
    pairs.append(("iron", HUGE))  # a document far over the character budget
    pairs.append(("iron", "anaemia" + " " * 5000 + _words(rng, 100)))  # the budget's first cut does not fill the window
    pairs = [(q, d) for q, d in pairs if len(cross.tokenizer.encode(q, add_special_tokens=False).ids) <= room]
    fitted = cross.fit_pairs(pairs)
    assert [list(ids) for ids, _ in cross._tokenize(fitted)] == _ids(cross, pairs)
    assert all(not e.overflowing for e in cross.tokenizer.encode_batch(fitted)), "a fitted pair still overflows"


def test_a_long_query_keeps_its_first_tokens_without_overflow(cross: OnnxModel) -> None:
    fitted = cross.fit_pairs([(HUGE, "iron deficiency"), (HUGE, HUGE)])
    for (query, _doc), enc in zip(fitted, cross.tokenizer.encode_batch(fitted), strict=True):
        assert HUGE.startswith(query)
        assert len(query) < 1000
        assert len(enc.ids) <= cross.max_length
        assert not enc.overflowing


def test_long_single_texts_are_read_up_to_the_window_only(bi: OnnxModel) -> None:
    rng = random.Random(5)
    texts = [
        HUGE,
        _words(rng, 5000),
        "anaemia" + " " * 5_000 + _words(rng, 200),  # whitespace: the first cut holds too few tokens
        "x" * 5_000 + " iron",  # one unsplittable word
        "iron",
        "",
    ]
    bounded = bi.bounded_texts(texts)
    assert all(len(t) <= 256 * bi.max_length for t in bounded)
    assert len(bounded[0]) <= 16 * bi.max_length
    assert [list(ids) for ids, _ in bi._tokenize(bounded)] == _ids(bi, texts)
    assert np.array_equal(bi.embed(texts[:2] + texts[4:]), bi.embed([bounded[0], bounded[1], "iron", ""]))
    # past the hard budget (256 characters per token of the window) nothing more is read: the documented limit
    blob = "anaemia" + " " * 20_000 + "iron"
    assert bi.bounded_texts([blob]) == ["anaemia"]


def test_components_answer_a_huge_query(exported_bi_encoder: Path, exported_cross_encoder: Path) -> None:
    embedder = SyntrieverTextEmbedder(model=exported_bi_encoder)
    cut = HUGE[: 16 * 64].rsplit(" ", 1)[0]
    assert embedder.run(text=HUGE)["embedding"] == embedder.run(text=cut)["embedding"]
    ranker = SyntrieverRanker(model=exported_cross_encoder)
    docs = [Document(content="iron deficiency"), Document(content="paris france")]
    assert len(ranker.run(query=HUGE, documents=docs)["documents"]) == 2


# ------------------------------------------------------------------ 2. Documents without text
def test_document_embedder_leaves_textless_documents_unembedded(
    exported_bi_encoder: Path, caplog: pytest.LogCaptureFixture
) -> None:
    embedder = SyntrieverDocumentEmbedder(model=exported_bi_encoder, progress_bar=False)
    docs = [Document(id="a", content="iron"), Document(id="none", content=None), Document(id="c", content="")]
    with caplog.at_level(logging.WARNING):
        out = embedder.run(documents=docs)["documents"]
    assert [d.id for d in out] == ["a", "none", "c"]
    assert out[1].embedding is None
    assert out[0].embedding is not None
    assert out[2].embedding is not None
    alone = embedder.run(documents=[docs[0], docs[2]])["documents"]
    assert [out[0].embedding, out[2].embedding] == [d.embedding for d in alone]
    assert "content=None" in caplog.text
    assert "none" in caplog.text
    assert embedder.run(documents=[Document(content=None)])["documents"][0].embedding is None


def test_ranker_puts_textless_documents_last_unscored(
    exported_cross_encoder: Path, caplog: pytest.LogCaptureFixture
) -> None:
    ranker = SyntrieverRanker(model=exported_cross_encoder, scale_score=False)
    docs = [Document(id="none", content=None, score=99.0), Document(id="a", content="iron"), Document(id="b")]
    with caplog.at_level(logging.WARNING):
        out = ranker.run(query="iron anaemia", documents=docs)["documents"]
    assert [d.id for d in out[:1]] == ["a"]
    assert {d.id for d in out[1:]} == {"none", "b"}
    assert out[0].score is not None
    assert out[1].score is None
    assert out[2].score is None
    assert "content=None" in caplog.text
    assert [d.id for d in ranker.run(query="iron", documents=docs, top_k=1)["documents"]] == ["a"]
    assert [d.id for d in ranker.run(query="iron", documents=docs, score_threshold=-1e9)["documents"]] == ["a"]


# ------------------------------------------------------------------ 3. out-of-range settings fail in __init__
@pytest.mark.parametrize("component", [SyntrieverTextEmbedder, SyntrieverDocumentEmbedder, SyntrieverRanker])
@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("batch_size", 0),
        ("batch_size", -3),
        ("batch_size", 2.5),
        ("batch_size", None),
        ("batch_size", True),
        ("num_threads", 0),
        ("max_length", 0),
        ("max_length", -1),
        ("num_threads", "4"),
    ],
)
def test_out_of_range_init_values_fail_early(component: Any, name: str, value: Any) -> None:
    with pytest.raises(ValueError, match=rf"{name} must be an integer >= 1.*got {value!r}"):
        component(model="never-loaded", **{name: value})


@pytest.mark.parametrize("top_k", [0, -1, 1.5, None])
def test_ranker_top_k_out_of_range(top_k: Any) -> None:
    with pytest.raises(ValueError, match=r"top_k must be an integer >= 1"):
        SyntrieverRanker(model="never-loaded", top_k=top_k)


def test_in_range_values_are_kept() -> None:
    ranker = SyntrieverRanker(model="m", top_k=1, batch_size=1, num_threads=None, max_length=None)
    assert (ranker.top_k, ranker.batch_size) == (1, 1)
    assert SyntrieverTextEmbedder(model="m", num_threads=2, max_length=8).max_length == 8


# ------------------------------------------------------------------ CLI: a huge query is cut, with a warning
def test_cli_rerank_and_embed_cut_a_huge_query(
    exported_bi_encoder: Path, exported_cross_encoder: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from syntriever_haystack.cli import main

    assert main(["rerank", str(exported_cross_encoder), HUGE, "iron deficiency", "paris"]) == 0
    captured = capsys.readouterr()
    assert captured.err.count("\n") == 1
    assert "warning: the query has 100,000 characters" in captured.err
    assert len(captured.out.splitlines()) == 2
    assert main(["embed", str(exported_bi_encoder), HUGE, "--query"]) == 0
    captured = capsys.readouterr()
    line = json.loads(captured.out)
    assert len(line["text"]) == 100_000
    assert len(line["embedding"]) == 32
    assert re.search(rf"using its first [\d,]+ \(at most {MAX_QUERY_CHARS:,}", captured.err)
    assert main(["embed", str(exported_bi_encoder), HUGE]) == 0  # a document: read up to the window, no warning
    assert capsys.readouterr().err == ""
