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
    """Bytes of weights one decode step reads: every linear's weight (and its scales), the
    norms, and the embedding table only when the output head is tied to it (the lookup
    itself reads one row); each tensor's bytes once (by address: the weights of a model on
    huge pages are views of one buffer, fastdecode.huge_pages)."""
    seen, total = set(), 0
    for name, t in list(model.named_parameters()) + list(model.named_buffers()):
        if not name.endswith((".weight", ".scales", ".scales_and_zeros")):
            continue  # the KV cache, RoPE tables, masks
        ptr = t.data_ptr()
        if ptr in seen:
            continue
        if name.startswith("tok_embeddings."):
            head = getattr(getattr(model, "output", None), "weight", None)
            if head is None or head.data_ptr() != ptr:
                continue
        seen.add(ptr)
        total += t.numel() * t.element_size()
    return total


def float_default():
    """The default GGUF dequantised to fp32 (the source of the int8 / int4 variants)."""
    import fastdecode

    return fastdecode.load("default", quantized=False)[0]


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
        ("fp32", float_default),
        ("int8 (groups of 32)", lambda: quantize_model(float_default(), "int8")),
        ("int4 (groups of 32, int8 head)", lambda: quantize_model(float_default(), "int4")),
        ("GGUF Q4_1 + Q8_0 head, as stored (default)",
         lambda: fastdecode.load("default", quantized=True)[0]),
    ]
