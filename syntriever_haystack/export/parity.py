"""Parity of an exported model against its torch source, on a probe set.

The ONNX side runs through :class:`~syntriever_haystack.runtime.onnx_model.OnnxModel`, the exact code the
Haystack components serve with, so the check covers tokenisation, padding, pooling and normalisation too.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from syntriever_haystack.errors import ExportError

#: Built-in probe texts: several domains and lengths, punctuation, non-ASCII, and one text far past any
#: max length so that truncation is exercised.
PROBE_TEXTS: tuple[str, ...] = (
    "What causes iron-deficiency anaemia in adults?",
    "Iron-deficiency anaemia is most often caused by chronic blood loss, poor absorption or low dietary iron.",
    "Symptoms of type 2 diabetes include thirst, frequent urination, fatigue and blurred vision.",
    "Metformin lowers hepatic glucose production and improves insulin sensitivity.",
    "Vitamin D deficiency is associated with an increased risk of bone fractures in the elderly.",
    "The mitochondrion is the site of oxidative phosphorylation in eukaryotic cells.",
    "CRISPR-Cas9 introduces double-strand breaks that are repaired by NHEJ or homology-directed repair.",
    "Does aspirin reduce the risk of a second heart attack?",
    "Low-dose aspirin is recommended for secondary prevention of cardiovascular events.",
    "How do I reset my router password?",
    "The Eiffel Tower was completed in 1889 for the World's Fair in Paris.",
    "Who wrote the novel 'Pride and Prejudice'?",
    "Jane Austen published Pride and Prejudice in 1813.",
    "python list comprehension with condition",
    "OpenSearch k-NN uses HNSW graphs on the lucene or faiss engines.",
    "BM25 ranks documents by term frequency saturation and inverse document frequency.",
    "Les maladies cardiovasculaires sont la première cause de mortalité dans le monde.",
    "Die Photosynthese wandelt Lichtenergie in chemische Energie um.",
    "¿Cuáles son los síntomas de la gripe?",
    "Naïve café résumé — “quotes”, 100% (approx.) & <tags>!",
    "SARS-CoV-2 spike protein binds ACE2 receptors.",
    "Glioblastoma is the most aggressive primary brain tumour in adults.",
    "Patients with chronic kidney disease should limit potassium and phosphorus intake.",
    "a",
    "",
    "1 2 3 4 5 6 7 8 9 10",
    "Randomized controlled trials are the gold standard for evaluating treatment efficacy, although "
    "observational studies can reveal long-term harms that trials are too small or too short to detect.",
    "Hypertension, defined as a sustained blood pressure above 130/80 mmHg, is a major risk factor for "
    "stroke, myocardial infarction, heart failure and chronic kidney disease; lifestyle changes such as "
    "reduced salt intake, weight loss and regular exercise lower blood pressure substantially.",
    " ".join(["The quick brown fox jumps over the lazy dog near the riverbank at dawn."] * 60),
)

PROBE_QUERIES: tuple[str, ...] = (
    "What causes iron-deficiency anaemia?",
    "treatment of type 2 diabetes",
    "Does aspirin prevent heart attacks?",
    "who wrote Pride and Prejudice",
    "how does BM25 rank documents",
    "brain tumour in adults",
)


#: Which statistic of the probe cosines each bi-encoder precision is gated on (see :func:`check_bi_encoder`).
GATED_STATISTIC = {"fp32": "min_cosine", "int8": "mean_cosine"}

#: How many long probes (texts cut at the maximum length) join the probe set.
LONG_PROBES = 4
#: Query probes paired with each long passage for a cross-encoder.
LONG_PROBE_QUERIES = 6


def long_probes(texts: Sequence[str], max_length: int, count: int = LONG_PROBES) -> list[str]:
    """``count`` texts of more than ``max_length`` words, so of more than ``max_length`` tokens: truncated.

    Each joins the probe texts (those over 20 characters, the few longest left out so the texts differ) from a
    different start, repeating them when they are short, until it holds ``max_length + 16`` words.
    """
    pool = sorted({t for t in texts if len(t) > 20}, key=len)
    pool = [t for t in pool if len(t.split()) <= max_length // 2] or pool
    if not pool:
        return []
    out = []
    for start in range(count):
        words: list[str] = []
        step = 0
        while len(words) <= max_length + 16:
            words += pool[(start * len(pool) // count + step) % len(pool)].split()
            step += 1
        out.append(" ".join(words))
    return out


def long_probe_pairs(
    pairs: Sequence[tuple[str, str]], max_length: int, count: int = LONG_PROBES
) -> list[tuple[str, str]]:
    """The first :data:`LONG_PROBE_QUERIES` probe queries, each against ``count`` long passages
    (:func:`long_probes` of the probe passages): pairs cut at ``max_length`` tokens."""
    queries = list(dict.fromkeys(q for q, _ in pairs))[:LONG_PROBE_QUERIES]
    passages = long_probes([p for _, p in pairs], max_length, count)
    return [(q, p) for q in queries for p in passages]


def probe_pairs(texts: Sequence[str] = PROBE_TEXTS, queries: Sequence[str] = PROBE_QUERIES) -> list[tuple[str, str]]:
    """Every probe query against every non-trivial probe text: related and unrelated pairs alike."""
    passages = [t for t in texts if len(t) > 20]
    return [(q, p) for q in queries for p in passages]


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman rank correlation with average ranks for ties (no SciPy needed)."""

    def ranks(x: np.ndarray) -> np.ndarray:
        order = np.argsort(x, kind="mergesort")
        r = np.empty(len(x), dtype=np.float64)
        r[order] = np.arange(len(x), dtype=np.float64)
        for value in np.unique(x):  # average ranks of ties
            tied = x == value
            if tied.sum() > 1:
                r[tied] = r[tied].mean()
        return r

    ra, rb = ranks(np.asarray(a, dtype=np.float64)), ranks(np.asarray(b, dtype=np.float64))
    if ra.std() == 0 or rb.std() == 0:
        return 1.0 if np.array_equal(ra, rb) else 0.0
    return float(np.corrcoef(ra, rb)[0, 1])


