"""Query filters: normalisation, truncation, copies of the passage, (near-)duplicates, round-trip consistency."""

from __future__ import annotations

import itertools
import random

import pytest

from syntriever_haystack.generate.filters import (
    REASONS,
    NearDuplicateIndex,
    QueryFilter,
    copies_passage,
    is_empty,
    looks_truncated,
    normalize_text,
    round_trip_filter,
    words,
)

PASSAGE = (
    "Iron deficiency anaemia is the most common type of anaemia worldwide. It develops when the body lacks the "
    "iron it needs to make haemoglobin, usually because of blood loss, a poor diet or pregnancy. Treatment "
    "consists of oral iron supplements taken for three months, and of finding and treating the cause of the "
    "blood loss."
)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ('  1. Query: "What causes  Anaemia?"  ', "what causes anaemia"),
        ("**Question 2:** What is iron deficiency?", "what is iron deficiency"),
        ("- iron deficiency treatment", "iron deficiency treatment"),
        ("3) 'Is aspirin safe?'", "is aspirin safe"),
        ("“Smart quotes”…", "smart quotes"),
        ("Ｆｕｌｌｗｉｄｔｈ\u00a0text", "fullwidth text"),  # NFKC
        ("c++ memory model", "c++ memory model"),  # inner / meaningful symbols kept
        ("type-2 diabetes", "type-2 diabetes"),
        ("hepatitis a", "hepatitis a"),
        ("", ""),
    ],
)
def test_normalize_text(raw: str, expected: str) -> None:
    assert normalize_text(raw) == expected


def test_words_split_punctuation_and_cjk() -> None:
    assert words("Type-2 Diabetes, adults!") == ["type", "2", "diabetes", "adults"]
    assert words("糖尿病 risk") == ["糖", "尿", "病", "risk"]


def test_is_empty() -> None:
    assert is_empty("")
    assert is_empty(None)
    assert is_empty("  1.  ")
    assert is_empty('"Query:"')
    assert is_empty("anaemia")
    assert not is_empty("anaemia", min_words=1)
    assert not is_empty("iron deficiency")


@pytest.mark.parametrize(
    ("text", "finish_reason", "expected"),
    [
        ("What causes iron deficiency anaemia?", "stop", False),
        ("What causes iron deficiency anaemia?", "length", True),
        ("What causes iron deficiency", "max_tokens", True),
        ("effects of aspirin (low dose", None, True),
        ('what does "iron deficiency', None, True),
        ("what does “iron deficiency", None, True),
        ("causes of anaemia and", None, True),
        ("what is the risk of the", None, True),
        ("treatment of iron-", None, True),
        ("causes of anaemia,", None, True),
        ("what causes...", None, True),
        ("is it serious?...", None, False),
        ("what is it used for", None, False),
        ("vitamin a deficiency", None, False),
        ("patients' risk of bleeding", None, False),
        ('what does "iron deficiency" mean (in adults)?', None, False),
        ("", None, False),
    ],
)
def test_looks_truncated(text: str, finish_reason: str | None, expected: bool) -> None:
    assert looks_truncated(text, finish_reason) is expected


def test_copies_passage() -> None:
    # Verbatim span, any case / punctuation.
    assert copies_passage("It develops when the body lacks the iron it needs to make haemoglobin.", PASSAGE)
    # Nearly verbatim: 1 extra word in 11 keeps a contiguous run of 10/11 ≥ 0.8.
    assert copies_passage("it develops when the body lacks the iron it needs badly", PASSAGE)
    # Stitched from two sentences: no long contiguous run, but ≥ 80% of the 5-grams come from the passage.
    stitched = (
        "iron deficiency anaemia is the most common type of anaemia worldwide "
        "treatment consists of oral iron supplements taken for three months and of finding and treating the cause"
    )
    assert copies_passage(stitched, PASSAGE)
    assert not copies_passage(stitched, PASSAGE, ngram=50)  # the n-gram criterion was what caught it
    # Real questions about the passage.
    assert not copies_passage("How long should iron supplements be taken for anaemia?", PASSAGE)
    assert not copies_passage("why does pregnancy cause low haemoglobin", PASSAGE)
    # Short queries: the contiguous-run criterion only.
    assert copies_passage("oral iron supplements", PASSAGE)
    assert not copies_passage("iron supplements oral", PASSAGE)  # 2 of 3 words contiguous: 0.67 < 0.8
    assert not copies_passage("", PASSAGE)
    with pytest.raises(ValueError, match="max_overlap"):
        copies_passage("x", PASSAGE, max_overlap=0)


