"""Which exported variant serves fastest on this machine: measured at export time, recorded in ``syntriever.json``.

The components' ``quantization="auto"`` runs the variant recorded here (``serving.default``). Only variants that
passed the parity gate are measured, so "fastest" never means "less exact than allowed".

What was measured before settling on the two variants the exporter writes (all-MiniLM-L6-v2, 300 SciFact
abstracts at 256 tokens, 2 cores of an AVX2-only AMD EPYC, one run, docs/s and mean cosine to fp32; one-off scratch
measurements, not a committed benchmark, and taken while other jobs shared the CPU):
ONNX Runtime dynamic int8 of the unfused graph 33.9 (0.9937), the same with full-range weights 35.2 (0.9936),
dynamic int8 of the fused graph 30.2 (0.9949), static QDQ int8 (MinMax calibration) 29.7 (0.943: rejected),
fp32 fused 22.6; OpenVINO 2026.4 fp32 25.5, OpenVINO on the QDQ graph 21.9. sentence-transformers fp32 ran
19.2 in the same session.
"""

from __future__ import annotations

import os
import platform
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

#: Inputs timed per variant (the long probes, repeated: every one cut at the served length).
TIMED_INPUTS = 32
#: A variant replaces fp32 as the default only when it is at least this much faster (fp32 is exact).
MIN_SPEEDUP = 1.05
_FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "avx_vnni", "amx_tile", "amx_int8", "amx_bf16")


def machine() -> dict[str, Any]:
    """The CPU the measurement ran on: model name, cores and the instruction sets that decide int8/bf16 speed."""
    name, flags = platform.processor() or platform.machine(), set()
    try:
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace").splitlines():
            if line.startswith("model name") and ":" in line:
                name = line.split(":", 1)[1].strip()
            elif line.startswith("flags") and ":" in line:
                flags = set(line.split(":", 1)[1].split())
                break
    except OSError:
        pass
    import onnxruntime

    return {
        "cpu": name,
        "cores": os.cpu_count(),
        "flags": [flag for flag in _FLAGS if flag in flags],
        "onnxruntime": onnxruntime.__version__,
    }


def choose_default(speeds: dict[str, float]) -> str:
    """The fastest variant, unless fp32 (exact) is within :data:`MIN_SPEEDUP` of it."""
    fastest = max(speeds, key=lambda p: speeds[p], default="fp32")
    if "fp32" in speeds and speeds[fastest] < MIN_SPEEDUP * speeds["fp32"]:
        return "fp32"
    return fastest


def measure_variants(
    exported: Path, precisions: Sequence[str], inputs: Sequence[Any], *, repeats: int = 2
) -> dict[str, Any]:
    """Time each precision's :class:`OnnxModel` on ``inputs`` (texts for a bi-encoder, pairs for a cross-encoder),
    best of ``repeats`` after one warm-up batch; return the ``serving`` block of ``syntriever.json``.

    :returns: ``{"docs_per_s": {precision: value}, "default": fastest, "inputs": n, "machine": {...}}``; the
        default is fp32 unless another variant is at least :data:`MIN_SPEEDUP` times faster.
    """
    from syntriever_haystack.runtime.onnx_model import OnnxModel

    items = [inputs[i % len(inputs)] for i in range(TIMED_INPUTS)] if inputs else []
    speeds: dict[str, float] = {}
    for precision in precisions:
        model = OnnxModel(exported, precision=precision)
        run = model.embed if model.kind == "bi-encoder" else model.score_pairs
        run(items[:8], batch_size=8)  # warm-up: session buffers, first-call kernels
        best = float("inf")
        for _ in range(max(1, repeats)):
            start = time.perf_counter()
            run(items, batch_size=16)
            best = min(best, time.perf_counter() - start)
        speeds[precision] = round(len(items) / best, 1) if best > 0 else 0.0
    return {"docs_per_s": speeds, "default": choose_default(speeds), "inputs": len(items), "machine": machine()}