def reference_embeddings(source_dir: Path, texts: Sequence[str], *, max_length: int, st_modules: bool) -> np.ndarray:
    """Embeddings of the torch source: sentence-transformers itself when the folder is an ST model."""
    if st_modules:
        from sentence_transformers import SentenceTransformer

        model = SentenceTransformer(str(source_dir), device="cpu")
        model.max_seq_length = max_length
        return np.asarray(model.encode(list(texts), batch_size=16, convert_to_numpy=True), dtype=np.float32)
    import torch
    from transformers import AutoModel, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(source_dir))
    hf = AutoModel.from_pretrained(str(source_dir)).float().eval()
    batch = tokenizer(list(texts), padding=True, truncation=True, max_length=max_length, return_tensors="pt")
    with torch.no_grad():
        hidden = hf(**batch).last_hidden_state
    mask = batch["attention_mask"].unsqueeze(-1).float()
    pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
    return np.asarray(pooled.numpy(), dtype=np.float32)


def reference_logits(source_dir: Path, pairs: Sequence[tuple[str, str]], *, max_length: int) -> np.ndarray:
    """Relevance logits of the torch cross-encoder."""
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(source_dir))
    model = AutoModelForSequenceClassification.from_pretrained(str(source_dir)).float().eval()
    out: list[np.ndarray] = []
    with torch.no_grad():
        for start in range(0, len(pairs), 16):
            chunk = pairs[start : start + 16]
            batch = tokenizer(
                [q for q, _ in chunk],
                [d for _, d in chunk],
                padding=True,
                truncation=True,
                max_length=max_length,
                return_tensors="pt",
            )
            out.append(model(**batch).logits[:, 0].numpy())
    return np.concatenate(out).astype(np.float32)


def _cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    na = np.linalg.norm(a, axis=1)
    nb = np.linalg.norm(b, axis=1)
    return np.asarray((a * b).sum(axis=1) / np.clip(na * nb, 1e-12, None))


def _cosine_stats(cos: np.ndarray) -> dict[str, float]:
    return {"min_cosine": float(cos.min()), "mean_cosine": float(cos.mean())}


def _length_blocks(max_length: int, long_count: int, trained: tuple[int, Any] | None) -> dict[str, Any]:
    blocks: dict[str, Any] = {}
    if long_count:
        blocks["long_probes"] = {"max_length": max_length, "probes": long_count}
    if trained is not None and long_count:
        blocks["train_length"] = {
            "train_max_length": trained[0],
            "served_max_length": max_length,
            "probes": long_count,
            "gated": False,
        }
    return blocks