def test_near_duplicate_index_finds_punctuation_and_spelling_variants() -> None:
    index = NearDuplicateIndex()
    assert index.add("q1", "What are the symptoms of type-2 diabetes?") is None
    assert index.add("q2", "What causes iron deficiency anaemia in adults?") is None
    assert index.add("q3", "Is aspirin safe during pregnancy?") is None
    # Exact after normalisation (found through the hash).
    match = index.find("1. what are the symptoms of type-2 diabetes")
    assert match is not None
    assert match.key == "q1"
    assert match.exact
    # Near duplicates: punctuation / spelling / one word.
    assert index.add("q4", '"What are the symptoms of type 2 diabetes"') == "q1"
    assert index.add("q5", "what causes iron-deficiency anemia in adults") == "q2"
    near = index.find("What causes iron deficiency anemia in adults?")
    assert near is not None
    assert near.key == "q2"
    assert not near.exact
    assert 0.85 <= near.similarity < 1.0
    assert "q4" not in index  # duplicates are not stored
    assert "q5" not in index
    assert len(index) == 3


def test_near_duplicate_index_keeps_different_queries() -> None:
    index = NearDuplicateIndex()
    queries = [
        "What are the symptoms of type 2 diabetes?",
        "What are the symptoms of type 1 diabetes?",  # char-Jaccard 0.85, but a different number
        "What is the treatment for hepatitis B?",
        "What is the treatment for hepatitis C?",  # char-Jaccard 0.94, but a different letter
        "What causes iron deficiency anaemia in adults?",
        "What causes iron deficiency anaemia in children?",
        "How is iron deficiency anaemia treated?",
        "Is aspirin safe during pregnancy?",
        "aspirin pregnancy safety",
    ]
    for i, query in enumerate(queries):
        assert index.add(f"q{i}", query) is None, query
    assert len(index) == len(queries)
    # Without the marker rule the number / letter variants are plain Jaccard near-duplicates.
    plain = NearDuplicateIndex(exact_markers=False)
    assert plain.add("a", queries[2]) is None
    assert plain.add("b", queries[3]) == "a"
    with pytest.raises(ValueError, match="already"):
        index.add("q0", "something else entirely different")


def _random_corpus(n: int, seed: int = 0) -> list[str]:
    """Families of similar strings: random base sentences and variants with a few word / letter edits."""
    rng = random.Random(seed)
    vocab = ["".join(rng.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(rng.randint(3, 8))) for _ in range(120)]
    texts: list[str] = []
    while len(texts) < n:
        base = [rng.choice(vocab) for _ in range(rng.randint(5, 12))]
        texts.append(" ".join(base))
        for _ in range(rng.randint(0, 5)):
            variant = list(base)
            for _ in range(rng.randint(0, 2)):
                op = rng.random()
                pos = rng.randrange(len(variant))
                if op < 0.3:
                    variant[pos] = rng.choice(vocab)
                elif op < 0.5 and len(variant) > 3:
                    del variant[pos]
                elif op < 0.8:
                    word = variant[pos]
                    i = rng.randrange(len(word))
                    variant[pos] = word[:i] + rng.choice("abcdefghijklmnopqrstuvwxyz") + word[i + 1 :]
                else:
                    variant.insert(pos, rng.choice(vocab))
            texts.append(" ".join(variant))
    return texts[:n]


def test_near_duplicate_index_agrees_with_brute_force_jaccard() -> None:
    texts = _random_corpus(200)
    index = NearDuplicateIndex(threshold=0.85, shingle=3, exact_markers=False)
    shingles = [index.shingles(t) for t in texts]
    truth = {
        (i, j)
        for i, j in itertools.combinations(range(len(texts)), 2)
        if len(shingles[i] & shingles[j]) / len(shingles[i] | shingles[j]) >= 0.85
    }
    assert len(truth) >= 30  # the test is only meaningful with enough similar pairs
    for i, text in enumerate(texts):
        index.force_add(str(i), text)
    found = set()
    for i, text in enumerate(texts):
        for match in index.matches(text):
            j = int(match.key)
            if j != i:
                found.add((min(i, j), max(i, j)))
                assert match.similarity == pytest.approx(index.jaccard(texts[i], texts[j]))
    assert found <= truth  # verified with the exact Jaccard: no false positives
    assert len(found & truth) / len(truth) >= 0.9
    # add() agrees: a text is rejected iff some earlier kept text is a near-duplicate (recall permitting).
    fresh = NearDuplicateIndex(threshold=0.85, shingle=3, exact_markers=False)
    kept: list[int] = []
    for i, text in enumerate(texts):
        hit = fresh.add(str(i), text)
        if hit is None:
            kept.append(i)
        else:
            assert index.jaccard(text, texts[int(hit)]) >= 0.85
    assert 0 < len(kept) < len(texts)


