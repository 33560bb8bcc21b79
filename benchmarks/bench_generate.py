"""Decode tokens/s of fastdecode.generate vs Hugging Face generate on the default model.

Same GGUF (SmolLM2-135M-Instruct), fp32, batch 1, greedy, 128 new tokens, same prompt, in
one process. Decode speed excludes the prefill: (t(128 tokens) - t(1 token)) / 127. The
roofline is measured read bandwidth / weight bytes per token.

    python benchmarks/bench_generate.py [--new-tokens 128] [--repeats 3] [--compile]
"""
from __future__ import annotations

import argparse
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(__file__))
from common import load_hf_peer, median_seconds, read_bandwidth_gbs, weight_bytes_per_token  # noqa: E402

import fastdecode  # noqa: E402

PROMPT = "The three most important inventions of the last century are"


def decode_tokens_per_s(run, n: int, repeats: int) -> float:
    t_n = median_seconds(lambda: run(n), repeats=repeats)
    t_1 = median_seconds(lambda: run(1), repeats=repeats)
    return (n - 1) / (t_n - t_1)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--new-tokens", type=int, default=128)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--compile", action="store_true", help="also time a compiled decode step")
    args = ap.parse_args()

    model, tokenizer = fastdecode.load("default", precision=torch.float32, quantized=False)
    hf = load_hf_peer(fastdecode.default_checkpoint_path())
    ids = torch.tensor([tokenizer.encode(PROMPT)])
    n = args.new_tokens

    def ours(k):
        return fastdecode.generate(model, ids[0], k, temperature=0)[0]

    def theirs(k):
        with torch.no_grad():
            return hf.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=k,
                               do_sample=False)

    same = torch.equal(ours(n), theirs(n))
    rows = [("fastdecode generate (eager)", decode_tokens_per_s(ours, n, args.repeats))]
    if args.compile:
        fastdecode.compile_decode_step(model)
        rows.append(("fastdecode generate (compiled step)",
                     decode_tokens_per_s(ours, n, args.repeats)))
        fastdecode.compile_decode_step(model, enable=False)
    hf_tps = decode_tokens_per_s(theirs, n, args.repeats)
    bw = read_bandwidth_gbs()
    wbytes = weight_bytes_per_token(model)
    roof = bw * 1e9 / wbytes

    print(f"model: SmolLM2-135M-Instruct fp32, batch 1, greedy, {n} new tokens, "
          f"torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"ISA {fastdecode.build_info()['active_isa']}")
    print(f"weights read per token: {wbytes / 1e6:.1f} MB; read bandwidth: {bw:.1f} GB/s; "
          f"roofline: {roof:.1f} tokens/s")
    print(f"greedy output identical to Hugging Face: {same}")
    print(f"{'':38s} {'tokens/s':>9s} {'vs HF':>7s} {'of roofline':>12s}")
    for name, tps in rows + [("Hugging Face generate", hf_tps)]:
        print(f"{name:38s} {tps:9.1f} {tps / hf_tps:6.2f}x {tps / roof:11.0%}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
