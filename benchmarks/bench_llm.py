"""LLM.generate: the cost of n = 4 samples (one batch) against n = 1, next to Hugging Face
generate(num_return_sequences=...) on the same GGUF, and the tokens/s the chat REPL reports
next to plain fastdecode.generate.

Sampling (temperature 0.8, top-k 50), up to 64 new tokens after a chat prompt, fp32, the
default model, one process; generate and HF run every row to the full length, LLM.generate
stops rows at the end-of-turn id (its tokens/s counts what it produced). The REPL runs in a
pseudo-terminal.

    python benchmarks/bench_llm.py [--new-tokens 64] [--repeats 3] [--no-repl]
"""
from __future__ import annotations

import argparse
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(__file__))
from common import load_hf_peer, median_seconds  # noqa: E402

import fastdecode  # noqa: E402

QUESTION = "Write a long story about the sea."


def batch_costs(args, llm: fastdecode.LLM, hf) -> None:
    n_new = args.new_tokens
    prompt = llm.tokenizer.apply_chat_template([{"role": "user", "content": QUESTION}])
    ids = torch.tensor([llm.encode(prompt)])
    produced = {}

    def ours(n):
        # no stop ids: every row decodes n_new tokens, as HF does with eos_token_id=None
        fastdecode.generate(llm.model, ids[0], n_new, batch_size=n, temperature=0.8, top_k=50)
        return n * n_new

    def via_llm(n):
        # stops at the end-of-text id: count what it produced
        outs = llm.generate(prompt, max_tokens=n_new, temperature=0.8, top_k=50, n=n, seed=0)
        outs = outs if isinstance(outs, list) else [outs]
        return sum(o["_raw_response"]["completion_tokens"] for o in outs)

    def theirs(n):
        with torch.no_grad():
            hf.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=n_new,
                        min_new_tokens=n_new, do_sample=True, temperature=0.8, top_k=50,
                        num_return_sequences=n)
        return n * n_new

    def timed(fn, n):
        produced[fn, n] = fn(n)
        return median_seconds(lambda: fn(n), repeats=args.repeats, warmup=0)

    print(f"up to {n_new} new tokens per row, sampling (temperature 0.8, top-k 50); seconds "
          f"per call, median of {args.repeats}")
    print(f"{'':36} {'n=1 s':>8} {'n=4 s':>8} {'n=4/n=1':>8} {'tok/s n=1':>10} "
          f"{'tok/s n=4':>10}")
    tps = {}
    for label, fn in (("fastdecode.generate (batch_size=n)", ours),
                      ("LLM.generate (n, stops at <eot>)", via_llm),
                      ("HF generate (num_return_sequences)", theirs)):
        t1, t4 = timed(fn, 1), timed(fn, 4)
        tps[label] = (produced[fn, 1] / t1, produced[fn, 4] / t4)
        print(f"{label:36} {t1:8.3f} {t4:8.3f} {t4 / t1:7.2f}x {tps[label][0]:10.1f} "
              f"{tps[label][1]:10.1f}")
    ours_tps = tps["fastdecode.generate (batch_size=n)"]
    hf_tps = tps["HF generate (num_return_sequences)"]
    print(f"tokens/s, fastdecode / HF: n=1 {ours_tps[0] / hf_tps[0]:.2f}x, "
          f"n=4 {ours_tps[1] / hf_tps[1]:.2f}x")


def repl_speed(args, llm: fastdecode.LLM) -> None:
    import pexpect

    questions = ["What is the capital of France?", "Name three colours.",
                 "Write two sentences about the moon."]
    child = pexpect.spawn(sys.executable, ["-m", "fastdecode", "chat", "--temperature", "0",
                                           "--max-new-tokens", str(args.new_tokens)],
                          encoding="utf-8", timeout=300)
    child.expect_exact(">>> ")
    reported = []
    for q in questions:
        child.sendline(q)
        child.expect(r"\[(\d+) tokens in ([\d.]+) s: ([\d.]+) tokens/s")
        reported.append((int(child.match.group(1)), float(child.match.group(3))))
        child.expect_exact(">>> ")
    child.sendline("quit")
    child.expect(pexpect.EOF)
    # the same first turn through plain generate (greedy, chat template, stop at im_end)
    tok = llm.tokenizer
    chat = tok.apply_chat_template([{"role": "user", "content": questions[0]}])
    ids = torch.tensor(tok.encode(chat))
    n = reported[0][0]
    t = median_seconds(lambda: fastdecode.generate(llm.model, ids, n, temperature=0,
                                                   eos_id=tok.stop_ids), repeats=args.repeats)
    print("\nchat REPL (greedy, tokens/s as printed after each reply, prefill included)")
    for q, (count, tps) in zip(questions, reported):
        print(f"  {q[:36]:36} {count:4d} tokens {tps:7.1f} tokens/s")
    print(f"  fastdecode.generate, first turn     {n:4d} tokens {n / t:7.1f} tokens/s "
          f"(REPL / generate {reported[0][1] / (n / t):.2f}x)")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--new-tokens", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--no-repl", action="store_true")
    args = ap.parse_args()
    llm = fastdecode.LLM("default")
    batch_costs(args, llm, load_hf_peer(fastdecode.default_checkpoint_path()))
    if not args.no_repl:
        repl_speed(args, llm)
    return 0


if __name__ == "__main__":
    sys.exit(main())
