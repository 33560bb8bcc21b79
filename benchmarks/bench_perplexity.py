"""Perplexity of the default model on tests/data/pride_and_prejudice_ch1.txt in fp32 and
each quantized form, on both paths of the quantized linears: one forward pass over the text
(more than 16 rows: dequantise-then-GEMM) and passes of 16 positions through the KV cache
(the GEMV kernels that decoding runs, activations rounded to 8 bits per 32 values).

With ``--llama-bin``, the same text is also scored as ``llama-perplexity`` scores it
(windows of ``--ctx`` tokens, the second half of each scored;
``fastdecode.evaluate.perplexity_windows``) by both sides, each precision against the
matching GGUF (fp32 / F32, int8 / Q8_0, int4 and the GGUF as stored / Q4_1), in the same run.

    python benchmarks/bench_perplexity.py [--llama-bin .peers/llama.cpp-build/bin] [--ctx 128]
"""
from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
from pathlib import Path

import torch

sys.path.insert(0, os.path.dirname(__file__))
from common import default_model_precisions, float_default  # noqa: E402

import fastdecode  # noqa: E402
from fastdecode.evaluate import perplexity, perplexity_windows  # noqa: E402
from fastdecode.quantize import quantize_model  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
TEXT = ROOT / "tests" / "data" / "pride_and_prejudice_ch1.txt"
# our precision (default_model_precisions' order) -> the llama.cpp file of the same format
MATCHING_FILE = ["F32", "Q8_0", "gguf", "gguf"]


def llama_perplexity(bin_dir: Path, model: Path, text: Path, n_ctx: int) -> tuple:
    """(perplexity, windows) that llama-perplexity reports for ``text``."""
    out = subprocess.run([str(bin_dir / "llama-perplexity"), "-m", str(model), "-f", str(text),
                          "-c", str(n_ctx), "-b", str(n_ctx), "-t", "2"],
                         capture_output=True, text=True, check=True)
    log = out.stdout + out.stderr
    ppl = re.search(r"Final estimate: PPL = ([0-9.]+)", log)
    windows = re.search(r"calculating perplexity over (\d+) chunks", log)
    if ppl is None or windows is None:
        raise RuntimeError(f"llama-perplexity printed no estimate:\n{log[-2000:]}")
    return float(ppl.group(1)), int(windows.group(1))


def side_by_side(bin_dir: Path, text: Path, n_ctx: int, ids: torch.Tensor) -> None:
    from bench_llamacpp import prepare_files

    files = prepare_files(bin_dir, ROOT / ".peers" / "models")
    print(f"\nllama-perplexity's measure: windows of {n_ctx} tokens, second half scored")
    print("| ours | llama.cpp file | fastdecode | llama.cpp | ours / theirs |")
    print("| --- | --- | ---: | ---: | ---: |")
    for (name, make), kind in zip(default_model_precisions(), MATCHING_FILE):
        model = make()
        ours, windows = perplexity_windows(model, ids, n_ctx, chunk=16)
        theirs, their_windows = llama_perplexity(bin_dir, files[kind], text, n_ctx)
        if their_windows != windows:
            raise RuntimeError(f"llama.cpp scored {their_windows} windows, we {windows}: the "
                               "tokenisations differ")
        label = "Q4_1 (the file)" if kind == "gguf" else kind
        print(f"| {name} | {label} | {ours:.3f} | {theirs:.3f} | {ours / theirs - 1:+.2%} |")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--llama-bin", type=Path, default=None)
    ap.add_argument("--text", type=Path, default=TEXT)
    ap.add_argument("--ctx", type=int, default=128)
    args = ap.parse_args()
    torch.set_num_threads(2)
    tok = fastdecode.load("default")[1]
    ids = torch.tensor(tok.encode(args.text.read_text()))
    variants = default_model_precisions() + [
        ("int8 per channel", lambda: quantize_model(float_default(), "int8", None)),
        ("int4 (groups of 32, int4 head)",
         lambda: quantize_model(float_default(), "int4", head_int8=False)),
    ]
    print(f"{args.text.name}: {ids.numel()} tokens")
    print(f"{'model':44s} {'one pass':>9s} {'vs fp32':>8s} {'16 at a time':>13s} {'vs fp32':>8s}")
    base = None
    for name, make in variants:
        model = make()
        full, chunked = perplexity(model, ids), perplexity(model, ids, 16)
        base = base or full
        print(f"{name:44s} {full:9.3f} {full / base - 1:+8.2%} {chunked:13.3f} "
              f"{chunked / base - 1:+8.2%}")
    if args.llama_bin is not None:
        side_by_side(args.llama_bin, args.text, args.ctx, ids)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
