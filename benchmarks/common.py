"""Helpers shared by the benchmark scripts: timing, memory bandwidth, the HF peer."""
from __future__ import annotations

import statistics
import time
from typing import Callable, List

import torch


def median_seconds(fn: Callable[[], object], repeats: int = 3, warmup: int = 1) -> float:
    for _ in range(warmup):
        fn()
    times: List[float] = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def read_bandwidth_gbs(nbytes: int = 1 << 30, repeats: int = 5) -> float:
    """Sustained read bandwidth (GB/s) of a reduction over a buffer far larger than cache,
    with torch's threads: the ceiling for a weight-streaming decode step."""
    x = torch.ones(nbytes // 4, dtype=torch.float32)
    best = min(median_seconds(lambda: x.sum(), repeats=1, warmup=0) for _ in range(repeats))
    return nbytes / best / 1e9


def weight_bytes_per_token(model: torch.nn.Module) -> int:
    """Bytes of weights one decode step reads: every parameter once (a tied embedding is
    read in full by the output head; the embedding lookup itself reads one row)."""
    seen, total = set(), 0
    for p in model.parameters():
        if id(p) not in seen:
            seen.add(id(p))
            total += p.numel() * p.element_size()
    for name, b in model.named_buffers():
        # quantized weights and their scales (not the KV cache or the RoPE/mask tables)
        if name.endswith((".weight", ".scales", ".scales_and_zeros")):
            total += b.numel() * b.element_size()
    return total


def load_hf_peer(path, dtype=torch.float32):
    import transformers

    model = transformers.AutoModelForCausalLM.from_pretrained(
        str(path.parent), gguf_file=path.name, dtype=dtype).eval()
    model.generation_config.eos_token_id = None  # always generate the full length
    return model


def default_model_precisions():
    """(label, constructor) of the default model in fp32, int8 and int4 (quantize_model,
    groups of 32, int8 head) and as the GGUF's own Q4_1 / Q8_0 blocks."""
    import fastdecode
    from fastdecode.quantize import quantize_model

    return [
        ("fp32", lambda: fastdecode.load("default")[0]),
        ("int8 (groups of 32)", lambda: quantize_model(fastdecode.load("default")[0], "int8")),
        ("int4 (groups of 32, int8 head)",
         lambda: quantize_model(fastdecode.load("default")[0], "int4")),
        ("GGUF Q4_1 + Q8_0 head, as stored", lambda: fastdecode.load("default", quantized=True)[0]),
    ]
