"""fastdecode against llama.cpp (the copy vendored in llama-cpp-python's sdist) on the same
weights, in interleaved rounds: batch-1 decode tokens/s (128 tokens) for fp32 / F32,
int8 / Q8_0, int4 / Q4_1 and the GGUF as stored, each with its share of the bandwidth
roofline (a streaming read measured here, divided by the bytes of weights a token reads on
each side); batched decode (B = 1, 4, 8, 16 rows, aggregate tokens/s, against
llama-batched-bench); speculative decoding (int8 drafts, k = 4, greedy) against plain;
prefill tokens/s at 64 and 512 tokens; process start to first token; our cold start
(import fastdecode -> loaded default model) and the peak RSS of the quantized load; decode
on a busy machine (another process spinning on one core).

    make bench-peers          # builds the llama.cpp tools first
    python benchmarks/bench_llamacpp.py --llama-bin .peers/llama.cpp-build/bin [--rounds 3]
    FASTDECODE_ISA=avx2 make bench-peers     # our AVX2 kernel path (build_info names it)

Weights: the default GGUF (Q4_1 blocks, Q8_0 embedding) as stored on both sides; F32 and
Q8_0 files made from it with `llama-quantize --allow-requantize`; on our side the same GGUF
dequantised to fp32, then `quantize_model(..., "int8" | "int4")` (groups of 32) for the int8 /
int4 rows. 2 threads on both sides. Decode: llama-bench -p 0 -n 128; ours
(t(129 tokens) - t(1 token)) / 128 of greedy `generate`. Ratios are ours / llama.cpp per
round; the table gives the median and the range.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, os.path.dirname(__file__))
from common import (float_default, median_seconds, read_bandwidth_gbs,  # noqa: E402
                    weight_bytes_per_token)

import fastdecode  # noqa: E402
from fastdecode.quantize import quantize_model  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
THREADS = 2


def llama_bench(bin_dir: Path, model: Path, prompt: int, gen: int) -> float:
    """tokens/s that llama-bench reports for one test (-r 1: the rounds are ours)."""
    out = subprocess.run([str(bin_dir / "llama-bench"), "-m", str(model), "-p", str(prompt),
                          "-n", str(gen), "-t", str(THREADS), "-r", "1", "-o", "json"],
                         capture_output=True, text=True, check=True).stdout
    return float(json.loads(out)[0]["avg_ts"])


def prepare_files(bin_dir: Path, work: Path) -> dict:
    src = fastdecode.default_checkpoint_path()
    files = {"gguf": src}
    for kind in ("F32", "Q8_0"):
        dst = work / f"smollm2-{kind}.gguf"
        if not dst.exists():
            subprocess.run([str(bin_dir / "llama-quantize"), "--allow-requantize", str(src),
                            str(dst), kind], check=True, capture_output=True)
        files[kind] = dst
    return files


def our_models() -> dict:
    return {"fp32": float_default,
            "int8": lambda: quantize_model(float_default(), "int8", 32),
            "int4": lambda: quantize_model(float_default(), "int4", 32),
            "gguf": lambda: fastdecode.load("default", quantized=True)[0]}


def machine() -> str:
    name = "unknown CPU"
    for line in open("/proc/cpuinfo"):
        if line.startswith("model name"):
            name = line.split(":", 1)[1].strip()
            break
    info = fastdecode.build_info()
    return (f"{name}, {os.cpu_count()} cores; fastdecode kernel path {info['active_isa']} "
            f"(this CPU runs {info['supported_isas']})")


BATCHES = (1, 4, 8, 16)


def our_batched(model, prompt, batch: int) -> float:
    """Aggregate tokens/s of ``batch`` rows decoding 64 tokens each in one decode (greedy)."""
    rows = prompt.repeat(batch, 1)
    params = fastdecode.SamplingParams(temperature=0)

    def run(n):
        fastdecode.decode(model, rows, n, params=params)
    t_n = median_seconds(lambda: run(65), repeats=1)
    t_1 = median_seconds(lambda: run(1), repeats=3)
    return batch * 64 / (t_n - t_1)


def llama_batched(bin_dir: Path, model: Path) -> dict:
    """B -> aggregate generation tokens/s from llama-batched-bench (16-token prompts, 64
    generated tokens per sequence)."""
    out = subprocess.run([str(bin_dir / "llama-batched-bench"), "-m", str(model), "-c", "2048",
                          "-b", "512", "-ub", "512", "-npp", "16", "-ntg", "64", "-npl",
                          ",".join(map(str, BATCHES)), "-t", str(THREADS),
                          "--output-format", "jsonl"],
                         capture_output=True, text=True, check=True).stdout
    rows = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    return {int(r["pl"]): float(r["speed_tg"]) for r in rows}


def our_speculative(prompt, rounds: int = 3) -> dict:
    """Greedy 128 tokens on the fp32 target: plain and with an int8 draft (per channel and
    groups of 32), k = 4, in interleaved rounds; per label (median tokens/s, median and
    range of the per-round ratios to plain, whether the text is identical)."""
    from fastdecode.speculative import quantized_draft

    target = float_default()

    def run(draft, n):
        return fastdecode.generate(target, prompt, n, temperature=0, draft_model=draft,
                                   speculate_k=4 if draft is not None else 0)[0]
    plain = run(None, 129)
    drafts = {"plain": None,
              "int8 draft, per channel": quantized_draft(target, "int8", groupsize=None),
              "int8 draft, groups of 32": quantized_draft(target, "int8", groupsize=32)}
    same = {label: torch.equal(run(d, 129), plain) for label, d in drafts.items()}
    speeds = {label: [] for label in drafts}
    for _ in range(rounds):
        for label, draft in drafts.items():
            t_n = median_seconds(lambda: run(draft, 129), repeats=1)
            t_1 = median_seconds(lambda: run(draft, 1), repeats=3)
            speeds[label].append(128 / (t_n - t_1))
    out = {}
    for label, tps in speeds.items():
        ratios = [t / p for t, p in zip(tps, speeds["plain"])]
        out[label] = (statistics.median(tps), statistics.median(ratios), min(ratios),
                      max(ratios), same[label])
    return out


def our_decode(model, prompt) -> float:
    def run(n):
        fastdecode.generate(model, prompt, n, temperature=0)
    t_n = median_seconds(lambda: run(129), repeats=1)
    t_1 = median_seconds(lambda: run(1), repeats=3)
    return 128 / (t_n - t_1)


def our_prefill(model, n: int) -> float:
    ids = torch.randint(0, model.config.vocab_size, (1, n), generator=torch.Generator()
                        .manual_seed(n))
    model.setup_caches(1, n)

    def run():
        with torch.no_grad():
            model(ids, torch.arange(n), last_only=True)
    return n / median_seconds(run, repeats=3)


START_SCRIPT = """
import time
t0 = time.perf_counter()
import torch
t1 = time.perf_counter()
def status(key):  # kB; VmHWM is this process image's peak (ru_maxrss would include the
    for line in open("/proc/self/status"):  # forked parent's pages, kept across exec)
        if line.startswith(key):
            return int(line.split()[1]) * 1024
