#!/usr/bin/env bash
# Create (or update) the project's virtual environment at .venv with everything needed to run and test.
# Idempotent: re-running with an unchanged pyproject.toml does nothing.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON="${PYTHON:-python3}"
# The CPU build of torch. On this project's machines pip finds it on local disk; elsewhere, point pip at the
# CPU index, e.g. TORCH_PIP_ARGS="--index-url https://download.pytorch.org/whl/cpu", or a CUDA build arrives.
TORCH_SPEC="${TORCH_SPEC:-torch==2.13.0}"
TORCH_PIP_ARGS="${TORCH_PIP_ARGS:-}"
EXTRAS="${SYNTRIEVER_EXTRAS:-all}"
# Optional: llama.cpp for the offline LLM (~4x faster than the default transformers backend; compiles ~8 min
# on 2 cores, portable CPU flags because the native build crashes on some CPUs). SYNTRIEVER_LLAMA_CPP=1 enables.
LLAMA_CPP="${SYNTRIEVER_LLAMA_CPP:-0}"

if [ ! -x .venv/bin/python ]; then
  echo "[setup] creating .venv"
  "$PYTHON" -m venv .venv
fi
stamp=".venv/.syntriever-installed"
want="$(cat pyproject.toml scripts/setup.sh | sha256sum | cut -d' ' -f1) $EXTRAS $TORCH_SPEC llama=$LLAMA_CPP"
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
  exit 0
fi
echo "[setup] installing dependencies into .venv (a few minutes on a fresh machine)"
.venv/bin/python -m pip install --quiet --upgrade pip
# torch first and by exact version, so nothing later pulls a multi-GB CUDA build
# shellcheck disable=SC2086
.venv/bin/python -m pip install --quiet $TORCH_PIP_ARGS "$TORCH_SPEC"
.venv/bin/python -m pip install --quiet -e ".[${EXTRAS}]"
if [ "$LLAMA_CPP" = "1" ]; then
  echo "[setup] building llama-cpp-python (portable CPU build)"
  CMAKE_ARGS="-DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_BMI2=ON -DGGML_AVX512=OFF" \
    .venv/bin/python -m pip install --quiet "llama-cpp-python==0.3.36"
fi
echo "$want" > "$stamp"
echo "[setup] done"
