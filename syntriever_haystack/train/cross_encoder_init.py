"""Start a cross-encoder from an encoder checkpoint: the encoder's weights plus a fresh 1-logit head."""

from __future__ import annotations

from pathlib import Path


def init_cross_encoder(base: str | Path, output: str | Path, *, seed: int = 0) -> Path:
    """Save ``base`` as an ``AutoModelForSequenceClassification`` with one (untrained) relevance logit.

    This is where the LCE reranker starts (no pretrained cross-encoder installs offline). Until it is trained,
    its scores carry no relevance signal. Idempotent: an existing ``output`` with a config is left alone.

    :param base: Encoder folder (e.g. the sentence-transformers all-MiniLM-L6-v2 folder).
    :param output: Folder to write.
    :param seed: Seed of the head's initialisation.
    :returns: ``output`` as a Path.
    """
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    out = Path(output)
    if (out / "config.json").exists():
        return out
    torch.manual_seed(seed)
    AutoModelForSequenceClassification.from_pretrained(str(base), num_labels=1).save_pretrained(str(out))
    AutoTokenizer.from_pretrained(str(base)).save_pretrained(str(out))
    return out
