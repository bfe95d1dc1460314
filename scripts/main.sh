#!/usr/bin/env bash
# The main job: set up .venv, export the offline base model to ONNX, serve it in Haystack pipelines, and
# evaluate it zero-shot on SciFact (BM25 vs dense vs hybrid) with `syntriever evaluate`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export HF_HUB_OFFLINE="${HF_HUB_OFFLINE:-1}" HAYSTACK_TELEMETRY_ENABLED="${HAYSTACK_TELEMETRY_ENABLED:-False}"
.venv/bin/python examples/serve_minilm.py --out models

# SciFact from the shared datasets folder when present, else the public BEIR zip (needs a network).
datasets="${SYNTRIEVER_DATASETS:-../shared/datasets}"
if [ -f "$datasets/scifact/corpus.jsonl" ]; then dataset="$datasets/scifact"; else dataset="scifact"; fi
echo
echo "== Zero-shot evaluation on SciFact test (results/scifact-zero-shot/) =="
if ! .venv/bin/syntriever evaluate --dataset "$dataset" --split test \
    --system bm25 \
    --system "dense:models/minilm-onnx?precision=int8" \
    --system "hybrid:models/minilm-onnx?precision=int8" \
    --json results/scifact-zero-shot/summary.json --output-dir results/scifact-zero-shot; then
  echo "evaluation skipped: SciFact is not available (set SYNTRIEVER_DATASETS to a folder holding scifact/)" >&2
fi
