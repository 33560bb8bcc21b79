"""Weight-only int8 / int4 on the CPU: the linears alone, then decode tokens/s.

(a) each quantized linear at the default model's shapes, batch 1, against the seed's torch
    reference: ``F.linear(x, w.to(x.dtype)) * scales`` for int8, dequantise + ``F.linear``
    for int4 (what a kernel-less implementation does every call). 30 weight copies per shape
    are cycled so that, as in a real decode step, weights come from memory, not cache.
(b) decode tokens/s of SmolLM2-135M in fp32, int8 and int4 (quantize_model, groups of 32,
    int8 head) and the GGUF's own Q4_1/Q8_0 blocks, each next to its roofline
    (measured read bandwidth / weight bytes per token) and as a ratio to fp32.

    python benchmarks/bench_quant.py [--new-tokens 64] [--repeats 3] [--rounds 5]

The decode figures are medians over interleaved rounds (each round runs every model once),
and the ratio to fp32 is the median of the per-round ratios, with its range.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(__file__))
from common import (default_model_precisions, median_seconds, read_bandwidth_gbs,  # noqa: E402
                    weight_bytes_per_token)

import fastdecode  # noqa: E402
from fastdecode import ops  # noqa: E402

SHAPES = {"wqkv": (960, 576), "wo": (576, 576), "w1/w3": (1536, 576), "w2": (576, 1536),
          "output": (49152, 576)}


def dequantize_int4(packed, sz, groupsize):
    n = packed.shape[0]
    q = torch.cat([(packed & 15).view(n, -1, 16), (packed >> 4).view(n, -1, 16)], 2)
    q = q.view(n, -1, groupsize).float()
    return ((q - 8) * sz[..., :1] + sz[..., 1:]).view(n, -1)


def bench_linears(repeats: int) -> None:
    print("(a) linear alone, batch 1, fp32 activations; microseconds per call")
    print(f"{'layer':8s} {'N x K':>12s} {'int8':>8s} {'seed ref':>9s} {'ratio':>7s} "
          f"{'int4 g32':>9s} {'deq+mm':>8s} {'ratio':>7s}")
    for name, (n, k) in SHAPES.items():
        copies = 2 if n > 10000 else 30
        ws = [torch.randn(n, k) * 0.05 for _ in range(copies)]
        q8 = [ops.quantize_int8_per_channel(w) for w in ws]
        q4 = [ops.quantize_int4_grouped(w, 32) for w in ws]
        x = torch.randn(1, k)

        def per_call(fn):
            return median_seconds(lambda: [fn(i) for i in range(copies)], repeats=repeats) / copies

        ours8 = per_call(lambda i: ops.int8_linear(x, *q8[i]))
        ref8 = per_call(lambda i: F.linear(x, q8[i][0].to(x.dtype)) * q8[i][1])
        ours4 = per_call(lambda i: ops.int4_linear(x, *q4[i], 32))
        ref4 = per_call(lambda i: F.linear(x, dequantize_int4(*q4[i], 32)))
        print(f"{name:8s} {n:6d} x {k:4d} {ours8 * 1e6:8.1f} {ref8 * 1e6:9.1f} "
              f"{ref8 / ours8:6.1f}x {ours4 * 1e6:9.1f} {ref4 * 1e6:8.1f} {ref4 / ours4:6.1f}x")


def decode_tps(model, ids, n):
    """tokens/s of one greedy run of n new tokens, less the prefill (a 1-token run)."""
    def run(k):
        return fastdecode.generate(model, ids, k, temperature=0)

    t_n = median_seconds(lambda: run(n), repeats=1, warmup=0)
    t_1 = median_seconds(lambda: run(1), repeats=1, warmup=0)
    return (n - 1) / (t_n - t_1)


def bench_decode(new_tokens: int, rounds: int) -> None:
    bw = read_bandwidth_gbs()
    print(f"\n(b) decode, batch 1, greedy, {new_tokens} new tokens; read bandwidth {bw:.1f} GB/s; "
          f"median of {rounds} interleaved rounds")
    print(f"{'model':34s} {'MB/token':>9s} {'tokens/s':>9s} {'roofline':>9s} {'of roof':>8s} "
          f"{'vs fp32':>8s} {'range':>12s}")
    variants = default_model_precisions()
    tok = fastdecode.load("default")[1]
    ids = torch.tensor(tok.encode("The three most important inventions of the last century are"))
    models = [(name, make()) for name, make in variants]
    for _, model in models:
        decode_tps(model, ids, 8)  # warm-up
    # rounds interleave the models, so that the shared host's drift hits them alike; the
    # ratio to fp32 is taken within each round
    tps = {name: [] for name, _ in models}
    for _ in range(rounds):
        for name, model in models:
            tps[name].append(decode_tps(model, ids, new_tokens))
    fp32 = tps["fp32"]
    for name, model in models:
        nbytes = weight_bytes_per_token(model)
        if name != "fp32":  # the float embedding table is looked up, not streamed
            table = model.tok_embeddings.weight
            nbytes -= table.numel() * table.element_size()
        ratios = [t / f for t, f in zip(tps[name], fp32)]
        med = statistics.median(tps[name])
        roof = bw * 1e9 / nbytes
        print(f"{name:34s} {nbytes / 1e6:9.1f} {med:9.1f} {roof:9.1f} {med / roof:7.0%} "
              f"{statistics.median(ratios):7.2f}x {min(ratios):5.2f}-{max(ratios):4.2f}x")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--new-tokens", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=3, help="timed runs per linear")
    ap.add_argument("--rounds", type=int, default=5, help="interleaved decode rounds")
    args = ap.parse_args()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"ISA {fastdecode.build_info()['active_isa']}")
    bench_linears(args.repeats)
    bench_decode(args.new_tokens, args.rounds)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