def check_bi_encoder(
    exported: Path,
    reference: np.ndarray,
    texts: Sequence[str],
    *,
    precisions: Sequence[str],
    thresholds: dict[str, float],
    long_count: int = 0,
    trained: tuple[int, np.ndarray] | None = None,
    required: Sequence[str] | None = None,
) -> dict[str, Any]:
    """Cosine between torch and ONNX embeddings of every probe, per precision; raises on a failed threshold.

    fp32 is gated on the *minimum* cosine over the probes (it must match torch on every text). int8 is gated on
    the *mean* cosine: its error is concentrated on degenerate inputs (on all-MiniLM-L6-v2 the empty string
    scores 0.975 while the mean is 0.993), and SciFact nDCG@10 is unchanged by it (0.6490 int8 vs 0.6451 fp32),
    so a per-text minimum would reject a lossless model. The minimum and the worst probe are still reported.

    :param long_count: The last ``long_count`` texts are long probes (:func:`long_probes`): gated with the others,
        and also reported alone under ``long_probes``.
    :param trained: ``(train_max_length, torch embeddings of the long probes at that length)`` when the model was
        trained at another length than it is served at: their cosine to the served ONNX embeddings (the agreement
        between the model as trained and as served, on texts longer than both) goes under ``train_length``;
        reported, not gated.
    :param required: Precisions whose failure raises (default: all); see :func:`check_cross_encoder`.
    """
    from syntriever_haystack.runtime.onnx_model import OnnxModel

    report: dict[str, Any] = {"probes": len(texts)}
    failures: dict[str, str] = {}
    for precision in precisions:
        model = OnnxModel(exported, precision=precision)
        if precision == precisions[0]:
            report.update(_length_blocks(model.metadata.max_length, long_count, trained))
        onnx = model.embed(list(texts), batch_size=8)
        cos = _cosines(reference, onnx)
        if long_count:
            report["long_probes"][precision] = _cosine_stats(cos[-long_count:])
        if "train_length" in report and trained is not None:
            report["train_length"][precision] = _cosine_stats(_cosines(trained[1], onnx[-long_count:]))
        worst = int(cos.argmin())
        gate = GATED_STATISTIC[precision]
        report[precision] = {
            "min_cosine": float(cos.min()),
            "mean_cosine": float(cos.mean()),
            "worst_probe": texts[worst][:80],
        }
        value = report[precision][gate]
        if value < thresholds[precision]:
            failures[precision] = (
                f"{precision}: {gate.replace('_', ' ')} {value:.6f} < {thresholds[precision]} "
                f"(worst probe {cos.min():.6f}: {texts[worst][:60]!r})"
            )
    report["thresholds"] = {p: thresholds[p] for p in precisions}
    report["gated_on"] = {p: GATED_STATISTIC[p] for p in precisions}
    return _settle(report, failures, required)


def _logit_stats(reference: np.ndarray, onnx: np.ndarray) -> dict[str, float]:
    return {"spearman": spearman(reference, onnx), "max_abs_logit_diff": float(np.abs(reference - onnx).max())}


#: Which statistic each cross-encoder precision is gated on (see :func:`check_cross_encoder`).
CROSS_GATED_STATISTIC = {"fp32": "spearman", "int8": "ranking_ndcg@10"}
#: Rank cut-off of the ranking agreement.
AGREEMENT_K = 10


def _dcg(gains: np.ndarray, k: int) -> float:
    top = gains[:k]
    return float((top / np.log2(np.arange(2, len(top) + 2))).sum())


def ranking_agreement(
    reference: np.ndarray, variant: np.ndarray, pairs: Sequence[tuple[str, str]], *, k: int = AGREEMENT_K
) -> dict[str, float] | None:
    """How the variant ranks each query's candidates compared with the reference: what a reranker is used for.

    Pairs are grouped by query. In each group of two or more candidates, the reference scores, min-max scaled to
    [0, 1], are the graded relevance, and the variant's ranking is scored by nDCG@k against them: 1.0 when it
    ranks the same (swapping two candidates the reference scores alike costs almost nothing, bringing a candidate
    the reference puts last into the top costs a lot). Also the mean overlap of the two top-k sets.

    :returns: ``{"ranking_ndcg@10", "min_ranking_ndcg@10", "top10_overlap", "groups"}``, or ``None`` when no
        query has two candidates.
    """
    groups: dict[str, list[int]] = {}
    for i, (query, _) in enumerate(pairs):
        groups.setdefault(query, []).append(i)
    ndcgs, overlaps = [], []
    for members in groups.values():
        if len(members) < 2:
            continue
        idx = np.asarray(members)
        ref, var = np.asarray(reference, dtype=np.float64)[idx], np.asarray(variant, dtype=np.float64)[idx]
        spread = ref.max() - ref.min()
        gains = (ref - ref.min()) / spread if spread > 0 else np.ones_like(ref)
        ideal = _dcg(np.sort(gains)[::-1], k)
        by_variant = np.argsort(-var, kind="stable")
        ndcgs.append(_dcg(gains[by_variant], k) / ideal if ideal > 0 else 1.0)
        cut = min(k, len(members))
        top_ref = set(np.argsort(-ref, kind="stable")[:cut].tolist())
        overlaps.append(len(top_ref & set(by_variant[:cut].tolist())) / cut)
    if not ndcgs:
        return None
    return {
        f"ranking_ndcg@{k}": float(np.mean(ndcgs)),
        f"min_ranking_ndcg@{k}": float(np.min(ndcgs)),
        f"top{k}_overlap": float(np.mean(overlaps)),
        "groups": len(ndcgs),
    }


