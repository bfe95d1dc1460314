"""Stage-1 margin-MSE distillation: teacher scores in retriever.jsonl, the trainer's extra term, config and CLI."""

from __future__ import annotations

import dataclasses
import json
import math
import random
from pathlib import Path
from typing import Any

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("sentence_transformers")

from syntriever_haystack.train import (  # noqa: E402
    LoopSettings,
    RetrieverTrainingConfig,
    TrainingError,
    train_retriever,
)
from syntriever_haystack.train.data import RetrieverExample, TrainingDataError, load_stage1_examples  # noqa: E402
from syntriever_haystack.train.loop import run_fingerprint  # noqa: E402
from tests.conftest import WORDS, build_tiny_bert  # noqa: E402

ALPHA = [w for w in WORDS if w.isalpha()]


def _jsonl(path: Path, rows: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def _record(i: int, positives: list[dict[str, Any]], negatives: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "kind": "retriever",
        "query_id": f"q{i}",
        "query": f"query {i}",
        "positives": positives,
        "negatives": negatives,
    }


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Stage-1 records with teacher scores on every positive and negative, the same without, a tiny bi-encoder."""
    root = tmp_path_factory.mktemp("margin-mse")
    rng = random.Random(1)
    docs = [" ".join(rng.choices(ALPHA, k=12)) for _ in range(40)]
    scored, plain = [], []
    for i in range(16):
        query = " ".join(docs[i].split()[:4])
        positives = [
            {"text": docs[i], "source": "gold", "teacher_score": 0.9},
            {"text": docs[i][:30] + " energy", "source": "llm_positive", "teacher_score": round(rng.random(), 3)},
        ]
        negatives = [
            {"text": docs[i + 16], "source": "llm_negative", "teacher_score": round(rng.random() - 0.5, 3)},
            {"text": docs[(i + 7) % 16 + 24], "source": "llm_negative", "teacher_score": -0.4},
        ]
        scored.append({**_record(i, positives, negatives), "query": query})
        strip = [{k: v for k, v in e.items() if k != "teacher_score"} for e in positives + negatives]
        plain.append({**_record(i, strip[:2], strip[2:]), "query": query})
    return {
        "scored": _jsonl(root / "scored.jsonl", scored),
        "plain": _jsonl(root / "plain.jsonl", plain),
        "bi": build_tiny_bert(root / "bi", kind="bi-encoder"),
    }


def _config(corpus: dict[str, Any], out: Path, **kw: Any) -> RetrieverTrainingConfig:
    settings = LoopSettings(
        epochs=1, learning_rate=5e-4, bf16=False, progress=False, checkpoint_steps=50, eval_at_start=False
    )
    base: dict[str, Any] = {
        "stage": 1,
        "base": str(corpus["bi"]),
        "data": str(corpus["scored"]),
        "output": str(out),
        "batch_size": 4,
        "mini_batch_size": 4,
        "query_max_length": 16,
        "passage_max_length": 32,
        "margin_mse_weight": 1.0,
        "settings": settings,
    }
    base.update(kw)
    return RetrieverTrainingConfig(**base)


# ------------------------------------------------------------------------------------------------ data


def test_teacher_scores_are_read_aligned_with_their_texts(tmp_path: Path) -> None:
    path = _jsonl(
        tmp_path / "retriever.jsonl",
        [
            _record(
                0,
                [
                    {"text": "gold passage", "source": "gold", "teacher_score": 2.5},
                    {"text": "", "source": "llm_positive", "teacher_score": 99},  # no text: dropped with its score
                    {"text": "llm passage", "source": "llm_positive"},  # no score: None
                    {"text": "cot passage", "source": "cot", "teacher_score": 1},
                ],
                [{"text": "bad one", "teacher_score": -1.5}, {"text": ""}, {"text": "other", "teacher_score": 0.25}],
            ),
            _record(1, [{"text": "p", "source": "gold"}], [{"text": "n"}]),  # no scores at all
        ],
    )
    scored, plain = load_stage1_examples(path)
    assert scored.positives == ("gold passage", "llm passage", "cot passage")
    assert scored.positive_scores == (2.5, None, 1.0)
    assert scored.negatives == ("bad one", "other")
    assert scored.negative_scores == (-1.5, 0.25)
    assert all(isinstance(s, float) for s in scored.positive_scores if s is not None)
    assert scored.teacher_pairs() == [(0, 0, 4.0), (0, 1, 2.25), (2, 0, 2.5), (2, 1, 0.75)]
    assert plain.positive_scores == plain.negative_scores == ()
    assert plain.teacher_pairs() == []
    # released code's variant: p+ and q_cot become negatives and take their scores along
    gold = load_stage1_examples(path, positive_mode="gold")[0]
    assert gold.positives == ("gold passage",)
    assert gold.positive_scores == (2.5,)
    assert gold.negatives == ("bad one", "other", "llm passage", "cot passage")
    assert gold.negative_scores == (-1.5, 0.25, None, 1.0)
    assert dict(zip(gold.negatives, gold.negative_scores, strict=True)) == {
        **dict(zip(scored.negatives, scored.negative_scores, strict=True)),
        "llm passage": None,
        "cot passage": 1.0,
    }
    # a scored negative alone keeps both tuples aligned (positives get None)
    only_negative = _jsonl(
        tmp_path / "neg.jsonl", [_record(2, [{"text": "p", "source": "gold"}], [{"text": "n", "teacher_score": 0}])]
    )
    (example,) = load_stage1_examples(only_negative)
    assert example.positive_scores == (None,)
    assert example.negative_scores == (0.0,)
    assert example.teacher_pairs() == []


def test_retriever_example_stays_frozen_hashable_and_backwards_compatible() -> None:
    old_style = RetrieverExample("q", "query", ("p",), ("n",), ("gold",))
    assert old_style.positive_scores == old_style.negative_scores == ()
    scored = RetrieverExample("q", "query", ("p",), ("n",), ("gold",), (), (1.0,), (0.5,))
    assert hash(scored) != hash(old_style)
    assert len({scored, RetrieverExample("q", "query", ("p",), ("n",), ("gold",), (), (1.0,), (0.5,))}) == 1
    with pytest.raises(dataclasses.FrozenInstanceError):
        scored.positive_scores = ()  # type: ignore[misc]
    with pytest.raises(ValueError, match="negative_scores has 2 entries for 1 texts"):
        RetrieverExample("q", "query", ("p",), ("n",), negative_scores=(1.0, 2.0))


@pytest.mark.parametrize("bad", ["0.5", True, None, float("nan"), [1]])
def test_a_non_numeric_teacher_score_names_the_file_and_the_fix(tmp_path: Path, bad: Any) -> None:
    entry: dict[str, Any] = {"text": "n", "teacher_score": bad}
    path = _jsonl(tmp_path / "bad.jsonl", [_record(3, [{"text": "p", "source": "gold"}], [entry])])
    if bad is None:  # null is "no score"
        assert load_stage1_examples(path)[0].negative_scores == ()
        return
    with pytest.raises(TrainingDataError, match=r"bad\.jsonl \(query 'q3'\): teacher_score must be a finite number"):
        load_stage1_examples(path)


# ------------------------------------------------------------------------------------------------ trainer


def test_stage1_run_with_margin_mse_logs_both_terms_and_writes_the_model(
    corpus: dict[str, Any], tmp_path: Path
) -> None:
    out = tmp_path / "mm"
    config = _config(corpus, out, settings=dataclasses.replace(_config(corpus, out).settings, max_steps=2))
    summary = train_retriever(config)
    assert summary["steps"] == 2
    assert summary["margin_mse_examples"] == summary["train_examples"] == 16
    steps = json.loads((out / "history.json").read_text())["steps"]
    assert len(steps) == 2
    for step in steps:
        assert step["loss_margin_mse"] > 0
        assert step["loss"] == pytest.approx(step["loss_infonce"] + step["loss_margin_mse"], rel=1e-5)
    assert json.loads((out / "train_config.json").read_text())["margin_mse_weight"] == 1.0
    from sentence_transformers import SentenceTransformer

    trained = SentenceTransformer(str(out), device="cpu")
    assert trained.encode(["iron blood"]).shape == (1, 32)


def test_margin_mse_off_keeps_the_plain_loss(corpus: dict[str, Any], tmp_path: Path) -> None:
    out = tmp_path / "off"
    config = _config(corpus, out, margin_mse_weight=0.0)
    config.settings.max_steps = 1
    train_retriever(config)
    (step,) = json.loads((out / "history.json").read_text())["steps"]
    assert set(step) == {"loss", "step", "epoch", "lr"}  # exactly today's terms


def _gradients(corpus: dict[str, Any], tmp_path: Path, **kw: Any) -> list[Any]:
    from sentence_transformers import SentenceTransformer

    from syntriever_haystack.train.retriever import _RetrieverTask

    config = _config(corpus, tmp_path / "unused", **kw)
    model = SentenceTransformer(str(corpus["bi"]), device="cpu")
    model.eval()  # no dropout: cached and plain passes are comparable
    task = _RetrieverTask(config, model, load_stage1_examples(corpus["scored"]), None)
    terms = task.train_step([0, 3, 5, 9])
    assert terms["loss"] > 0
    return [p.grad.clone() for p in model.parameters() if p.grad is not None]


def test_margin_mse_goes_through_gradient_caching_and_changes_the_gradients(
    corpus: dict[str, Any], tmp_path: Path
) -> None:
    plain = _gradients(corpus, tmp_path, mini_batch_size=None)
    cached = _gradients(corpus, tmp_path, mini_batch_size=2)
    assert len(plain) == len(cached) > 0
    for a, b in zip(plain, cached, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)
    without = _gradients(corpus, tmp_path, mini_batch_size=2, margin_mse_weight=0.0)
    assert any(not torch.allclose(a, b) for a, b in zip(cached, without, strict=True))


def test_the_run_fingerprint_follows_the_weight_and_the_teacher_scores(corpus: dict[str, Any], tmp_path: Path) -> None:
    examples = load_stage1_examples(corpus["scored"])
    fingerprints = {run_fingerprint(_config(corpus, tmp_path, margin_mse_weight=w), examples) for w in (0.0, 0.5, 1.0)}
    assert len(fingerprints) == 3
    config = _config(corpus, tmp_path)
    assert run_fingerprint(config, examples) != run_fingerprint(config, load_stage1_examples(corpus["plain"]))


def test_margin_mse_config_and_data_errors(corpus: dict[str, Any], tmp_path: Path) -> None:
    for bad in (-0.5, math.nan, math.inf):
        with pytest.raises(
            TrainingError, match=r"margin_mse_weight must be a finite number >= 0.*--margin-mse-weight 0"
        ):
            train_retriever(_config(corpus, tmp_path / "x", margin_mse_weight=bad))
    with pytest.raises(TrainingError, match="margin_mse_weight is a stage-1 term"):
        train_retriever(_config(corpus, tmp_path / "x", stage=2, data="preferences.jsonl"))
    with pytest.raises(TrainingError, match="--gold-only pairs carry no teacher scores"):
        train_retriever(_config(corpus, tmp_path / "x", gold_only=True, data=None, dataset="ds"))
    with pytest.raises(TrainingDataError, match=r"plain\.jsonl: margin_mse_weight is 1\.0 .*teacher_score"):
        train_retriever(_config(corpus, tmp_path / "x", data=str(corpus["plain"])))
    assert not (tmp_path / "x").exists()


def _distributed_worker(rank: int, world: int, port: int, base: str, data: str, out: str) -> None:
    """Records, per step, whether each margin-MSE triple's rows are the query's own positive and negative."""
    import os

    os.environ.update(
        {"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "RANK": str(rank), "WORLD_SIZE": str(world)}
    )
    torch.set_num_threads(1)
    from syntriever_haystack.train import losses

    last: dict[str, Any] = {}
    checks: list[bool] = []
    contrastive, margin = losses.MultiPositiveContrastiveLoss.forward, losses.MarginMSELoss.forward

    def record_candidates(self: Any, queries: Any, candidates: Any, positive_mask: Any, *args: Any) -> Any:
        last.update(queries=queries.detach(), candidates=candidates.detach(), mask=positive_mask)
        return contrastive(self, queries, candidates, positive_mask, *args)

    def check_triples(self: Any, queries: Any, positives: Any, negatives: Any, teacher: Any) -> Any:
        q, c, mask = last["queries"], last["candidates"], last["mask"]
        for k in range(queries.shape[0]):
            (row,) = [i for i in range(q.shape[0]) if torch.equal(q[i], queries[k])]
            (pos,) = [j for j in range(c.shape[0]) if torch.equal(c[j], positives[k])]
            (neg,) = [j for j in range(c.shape[0]) if torch.equal(c[j], negatives[k])]
            # the positive is this query's own (local rows shifted by this rank's offset); the negative is not one
            checks.append(bool(mask[row, pos]) and not bool(mask[row, neg]))
        return margin(self, queries, positives, negatives, teacher)

    losses.MultiPositiveContrastiveLoss.forward = record_candidates  # type: ignore[method-assign]
    losses.MarginMSELoss.forward = check_triples  # type: ignore[method-assign]
    config = RetrieverTrainingConfig(
        stage=1,
        base=base,
        data=data,
        output=out,
        batch_size=4,
        mini_batch_size=None,
        gather_across_devices=True,
        margin_mse_weight=1.0,
        settings=LoopSettings(epochs=1, bf16=False, progress=False, max_steps=2, eval_at_start=False),
    )
    train_retriever(config)
    Path(out).mkdir(parents=True, exist_ok=True)
    Path(out, f"rank{rank}.json").write_text(json.dumps({"checks": checks}))
    torch.distributed.destroy_process_group()


@pytest.mark.loopback
def test_two_process_training_indexes_the_triples_into_the_gathered_candidates(
    corpus: dict[str, Any], tmp_path: Path
) -> None:
    import socket

    import torch.multiprocessing as mp

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    out = tmp_path / "ddp"
    mp.spawn(
        _distributed_worker, args=(2, port, str(corpus["bi"]), str(corpus["scored"]), str(out)), nprocs=2, join=True
    )
    steps = json.loads((out / "history.json").read_text())["steps"]
    assert [s["step"] for s in steps] == [1, 2]
    assert all(s["loss_margin_mse"] > 0 for s in steps)
    for r in range(2):
        checks = json.loads((out / f"rank{r}.json").read_text())["checks"]
        assert len(checks) == 2 * 4 * 4  # 2 steps x 4 queries x (2 scored positives x 2 scored negatives)
        assert all(checks)


# ------------------------------------------------------------------------------------------------ CLI


def test_train_cli_margin_mse_weight(
    corpus: dict[str, Any], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from syntriever_haystack.cli import main

    with pytest.raises(SystemExit) as exit_info:
        main(["train", "retriever", "--data", "r.jsonl", "--out", str(tmp_path / "m"), "--margin-mse-weight", "-1"])
    assert exit_info.value.code == 2
    assert "argument --margin-mse-weight: must be a number >= 0, got '-1'" in capsys.readouterr().err
    out = tmp_path / "cli"
    code = main(
        [
            "train", "retriever", "--data", str(corpus["scored"]), "--base", str(corpus["bi"]), "--out", str(out),
            "--margin-mse-weight", "0.5", "--batch-size", "4", "--max-steps", "1", "--no-bf16", "--quiet",
        ]
    )  # fmt: skip
    assert code == 0
    assert json.loads((out / "train_config.json").read_text())["margin_mse_weight"] == 0.5
    assert "loss_margin_mse" in json.loads((out / "history.json").read_text())["steps"][0]
    assert main(["train", "retriever", "--data", str(corpus["plain"]), "--out", str(tmp_path / "p"),
                 "--margin-mse-weight", "1", "--quiet"]) == 1  # fmt: skip
    assert "teacher_score" in capsys.readouterr().err
