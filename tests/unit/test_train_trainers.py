"""Trainers on tiny local models: batching, gradient caching, stage 1 / stage 2 / reranker runs, resume, outputs."""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("sentence_transformers")

from syntriever_haystack.train import (  # noqa: E402
    LoopSettings,
    RerankerTrainingConfig,
    RetrieverTrainingConfig,
    TrainingError,
    train_reranker,
    train_retriever,
)
from syntriever_haystack.train.data import (  # noqa: E402
    RerankerExample,
    TrainingDataError,
    load_preferences,
    load_stage1_examples,
    no_duplicate_batches,
    split_by_query,
)
from syntriever_haystack.train.grad_cache import cached_backward  # noqa: E402
from syntriever_haystack.train.reranker import sample_group  # noqa: E402
from tests.conftest import WORDS, build_tiny_bert  # noqa: E402

ALPHA = [w for w in WORDS if w.isalpha()]


def _jsonl(path: Path, rows: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A tiny BEIR dataset, stage-1 / preference / reranker files over it, and a tiny bi-encoder."""
    root = tmp_path_factory.mktemp("train")
    rng = random.Random(0)
    docs = {f"d{i}": " ".join(rng.choices(ALPHA, k=16)) for i in range(48)}
    queries = {f"q{i}": " ".join(docs[f"d{i}"].split()[:4]) for i in range(32)}
    ds = root / "ds"
    (ds / "qrels").mkdir(parents=True)
    _jsonl(ds / "corpus.jsonl", [{"_id": d, "title": "", "text": t} for d, t in docs.items()])
    _jsonl(ds / "queries.jsonl", [{"_id": q, "text": t} for q, t in queries.items()])
    (ds / "qrels" / "train.tsv").write_text(
        "query-id\tcorpus-id\tscore\n" + "".join(f"q{i}\td{i}\t1\n" for i in range(32))
    )
    stage1 = _jsonl(
        root / "retriever.jsonl",
        [
            {
                "id": f"r{i}",
                "kind": "retriever",
                "query_id": f"q{i}",
                "query": queries[f"q{i}"],
                "positives": [
                    {"text": docs[f"d{i}"], "source": "gold"},
                    {"text": docs[f"d{i}"][:30] + " energy", "source": "llm_positive", "judge": "embedder:x"},
                    {"text": "step by step " + queries[f"q{i}"], "source": "cot"},
                ],
                "negatives": [{"text": docs[f"d{i + 16}"][:40], "source": "llm_negative"}],
            }
            for i in range(32)
        ],
    )
    prefs = _jsonl(
        root / "preferences.jsonl",
        [
            {
                "id": f"p{i}",
                "kind": "preference",
                "query_id": f"q{i}",
                "query": queries[f"q{i}"],
                "preferred": {"doc_id": f"d{i}", "text": docs[f"d{i}"]},
                "rejected": {"doc_id": f"d{i + 16}", "text": docs[f"d{i + 16}"]},
                "judge": "ranker:tiny",
            }
            for i in range(32)
        ],
    )
    groups = _jsonl(
        root / "reranker.jsonl",
        [
            {
                "id": f"g{i}",
                "kind": "reranker",
                "query_id": f"s{i}",
                "query": queries[f"q{i}"],
                "query_type": "question",
                "positive": {"doc_id": f"d{i}", "text": docs[f"d{i}"]},
                "negatives": [
                    {"doc_id": f"d{j}", "text": docs[f"d{j}"], "rank": k} for k, j in enumerate(range(33, 40))
                ],
            }
            for i in range(24)
        ],
    )
    bi = build_tiny_bert(root / "bi", kind="bi-encoder")
    return {"root": root, "ds": ds, "stage1": stage1, "prefs": prefs, "groups": groups, "bi": bi}


def _settings(**kw: Any) -> LoopSettings:
    base: dict[str, Any] = {"epochs": 2, "learning_rate": 5e-4, "bf16": False, "progress": False, "checkpoint_steps": 2}
    base.update(kw)
    return LoopSettings(**base)


# ------------------------------------------------------------------------------------------------ data


def test_no_duplicate_batches_never_repeat_a_text_and_cover_everything() -> None:
    examples = [("q", f"p{i % 3}") for i in range(12)] + [(f"u{i}", f"v{i}") for i in range(20)]
    batches = no_duplicate_batches(examples, 5, texts=lambda e: list(e), seed=3)
    seen = sorted(i for b in batches for i in b)
    assert seen == list(range(len(examples)))
    for batch in batches:
        texts = [t for i in batch for t in examples[i]]
        assert len(texts) == len(set(texts)), batch
        assert len(batch) <= 5
    assert batches == no_duplicate_batches(examples, 5, texts=lambda e: list(e), seed=3)
    assert batches != no_duplicate_batches(examples, 5, texts=lambda e: list(e), seed=4)


def test_stage1_loading_modes_and_dev_split_by_query(corpus: dict[str, Any]) -> None:
    examples = load_stage1_examples(corpus["stage1"])
    assert len(examples) == 32
    assert examples[0].positive_sources == ("gold", "llm_positive", "cot")
    assert len(examples[0].negatives) == 1
    released = load_stage1_examples(corpus["stage1"], positive_mode="gold")
    assert released[0].positives == examples[0].positives[:1]
    assert len(released[0].negatives) == 3  # p-, plus p+ and q_cot treated as negatives
    train, dev = split_by_query(examples, lambda e: e.query_id, dev_fraction=0.25, seed=0)
    assert len(dev) == 8
    assert not {e.query_id for e in train} & {e.query_id for e in dev}


def test_loading_errors_name_the_file_and_the_fix(tmp_path: Path, corpus: dict[str, Any]) -> None:
    with pytest.raises(TrainingDataError, match="syntriever generate retriever"):
        load_stage1_examples(tmp_path / "missing.jsonl")
    with pytest.raises(TrainingDataError, match="'preference' records"):
        load_preferences(corpus["stage1"])
    bad = tmp_path / "bad.jsonl"
    bad.write_text("{not json\n")
    with pytest.raises(TrainingDataError, match=r"bad\.jsonl:1"):
        load_preferences(bad)
    bad.write_text("[1, 2]\n")
    with pytest.raises(TrainingDataError, match="expected a JSON object"):
        load_preferences(bad)


def test_sample_group_without_then_with_replacement() -> None:
    rng = random.Random(0)
    example = RerankerExample("q", "query", "pos", tuple(f"n{i}" for i in range(10)))
    group = sample_group(example, 8, rng)
    assert group[0] == "pos"
    assert len(group) == 8
    assert len(set(group[1:])) == 7
    assert set(sample_group(example, 4, rng, depth=3)[1:]) <= {"n0", "n1", "n2"}
    few = RerankerExample("q", "query", "pos", ("a", "b"))
    group = sample_group(few, 8, rng)
    assert len(group) == 8
    assert set(group[1:]) <= {"a", "b"}


# ------------------------------------------------------------------------------------------------ gradient caching


def test_gradient_caching_gives_the_full_batch_gradients(corpus: dict[str, Any]) -> None:
    """Without dropout: equal to one full-batch pass. With dropout: the replayed RNG states reproduce the first
    pass's masks, so the gradients equal a chunked pass with a graph drawn from the same seed."""
    from sentence_transformers import SentenceTransformer

    from syntriever_haystack.train.losses import MultiPositiveContrastiveLoss

    model = SentenceTransformer(str(corpus["bi"]), device="cpu")
    loss = MultiPositiveContrastiveLoss()
    queries = ["iron blood", "heart attack risk", "bone fracture elderly", "paris capital"]
    docs = ["iron deficiency anaemia", "aspirin heart", "fracture bone", "paris france city", "music art"]
    mask = torch.zeros(4, 5, dtype=torch.bool)
    mask[torch.arange(4), torch.arange(4)] = True

    def embed(texts: list[str], group: int) -> torch.Tensor:
        return model(model.tokenize(texts))["sentence_embedding"]

    def grads(mini: int | None, *, chunked_reference: bool = False) -> list[torch.Tensor]:
        model.zero_grad()
        torch.manual_seed(7)
        if chunked_reference:
            q = torch.cat([embed(queries[:2], 0), embed(queries[2:], 0)])
            d = torch.cat([embed(docs[:2], 1), embed(docs[2:4], 1), embed(docs[4:], 1)])
            loss(q, d, mask).backward()
        else:
            cached_backward([queries, docs], embed, lambda e: loss(e[0], e[1], mask), mini_batch_size=mini)
        return [p.grad.clone() for p in model.parameters() if p.grad is not None]

    model.eval()  # no dropout
    full, cached = grads(None), grads(2)
    assert len(full) == len(cached) > 0
    for a, b in zip(full, cached, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)
    model.train()  # dropout on
    reference, cached = grads(None, chunked_reference=True), grads(2)
    for a, b in zip(reference, cached, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)


# ------------------------------------------------------------------------------------------------ retriever


def test_stage1_run_writes_model_card_curve_and_exports(corpus: dict[str, Any], tmp_path: Path) -> None:
    out = tmp_path / "stage1"
    summary = train_retriever(
        RetrieverTrainingConfig(
            stage=1,
            base=str(corpus["bi"]),
            data=str(corpus["stage1"]),
            dataset=str(corpus["ds"]),
            output=str(out),
            batch_size=8,
            mini_batch_size=8,
            query_max_length=16,
            passage_max_length=48,
            dev_fraction=0.25,
            settings=_settings(),
        )
    )
    assert summary["train_examples"] == 24
    assert summary["dev_queries"] == 8
    assert summary["judges"] == ["embedder:x"]
    history = json.loads((out / "history.json").read_text())
    assert [e["step"] for e in history["evals"]] == [0, 3, 6]  # start + two epoch ends
    assert all("dev_nDCG@10" in e for e in history["evals"])
    losses = [s["loss"] for s in history["steps"]]
    assert losses[-1] < losses[0]
    card = (out / "README.md").read_text()
    assert "Syntriever stage 1" in card
    assert "retriever.jsonl" in card
    assert "dev_nDCG@10" in card
    assert (out / "training_curve.png").stat().st_size > 1000
    from sentence_transformers import SentenceTransformer

    trained = SentenceTransformer(str(out), device="cpu")
    assert trained.encode(["iron"]).shape == (1, 32)
    assert trained.max_seq_length == 48  # the passage length, not the query length used last in training
    from syntriever_haystack.export import export_model

    exported = export_model(out, tmp_path / "stage1-onnx", int8=False)
    assert (exported.output_dir / "onnx" / "model.onnx").is_file()


def test_killed_run_resumes_to_the_same_weights(corpus: dict[str, Any], tmp_path: Path) -> None:
    """A run stopped after 3 of 8 steps and resumed from its checkpoint ends where an uninterrupted one does."""

    def config(out: Path, **kw: Any) -> RetrieverTrainingConfig:
        return RetrieverTrainingConfig(
            stage=1,
            base=str(corpus["bi"]),
            data=str(corpus["stage1"]),
            output=str(out),
            batch_size=8,
            mini_batch_size=None,
            settings=_settings(**kw),
        )

    train_retriever(config(tmp_path / "straight"))
    train_retriever(config(tmp_path / "resumed", max_steps=3))
    assert (tmp_path / "resumed" / "checkpoints" / "step-0000003" / "state.pt").is_file()
    # A process killed while saving step 4 leaves a half-written folder: it is ignored and cleaned up.
    partial = tmp_path / "resumed" / "checkpoints" / ".tmp-0000004-99999"
    partial.mkdir()
    (partial / "state.pt").write_bytes(b"truncated")
    train_retriever(config(tmp_path / "resumed"))
    assert not partial.exists()
    history = json.loads((tmp_path / "resumed" / "history.json").read_text())
    assert history["resumed_from"] == [3]
    from safetensors.torch import load_file

    a = load_file(tmp_path / "straight" / "model.safetensors")
    b = load_file(tmp_path / "resumed" / "model.safetensors")
    for key in a:
        torch.testing.assert_close(a[key], b[key])
    # Another configuration in the same folder is refused, not silently mixed.
    with pytest.raises(TrainingError, match="--overwrite"):
        train_retriever(config(tmp_path / "resumed", learning_rate=1e-3))


def test_gold_only_baseline_and_config_errors(corpus: dict[str, Any], tmp_path: Path) -> None:
    summary = train_retriever(
        RetrieverTrainingConfig(
            stage=1,
            gold_only=True,
            base=str(corpus["bi"]),
            dataset=str(corpus["ds"]),
            output=str(tmp_path / "gold"),
            batch_size=8,
            dev_fraction=0.0,
            settings=_settings(epochs=1),
        )
    )
    assert summary["gold_only"]
    assert summary["train_examples"] == 32
    assert "gold pairs only" in (tmp_path / "gold" / "README.md").read_text()
    with pytest.raises(TrainingError, match="needs --data"):
        train_retriever(RetrieverTrainingConfig(stage=2, output=str(tmp_path / "x")))
    with pytest.raises(TrainingError, match="plackett_luce"):
        train_retriever(
            RetrieverTrainingConfig(stage=2, data="p.jsonl", loss="bradley_terry", kl_weight=0.1, output="x")
        )
    with pytest.raises(TrainingError, match="stage 1 trains with"):
        train_retriever(RetrieverTrainingConfig(stage=1, data="r.jsonl", loss="plackett_luce", output="x"))


def test_stage1_add_gold_pairs_covers_the_other_queries(corpus: dict[str, Any], tmp_path: Path) -> None:
    partial = _jsonl(
        tmp_path / "partial.jsonl", [json.loads(line) for line in corpus["stage1"].read_text().splitlines()[:10]]
    )
    summary = train_retriever(
        RetrieverTrainingConfig(
            stage=1,
            base=str(corpus["bi"]),
            data=str(partial),
            dataset=str(corpus["ds"]),
            add_gold_pairs=True,
            output=str(tmp_path / "mixed"),
            batch_size=16,
            dev_fraction=0.0,
            settings=_settings(epochs=1),
        )
    )
    assert summary["train_examples"] == 32  # 10 generated examples + gold pairs of the 22 other queries
    assert "22 gold pairs" in summary["source"]


@pytest.mark.parametrize(("loss", "kl"), [("plackett_luce", 0.0), ("plackett_luce", 0.5), ("bradley_terry", 0.0)])
def test_stage2_runs_log_their_terms(corpus: dict[str, Any], tmp_path: Path, loss: str, kl: float) -> None:
    out = tmp_path / f"stage2-{loss}-{kl}"
    summary = train_retriever(
        RetrieverTrainingConfig(
            stage=2,
            base=str(corpus["bi"]),
            data=str(corpus["prefs"]),
            dataset=str(corpus["ds"]),
            loss=loss,  # type: ignore[arg-type]
            kl_weight=kl,
            output=str(out),
            batch_size=8,
            settings=_settings(epochs=1),
        )
    )
    assert summary["judges"] == ["ranker:tiny"]
    steps = json.loads((out / "history.json").read_text())["steps"]
    if loss == "plackett_luce":
        assert {"loss_pl", "loss_kl"} <= set(steps[0])
        if kl > 0:  # λ·KL is part of the loss
            assert any(s["loss_kl"] > 0 for s in steps[1:])
            assert steps[-1]["loss"] == pytest.approx(steps[-1]["loss_pl"] + kl * steps[-1]["loss_kl"], rel=1e-5)
    assert "stage 2" in (out / "README.md").read_text()


# ------------------------------------------------------------------------------------------------ reranker


def test_reranker_learns_the_groups_and_exports(corpus: dict[str, Any], tmp_path: Path) -> None:
    out = tmp_path / "reranker"
    summary = train_reranker(
        RerankerTrainingConfig(
            data=str(corpus["groups"]),
            base=str(corpus["bi"]),  # an encoder: a fresh 1-logit head is added
            output=str(out),
            group_size=4,
            batch_size=4,
            max_length=64,
            dev_fraction=0.25,
            settings=_settings(epochs=4, learning_rate=1e-3),
        )
    )
    evals = summary["evals"]
    assert evals[-1]["dev_group_MRR"] > evals[0]["dev_group_MRR"]
    config = json.loads((out / "config.json").read_text())
    assert len(config["id2label"]) == 1
    assert config["architectures"] == ["BertForSequenceClassification"]
    assert "LCE" in (out / "README.md").read_text()
    from syntriever_haystack.export import export_model

    exported = export_model(out, tmp_path / "reranker-onnx", int8=False)
    assert exported.metadata.kind == "cross-encoder"


def test_train_cli_gold_only(corpus: dict[str, Any], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from syntriever_haystack.cli import main

    code = main(
        [
            "train", "retriever", "--gold-only", "--dataset", str(corpus["ds"]), "--base", str(corpus["bi"]),
            "--out", str(tmp_path / "cli"), "--epochs", "1", "--batch-size", "16", "--no-bf16", "--quiet",
        ]
    )  # fmt: skip
    assert code == 0
    out = capsys.readouterr().out
    assert "dev_nDCG@10" in out
    assert "saved" in out
    assert main(["train", "retriever", "--stage", "2", "--out", str(tmp_path / "x")]) == 1
    assert "needs --data" in capsys.readouterr().err


def _distributed_worker(rank: int, world: int, port: int, base: str, data: str, out: str) -> None:
    import os

    os.environ.update(
        {"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "RANK": str(rank), "WORLD_SIZE": str(world)}
    )
    torch.set_num_threads(1)
    from syntriever_haystack.train import losses

    seen: list[list[int]] = []
    forward = losses.MultiPositiveContrastiveLoss.forward

    def recording(self: Any, queries: Any, candidates: Any, positive_mask: Any, candidate_mask: Any = None) -> Any:
        seen.append([int(queries.shape[0]), int(candidates.shape[0]), int(positive_mask.sum())])
        return forward(self, queries, candidates, positive_mask, candidate_mask)

    losses.MultiPositiveContrastiveLoss.forward = recording  # type: ignore[method-assign]
    from syntriever_haystack.train.loop import TrainingLoop

    models: list[Any] = []
    run = TrainingLoop.run

    def run_and_keep(self: TrainingLoop) -> dict[str, Any]:
        models.append(self.task.model)
        return run(self)

    TrainingLoop.run = run_and_keep  # type: ignore[method-assign]
    train_retriever(
        RetrieverTrainingConfig(
            stage=1,
            base=base,
            data=data,
            output=out,
            batch_size=4,
            mini_batch_size=None,
            gather_across_devices=True,
            settings=_settings(epochs=1, max_steps=2),
        )
    )
    trained = sum(float(p.detach().double().sum()) for p in models[0].parameters())
    Path(out).mkdir(parents=True, exist_ok=True)  # rank 1 may finish before rank 0 has written anything
    Path(out, f"rank{rank}.json").write_text(json.dumps({"seen": seen, "trained": trained}))
    torch.distributed.destroy_process_group()


@pytest.mark.loopback
def test_two_process_training_gathers_candidates_and_keeps_replicas_equal(
    corpus: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """torchrun's environment on CPU (gloo): 2 processes, candidates gathered across them, one saved model."""
    import socket

    import torch.multiprocessing as mp

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    out = tmp_path / "ddp"
    mp.spawn(
        _distributed_worker,
        args=(2, port, str(corpus["bi"]), str(corpus["stage1"]), str(out)),
        nprocs=2,
        join=True,
    )
    history = json.loads((out / "history.json").read_text())
    assert [s["step"] for s in history["steps"]] == [1, 2]
    ranks = [json.loads((out / f"rank{r}.json").read_text()) for r in range(2)]
    for rank in ranks:
        for queries, candidates, positives in rank["seen"]:
            # every query's positives (3 each) and negative of *both* processes are in the denominator
            assert positives == 3 * queries
            assert candidates == 2 * 4 * queries
    assert ranks[0]["trained"] == pytest.approx(ranks[1]["trained"], rel=1e-9)  # replicas stayed identical
    assert (out / "model.safetensors").is_file()


def test_reranker_run_resumes_after_an_early_stop(corpus: dict[str, Any], tmp_path: Path) -> None:
    def config(**kw: Any) -> RerankerTrainingConfig:
        return RerankerTrainingConfig(
            data=str(corpus["groups"]),
            base=str(corpus["bi"]),
            output=str(tmp_path / "rr"),
            group_size=4,
            batch_size=4,
            max_length=32,
            dev_fraction=0.0,
            settings=_settings(epochs=1, **kw),
        )

    train_reranker(config(max_steps=2))
    summary = train_reranker(config())  # max_steps and progress are not part of the run's identity
    history = json.loads((tmp_path / "rr" / "history.json").read_text())
    assert history["resumed_from"] == [2]
    assert summary["steps"] == 6


def test_gold_reranker_groups_take_localised_negatives_from_the_first_stage(
    corpus: dict[str, Any], tmp_path: Path
) -> None:
    from syntriever_haystack.data import load_beir
    from syntriever_haystack.train.data import gold_reranker_examples

    dataset = load_beir(corpus["ds"], "train")
    candidates = {"q0": [("d5", 9.0), ("d0", 8.0), ("d7", 7.0)], "q1": [("d1", 3.0)]}
    examples = gold_reranker_examples(dataset, candidates, include_title=False)
    # q0: the relevant d0 is removed from its negatives, rank order kept; q1 has no non-relevant candidate.
    assert [(e.query_id, e.positive, e.negatives) for e in examples] == [
        ("q0", dataset.corpus["d0"].text, (dataset.corpus["d5"].text, dataset.corpus["d7"].text))
    ]
    with pytest.raises(TrainingDataError, match="no query has both"):
        gold_reranker_examples(dataset, {"q1": [("d1", 3.0)]})
    # The trainer builds them itself from a first-stage SPEC (BM25 here), with or without synthetic groups.
    summary = train_reranker(
        RerankerTrainingConfig(
            base=str(corpus["bi"]),
            output=str(tmp_path / "gold-reranker"),
            group_size=4,
            batch_size=8,
            max_length=64,
            add_gold_groups=True,
            dataset=str(corpus["ds"]),
            gold_candidates=5,
            settings=_settings(epochs=1),
        )
    )
    assert summary["train_examples"] + summary["dev_groups"] == 32
    assert "gold groups" in summary["source"]
    with pytest.raises(TrainingDataError, match="needs --dataset"):
        train_reranker(RerankerTrainingConfig(base=str(corpus["bi"]), output=str(tmp_path / "x"), add_gold_groups=True))


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--batch-size", "0"], "argument --batch-size: must be an integer >= 1, got '0'"),
        (["--epochs", "0"], "argument --epochs: must be a number > 0, got '0'"),
        (["--grad-accumulation", "-1"], "argument --grad-accumulation: must be an integer >= 1, got '-1'"),
        (["--checkpoint-steps", "0"], "argument --checkpoint-steps: must be an integer >= 1, got '0'"),
        (["--warmup-ratio", "1.5"], "argument --warmup-ratio: must be a number >= 0 and <= 1, got '1.5'"),
        (["--mini-batch-size", "-2"], "argument --mini-batch-size: must be an integer >= 0, got '-2'"),
        (["--lr", "nan"], "argument --lr: must be a number > 0, got 'nan'"),
    ],
)
def test_train_cli_refuses_out_of_range_options(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], args: list[str], message: str
) -> None:
    from syntriever_haystack.cli import main

    with pytest.raises(SystemExit) as exit_info:
        main(["train", "retriever", "--gold-only", "--dataset", "d", "--out", str(tmp_path / "m"), *args])
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "m").exists()


def test_train_cli_reranker_group_size_needs_a_negative(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from syntriever_haystack.cli import main

    with pytest.raises(SystemExit):
        main(["train", "reranker", "--data", "r.jsonl", "--out", str(tmp_path / "m"), "--group-size", "1"])
    assert "argument --group-size: must be an integer >= 2, got '1'" in capsys.readouterr().err