def test_query_filter_reasons_and_counts() -> None:
    qf = QueryFilter()
    assert qf.check("") == "empty"
    assert qf.check(None) == "empty"
    assert qf.check("anaemia") == "empty"
    assert qf.check("What causes iron deficiency", finish_reason="length") == "truncated"
    assert qf.check("effects of aspirin (low dose") == "truncated"
    assert qf.check(" ".join(["word"] * 65) + "?") == "too_long"
    assert qf.check("Treatment consists of oral iron supplements taken for three months.", passage=PASSAGE) == (
        "copies_passage"
    )
    assert qf.check("How long should iron supplements be taken?", passage=PASSAGE, query_id="q1") is None
    assert qf.check("how long should iron supplements be taken") == "duplicate"
    assert qf.last_duplicate_of == "q1"
    assert qf.check("How long should iron-supplements be taken for?") == "near_duplicate"
    assert qf.last_duplicate_of == "q1"
    assert qf.check("What causes iron deficiency anaemia?") is None
    assert qf.last_duplicate_of is None
    assert qf.counts == {
        "empty": 3,
        "truncated": 2,
        "too_long": 1,
        "copies_passage": 1,
        "duplicate": 1,
        "near_duplicate": 1,
        "accepted": 2,
    }
    assert set(qf.counts) - {"accepted"} <= set(REASONS)
    assert "2 of 11 queries accepted" in qf.summary()


def test_query_filter_does_not_register_rejected_queries() -> None:
    qf = QueryFilter()
    assert qf.check("What causes iron deficiency anaemia?", finish_reason="length") == "truncated"
    assert qf.check("What causes iron deficiency anaemia?") is None  # the rejected one did not block it
    copied = "It develops when the body lacks the iron it needs to make haemoglobin."
    assert qf.check(copied, passage=PASSAGE) == "copies_passage"
    assert qf.check(copied, passage="An unrelated passage about aspirin and the heart.") is None


def test_query_filter_copy_min_words_exempts_short_keyword_queries() -> None:
    assert QueryFilter().check("oral iron supplements", passage=PASSAGE) == "copies_passage"
    assert QueryFilter(copy_min_words=4).check("oral iron supplements", passage=PASSAGE) is None


def test_query_filter_scopes() -> None:
    query = "What is the treatment for anaemia?"
    global_filter = QueryFilter(scope="global")
    assert global_filter.check(query, passage_id="d1") is None
    assert global_filter.check(query, passage_id="d2") == "duplicate"

    per_passage = QueryFilter(scope="per_passage")
    assert per_passage.check(query, passage_id="d1") is None
    assert per_passage.check(query, passage_id="d2") is None
    assert per_passage.check(query + "!", passage_id="d1") == "duplicate"
    assert per_passage.check(query, passage="some passage text") is None  # identified by its text
    assert per_passage.check(query, passage="some passage text") == "duplicate"
    with pytest.raises(ValueError, match="passage_id"):
        per_passage.check(query)
    with pytest.raises(ValueError, match="scope"):
        QueryFilter(scope="everywhere")  # type: ignore[arg-type]


def test_query_filter_near_duplicates_can_be_disabled_and_register_resumes() -> None:
    qf = QueryFilter(near_duplicate_threshold=None)
    assert qf.check("What are the symptoms of type-2 diabetes?") is None
    assert qf.check("What are the symptoms of type 2 diabetes?") is None  # near, not exact: allowed
    assert qf.check("what are the symptoms of type-2 diabetes") == "duplicate"

    resumed = QueryFilter()
    resumed.register("Is aspirin safe during pregnancy?", query_id="old-1")
    assert resumed.counts == {}
    assert resumed.check("is aspirin safe during pregnancy") == "duplicate"
    assert resumed.last_duplicate_of == "old-1"


def test_round_trip_filter() -> None:
    ranking = {
        "q-a": ["d1", "d2", "d3"],
        "q-b": ["d9", "d8", "d2"],
        "q-c": ["d4", "d5"],
        "q-d": ["d7", "d6", "d5", "d4", "d3"],
        "q-e": ["d5"],
    }
    calls: list[int] = []

    def retrieve(texts: list[str]) -> list[list[str]]:
        calls.append(len(texts))
        return [ranking[t] for t in texts]

    queries = [
        ("1", "q-a", "d1"),  # rank 1
        ("2", "q-b", "d2"),  # rank 3
        ("3", "q-c", "d9"),  # not retrieved
        ("4", "q-d", "d3"),  # rank 5
        ("5", "q-e", "d5"),  # rank 1
    ]
    kept, dropped = round_trip_filter(queries, retrieve, k=3, batch_size=2)
    assert kept == ["1", "2", "5"]
    assert dropped == {"3": None, "4": 5}
    assert calls == [2, 2, 1]
    kept, dropped = round_trip_filter(queries, retrieve, k=1)
    assert kept == ["1", "5"]
    assert dropped == {"2": 3, "3": None, "4": 5}

    with pytest.raises(ValueError, match="one ranked"):
        round_trip_filter(queries, lambda texts: [["d1"]], k=3)
    assert round_trip_filter([], retrieve) == ([], {})
