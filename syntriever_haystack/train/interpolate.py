"""Weight interpolation with the starting model (WiSE-FT, Wortsman et al., CVPR 2022).

``θ = α · θ_trained + (1 − α) · θ_base``: fine-tuning on noisy synthetic data moves a strong pre-trained encoder away
from what it already does well; interpolating the weights keeps much of the base model's general ranking while
taking the in-domain part of the update. The result is an ordinary sentence-transformers folder.
"""

from __future__ import annotations

import json
from pathlib import Path

__all__ = ["interpolate_weights"]


def interpolate_weights(trained: str | Path, base: str | Path, output: str | Path, *, alpha: float) -> Path:
    """Write ``alpha · trained + (1 − alpha) · base`` (floating-point tensors; others from ``trained``) to ``output``.

    :param trained: The fine-tuned sentence-transformers folder.
    :param base: The model it was fine-tuned from (same architecture).
    :param alpha: Share of the trained weights, in [0, 1] (1: the trained model unchanged).
    :raises ValueError: ``alpha`` outside [0, 1], or the two models' tensors differ in names or shapes.
    """
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"the interpolation weight must be in [0, 1], got {alpha}")
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(str(trained), device="cpu")
    base_state = SentenceTransformer(str(base), device="cpu").state_dict()
    state = model.state_dict()
    mismatched = [k for k, v in state.items() if k not in base_state or base_state[k].shape != v.shape]
    if mismatched:
        raise ValueError(
            f"{trained} and {base} are not the same architecture ({len(mismatched)} tensors differ, e.g. "
            f"{mismatched[0]}); interpolate a model only with the model it was trained from"
        )
    for key, value in state.items():
        if value.is_floating_point():
            state[key] = alpha * value + (1.0 - alpha) * base_state[key].to(value.dtype)
    model.load_state_dict(state)
    out = Path(output)
    model.save(str(out))
    (out / "interpolation.json").write_text(
        json.dumps({"trained": str(trained), "base": str(base), "alpha": alpha}, indent=2) + "\n", encoding="utf-8"
    )
    return out
