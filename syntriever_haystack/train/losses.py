"""Training losses of the Syntriever retriever (stages 1 and 2) and of the LCE cross-encoder reranker.

The losses follow the layout of sentence-transformers' ``losses/`` package (one ``nn.Module`` per loss, with
Args, References, Inputs and an Example in the docstring), with one difference: they take **embeddings or
score tensors, not a model**. The trainer computes the embeddings itself, so that it can use gradient caching
(GradCache: embed in mini-batches without a graph, back-propagate the loss's gradient per mini-batch) and gather
the candidates of every device before calling the loss.

Similarity is ``s(a, b) = scale * cos(a, b)`` (``similarity="cos"``, the default) or ``scale * a . b``
(``similarity="dot"``). ``scale = 20`` is ``1 / tau`` with the temperature ``tau = 0.05`` of METHOD.md. All
the log-probabilities are computed with ``log_softmax`` / ``logsumexp``, never ``exp`` then ``log``, so large
scores and near-duplicate texts stay finite.

References:
    - Kim & Baek, "Syntriever: How to Train Your Retriever with Synthetic Data from LLMs", NAACL 2025 Findings,
      arXiv 2502.03824 (stage 1: multi-positive soft nearest neighbour loss; stage 2: partial Plackett-Luce).
    - van den Oord, Li & Vinyals, "Representation Learning with Contrastive Predictive Coding", 2018,
      arXiv 1807.03748 (InfoNCE).
    - Plackett, "The Analysis of Permutations", Applied Statistics 24(2), 1975; Luce, "Individual Choice
      Behavior", 1959 (the Plackett-Luce ranking model).
    - Bradley & Terry, "Rank Analysis of Incomplete Block Designs", Biometrika 39, 1952 (pairwise baseline).
    - Gao, Dai & Callan, "Rethinking Training of BERT Rerankers in Multi-Stage Retrieval Pipeline", ECIR 2021,
      arXiv 2101.08751 (Localized Contrastive Estimation).
    - Hofstätter et al., "Improving Efficient Neural Ranking Models with Cross-Architecture Knowledge
      Distillation", 2020, arXiv 2010.02666 (Margin-MSE); Wang et al., "GPL: Generative Pseudo Labeling for
      Unsupervised Domain Adaptation of Dense Retrieval", NAACL 2022, arXiv 2112.07577.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F  # noqa: N812
from torch import Tensor, nn

__all__ = [
    "BradleyTerryLoss",
    "LCELoss",
    "MarginMSELoss",
    "MultiPositiveContrastiveLoss",
    "PartialPlackettLuceLoss",
    "lce_group_logits",
    "similarity_matrix",
]

SIMILARITIES = ("cos", "dot")


def _check_similarity(similarity: str) -> str:
    if similarity not in SIMILARITIES:
        raise ValueError(f"similarity must be one of {SIMILARITIES}, got {similarity!r}")
    return similarity


def _check_scale(scale: float) -> float:
    if not scale > 0:
        raise ValueError(f"scale must be > 0, got {scale!r}")
    return float(scale)


def _check_embeddings(name: str, x: Tensor) -> None:
    if x.dim() != 2:
        raise ValueError(f"{name} must be a 2-D tensor [n, dim], got shape {tuple(x.shape)}")
    if x.shape[0] == 0:
        raise ValueError(f"{name} is empty (shape {tuple(x.shape)}): a loss needs at least one example")


def similarity_matrix(a: Tensor, b: Tensor, *, similarity: str = "cos") -> Tensor:
    """Pairwise similarities ``[len(a), len(b)]``, **unscaled** (cosine in [-1, 1] or a dot product).

    Args:
        a: ``[n, dim]`` embeddings.
        b: ``[m, dim]`` embeddings.
        similarity: ``"cos"`` (cosine, like sentence-transformers' ``util.cos_sim``) or ``"dot"``.

    Returns:
        ``[n, m]`` tensor with ``out[i, j] = sim(a[i], b[j])``.

    Example:
        >>> import torch
        >>> a, b = torch.randn(2, 8), torch.randn(3, 8)
        >>> similarity_matrix(a, b).shape
        torch.Size([2, 3])
        >>> bool((similarity_matrix(a, a).diagonal() - 1).abs().max() < 1e-5)
        True
    """
    _check_similarity(similarity)
    if a.dim() != 2 or b.dim() != 2:
        raise ValueError(f"embeddings must be 2-D [n, dim], got shapes {tuple(a.shape)} and {tuple(b.shape)}")
    if a.shape[1] != b.shape[1]:
        raise ValueError(f"embedding dimensions differ: {a.shape[1]} vs {b.shape[1]}")
    if similarity == "cos":
        a = F.normalize(a, p=2, dim=1)
        b = F.normalize(b, p=2, dim=1)
    return a @ b.transpose(0, 1)


def _paired_similarity(a: Tensor, b: Tensor, *, similarity: str) -> Tensor:
    """``[n]`` similarities of the rows ``a[i]``, ``b[i]`` (unscaled)."""
    if similarity == "cos":
        a = F.normalize(a, p=2, dim=1)
        b = F.normalize(b, p=2, dim=1)
    return (a * b).sum(dim=1)


def _check_pairs(queries: Tensor, preferred: Tensor, rejected: Tensor) -> None:
    _check_embeddings("queries", queries)
    if preferred.shape != queries.shape or rejected.shape != queries.shape:
        raise ValueError(
            "queries, preferred and rejected must have the same shape [B, dim], got "
            f"{tuple(queries.shape)}, {tuple(preferred.shape)} and {tuple(rejected.shape)}"
        )


class MultiPositiveContrastiveLoss(nn.Module):
    """Syntriever stage 1: multi-positive soft nearest neighbour loss (METHOD.md §1).

    For query ``q_i`` and the candidate set ``C`` (every positive and negative text of every example of the
    batch), with ``P(q_i)`` the positives of ``q_i``::

        L_i = -log( sum_{c in P(q_i)} exp s(q_i, c) / sum_{c in C} exp s(q_i, c) )
        L   = mean_i L_i

    The numerator pulls the query towards all its positives at once; the other examples' positives and all the
    negatives are in the denominator. With one positive per query this is InfoNCE, i.e. sentence-transformers'
    ``MultipleNegativesRankingLoss`` (with hard negatives appended to the candidates when given).

    Args:
        scale: Multiplier of the similarity (``1 / temperature``); 20 is ``tau = 0.05``.
        similarity: ``"cos"`` or ``"dot"``.

    References:
        - Syntriever, arXiv 2502.03824, stage 1 (distillation).
        - van den Oord et al. 2018, InfoNCE, arXiv 1807.03748.

    Inputs:
        +--------------------+--------+-----------------------------------------------------------+
        | argument           | shape  | meaning                                                   |
        +====================+========+===========================================================+
        | ``queries``        | [B, d] | query embeddings                                          |
        | ``candidates``     | [C, d] | every positive and negative text of the batch             |
        | ``positive_mask``  | [B, C] | bool, True where candidate c is a positive of query i;    |
        |                    |        | every row needs at least one True                         |
        | ``candidate_mask`` | [B, C] | optional bool, False removes c from query i's denominator |
        |                    |        | (default: all True); positives must stay in it            |
        +--------------------+--------+-----------------------------------------------------------+

        Returns a scalar: the mean over the queries.

    Example:
        >>> import torch
        >>> _ = torch.manual_seed(0)
        >>> loss_fn = MultiPositiveContrastiveLoss()
        >>> queries, candidates = torch.randn(2, 16), torch.randn(5, 16)
        >>> positive_mask = torch.tensor([[True, True, False, False, False], [False, False, True, False, False]])
        >>> loss = loss_fn(queries, candidates, positive_mask)
        >>> loss.shape, bool(loss > 0)
        (torch.Size([]), True)
    """

    def __init__(self, *, scale: float = 20.0, similarity: str = "cos") -> None:
        super().__init__()
        self.scale = _check_scale(scale)
        self.similarity = _check_similarity(similarity)

    def forward(
        self,
        queries: Tensor,
        candidates: Tensor,
        positive_mask: Tensor,
        candidate_mask: Tensor | None = None,
    ) -> Tensor:
        _check_embeddings("queries", queries)
        _check_embeddings("candidates", candidates)
        expected = (queries.shape[0], candidates.shape[0])
        if positive_mask.dtype != torch.bool or tuple(positive_mask.shape) != expected:
            raise ValueError(
                f"positive_mask must be a bool tensor of shape {expected} [B, C], "
                f"got {positive_mask.dtype} {tuple(positive_mask.shape)}"
            )
        no_positive = ~positive_mask.any(dim=1)
        if bool(no_positive.any()):
            rows = no_positive.nonzero().flatten().tolist()
            raise ValueError(f"every query needs at least one positive candidate; rows without one: {rows}")
        if candidate_mask is None:
            candidate_mask = torch.ones_like(positive_mask)
        else:
            if candidate_mask.dtype != torch.bool or tuple(candidate_mask.shape) != expected:
                raise ValueError(
                    f"candidate_mask must be a bool tensor of shape {expected} [B, C], "
                    f"got {candidate_mask.dtype} {tuple(candidate_mask.shape)}"
                )
            if bool((positive_mask & ~candidate_mask).any()):
                raise ValueError("candidate_mask removes a positive from its query's denominator")
        scores = self.scale * similarity_matrix(queries, candidates, similarity=self.similarity)
        log_numerator = torch.logsumexp(scores.masked_fill(~positive_mask, float("-inf")), dim=1)
        log_denominator = torch.logsumexp(scores.masked_fill(~candidate_mask, float("-inf")), dim=1)
        return (log_denominator - log_numerator).mean()

    def get_config_dict(self) -> dict[str, Any]:
        return {"scale": self.scale, "similarity": self.similarity}


class PartialPlackettLuceLoss(nn.Module):
    """Syntriever stage 2 (METHOD.md §2) with optional KL regularisation towards frozen stage-1 scores.

    Each example is a preference triple ``(q_i, c_i+, c_i-)`` (the judge prefers ``c_i+``). The candidates are
    ``C = [c_1+, ..., c_B+, c_1-, ..., c_B-]`` (all the preferred texts, then all the rejected ones). The
    observed partial order for ``q_i`` is ``c_i+ > c_i- > (the rest of C, unordered)``; marginalising the
    Plackett-Luce likelihood over the order of the rest leaves its first two factors::

        L_i = -log softmax_C(s_i)[c_i+] - log softmax_{C minus c_i+}(s_i)[c_i-]

    where ``s_i = scale * sim(q_i, C)``. With ``kl_weight = lambda > 0`` the loss adds
    ``lambda * mean_i KL( softmax_C(reference_i) || softmax_C(s_i) )`` where ``reference_i`` are the frozen
    stage-1 model's scaled scores over the same ``C`` (``lambda = 0``, the default, is the released code).

    After every forward, ``last_terms`` holds the floats ``{"pl": mean PL loss, "kl": mean KL}`` (the KL is
    unweighted, 0.0 when ``kl_weight == 0``), so the trainer can log both parts.

    Args:
        scale: Multiplier of the similarity (``1 / temperature``).
        similarity: ``"cos"`` or ``"dot"``.
        kl_weight: Weight ``lambda`` of the KL term (>= 0).

    References:
        - Syntriever, arXiv 2502.03824, stage 2 (alignment with LLM preferences).
        - Plackett 1975; Luce 1959 (Plackett-Luce model).

    Inputs:
        +----------------------+----------+------------------------------------------------------------+
        | argument             | shape    | meaning                                                    |
        +======================+==========+============================================================+
        | ``queries``          | [B, d]   | query embeddings                                           |
        | ``preferred``        | [B, d]   | embeddings of the preferred candidates ``c_i+``            |
        | ``rejected``         | [B, d]   | embeddings of the less preferred candidates ``c_i-``       |
        | ``reference_scores`` | [B, 2B]  | frozen stage-1 *scaled* scores over ``C`` (same order);    |
        |                      |          | required when ``kl_weight > 0``, ignored otherwise         |
        +----------------------+----------+------------------------------------------------------------+

        Returns a scalar: ``mean_i L_i + kl_weight * mean_i KL_i``.

    Example:
        >>> import torch
        >>> _ = torch.manual_seed(0)
        >>> queries, preferred, rejected = torch.randn(3, 16), torch.randn(3, 16), torch.randn(3, 16)
        >>> reference = 20 * similarity_matrix(queries, torch.cat([preferred, rejected]))
        >>> loss_fn = PartialPlackettLuceLoss(kl_weight=0.1)
        >>> loss = loss_fn(queries, preferred, rejected, reference_scores=reference)
        >>> bool(loss > 0), sorted(loss_fn.last_terms), loss_fn.last_terms["kl"] < 1e-6
        (True, ['kl', 'pl'], True)
    """

    def __init__(self, *, scale: float = 20.0, similarity: str = "cos", kl_weight: float = 0.0) -> None:
        super().__init__()
        self.scale = _check_scale(scale)
        self.similarity = _check_similarity(similarity)
        if not kl_weight >= 0:
            raise ValueError(f"kl_weight must be >= 0, got {kl_weight!r}")
        self.kl_weight = float(kl_weight)
        self.last_terms: dict[str, float] = {"pl": 0.0, "kl": 0.0}

    def scores(self, queries: Tensor, preferred: Tensor, rejected: Tensor) -> Tensor:
        """The scaled scores ``[B, 2B]`` over ``C = cat([preferred, rejected])``."""
        _check_pairs(queries, preferred, rejected)
        candidates = torch.cat([preferred, rejected], dim=0)
        return self.scale * similarity_matrix(queries, candidates, similarity=self.similarity)

    def components(
        self,
        queries: Tensor,
        preferred: Tensor,
        rejected: Tensor,
        reference_scores: Tensor | None = None,
    ) -> dict[str, Tensor]:
        """The two parts as scalar tensors: ``{"pl": mean_i L_i, "kl": mean_i KL_i}`` (KL unweighted).

        ``"kl"`` is a zero tensor when ``kl_weight == 0`` (``reference_scores`` is then ignored).
        """
        scores = self.scores(queries, preferred, rejected)
        batch = scores.shape[0]
        rows = torch.arange(batch, device=scores.device)
        first = torch.log_softmax(scores, dim=1)[rows, rows]
        without_preferred = scores.masked_fill(F.one_hot(rows, num_classes=2 * batch).to(torch.bool), float("-inf"))
        second = torch.log_softmax(without_preferred, dim=1)[rows, rows + batch]
        pl = -(first + second).mean()
        if self.kl_weight == 0:
            return {"pl": pl, "kl": torch.zeros((), dtype=pl.dtype, device=pl.device)}
        if reference_scores is None:
            raise ValueError("kl_weight > 0 needs reference_scores (the frozen stage-1 model's scaled scores)")
        if tuple(reference_scores.shape) != tuple(scores.shape):
            raise ValueError(
                f"reference_scores must have shape {tuple(scores.shape)} [B, 2B] "
                f"(preferred then rejected), got {tuple(reference_scores.shape)}"
            )
        reference_log_probs = torch.log_softmax(reference_scores.detach().to(scores.dtype), dim=1)
        # KL(p_ref || p_model) = sum_c p_ref (log p_ref - log p_model); "batchmean" = mean over the queries.
        kl = F.kl_div(torch.log_softmax(scores, dim=1), reference_log_probs, reduction="batchmean", log_target=True)
        return {"pl": pl, "kl": kl}

    def forward(
        self,
        queries: Tensor,
        preferred: Tensor,
        rejected: Tensor,
        reference_scores: Tensor | None = None,
    ) -> Tensor:
        terms = self.components(queries, preferred, rejected, reference_scores)
        self.last_terms = {"pl": float(terms["pl"].detach()), "kl": float(terms["kl"].detach())}
        if self.kl_weight == 0:
            return terms["pl"]
        return terms["pl"] + self.kl_weight * terms["kl"]

    def get_config_dict(self) -> dict[str, Any]:
        return {"scale": self.scale, "similarity": self.similarity, "kl_weight": self.kl_weight}


class BradleyTerryLoss(nn.Module):
    """Pairwise ablation baseline: -log sigmoid(s(q,c+) - s(q,c-)), mean over the batch.

    Unlike :class:`PartialPlackettLuceLoss` it only compares each query's two candidates, so nothing keeps
    ``c-`` above the other queries' passages (METHOD.md §2).

    Args:
        scale: Multiplier of the similarity (``1 / temperature``).
        similarity: ``"cos"`` or ``"dot"``.

    References:
        - Bradley & Terry 1952; Syntriever, arXiv 2502.03824 (the baseline its partial Plackett-Luce improves on).

    Inputs:
        ``queries``, ``preferred``, ``rejected``: ``[B, d]`` each. ``reference_scores`` is accepted and ignored
        (the call signature of :class:`PartialPlackettLuceLoss`). Returns a scalar.

    Example:
        >>> import torch
        >>> _ = torch.manual_seed(0)
        >>> queries, preferred, rejected = torch.randn(4, 16), torch.randn(4, 16), torch.randn(4, 16)
        >>> loss = BradleyTerryLoss()(queries, preferred, rejected)
        >>> loss.shape, bool(loss > 0)
        (torch.Size([]), True)
    """

    def __init__(self, *, scale: float = 20.0, similarity: str = "cos") -> None:
        super().__init__()
        self.scale = _check_scale(scale)
        self.similarity = _check_similarity(similarity)

    def forward(
        self,
        queries: Tensor,
        preferred: Tensor,
        rejected: Tensor,
        reference_scores: Tensor | None = None,
    ) -> Tensor:
        _check_pairs(queries, preferred, rejected)
        positive = _paired_similarity(queries, preferred, similarity=self.similarity)
        negative = _paired_similarity(queries, rejected, similarity=self.similarity)
        return -F.logsigmoid(self.scale * (positive - negative)).mean()

    def get_config_dict(self) -> dict[str, Any]:
        return {"scale": self.scale, "similarity": self.similarity}


class MarginMSELoss(nn.Module):
    """Margin-MSE teacher distillation (Hofstätter et al. 2020, as used by GPL): match the teacher's margins.

    Each row is a triple ``(q_k, p_k+, p_k-)`` with the teacher's margin ``m_k = t(q_k, p_k+) - t(q_k, p_k-)``::

        L = mean_k ( (s(q_k, p_k+) - s(q_k, p_k-)) - m_k )^2

    with ``s(a, b) = scale * cos(a, b)`` (or ``scale * a . b``). The default ``scale = 1`` is the **unscaled**
    cosine: the retriever is served with cosine, so the student's margins lie in ``[-2, 2]`` and the teacher's
    scores must be on a comparable scale (GPL uses the dot product of unnormalised embeddings instead). Only the
    margin is matched, so a constant offset of the teacher's scores does not matter.

    Args:
        scale: Multiplier of the student's similarity (``1``: the plain cosine or dot product).
        similarity: ``"cos"`` or ``"dot"``.

    References:
        - Hofstätter et al., "Improving Efficient Neural Ranking Models with Cross-Architecture Knowledge
          Distillation", 2020, arXiv 2010.02666.
        - Wang et al., "GPL: Generative Pseudo Labeling for Unsupervised Domain Adaptation of Dense Retrieval",
          NAACL 2022, arXiv 2112.07577.

    Inputs:
        +---------------------+--------+-----------------------------------------------------------+
        | argument            | shape  | meaning                                                   |
        +=====================+========+===========================================================+
        | ``queries``         | [T, d] | query embedding of each triple (rows may repeat a query)  |
        | ``positives``       | [T, d] | embedding of each triple's positive ``p+``                |
        | ``negatives``       | [T, d] | embedding of each triple's negative ``p-``                |
        | ``teacher_margins`` | [T]    | ``t(q, p+) - t(q, p-)``; no gradient flows into it        |
        +---------------------+--------+-----------------------------------------------------------+

        Returns a scalar: the mean over the triples.

    Example:
        >>> import torch
        >>> _ = torch.manual_seed(0)
        >>> queries, positives, negatives = torch.randn(3, 16), torch.randn(3, 16), torch.randn(3, 16)
        >>> loss_fn = MarginMSELoss()
        >>> loss = loss_fn(queries, positives, negatives, torch.tensor([0.5, 1.0, 0.2]))
        >>> loss.shape, bool(loss > 0)
        (torch.Size([]), True)
        >>> student = _paired_similarity(queries, positives, similarity="cos") - _paired_similarity(
        ...     queries, negatives, similarity="cos")
        >>> float(loss_fn(queries, positives, negatives, student))
        0.0
    """

    def __init__(self, *, scale: float = 1.0, similarity: str = "cos") -> None:
        super().__init__()
        self.scale = _check_scale(scale)
        self.similarity = _check_similarity(similarity)

    def forward(self, queries: Tensor, positives: Tensor, negatives: Tensor, teacher_margins: Tensor) -> Tensor:
        _check_embeddings("queries", queries)
        if positives.shape != queries.shape or negatives.shape != queries.shape:
            raise ValueError(
                "queries, positives and negatives must have the same shape [T, dim] (one row per triple), got "
                f"{tuple(queries.shape)}, {tuple(positives.shape)} and {tuple(negatives.shape)}"
            )
        if teacher_margins.dim() != 1 or teacher_margins.shape[0] != queries.shape[0]:
            raise ValueError(
                f"teacher_margins must have shape [{queries.shape[0]}] (one margin per triple), "
                f"got {tuple(teacher_margins.shape)}"
            )
        positive = _paired_similarity(queries, positives, similarity=self.similarity)
        negative = _paired_similarity(queries, negatives, similarity=self.similarity)
        student = self.scale * (positive - negative)
        teacher = teacher_margins.detach().to(device=student.device, dtype=student.dtype)
        return ((student - teacher) ** 2).mean()

    def get_config_dict(self) -> dict[str, Any]:
        return {"scale": self.scale, "similarity": self.similarity}


def lce_group_logits(flat_logits: Tensor, group_size: int) -> Tensor:
    """Reshape a cross-encoder's flat logits ``[Q*G]`` or ``[Q*G, 1]`` into groups ``[Q, G]``.

    The flat order must be group by group, each group's positive first (as :class:`LCELoss` expects).

    Example:
        >>> import torch
        >>> lce_group_logits(torch.arange(6.0).unsqueeze(1), 3)
        tensor([[0., 1., 2.],
                [3., 4., 5.]])
    """
    if group_size < 1:
        raise ValueError(f"group_size must be >= 1, got {group_size}")
    if flat_logits.dim() == 2 and flat_logits.shape[1] == 1:
        flat_logits = flat_logits.squeeze(1)
    if flat_logits.dim() != 1:
        raise ValueError(f"flat_logits must have shape [Q*G] or [Q*G, 1], got {tuple(flat_logits.shape)}")
    n = flat_logits.shape[0]
    if n == 0 or n % group_size != 0:
        raise ValueError(f"{n} logits do not split into groups of {group_size}")
    return flat_logits.reshape(n // group_size, group_size)


class LCELoss(nn.Module):
    """Localized Contrastive Estimation for cross-encoders (METHOD.md §3).

    Each row is the group ``G_q = {d+} ∪ {d1-, ..., d(G-1)-}`` of query ``q`` (negatives from the retriever's
    top results), scored by the cross-encoder ``f(q, d)``::

        L_q = -log( exp f(q, d+) / sum_{d in G_q} exp f(q, d) ),   L = mean_q L_q

    i.e. cross-entropy with target column 0. With ``G = 2`` it is the pairwise softmax loss.

    References:
        - Gao, Dai & Callan, "Rethinking Training of BERT Rerankers in Multi-Stage Retrieval Pipeline",
          ECIR 2021, arXiv 2101.08751.

    Inputs:
        ``logits``: ``[Q, G]``, the positive in column 0 and ``G - 1 >= 1`` negatives (use
        :func:`lce_group_logits` to reshape the cross-encoder's flat output). Returns a scalar.

    Example:
        >>> import torch
        >>> _ = torch.manual_seed(0)
        >>> logits = torch.randn(4, 8)
        >>> loss = LCELoss()(logits)
        >>> loss.shape, bool(loss > 0)
        (torch.Size([]), True)
    """

    def __init__(self) -> None:
        super().__init__()

    def forward(self, logits: Tensor) -> Tensor:
        if logits.dim() != 2:
            raise ValueError(
                f"logits must be 2-D [Q, G] (one group per row, positive in column 0), got shape "
                f"{tuple(logits.shape)}; reshape flat logits with lce_group_logits(logits, group_size)"
            )
        if logits.shape[0] == 0 or logits.shape[1] < 2:
            raise ValueError(f"LCE needs at least one group of size >= 2 [Q, G], got shape {tuple(logits.shape)}")
        return -torch.log_softmax(logits, dim=1)[:, 0].mean()

    def get_config_dict(self) -> dict[str, Any]:
        return {}