def check_cross_encoder(
    exported: Path,
    reference: np.ndarray,
    pairs: Sequence[tuple[str, str]],
    *,
    precisions: Sequence[str],
    threshold: float,
    ranking_threshold: float = 0.98,
    long_count: int = 0,
    trained: tuple[int, np.ndarray] | None = None,
    required: Sequence[str] | None = None,
) -> dict[str, Any]:
    """Agreement of the ONNX logits with torch's over the probe pairs, per precision.

    fp32 must reproduce torch: it is gated on the Spearman correlation over all pairs (``threshold``). int8 is
    gated on what a reranker is used for, :func:`ranking_agreement`: the mean nDCG@10 of its ranking of each
    query's candidates against torch's (``ranking_threshold``); a global Spearman punishes reorderings between
    pairs of different queries, which no ranking ever compares (two trained MedQuAD rerankers failed a 0.99
    Spearman gate at 0.988 / 0.989). Without groups (one candidate per query) int8 falls back to the Spearman.
    Every figure is reported for every precision.

    ``long_count`` and ``trained`` as in :func:`check_bi_encoder`, for the last ``long_count`` pairs (long
    passages): the Spearman over them alone under ``long_probes``, and against torch at the training length under
    ``train_length`` (reported, not gated).

    :param required: Precisions whose failure raises (default: all). A failed precision that is not required is
        reported under ``failed`` and left to the caller (the exporter drops its file).
    """
    from syntriever_haystack.runtime.onnx_model import OnnxModel

    report: dict[str, Any] = {"probes": len(pairs)}
    failures: dict[str, str] = {}
    gated_on: dict[str, str] = {}
    thresholds: dict[str, float] = {}
    for precision in precisions:
        model = OnnxModel(exported, precision=precision)
        if precision == precisions[0]:
            report.update(_length_blocks(model.metadata.max_length, long_count, trained))
        onnx = model.score_pairs(list(pairs), batch_size=8)
        report[precision] = _logit_stats(reference, onnx)
        agreement = ranking_agreement(reference, onnx, pairs)
        if agreement is not None:
            report[precision].update(agreement)
        if long_count:
            report["long_probes"][precision] = _logit_stats(reference[-long_count:], onnx[-long_count:])
        if "train_length" in report and trained is not None:
            report["train_length"][precision] = _logit_stats(trained[1], onnx[-long_count:])
        gate = CROSS_GATED_STATISTIC.get(precision, "spearman")
        if gate not in report[precision]:
            gate = "spearman"
        limit = threshold if gate == "spearman" else ranking_threshold
        gated_on[precision], thresholds[precision] = gate, limit
        value = report[precision][gate]
        if value < limit:
            what = "ranking Spearman" if gate == "spearman" else f"per-query {gate} vs torch"
            failures[precision] = f"{precision}: {what} {value:.5f} < {limit}"
    report["thresholds"] = thresholds
    report["gated_on"] = gated_on
    return _settle(report, failures, required)


def _settle(report: dict[str, Any], failures: dict[str, str], required: Sequence[str] | None) -> dict[str, Any]:
    """Raise for a failed required precision; record the others' failures under ``failed``."""
    fatal = [msg for precision, msg in failures.items() if required is None or precision in required]
    if fatal:
        raise ExportError("Parity check failed: " + "; ".join(failures.values()), details=report)
    if failures:
        report["failed"] = dict(failures)
    return report
