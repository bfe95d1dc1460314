"""Load an exported bi-encoder with sentence-transformers' ONNX backend and compare it with our runtime.

    python export/check_ecosystem.py EXPORTED_DIR [--precision fp32|int8]

Exits 1 when the two disagree (cosine < 0.9999 on any probe text). Needs the `export` extra.
"""

from __future__ import annotations

import argparse
import sys

import numpy as np


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model")
    parser.add_argument("--precision", choices=["fp32", "int8"], default="fp32")
    args = parser.parse_args()

    from sentence_transformers import SentenceTransformer

    from syntriever_haystack.export.parity import PROBE_TEXTS
    from syntriever_haystack.runtime.onnx_model import OnnxModel

    ours_model = OnnxModel(args.model, precision=args.precision)
    file_name = ours_model.metadata.files[args.precision].split("/")[-1]
    st = SentenceTransformer(args.model, backend="onnx", device="cpu", model_kwargs={"file_name": file_name})
    texts = list(PROBE_TEXTS)
    theirs = st.encode(texts, normalize_embeddings=True)
    ours = ours_model.embed(texts, normalize=True)
    cosine = np.sum(theirs * ours, axis=1)
    print(f"sentence-transformers backend='onnx' vs syntriever runtime ({args.precision}, {file_name}):")
    print(f"  min cosine {cosine.min():.6f}, mean {cosine.mean():.6f} over {len(texts)} probes")
    return 0 if cosine.min() >= 0.9999 else 1


if __name__ == "__main__":
    sys.exit(main())
