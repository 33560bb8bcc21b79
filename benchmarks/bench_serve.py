"""Serving many users: N concurrent streaming clients (N = 1, 2, 4, 8, 16) against our server
(``python -m fastdecode serve``, the default GGUF in its blocks, --max-batch 16) and against
``llama-server`` built from the vendored llama.cpp (-np N, the same GGUF, the same thread
count), in the same run. Each client streams one completion of a fixed prompt with a fixed
number of new tokens (temperature 0, end of sequence ignored); per N: aggregate generated
tokens/s (all tokens / wall time from the first request to the last token), time to first
token p50 / p99 and inter-token latency p50 / p99 over every client's tokens. Our server runs
the client counts in turn within each round (1, 2, 4, 8, 16, then again), so the ratio of two
counts compares rounds run side by side on a host whose speed drifts. Both servers
bind 127.0.0.1 on a free port and are stopped at the end.

    python benchmarks/bench_serve.py --llama-bin .peers/llama.cpp-build/bin [--tokens 64]
    make bench-peers        # runs it after bench_llamacpp.py
"""
from __future__ import annotations

import argparse
import http.client
import json
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

import fastdecode

CLIENTS = (1, 2, 4, 8, 16)
THREADS = 2
PROMPT = ("Write a short story about a lighthouse keeper who finds a message in a bottle. "
          "The story should have a beginning, a middle and an end.")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_healthy(port: int, proc: subprocess.Popen, timeout: float = 120) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the server exited with {proc.returncode}")
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
            conn.request("GET", "/health")
            if conn.getresponse().status == 200:
                return
        except OSError:
            pass
        time.sleep(0.2)
    raise TimeoutError("server not healthy")


def stream_one(port: int, model: str, tokens: int, out: dict) -> None:
    """One streaming completion: the arrival time of each chunk that carries text."""
    body = json.dumps({"model": model, "prompt": PROMPT, "max_tokens": tokens,
                       "temperature": 0, "stream": True, "ignore_eos": True}).encode()
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=300)
    start = time.perf_counter()
    conn.request("POST", "/v1/completions", body=body,
                 headers={"Content-Type": "application/json"})
    resp = conn.getresponse()
    arrivals = []
    buf = b""
    while True:
        data = resp.read1(65536)
        if not data:
            break
        buf += data
        while b"\n\n" in buf:
            event, buf = buf.split(b"\n\n", 1)
            if not event.startswith(b"data: ") or event == b"data: [DONE]":
                continue
            chunk = json.loads(event[6:])
            if any(c.get("text") for c in chunk.get("choices", [])):
                arrivals.append(time.perf_counter())
    conn.close()
    out["start"], out["arrivals"] = start, arrivals


def run_clients(port: int, model: str, n: int, tokens: int) -> dict:
    results = [dict() for _ in range(n)]
    threads = [threading.Thread(target=stream_one, args=(port, model, tokens, r))
               for r in results]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    first = min(r["start"] for r in results)
    last = max(r["arrivals"][-1] for r in results)
    ttft = [r["arrivals"][0] - r["start"] for r in results]
    itl = [b - a for r in results for a, b in zip(r["arrivals"], r["arrivals"][1:])]
    return {"tps": n * tokens / (last - first), "ttft": ttft, "itl": itl}


def pct(values, q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))]


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()


def interleaved(one_round, rounds: int) -> dict:
    """{n: [one_round(n) for each round]}, the client counts taken in turn within each round
    (1, 2, 4, 8, 16, 1, 2, ...): on a shared host whose speed drifts over tens of seconds, a
    ratio between client counts then compares rounds that ran side by side, not minutes
    apart."""
    out = {n: [] for n in CLIENTS}
    for _ in range(rounds):
        for n in CLIENTS:
            out[n].append(one_round(n))
    return out


def ours(tokens: int, rounds: int) -> dict:
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "fastdecode", "serve", "--port", str(port),
                             "--max-batch", str(max(CLIENTS)), "--ctx", "512"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_healthy(port, proc)
        run_clients(port, "default", 1, 8)  # warm up
        return interleaved(lambda n: run_clients(port, "default", n, tokens), rounds)
    finally:
        stop(proc)


def llama(bin_dir: Path, tokens: int, rounds: int) -> dict:
    gguf = fastdecode.default_checkpoint_path()
    out = {}
    for n in CLIENTS:
        port = free_port()
        proc = subprocess.Popen([str(bin_dir / "llama-server"), "-m", str(gguf), "--host",
                                 "127.0.0.1", "--port", str(port), "-np", str(n), "-c",
                                 str(512 * n), "-t", str(THREADS), "-tb", str(THREADS)],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            wait_healthy(port, proc)
            run_clients(port, "default", 1, 8)
            out[n] = [run_clients(port, "default", n, tokens) for _ in range(rounds)]
        finally:
            stop(proc)
    return out


def summary(runs: list) -> dict:
    return {"tps": statistics.median(r["tps"] for r in runs),
            "ttft": [x for r in runs for x in r["ttft"]],
            "itl": [x for r in runs for x in r["itl"]]}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--llama-bin", type=Path, default=None)
    ap.add_argument("--tokens", type=int, default=64)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    rounds = ours(args.tokens, args.rounds)
    mine = {n: summary(r) for n, r in rounds.items()}
    theirs = ({n: summary(r) for n, r in llama(args.llama_bin, args.tokens, args.rounds).items()}
              if args.llama_bin else {})
    print(f"\nserving: {args.tokens} tokens per client, temperature 0, {THREADS} threads, "
          f"median of {args.rounds} rounds (ours: the client counts interleaved within each "
          f"round; latencies over all of them), "
          f"kernel path {fastdecode.build_info()['active_isa']}")
    print("| clients | fastdecode tok/s | llama-server tok/s | ratio | TTFT p50 / p99 ms "
          "(ours) | (llama) | ITL p50 / p99 ms (ours) | (llama) |")
    print("| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for n in CLIENTS:
        m, t = mine[n], theirs.get(n)

        def lat(s, key):
            return f"{pct(s[key], 0.5) * 1e3:.0f} / {pct(s[key], 0.99) * 1e3:.0f}"
        print(f"| {n} | {m['tps']:.1f} | {t['tps'] if t else float('nan'):.1f} | "
              f"{m['tps'] / t['tps'] if t else float('nan'):.2f}x | {lat(m, 'ttft')} | "
              f"{lat(t, 'ttft') if t else '-'} | {lat(m, 'itl')} | "
              f"{lat(t, 'itl') if t else '-'} |")
    per_round = [a["tps"] / b["tps"] for a, b in zip(rounds[8], rounds[1])]
    print(f"\nours at 8 clients / ours at 1: {mine[8]['tps'] / mine[1]['tps']:.2f}x (medians); "
          f"per round {', '.join(f'{r:.2f}x' for r in per_round)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
