#!/usr/bin/env bash
# The main job: set up .venv, export the offline base model to ONNX and serve it in a Haystack pipeline.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export HF_HUB_OFFLINE="${HF_HUB_OFFLINE:-1}" HAYSTACK_TELEMETRY_ENABLED="${HAYSTACK_TELEMETRY_ENABLED:-False}"
exec .venv/bin/python examples/serve_minilm.py "$@"
