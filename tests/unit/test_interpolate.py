"""WiSE-FT weight interpolation (train/interpolate.py) against an explicit average of the two state dicts."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from syntriever_haystack.train.interpolate import interpolate_weights
from tests.conftest import build_tiny_bert

torch = pytest.importorskip("torch")
pytest.importorskip("sentence_transformers")


def _state(folder: Path) -> dict[str, object]:
    from sentence_transformers import SentenceTransformer

    return dict(SentenceTransformer(str(folder), device="cpu").state_dict())


def test_interpolation_is_the_weighted_mean_of_the_two_models(tmp_path: Path) -> None:
    base = build_tiny_bert(tmp_path / "base", kind="bi-encoder", seed=0)
    trained = build_tiny_bert(tmp_path / "trained", kind="bi-encoder", seed=1)
    a, b = _state(trained), _state(base)
    for alpha in (0.0, 0.3, 1.0):
        out = interpolate_weights(trained, base, tmp_path / f"mix{alpha}", alpha=alpha)
        mixed = _state(out)
        for key, value in mixed.items():
            if value.is_floating_point() and "pooler" not in key:  # type: ignore[attr-defined]
                # (the unused pooler is not saved by the builder: it is initialised anew on every load)
                expected = alpha * a[key] + (1 - alpha) * b[key]  # type: ignore[operator]
                assert torch.allclose(value, expected, atol=1e-6), (alpha, key)
        assert json.loads((out / "interpolation.json").read_text())["alpha"] == alpha


def test_interpolation_refuses_a_weight_outside_0_1(tmp_path: Path) -> None:
    base = build_tiny_bert(tmp_path / "base", kind="bi-encoder")
    with pytest.raises(ValueError, match=r"must be in \[0, 1\]"):
        interpolate_weights(base, base, tmp_path / "x", alpha=1.5)
    trained = build_tiny_bert(tmp_path / "trained", kind="bi-encoder", seed=1)
    for alpha in (-0.1, float("nan")):
        with pytest.raises(ValueError, match=r"must be in \[0, 1\]"):
            interpolate_weights(trained, base, tmp_path / "z", alpha=alpha)
