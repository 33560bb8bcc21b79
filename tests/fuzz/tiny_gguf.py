"""A tiny llama GGUF (2 layers, dim 32, a 256-token byte vocabulary, Q8_0 / Q4_1 / F32
tensors) written with the ``gguf`` package: small enough to copy and mutate hundreds of times
in the file fuzzer, complete enough that ``fastdecode.load`` reads it in both modes."""
from __future__ import annotations

from pathlib import Path

import numpy as np


def byte_tokens() -> list:
    """The 256 byte-level BPE symbols (printable bytes as themselves, the others shifted
    past U+0100), in byte order."""
    printable = [b for b in range(256) if 33 <= b <= 126 or 161 <= b <= 172 or 174 <= b <= 255]
    shifted, n = {}, 0
    for b in range(256):
        if b not in printable:
            shifted[b] = 256 + n
            n += 1
    return [chr(b) if b in printable else chr(shifted[b]) for b in range(256)]


def write_tiny_gguf(path: Path, seed: int = 0) -> Path:
    import gguf
    from gguf.quants import quantize

    rng = np.random.default_rng(seed)
    dim, hidden, n_layer, n_head, n_kv, vocab = 32, 64, 2, 4, 2, 256
    head_dim = dim // n_head
    w = gguf.GGUFWriter(str(path), "llama")
    w.add_context_length(64)
    w.add_embedding_length(dim)
    w.add_block_count(n_layer)
    w.add_feed_forward_length(hidden)
    w.add_head_count(n_head)
    w.add_head_count_kv(n_kv)
    w.add_layer_norm_rms_eps(1e-5)
    w.add_rope_freq_base(10000.0)
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre("default")
    w.add_token_list(byte_tokens())
    w.add_token_merges([])
    w.add_token_types([1] * vocab)
    w.add_eos_token_id(10)

    def f32(name, shape):
        w.add_tensor(name, rng.standard_normal(shape).astype(np.float32) * 0.2)

    def quant(name, shape, kind):
        data = quantize(rng.standard_normal(shape).astype(np.float32) * 0.2, kind)
        w.add_tensor(name, data, raw_shape=data.shape, raw_dtype=kind)

    f32("token_embd.weight", (vocab, dim))
    f32("output_norm.weight", (dim,))
    for i in range(n_layer):
        p = f"blk.{i}."
        f32(p + "attn_norm.weight", (dim,))
        f32(p + "ffn_norm.weight", (dim,))
        kind = gguf.GGMLQuantizationType.Q8_0 if i == 0 else gguf.GGMLQuantizationType.Q4_1
        quant(p + "attn_q.weight", (n_head * head_dim, dim), kind)
        quant(p + "attn_k.weight", (n_kv * head_dim, dim), kind)
        quant(p + "attn_v.weight", (n_kv * head_dim, dim), kind)
        quant(p + "attn_output.weight", (dim, n_head * head_dim), kind)
        quant(p + "ffn_gate.weight", (hidden, dim), kind)
        quant(p + "ffn_up.weight", (hidden, dim), kind)
        quant(p + "ffn_down.weight", (dim, hidden), kind)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path
