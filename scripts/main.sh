#!/usr/bin/env bash
# The main job: set up .venv, then run the quickstart on SciFact — the offline LLM writes synthetic training data,
# the offline MiniLM is trained on it (Syntriever stage 1; no training query or judgment is read), exported to ONNX, served in Haystack
# pipelines (in-memory store), evaluated against BM25 and the zero-shot model, and a sample query is answered.
# Outputs in runs/quickstart/ (models/, pipelines/, data/, report/report.md). Rerunning resumes or skips what is done.
# Extra arguments go to `syntriever quickstart` (e.g. --budget medium, --llm openai:gpt-4o-mini).
set -euo pipefail
cd "$(dirname "$0")/.."
# llama.cpp runs the offline LLM ~4x faster than transformers (it compiles once, ~8 min, during setup).
SYNTRIEVER_LLAMA_CPP="${SYNTRIEVER_LLAMA_CPP:-1}" bash scripts/setup.sh
export HF_HUB_OFFLINE="${HF_HUB_OFFLINE:-1}" HAYSTACK_TELEMETRY_ENABLED="${HAYSTACK_TELEMETRY_ENABLED:-False}"

# SciFact from the shared datasets folder when present, else the BEIR name (downloaded once, needs a network).
datasets="${SYNTRIEVER_DATASETS:-../shared/datasets}"
if [ -f "$datasets/scifact/corpus.jsonl" ]; then dataset="$datasets/scifact"; else dataset="scifact"; fi
exec .venv/bin/syntriever quickstart --dataset "$dataset" --out runs/quickstart "$@"
