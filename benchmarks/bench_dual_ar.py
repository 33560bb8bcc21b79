"""DualAR decode steps: fastdecode's fused path (every one-position step of the slow and the
fast transformer as one C++ call, ops.decode_layers) vs the module-by-module path of the same
model (fastdecode.unfuse: ATen ops and SDPA around our linears), in interleaved rounds.

A random-weight model at a small fish-speech-like shape (fish-speech 1.5 is dim 1024, 24
layers, 4 fast layers, 8 codebooks of 1024). One position = one slow step + num_codebooks
fast steps; the figures are positions (tokens) / s and codebook steps / s of greedy decoding
after a 16-position prompt, median of rounds.

    python benchmarks/bench_dual_ar.py [--rounds 3] [--positions 32]
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch

import fastdecode
from fastdecode.compat.fish_speech.codebook_decode import decode_n_tokens_codes, decode_one_token_ar
from fastdecode.dual_ar import DualARModelArgs, DualARTransformer

SHAPE = dict(vocab_size=32000, n_layer=8, n_head=8, n_local_heads=2, dim=512, head_dim=64,
             intermediate_size=1536, max_seq_len=1024, codebook_size=1024, num_codebooks=8,
             semantic_begin_id=1000, semantic_end_id=2023, n_fast_layer=4)


def build() -> DualARTransformer:
    torch.manual_seed(0)
    model = DualARTransformer(DualARModelArgs(**SHAPE))
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0, 0.05)
    return model.eval()


def positions_per_second(model, prompt, positions: int) -> float:
    rows = model.config.num_codebooks + 1
    T = prompt.shape[1]
    model.setup_caches(1, T + positions + 1)
    first = decode_one_token_ar(model, prompt.view(1, rows, T), torch.arange(T),
                                list(range(1000, 2024)), temperature=0)
    t0 = time.perf_counter()
    decode_n_tokens_codes(model, first.view(1, rows, 1), torch.tensor([T]), positions,
                          list(range(1000, 2024)), temperature=0)
    return positions / (time.perf_counter() - t0)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--positions", type=int, default=32)
    args = ap.parse_args()
    model = build()
    prompt = torch.zeros(SHAPE["num_codebooks"] + 1, 16, dtype=torch.long)
    prompt[0] = torch.randint(0, 32000, (16,), generator=torch.Generator().manual_seed(1))
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, ISA "
          f"{fastdecode.build_info()['active_isa']}; {SHAPE}")
    fused, modules = [], []
    for _ in range(args.rounds):
        for flag, out in ((True, fused), (False, modules)):
            fastdecode.fuse(model) if flag else fastdecode.unfuse(model)
            out.append(positions_per_second(model, prompt, args.positions))
    c = SHAPE["num_codebooks"]
    f, m = statistics.median(fused), statistics.median(modules)
    print("\n| path | positions/s | codebook steps/s | vs modules | per round |")
    print("| --- | ---: | ---: | ---: | --- |")
    print(f"| fused (ops.decode_layers) | {f:.1f} | {f * c:.0f} | {f / m:.2f}x | "
          f"{', '.join(f'{x:.1f}' for x in fused)} |")
    print(f"| module by module | {m:.1f} | {m * c:.0f} | 1.00x | "
          f"{', '.join(f'{x:.1f}' for x in modules)} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
