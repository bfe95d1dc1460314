"""Checkpoints are data: resuming reads them with ``torch.load(weights_only=True)`` and never runs code from them."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from syntriever_haystack.train.loop import (  # noqa: E402
    LoopSettings,
    TrainingError,
    TrainingLoop,
    load_checkpoint_state,
)

MARKER_NAME = "code-ran.txt"


def _touch(path: str) -> None:
    Path(path).write_text("the checkpoint ran code", encoding="utf-8")


class _Payload:
    """Unpickling this calls ``_touch(marker)``: what a crafted ``state.pt`` could do with ``weights_only=False``."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, tuple[str]]:
        return _touch, (str(self.marker),)


class _Task:
    def __init__(self) -> None:
        torch.manual_seed(0)
        self.model = torch.nn.Linear(4, 1)
        generator = torch.Generator().manual_seed(1)
        self.data = [torch.randn(3, 4, generator=generator) for _ in range(6)]

    def batches(self, epoch: int) -> list[Any]:
        return self.data

    def train_step(self, batch: Any) -> dict[str, float]:
        loss = (self.model(batch) - 1.0).pow(2).mean()
        loss.backward()
        return {"loss": float(loss.detach())}

    def evaluate(self) -> dict[str, float]:
        return {"dev_score": np.float64(0.5)}  # a numpy scalar in the history must not break weights_only loading


def _settings(**kw: Any) -> LoopSettings:
    options: dict[str, Any] = {"epochs": 2.0, "bf16": False, "progress": False, "checkpoint_steps": 2}
    options.update(kw)
    return LoopSettings(**options)


def test_a_crafted_checkpoint_is_refused_without_running_its_code(tmp_path: Path) -> None:
    out = tmp_path / "run"
    marker = tmp_path / MARKER_NAME
    folder = out / "checkpoints" / "step-0000003"
    folder.mkdir(parents=True)
    torch.save({"fingerprint": "fp", "step": 3, "payload": _Payload(marker)}, folder / "state.pt")
    with pytest.raises(TrainingError, match=r"Refusing to resume from .*state\.pt.*--overwrite"):
        TrainingLoop(_Task(), _settings(), out, fingerprint="fp").run()
    assert not marker.exists()
    with pytest.raises(TrainingError, match="Refusing"):
        load_checkpoint_state(folder / "state.pt")
    assert not marker.exists()


def test_a_checkpoint_that_is_not_a_state_dict_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "state.pt"
    torch.save([1, 2, 3], path)
    with pytest.raises(TrainingError, match="not a training checkpoint"):
        load_checkpoint_state(path)


def test_resume_from_a_weights_only_checkpoint_ends_with_the_same_weights(tmp_path: Path) -> None:
    straight = _Task()
    TrainingLoop(straight, _settings(), tmp_path / "straight", fingerprint="fp").run()

    TrainingLoop(_Task(), _settings(max_steps=3), tmp_path / "resumed", fingerprint="fp").run()
    state = load_checkpoint_state(tmp_path / "resumed" / "checkpoints" / "step-0000003" / "state.pt")
    assert state["step"] == 3
    assert isinstance(state["rng"], torch.Tensor)
    resumed = _Task()
    history = TrainingLoop(resumed, _settings(), tmp_path / "resumed", fingerprint="fp").run()
    assert history["resumed_from"] == [3]
    assert [e["dev_score"] for e in history["evals"]] == [0.5, 0.5, 0.5]
    for a, b in zip(straight.model.parameters(), resumed.model.parameters(), strict=True):
        torch.testing.assert_close(a, b)
