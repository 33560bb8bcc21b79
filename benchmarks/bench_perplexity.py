"""Perplexity of the default model on tests/data/pride_and_prejudice_ch1.txt in fp32 and
each quantized form, on both paths of the quantized linears: one forward pass over the text
(more than 16 rows: dequantise-then-GEMM) and passes of 16 positions through the KV cache
(the GEMV kernels that decoding runs, activations rounded to 15 bits).

    python benchmarks/bench_perplexity.py
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

import torch

sys.path.insert(0, os.path.dirname(__file__))
from common import default_model_precisions  # noqa: E402

import fastdecode  # noqa: E402
from fastdecode.evaluate import perplexity  # noqa: E402
from fastdecode.quantize import quantize_model  # noqa: E402

TEXT = Path(__file__).resolve().parents[1] / "tests" / "data" / "pride_and_prejudice_ch1.txt"


def main() -> int:
    tok = fastdecode.load("default")[1]
    ids = torch.tensor(tok.encode(TEXT.read_text()))
    variants = default_model_precisions() + [
        ("int8 per channel", lambda: quantize_model(fastdecode.load("default")[0], "int8", None)),
        ("int4 (groups of 32, int4 head)",
         lambda: quantize_model(fastdecode.load("default")[0], "int4", head_int8=False)),
    ]
    print(f"{ids.numel()} tokens")
    print(f"{'model':34s} {'one pass':>9s} {'vs fp32':>8s} {'16 at a time':>13s} {'vs fp32':>8s}")
    base = None
    for name, make in variants:
        model = make()
        full, chunked = perplexity(model, ids), perplexity(model, ids, 16)
        base = base or full
        print(f"{name:34s} {full:9.3f} {full / base - 1:+8.2%} {chunked:13.3f} "
              f"{chunked / base - 1:+8.2%}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
