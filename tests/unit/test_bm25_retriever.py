"""The one BM25 (runtime.bm25) served by SyntrieverBM25Retriever, and the store that loads its own file."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import pytest
from haystack import Document, Pipeline
from haystack.document_stores.in_memory import InMemoryDocumentStore

from haystack_integrations.components.retrievers.syntriever import SyntrieverBM25Retriever
from haystack_integrations.document_stores.syntriever import SyntrieverInMemoryDocumentStore
from syntriever_haystack.data.beir import load_beir
from syntriever_haystack.errors import SyntrieverError
from syntriever_haystack.evaluate import evaluate_systems
from syntriever_haystack.evaluate.texts import SplitTexts
from syntriever_haystack.runtime import bm25 as runtime_bm25
from syntriever_haystack.runtime.bm25 import BM25Index, BM25Params, bm25_index_dir
from syntriever_haystack.runtime.locations import pipeline_base, relative_to_base, resolve_path
from syntriever_haystack.serve.memory_store import save_memory_store

CORPUS = [
    ("d1", "Anaemia", "Iron deficiency and blood loss are the commonest causes of anaemia in adults."),
    ("d2", "Aspirin", "Aspirin reduces the risk of a second heart attack in patients with heart disease."),
    ("d3", "Iron", "Iron supplements increase haemoglobin levels; iron is absorbed in the duodenum."),
    ("d4", "Vitamin D", "Vitamin D supplementation reduced fractures in elderly women in randomized trials."),
    ("d5", "Diabetes", "Insulin resistance raises blood glucose; diabetes increases the risk of heart disease."),
    ("d6", "Paris", "Paris is the capital and largest city of France, on the river Seine."),
    ("d7", "Tumours", "Brain tumours in children differ from brain tumours in adults."),
    ("d8", "Bleeding", "Chronic blood loss from the gut causes iron deficiency anaemia."),
    ("d9", "Fractures", "Hip fractures in the elderly: bone density, falls and vitamin levels."),
    ("d10", "Glucose", "Glucose is the main energy source of the brain."),
    (
        "d11",
        "Anaemia",
        "Iron deficiency and blood loss are the commonest causes of anaemia in adults.",
    ),  # a tie with d1
]
QUERIES = {
    "q1": "what causes iron deficiency anaemia?",
    "q2": "does aspirin lower the risk of heart attacks",
    "q3": "vitamin D and fractures in elderly people",
    "q4": "brain tumours children",
    "q5": "blood glucose in diabetes",
    "q6": "the of and",  # only stop words: nothing
}


@pytest.fixture
def beir(tmp_path: Path) -> Path:
    folder = tmp_path / "beir"
    (folder / "qrels").mkdir(parents=True)
    rows = [json.dumps({"_id": i, "title": t, "text": x}) for i, t, x in CORPUS]
    (folder / "corpus.jsonl").write_text("\n".join(rows) + "\n", encoding="utf-8")
    queries = [json.dumps({"_id": q, "text": t}) for q, t in QUERIES.items()]
    (folder / "queries.jsonl").write_text("\n".join(queries) + "\n", encoding="utf-8")
    qrels = ["query-id\tcorpus-id\tscore"] + [f"{q}\td{n}\t1" for n, q in enumerate(QUERIES, start=1)]
    (folder / "qrels" / "test.tsv").write_text("\n".join(qrels) + "\n", encoding="utf-8")
    return folder


def _store(texts: SplitTexts, **meta: list[str]) -> InMemoryDocumentStore:
    store = InMemoryDocumentStore(index=f"bm25-{uuid.uuid4().hex}")
    store.write_documents(
        [
            Document(id=i, content=t, meta={k: v[n] for k, v in meta.items()})
            for n, (i, t) in enumerate(zip(texts.doc_ids, texts.doc_texts, strict=True))
        ]
    )
    return store


def _ranking(retriever: SyntrieverBM25Retriever, query: str, **kwargs: object) -> list[tuple[str, float]]:
    return [(d.id, d.score) for d in retriever.run(query=query, **kwargs)["documents"]]  # type: ignore[misc]


def test_component_ranks_exactly_like_the_evaluation(beir: Path) -> None:
    dataset = load_beir(beir, "test")
    report = evaluate_systems(dataset, ["bm25"], progress=False, depth=100)
    evaluated = report.system("bm25").run
    texts = SplitTexts.from_dataset(dataset)
    retriever = SyntrieverBM25Retriever(document_store=_store(texts), top_k=100)
    for query_id, query in QUERIES.items():
        assert _ranking(retriever, query) == list(evaluated.get(query_id, {}).items()), query_id
    (first, s1), (second, s2) = _ranking(retriever, QUERIES["q1"])[:2]
    assert (first, second) == ("d1", "d11")  # the same text: equal scores keep corpus order
    assert s1 == s2
    assert _ranking(retriever, QUERIES["q6"]) == []
    # the top k is a prefix of the top k + n, ties included
    for k in range(1, 6):
        assert _ranking(retriever, QUERIES["q1"], top_k=k) == _ranking(retriever, QUERIES["q1"])[:k]


def test_runtime_defaults_are_the_evaluation_defaults() -> None:
    assert BM25Params.from_options({}) == BM25Params() == BM25Params(1.2, 0.75, "lucene", "english", "en")
    assert BM25Params.from_options({"stemmer": "none", "stopwords": "none", "k1": "0.9"}) == BM25Params(
        k1=0.9, stemmer=None, stopwords=None
    )
    # stemming and stop words: "anaemias" finds "anaemia", "the" finds nothing
    index = BM25Index.build(["iron deficiency anaemia", "the capital of france"])
    assert [p for p, _ in index.search(["anaemias"], 5)[0]] == [0]
    assert index.search(["the"], 5) == [[]]
    assert BM25Index.build([]).search(["x"], 3) == [[]]
    assert BM25Index.build(["the of", "and"]).search(["the"], 3) == [[]]


def test_top_k_semantics_match_haystack(beir: Path) -> None:
    texts = SplitTexts.from_dataset(load_beir(beir, "test"))
    retriever = SyntrieverBM25Retriever(document_store=_store(texts), top_k=2)
    assert len(_ranking(retriever, "iron")) == 2
    assert len(_ranking(retriever, "iron", top_k=3)) == 3
    assert _ranking(retriever, "iron", top_k=0) == []
    with pytest.raises(ValueError, match="greater than or equal to 0"):
        retriever.run(query="iron", top_k=-1)
    with pytest.raises(ValueError, match="non-empty"):
        retriever.run(query="")
    with pytest.raises(ValueError, match="greater than 0"):
        SyntrieverBM25Retriever(document_store=InMemoryDocumentStore(), top_k=0)
    with pytest.raises(TypeError, match="InMemoryDocumentStore"):
        SyntrieverBM25Retriever(document_store=object())  # type: ignore[arg-type]
    found = retriever.run(query="iron")["documents"]
    stored = {d.id: d for d in retriever.document_store.filter_documents()}
    assert all(d is not stored[d.id] and d.score is not None and stored[d.id].score is None for d in found)


def test_filters_rank_the_whole_corpus_then_keep_matches(beir: Path) -> None:
    texts = SplitTexts.from_dataset(load_beir(beir, "test"))
    topics = ["blood", "heart", "blood", "bone", "heart", "city", "brain", "blood", "bone", "brain", "blood"]
    retriever = SyntrieverBM25Retriever(document_store=_store(texts, topic=topics), top_k=10)
    unfiltered = _ranking(retriever, "iron blood heart risk")
    only_heart = {"field": "meta.topic", "operator": "==", "value": "heart"}
    heart = _ranking(retriever, "iron blood heart risk", filters=only_heart)
    assert heart == [(i, s) for i, s in unfiltered if topics[int(i[1:]) - 1] == "heart"]  # same scores, same order
    assert _ranking(retriever, "iron blood heart risk", filters=only_heart, top_k=1) == heart[:1]
    # init filters: replaced by run-time filters (default), or merged
    fixed = SyntrieverBM25Retriever(document_store=retriever.document_store, filters=only_heart)
    assert _ranking(fixed, "iron blood heart risk") == heart
    blood = {"field": "meta.topic", "operator": "==", "value": "blood"}
    assert {i for i, _ in _ranking(fixed, "iron blood heart risk", filters=blood)} == {"d1", "d3", "d8", "d11"}
    merged = SyntrieverBM25Retriever(document_store=retriever.document_store, filters=only_heart, filter_policy="merge")
    not_d5 = {"field": "id", "operator": "!=", "value": "d5"}
    assert _ranking(merged, "iron blood heart risk", filters=not_d5) == [h for h in heart if h[0] != "d5"]
    with pytest.raises(ValueError, match="Invalid filter syntax"):
        retriever.run(query="iron", filters={"topic": "heart"})


def test_index_follows_the_store(tmp_path: Path) -> None:
    store = InMemoryDocumentStore(index=f"bm25-{uuid.uuid4().hex}")
    store.write_documents([Document(id="a", content="iron anaemia"), Document(id="b", content="paris france")])
    retriever = SyntrieverBM25Retriever(document_store=store)
    assert [d.id for d in retriever.run(query="iron")["documents"]] == ["a"]
    store.write_documents([Document(id="c", content="iron iron iron"), Document(id="e", content=None)])
    assert [d.id for d in retriever.run(query="iron")["documents"]] == ["c", "a"]  # rebuilt
    store.delete_all_documents()
    assert retriever.run(query="iron")["documents"] == []


def test_saved_index_is_loaded_when_it_matches(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, beir: Path) -> None:
    texts = SplitTexts.from_dataset(load_beir(beir, "test"))
    path = tmp_path / "data" / "document_store.json"
    saved = save_memory_store(_store(texts), path, {"model": "m"})
    folder = bm25_index_dir(saved)
    assert folder == tmp_path / "data" / "document_store.bm25"
    assert (folder / "syntriever_bm25.json").is_file()
    expected = _ranking(SyntrieverBM25Retriever(document_store=_store(texts)), "iron anaemia")

    built: list[int] = []
    real_build = runtime_bm25.BM25Index.build.__func__  # type: ignore[attr-defined]

    def counting_build(cls: type[BM25Index], docs: list[str], params: BM25Params | None = None) -> BM25Index:
        built.append(len(docs))
        return real_build(cls, docs, params)

    monkeypatch.setattr(runtime_bm25.BM25Index, "build", classmethod(counting_build))
    store = SyntrieverInMemoryDocumentStore(path=path, index=f"bm25-{uuid.uuid4().hex}")
    retriever = SyntrieverBM25Retriever(document_store=store)
    assert _ranking(retriever, "iron anaemia", top_k=100) == expected
    assert built == []  # loaded, not rebuilt
    other = SyntrieverBM25Retriever(document_store=store, k1=0.9)  # other parameters: the saved index does not fit
    other.warm_up()
    assert built == [len(CORPUS)]
    store.write_documents([Document(id="new", content="iron iron anaemia anaemia")])
    assert _ranking(retriever, "iron anaemia", top_k=1)[0][0] == "new"  # the store changed: rebuilt
    assert built == [len(CORPUS), len(CORPUS) + 1]


def test_self_loading_store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "data" / "store.json"
    with pytest.raises(SyntrieverError, match=r"does not exist.*syntriever run RECIPE --until index"):
        SyntrieverInMemoryDocumentStore(path=path)
    empty = SyntrieverInMemoryDocumentStore(path=path, missing="empty", index=f"s-{uuid.uuid4().hex}")
    assert empty.count_documents() == 0
    save_memory_store(empty, path, {"model": "m"})
    with pytest.raises(SyntrieverError, match=r"holds no document.*syntriever index"):
        SyntrieverInMemoryDocumentStore(path=path)
    name = f"s-{uuid.uuid4().hex}"
    source = InMemoryDocumentStore(index=name, embedding_similarity_function="cosine")
    source.write_documents([Document(id="a", content="iron anaemia", embedding=[1.0, 0.0])])
    save_memory_store(source, path, {"model": "m"})
    source.delete_all_documents()

    monkeypatch.chdir(tmp_path)
    store = SyntrieverInMemoryDocumentStore(path="data/store.json")
    assert (store.count_documents(), store.index, store.embedding_similarity_function) == (1, name, "cosine")
    assert store.record == {"model": "m"}
    data = store.to_dict()
    assert data["init_parameters"]["path"] == "data/store.json"  # as given, not the documents
    assert "documents" not in json.dumps(data)
    again = SyntrieverInMemoryDocumentStore.from_dict(data)
    assert again.filter_documents()[0].content == "iron anaemia"
    with pytest.raises(SyntrieverError, match="embedding_similarity_function"):
        SyntrieverInMemoryDocumentStore(path=path, embedding_similarity_function="dot_product")
    # a plain Haystack load still reads the file
    assert InMemoryDocumentStore.load_from_disk(str(path)).count_documents() == 1


def test_retriever_serialises_with_its_store(tmp_path: Path) -> None:
    path = tmp_path / "store.json"
    source = InMemoryDocumentStore(index=f"s-{uuid.uuid4().hex}")
    source.write_documents([Document(id="a", content="iron anaemia"), Document(id="b", content="paris")])
    save_memory_store(source, path, {})
    retriever = SyntrieverBM25Retriever(
        document_store=SyntrieverInMemoryDocumentStore(path=path), top_k=3, filter_policy="merge", b=0.5
    )
    pipeline = Pipeline()
    pipeline.add_component("bm25", retriever)
    text = pipeline.dumps()
    assert "haystack_integrations.components.retrievers.syntriever" in text
    assert "haystack_integrations.document_stores.syntriever" in text
    source.delete_all_documents()
    loaded = Pipeline.loads(text).get_component("bm25")
    assert isinstance(loaded, SyntrieverBM25Retriever)
    assert (loaded.top_k, loaded.b, loaded.filter_policy.value) == (3, 0.5, "merge")
    assert [d.id for d in loaded.run(query="iron")["documents"]] == ["a"]
    assert SyntrieverBM25Retriever.from_dict(retriever.to_dict()).to_dict() == retriever.to_dict()


def test_relative_paths_resolve_against_the_pipeline_base(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SYNTRIEVER_PIPELINE_DIR", raising=False)
    monkeypatch.chdir(tmp_path)
    assert resolve_path("models/x") == tmp_path / "models/x"
    assert resolve_path("/abs/x") == Path("/abs/x")
    monkeypatch.setenv("SYNTRIEVER_PIPELINE_DIR", str(tmp_path / "env"))
    assert resolve_path("../models/x") == tmp_path / "models" / "x"  # normalised
    with pipeline_base(tmp_path / "run" / "pipelines"):
        assert resolve_path("../models/x") == tmp_path / "run" / "models" / "x"
        with pipeline_base(tmp_path / "other"):
            assert resolve_path("y") == tmp_path / "other" / "y"
        assert resolve_path("y") == tmp_path / "run" / "pipelines" / "y"
    assert resolve_path("y") == tmp_path / "env" / "y"
    run = (tmp_path / "run").resolve()
    assert relative_to_base(run / "models" / "x", run / "pipelines") == "../models/x"
    assert relative_to_base(run / "data" / "s.json", run / "pipelines") == "../data/s.json"
    assert relative_to_base("/elsewhere/models/x", run / "pipelines") == "/elsewhere/models/x"
    assert relative_to_base("already/relative", run / "pipelines") == "already/relative"
