"""Tensor-parallel decoding on this machine: tokens/s of `python -m fastdecode generate` for
1, 2 and 3 ranks (torchrun, gloo), and the bytes the collectives move per token.

Each rank is a process with OMP_NUM_THREADS = cores / ranks (at least 1). The figure is the
CLI's own decode rate (greedy, 128 new tokens, prompt outside the tests), median of rounds;
the text of every run is compared with the one-process text.

    python benchmarks/bench_tp.py [--rounds 2] [--quantized]
"""
from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys

import fastdecode
from fastdecode.tp import allreduce_bytes_per_token

PROMPT = "Write three sentences about the history of bridges."
RATE = re.compile(r"\[(\d+) tokens in ([\d.]+) s: ([\d.]+) tokens/s\]")


def run(nproc: int, quantized: bool, tokens: int) -> tuple:
    args = ["-m", "fastdecode", "generate", "--prompt", PROMPT, "--max-new-tokens", str(tokens),
            "--temperature", "0"] + (["--quantized"] if quantized else [])
    threads = max(1, (os.cpu_count() or 1) // nproc)
    env = dict(os.environ, OMP_NUM_THREADS=str(threads))
    cmd = [sys.executable, *args] if nproc == 1 else [
        sys.executable, "-m", "torch.distributed.run", "--standalone",
        f"--nproc_per_node={nproc}", *args]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=900)
    if proc.returncode != 0:
        raise SystemExit(f"{nproc} ranks failed:\n{proc.stderr[-2000:]}")
    match = RATE.search(proc.stdout)
    return float(match.group(3)), proc.stdout.split("\n[")[0]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--tokens", type=int, default=128)
    ap.add_argument("--quantized", action="store_true", help="the GGUF blocks as stored")
    args = ap.parse_args()
    model, _ = fastdecode.load("default", quantized=False)
    config = model.config
    print(f"default model ({'GGUF as stored' if args.quantized else 'fp32'}), "
          f"{os.cpu_count()} cores, greedy {args.tokens} tokens, {args.rounds} rounds")
    rates = {n: [] for n in (1, 2, 3)}
    texts = {}
    for _ in range(args.rounds):
        for n in rates:  # interleaved: the host's load drifts between runs
            rate, text = run(n, args.quantized, args.tokens)
            rates[n].append(rate)
            texts.setdefault(n, text)
    print("\n| ranks | threads a rank | tokens/s | vs 1 rank | collective bytes / token | "
          "same text |")
    print("| ---: | ---: | ---: | ---: | ---: | --- |")
    base = statistics.median(rates[1])
    for n, r in rates.items():
        moved = allreduce_bytes_per_token(config, n)["total"]
        med = statistics.median(r)
        print(f"| {n} | {max(1, (os.cpu_count() or 1) // n)} | {med:.1f} | {med / base:.2f}x | "
              f"{moved:,} | {texts[n] == texts[1]} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
