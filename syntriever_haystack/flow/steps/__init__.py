"""The steps of a run, in order, each with its settings, upstream steps, inputs and outputs.

============================  ==============================================================================
step                          does
============================  ==============================================================================
``data``                      resolve (download) the BEIR dataset, check the splits, restrict training queries
``base-model``                export the base model to ONNX (zero-shot baseline, embedder judge)
``generate-queries``          LLM queries for sampled corpus passages (label-free)
``mine``                      sentence queries, guarded hard negatives, held-out split → stage-1 records, LCE groups
``generate-retriever``        opt-in labels: stage-1 examples (p+, p-, q_cot, verified) for sampled training queries
``train-retriever``           stage 1 on the synthetic examples (+ opt-in: the training queries' gold pairs)
``export-stage1``             stage 1 to ONNX: the candidates of the stage-2 preferences (when stage 2 is enabled)
``train-reranker``            the LCE cross-encoder on the synthetic groups
``export-reranker``           the reranker to ONNX (probes drawn from its training data)
``generate-preferences``      stage-2 preferences over the stage-1 top-K (when stage 2 is enabled)
``train-stage2``              preference alignment of the stage-1 retriever
``export-retriever``          the final retriever to ONNX
``gate``                      the ship gate: held-out synthetic queries decide which trained components are served
``pipelines``                 indexing and query pipelines (YAML) with what passed the gate
``index``                     run the indexing pipeline over the corpus
``evaluate``                  BM25 vs zero-shot vs trained (+ reranked), paired tests, report files
``answer``                    the sample query, answered by the saved query pipeline
============================  ==============================================================================

Each module declares its steps next to the functions that run them: :mod:`.data`, :mod:`.export` (every ONNX
export), :mod:`.synthetic` (the label-free queries and mining), :mod:`.generation` (the LLM on queries),
:mod:`.gate`, :mod:`.training`, :mod:`.serving` (pipelines, index, answer) and
:mod:`.evaluation`. A step function gets the context and ``resume`` (``True`` when the same step, same settings,
stopped half-way: generation and training then continue from their records and checkpoints) and returns a JSON-able
result, stored in its stamp and read by later steps. Modules import their heavy dependencies (torch, the evaluation
stack, ...) only when a step runs, so listing the steps (``syntriever run --help``) stays cheap.
"""

from __future__ import annotations

from syntriever_haystack.flow.step import Step, StepFunction
from syntriever_haystack.flow.steps.data import DATA
from syntriever_haystack.flow.steps.evaluation import EVALUATE
from syntriever_haystack.flow.steps.export import BASE_MODEL, EXPORT_RERANKER, EXPORT_RETRIEVER, EXPORT_STAGE1
from syntriever_haystack.flow.steps.gate import GATE
from syntriever_haystack.flow.steps.generation import GENERATE_PREFERENCES, GENERATE_RETRIEVER
from syntriever_haystack.flow.steps.serving import ANSWER, INDEX, PIPELINES
from syntriever_haystack.flow.steps.synthetic import GENERATE_QUERIES, MINE
from syntriever_haystack.flow.steps.training import TRAIN_RERANKER, TRAIN_RETRIEVER, TRAIN_STAGE2

__all__ = ["STEPS", "STEP_NAMES", "Step", "StepFunction"]

STEPS: tuple[Step, ...] = (
    DATA,
    BASE_MODEL,
    GENERATE_QUERIES,
    MINE,
    GENERATE_RETRIEVER,
    TRAIN_RETRIEVER,
    EXPORT_STAGE1,
    TRAIN_RERANKER,
    EXPORT_RERANKER,
    GENERATE_PREFERENCES,
    TRAIN_STAGE2,
    EXPORT_RETRIEVER,
    GATE,
    PIPELINES,
    INDEX,
    EVALUATE,
    ANSWER,
)

STEP_NAMES: tuple[str, ...] = tuple(step.name for step in STEPS)
