"""``python -m fastdecode serve-queue-demo``: client threads share one queue worker.

Each client puts its requests on the worker's input queue and prints every chunk as it
arrives, tagged with client and request; the worker serves requests in arrival order, so
the output interleaves clients while each request's chunks stay in order.
"""
from __future__ import annotations

import queue
import sys
import threading
import time

import torch

from .serving import GenerateRequest, launch_thread_safe_queue

TEXTS = ["Name a fruit. Then name a colour.", "What is 2 + 2? Answer briefly.",
         "Say hello in French, please.", "Give one word that rhymes with cat."]


def run_demo(checkpoint: str, clients: int, requests: int, max_new_tokens: int) -> int:
    t0 = time.perf_counter()
    input_queue = launch_thread_safe_queue(checkpoint, "cpu", torch.float32)
    print(f"[worker loaded {checkpoint} in {time.perf_counter() - t0:.1f} s]", flush=True)
    print_lock = threading.Lock()

    def client(c: int) -> None:
        for r in range(requests):
            responses: queue.Queue = queue.Queue()
            text = TEXTS[(c + r) % len(TEXTS)]
            input_queue.put(GenerateRequest(
                request=dict(text=text, max_new_tokens=max_new_tokens, temperature=0.7,
                             top_p=0.9, repetition_penalty=1.1, chunk_length=20),
                response_queue=responses))
            while True:
                wrapped = responses.get()
                with print_lock:
                    if wrapped.status == "error":
                        print(f"client {c} request {r}: error {wrapped.response!r}", flush=True)
                        break
                    chunk = wrapped.response
                    stamp = f"{time.perf_counter() - t0:6.2f}s client {c} request {r}"
                    if chunk.action == "next":
                        print(f"{stamp}: done", flush=True)
                        break
                    print(f"{stamp}: {chunk.text!r}", flush=True)

    threads = [threading.Thread(target=client, args=(c,)) for c in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    input_queue.put(None)
    input_queue.worker.join(timeout=30)
    print(f"[worker stopped: {not input_queue.worker.is_alive()}]", file=sys.stderr)
    return 0