rss0 = status("VmRSS:")
import fastdecode
m, tok = fastdecode.load("default", quantized={quantized})
t2 = time.perf_counter()
peak = status("VmHWM:")
fastdecode.generate(m, torch.tensor(tok.encode("Hello")), 1, temperature=0)
print(t2 - t1, peak - rss0)
"""


def our_start(quantized: bool) -> tuple:
    """(process start -> first token, import fastdecode -> loaded, peak RSS growth of the
    load in bytes)."""
    t0 = time.perf_counter()
    out = subprocess.run([sys.executable, "-c", START_SCRIPT.format(quantized=quantized)],
                         capture_output=True, text=True, check=True).stdout.split()
    return time.perf_counter() - t0, float(out[0]), float(out[1])


def llama_start(bin_dir: Path, model: Path) -> float:
    t0 = time.perf_counter()
    subprocess.run([str(bin_dir / "llama-simple"), "-m", str(model), "-n", "1", "Hello"],
                   capture_output=True, check=True)
    return time.perf_counter() - t0


def busy_machine(bin_dir: Path, files: dict, prompt) -> None:
    """int8 / Q8_0 decode with another process spinning on one of the two cores, against the
    idle figure: our dynamic loop, the OpenMP loop it replaced, and llama.cpp."""
    from fastdecode import _C

    model = quantize_model(fastdecode.load("default", quantized=False)[0], "int8", 32)
    rows = {}
    for busy in (False, True):
        spinner = (subprocess.Popen([sys.executable, "-c", "while True: pass"])
                   if busy else None)
        try:
            for loop in ("dynamic", "openmp"):
                _C.set_parallel_loop(loop)
                rows.setdefault(f"fastdecode int8, {loop} loop", []).append(
                    our_decode(model, prompt))
            _C.set_parallel_loop("dynamic")
            rows.setdefault("llama.cpp Q8_0", []).append(
                llama_bench(bin_dir, files["Q8_0"], 0, 128))
        finally:
            if spinner is not None:
                spinner.kill()
                spinner.wait()
    print("\nbusy machine (a second process spinning on one of the 2 cores), decode tokens/s:")
    print("| | idle | busy | slowdown |")
    print("| --- | ---: | ---: | ---: |")
    for label, (idle, busy) in rows.items():
        print(f"| {label} | {idle:.1f} | {busy:.1f} | {idle / busy:.2f}x |")


def row(label: str, ours: list, theirs: list, unit: str, higher_is_better=True,
        roofline: tuple = ()) -> str:
    """One table row: medians, the median of per-round ratios and their range, and for a
    decode row each side's share of its bandwidth roofline (tokens/s at the measured read
    bandwidth for the bytes that side's weights take a token)."""
    ratios = [o / t if higher_is_better else t / o for o, t in zip(ours, theirs)]
    share = ("" if not roofline else
             f" {statistics.median(theirs) / roofline[1]:.0%} | "
             f"{statistics.median(ours) / roofline[0]:.0%} |")
    return (f"| {label} | {statistics.median(theirs):.1f} | {statistics.median(ours):.1f} | "
            f"{statistics.median(ratios):.2f}x | {min(ratios):.2f}-{max(ratios):.2f} | {unit} |"
            + (share if roofline else " | |"))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--llama-bin", type=Path, required=True)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--work", type=Path, default=ROOT / ".peers" / "models")
    args = ap.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(THREADS)
    files = prepare_files(args.llama_bin, args.work)
    pairs = [("fp32 vs F32", "fp32", "F32"), ("int8 g32 vs Q8_0", "int8", "Q8_0"),
             ("int4 g32 vs Q4_1", "int4", "gguf"), ("GGUF as stored (default) vs Q4_1", "gguf",
                                                     "gguf")]
    tok = fastdecode.load("default")[1]
    prompt = torch.tensor(tok.encode("The history of computing began"))
    builders = our_models()
    bandwidth = read_bandwidth_gbs() * 1e9  # bytes/s, 2 threads
    roofline = {}
    for label, ours_key, file_key in pairs:
        ours_bytes = weight_bytes_per_token(builders[ours_key]())
        roofline[label] = (bandwidth / ours_bytes, bandwidth / files[file_key].stat().st_size)
    results = {key: ([], []) for key in
               [p[0] for p in pairs] + ["prefill 64 fp32", "prefill 512 fp32",
                                        "prefill 64 GGUF as stored", "start to first token"]}
    batched = {key: {b: [] for b in BATCHES} for key in ("int8", "int4", "gguf", "fp32")}
    extra = {"cold fp32": [], "cold quantized": [], "rss quantized": []}
    for r in range(args.rounds):
        for label, ours_key, file_key in pairs:
            model = builders[ours_key]()
            results[label][0].append(our_decode(model, prompt))
            results[label][1].append(llama_bench(args.llama_bin, files[file_key], 0, 128))
            for b in BATCHES:
                batched[ours_key][b].append(our_batched(model, prompt, b))
            if ours_key in ("fp32", "gguf"):
                for n in ((64, 512) if ours_key == "fp32" else (64,)):
                    name = f"prefill {n} {'fp32' if ours_key == 'fp32' else 'GGUF as stored'}"
                    results[name][0].append(our_prefill(model, n))
                    results[name][1].append(llama_bench(args.llama_bin,
                                                        files["F32" if ours_key == "fp32"
                                                              else "gguf"], n, 0))
            del model
        first, cold_q, rss = our_start(True)
        results["start to first token"][0].append(first)
        results["start to first token"][1].append(llama_start(args.llama_bin, files["gguf"]))
        extra["cold quantized"].append(cold_q)
        extra["rss quantized"].append(rss)
        extra["cold fp32"].append(our_start(False)[1])
        print(f"round {r + 1}/{args.rounds} done", file=sys.stderr)
    print(f"{machine()}\n{args.rounds} interleaved rounds, {THREADS} threads, torch "
          f"{torch.__version__}; measured read bandwidth {bandwidth / 1e9:.1f} GB/s\n")
    print("| | llama.cpp | fastdecode | ratio (median) | per round | unit | llama.cpp roofline "
          "share | fastdecode roofline share |")
    print("| --- | ---: | ---: | ---: | ---: | --- | ---: | ---: |")
    for label, (ours, theirs) in results.items():
        if label == "start to first token":
            print(row(label + " (GGUF as stored)", ours, theirs, "seconds, lower is better",
                      higher_is_better=False))
        else:
            print(row(label, ours, theirs, "tokens/s", roofline=roofline.get(label, ())))
    print("\nroofline = measured bandwidth / bytes of weights a token reads: "
          + "; ".join(f"{label}: ours {roofline[label][0]:.0f}, llama.cpp "
                      f"{roofline[label][1]:.0f} tokens/s" for label, _, _ in pairs))
    print("\nbatched decode, aggregate tokens/s (B rows x 64 new tokens; median of rounds):")
    llama_b = llama_batched(args.llama_bin, files["gguf"])
    print("| | " + " | ".join(f"B={b}" for b in BATCHES) + " | B=8 / B=1 | B=16 / B=8 |")
    print("| --- |" + " ---: |" * (len(BATCHES) + 2))
    for key, per_b in batched.items():
        med = {b: statistics.median(v) for b, v in per_b.items()}
        print(f"| fastdecode {key} | " + " | ".join(f"{med[b]:.0f}" for b in BATCHES)
              + f" | {med[8] / med[1]:.2f}x | {med[16] / med[8]:.2f}x |")
    print("| llama.cpp Q4_1 (llama-batched-bench) | " + " | ".join(
        f"{llama_b.get(b, float('nan')):.0f}" for b in BATCHES)
        + f" | {llama_b[8] / llama_b[1]:.2f}x | {llama_b[16] / llama_b[8]:.2f}x |")
    print("\nspeculative decoding, fp32 target, greedy, 128 tokens, k = 4 (3 interleaved "
          "rounds; median of the per-round ratios):")
    for label, (tps, ratio, lo, hi, same) in our_speculative(prompt).items():
        print(f"| {label} | {tps:.1f} tokens/s | {ratio:.2f}x plain ({lo:.2f}-{hi:.2f}) | "
              f"{'identical text' if same else 'TEXT DIFFERS'} |")
    size = fastdecode.default_checkpoint_path().stat().st_size
    print(f"\ncold start, import fastdecode -> loaded default model: fp32 "
          f"{statistics.median(extra['cold fp32']):.2f} s, quantized=True "
          f"{statistics.median(extra['cold quantized']):.2f} s; peak RSS growth of the "
          f"quantized load {statistics.median(extra['rss quantized']) / 1e6:.0f} MB = "
          f"{statistics.median(extra['rss quantized']) / size:.2f}x the {size / 1e6:.0f} MB file")
    busy_machine(args.llama_bin, files, prompt)
    return 0


if __name__ == "__main__":
    sys.exit(main())
