"""Sampling one token per row: fastdecode's C++ ops vs the torch reference.

The reference is the way fish-speech and Hugging Face do it with torch ops: gather/scatter
repetition penalty, temperature, topk, a full sort + softmax + cumsum for top-p, softmax,
then the exponential-race draw. Ours: fastdecode.sample (one C++ op for the probabilities,
one for the draw). Knobs: temperature 0.8, top_k 50, top_p 0.9, repetition penalty 1.2 over
64 previous tokens per row.

Part 2 is batch 1 at V = 128256 (Llama-3's vocabulary) for each knob set on its own, on flat
logits (``randn``: top-p keeps about half the row) and peaked ones (``8 * randn``), greedy
included (the reference is ``torch.argmax``).

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


def torch_reference_sample(logits, previous_tokens=None, temperature=1.0, top_k=None,
                           top_p=1.0, repetition_penalty=1.0, generator=None):
    """-> (idx [B, 1], probs); only the knobs given are applied, in fish-speech's order."""
    if previous_tokens is not None and repetition_penalty != 1.0:
        logits = logits.clone()
        score = torch.gather(logits, -1, previous_tokens)
        score = torch.where(score < 0, score * repetition_penalty, score / repetition_penalty)
        logits.scatter_(-1, previous_tokens, score)
    if temperature == 0:
        return torch.argmax(logits, -1, keepdim=True), None
    logits = logits / temperature
    if top_k is not None:
        pivot = torch.topk(logits, top_k).values[..., -1:]
        logits = torch.where(logits < pivot, -float("inf"), logits)
    if top_p < 1.0:
        sorted_logits, sorted_idx = torch.sort(logits, descending=True)
        cum = torch.cumsum(torch.softmax(sorted_logits, -1), -1)
        remove = cum > top_p
        remove[..., 0] = False
        logits = logits.masked_fill(remove.scatter(-1, sorted_idx, remove), -float("inf"))
    probs = torch.softmax(logits, -1)
    q = torch.empty_like(probs).exponential_(1, generator=generator)
    return torch.argmax(probs / q, -1, keepdim=True), probs


KNOB_SETS = {"greedy": dict(temperature=0.0),
             "temperature 0.8": dict(temperature=0.8),
             "top-k 50": dict(temperature=0.8, top_k=50),
             "top-p 0.9": dict(temperature=0.8, top_p=0.9),
             "top-k 50 + top-p 0.9": dict(temperature=0.8, top_k=50, top_p=0.9)}


def knob_sets_at_batch_1(repeats: int, vocab: int = 128256) -> None:
    print(f"\nB=1, V={vocab}: fastdecode.sample vs the torch reference, per knob set")
    print(f"{'logits':>7s} {'knobs':>22s} {'ours us':>9s} {'torch us':>9s} {'speed-up':>9s}")
    g = torch.Generator().manual_seed(vocab)
    flat = torch.randn(1, vocab, generator=g)
    for name, logits in (("flat", flat), ("peaked", flat * 8)):
        for label, knobs in KNOB_SETS.items():
            ours = median_seconds(lambda: fastdecode.sample(logits, generator=g, **knobs),
                                  repeats=repeats, warmup=3)
            ref = median_seconds(lambda: torch_reference_sample(logits, generator=g, **knobs),
                                 repeats=repeats, warmup=3)
            print(f"{name:>7s} {label:>22s} {ours * 1e6:9.1f} {ref * 1e6:9.1f} "
                  f"{ref / ours:8.1f}x")


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
    knob_sets_at_batch_1(args.repeats)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
