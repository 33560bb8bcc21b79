"""Speculative vs plain decoding of the same target (SmolLM2-135M fp32) on the CPU.

For each (draft, k): decode tokens/s of generate(..., draft_model=draft, speculate_k=k) next
to plain generate() in the same run, at greedy (where the output must be identical: checked)
and at temperature 0.8, with the acceptance histogram (accept_counts[a] = rounds that kept a
drafts). Drafts: the target's int8 and int4 copies (quantized_draft) and its first layers
(early_exit_draft).

    python benchmarks/bench_speculative.py [--new-tokens 96] [--repeats 3]
"""
from __future__ import annotations

import argparse
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(__file__))
from common import median_seconds  # noqa: E402

import fastdecode  # noqa: E402
from fastdecode.speculative import early_exit_draft, quantized_draft  # noqa: E402

PROMPT = "The three most important inventions of the last century are"
CHOICES = [("int8 copy", 4), ("int8 copy", 6), ("int4 copy", 4), ("int4 copy", 6),
           ("first 10 layers", 3)]


def decode_tps(run, n):
    """Tokens/s of the decode phase: the difference between n and 1 new tokens."""
    return (n - 1) / (median_seconds(lambda: run(n), repeats=ARGS.repeats)
                      - median_seconds(lambda: run(1), repeats=ARGS.repeats))


def main() -> int:
    model, tok = fastdecode.load("default", quantized=False)
    ids = torch.tensor(tok.encode(PROMPT))
    drafts = {"int8 copy": quantized_draft(model, "int8"),
              "int4 copy": quantized_draft(model, "int4"),
              "first 10 layers": early_exit_draft(model, 10)}
    n = ARGS.new_tokens
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {n} new tokens, "
          f"prompt of {len(ids)} tokens")
    print(f"{'temperature':>11s} {'draft':16s} {'k':>2s} {'plain tok/s':>11s} {'spec tok/s':>10s} "
          f"{'ratio':>6s} {'same':>5s}  accept_counts")
    for temperature in (0.0, 0.8):
        kw = dict(temperature=temperature, top_k=200 if temperature else None)

        def plain(m, **extra):
            return fastdecode.generate(model, ids, m, generator=torch.Generator().manual_seed(0),
                                       **kw, **extra)

        base = decode_tps(plain, n)
        reference = plain(n)[0]
        for name, k in CHOICES:
            spec = lambda m: plain(m, draft_model=drafts[name], speculate_k=k)  # noqa: E731
            tps = decode_tps(spec, n)
            out, info = spec(n)
            same = "yes" if torch.equal(out, reference) else ("no" if temperature == 0 else "-")
            print(f"{temperature:11.1f} {name:16s} {k:2d} {base:11.1f} {tps:10.1f} "
                  f"{tps / base:5.2f}x {same:>5s}  {info['accept_counts']}", flush=True)
    return 0


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--new-tokens", type=int, default=96)
    ap.add_argument("--repeats", type=int, default=3)
    ARGS = ap.parse_args()
    raise SystemExit(main())
