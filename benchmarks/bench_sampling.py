"""Sampling one token per row: fastdecode's fused C++ op vs the torch reference.

The reference is the way fish-speech and Hugging Face do it with torch ops: gather/scatter
repetition penalty, temperature, topk, a full sort + softmax + cumsum for top-p, softmax,
then the exponential-race draw. Ours: fastdecode.sample (one C++ op for the probabilities,
one for the draw). Knobs: temperature 0.8, top_k 50, top_p 0.9, repetition penalty 1.2 over
64 previous tokens per row.

    python benchmarks/bench_sampling.py [--repeats 20]
"""
from __future__ import annotations

import argparse
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(__file__))
from common import median_seconds  # noqa: E402

import fastdecode  # noqa: E402

KNOBS = dict(temperature=0.8, top_k=50, top_p=0.9, repetition_penalty=1.2)


def torch_reference_sample(logits, previous_tokens, temperature, top_k, top_p,
                           repetition_penalty, generator=None):
    logits = logits.clone()
    score = torch.gather(logits, -1, previous_tokens)
    score = torch.where(score < 0, score * repetition_penalty, score / repetition_penalty)
    logits.scatter_(-1, previous_tokens, score)
    logits = logits / temperature
    pivot = torch.topk(logits, top_k).values[..., -1:]
    logits = torch.where(logits < pivot, -float("inf"), logits)
    sorted_logits, sorted_idx = torch.sort(logits, descending=True)
    cum = torch.cumsum(torch.softmax(sorted_logits, -1), -1)
    remove = cum > top_p
    remove[..., 0] = False
    logits = logits.masked_fill(remove.scatter(-1, sorted_idx, remove), -float("inf"))
    probs = torch.softmax(logits, -1)
    q = torch.empty_like(probs).exponential_(1, generator=generator)
    return torch.argmax(probs / q, -1, keepdim=True), probs


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=20)
    args = ap.parse_args()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"ISA {fastdecode.build_info()['active_isa']}; knobs {KNOBS}, 64 previous tokens")
    print(f"{'V':>7s} {'B':>3s} {'ours us':>10s} {'torch us':>10s} {'speed-up':>9s}")
    for vocab in (32000, 49152, 128256):
        for batch in (1, 8, 64):
            g = torch.Generator().manual_seed(vocab + batch)
            logits = torch.randn(batch, vocab, generator=g) * 3
            prev = torch.randint(0, vocab, (batch, 64), generator=g)
            ours = median_seconds(lambda: fastdecode.sample(logits, prev, generator=g, **KNOBS),
                                  repeats=args.repeats, warmup=3)
            ref = median_seconds(lambda: torch_reference_sample(logits, prev, generator=g,
                                                                **KNOBS),
                                 repeats=args.repeats, warmup=3)
            print(f"{vocab:7d} {batch:3d} {ours * 1e6:10.1f} {ref * 1e6:10.1f} {ref / ours:8.1f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
