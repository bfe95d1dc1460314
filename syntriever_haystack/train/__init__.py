"""Training (needs the ``train`` extra): Syntriever stage 1 / stage 2 retrievers and the LCE reranker.

- :mod:`~syntriever_haystack.train.losses`: the losses (multi-positive, partial Plackett-Luce + KL, Bradley-Terry,
  LCE), each an ``nn.Module`` over embeddings or logits;
- :mod:`~syntriever_haystack.train.retriever` / :mod:`~syntriever_haystack.train.reranker`: the trainers;
- :mod:`~syntriever_haystack.train.loop`: the shared loop (bf16, accumulation, checkpoints, resume, dev eval);
- :mod:`~syntriever_haystack.train.grad_cache`: gradient caching for large contrastive batches on small machines.
"""

from syntriever_haystack.train.loop import LoopSettings, TrainingError
from syntriever_haystack.train.reranker import RerankerTrainingConfig, train_reranker
from syntriever_haystack.train.retriever import RetrieverTrainingConfig, train_retriever

__all__ = [
    "LoopSettings",
    "RerankerTrainingConfig",
    "RetrieverTrainingConfig",
    "TrainingError",
    "train_reranker",
    "train_retriever",
]
