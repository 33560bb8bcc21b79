"""Typed wrappers over ``torch.ops.fastdecode.*``, each with its fake (meta) kernel beside it.

The fake kernels give output shapes and dtypes without computing anything, which is what
``torch.compile(fullgraph=True)`` and ``torch.library.opcheck`` need to trace through the ops.
"""
from __future__ import annotations

from typing import List, Optional, Sequence, Tuple, Union

import torch

from . import _C  # noqa: F401  (registers torch.ops.fastdecode)
from .op_args import knob_args, require_int64, require_tensors

__all__ = ["check_sampling_params", "logits_to_probs", "multinomial_sample_one_no_sync",
           "argmax_token",
           "linear", "quantize_int8_per_channel", "quantize_int4_grouped", "dequantize_gguf",
           "repack_gguf", "int8_linear", "tile_int8", "tile_int8_", "untile_int8", "int8_embedding", "int4_embedding", "int4_linear", "rms_norm", "decode_attention",
           "decode_layers", "decode_step",
           "speculative_accept", "shard", "shard_int4"]

_ops = torch.ops.fastdecode


Knob = Union[float, int, None, torch.Tensor]


def check_sampling_params(rows: int = 1, temperature: Knob = 1.0, top_k: Knob = None,
                          top_p: Knob = 1.0, min_p: Knob = 0.0,
                          repetition_penalty: Knob = 1.0) -> None:
    """Raise ``ValueError`` naming the knob and its range when ``logits_to_probs`` would
    refuse these knobs (per-row tensors: ``[rows]``); the op's own check, run before any
    model work. Ranges: see ``logits_to_probs``."""
    if isinstance(rows, bool) or not isinstance(rows, int) or rows < 0:
        raise ValueError(f"rows must be a non-negative int, got {rows!r}")
    knobs = (temperature, top_k, top_p, min_p, repetition_penalty)
    # without a per-row knob every row holds the same knobs: one row checks them all (a
    # table of `rows` rows would only cost memory)
    per_row = any(isinstance(v, torch.Tensor) and v.dim() == 1 for v in knobs)
    _ops.check_sampling_params(**knob_args(rows if per_row else min(rows, 1), knobs, "cpu"))


@torch.library.register_fake("fastdecode::check_sampling_params")
def _check_sampling_params_fake(temperature=1.0, top_k=None, top_p=1.0, min_p=0.0,
                                repetition_penalty=1.0, row_params=None):
    return None


def logits_to_probs(logits: torch.Tensor, previous_tokens: Optional[torch.Tensor] = None,
                    temperature: Knob = 1.0, top_k: Knob = None, top_p: Knob = 1.0,
                    min_p: Knob = 0.0, repetition_penalty: Knob = 1.0) -> torch.Tensor:
    """Probabilities from logits in one fused C++ pass per row, no sort of the vocabulary.

    logits: ``[V]`` or ``[B, V]``, float32 / bfloat16 / float16, CPU.
    previous_tokens: ids ``[T]`` (every row) or ``[B, T]`` whose logits get the repetition
    penalty, once per distinct id: ``logit / penalty`` if positive, ``logit * penalty`` if not.
    temperature: ``>= 0``; ``0`` gives a one-hot distribution at the argmax (greedy).
    top_k: ``None``/``0`` = off; keeps tokens whose logit is >= the k-th largest (ties kept).
    top_p: in ``(0, 1]``; keeps the smallest set of most likely tokens holding >= top_p of the
    mass (the crossing token and its ties included). min_p: in ``[0, 1)``; keeps tokens with
    ``p >= min_p * max(p)``. Both act on the tempered, top-k-filtered distribution.
    repetition_penalty: ``> 0`` (1 = off).
    Every knob is a Python scalar or a per-row tensor ``[B]``; a knob out of its range is a
    ``ValueError`` naming it (raised by the C++ op).
    Returns probabilities with the shape and dtype of ``logits``.
    """
    require_tensors("logits_to_probs", logits=logits)
    rows = logits.shape[0] if logits.dim() == 2 else 1
    knobs = (temperature, top_k, top_p, min_p, repetition_penalty)
    return _ops.logits_to_probs(logits, previous_tokens,
                                **knob_args(rows, knobs, logits.device))


@torch.library.register_fake("fastdecode::logits_to_probs")
def _logits_to_probs_fake(logits, previous_tokens=None, temperature=1.0, top_k=None, top_p=1.0,
                          min_p=0.0, repetition_penalty=1.0, row_params=None):
    return torch.empty_like(logits)


def multinomial_sample_one_no_sync(probs: torch.Tensor,
                                   generator: Optional[torch.Generator] = None,
                                   noise: Optional[torch.Tensor] = None) -> torch.Tensor:
    """One draw per row from ``probs`` without a host synchronisation.

    probs: ``[V]`` or ``[B, V]`` non-negative weights (need not sum to 1).
    Returns int32 indices of shape ``[1]`` or ``[B, 1]``. With ``noise`` (Exp(1) draws, the
    shape of ``probs``) the index is ``argmax(probs / noise)``, gpt-fast's exponential race
    (this is how the op is checked against gpt-fast's torch code). Without it the kernel
    inverts each row's cumulative sum at a uniform number hashed from one 64-bit draw of
    ``generator`` (the default CPU generator when ``None``): the same distribution, two
    passes over the row instead of a logarithm per token.
    """
    require_tensors("multinomial_sample_one_no_sync", probs=probs)
    return _ops.multinomial_sample_one_no_sync(probs, generator, noise)


@torch.library.register_fake("fastdecode::multinomial_sample_one_no_sync")
def _multinomial_fake(probs, generator=None, noise=None):
    return probs.new_empty((*probs.shape[:-1], 1), dtype=torch.int32)


def argmax_token(scores: torch.Tensor) -> torch.Tensor:
    """Greedy pick: scores ``[V]`` or ``[B, V]`` -> int32 ``[1]`` / ``[B, 1]``, the index of
    each row's first maximum (``torch.argmax(scores, -1, keepdim=True)``; ~15 us for a
    128k vocabulary where torch.argmax takes ~10x that on the CPU). NaN is a ValueError."""
    require_tensors("argmax_token", scores=scores)
    return _ops.argmax_token(scores)


@torch.library.register_fake("fastdecode::argmax_token")
def _argmax_token_fake(scores):
    return scores.new_empty((*scores.shape[:-1], 1), dtype=torch.int32)


def linear(x: torch.Tensor, weight: torch.Tensor,
           bias: Optional[torch.Tensor] = None) -> torch.Tensor:
    """``F.linear`` for decode: x ``[..., K]``, weight ``[N, K]``, bias ``[N]`` -> ``[..., N]``.

    fp32 inputs of at most 16 rows use a C++ GEMV that streams each weight row once with all
    cores (decode is memory bound); other inputs go to ATen's GEMM.
    """
    require_tensors("linear", x=x, weight=weight)
    return _ops.linear(x, weight, bias)


@torch.library.register_fake("fastdecode::linear")
def _linear_fake(x, weight, bias=None):
    return x.new_empty((*x.shape[:-1], weight.shape[0]))


def quantize_int8_per_channel(w: torch.Tensor):
    """``w [N, K]`` -> ``(q int8 [N, K], scales fp32 [N])``, symmetric per output channel
    (gpt-fast's ``dynamically_quantize_per_channel``): ``w ~ q * scales[:, None]``."""
    require_tensors("quantize_int8_per_channel", w=w)
    return _ops.quantize_int8_per_channel(w)


@torch.library.register_fake("fastdecode::quantize_int8_per_channel")
def _quantize_int8_fake(w):
    return (w.new_empty(w.shape, dtype=torch.int8), w.new_empty((w.shape[0],), dtype=torch.float32))


def _padded(k: int, groupsize: int) -> int:
    return (k + groupsize - 1) // groupsize * groupsize


def quantize_int4_grouped(w: torch.Tensor, groupsize: int = 128):
    """``w [N, K]`` -> ``(packed uint8 [N, K_pad / 2], scales_and_zeros fp32 [N, K_pad / G, 2])``.

    Asymmetric 4-bit groups of ``groupsize`` (32, 64, 128, 256) along K, ``K_pad`` = K
    rounded up to the group (zero padded): ``w ~ (q - 8) * scale + zero``. Layout in
    docs/formats.md: GGML's nibble order inside 32-value blocks, rows in 16-row tiles of
    4-byte words (both outputs), so ``packed[n]`` is not row n."""
    require_tensors("quantize_int4_grouped", w=w)
    require_int64("quantize_int4_grouped", groupsize=groupsize)
    return _ops.quantize_int4_grouped(w, groupsize)


@torch.library.register_fake("fastdecode::quantize_int4_grouped")
def _quantize_int4_fake(w, groupsize):
    n, k_pad = w.shape[0], _padded(w.shape[1], groupsize)
    return (w.new_empty((n, k_pad // 2), dtype=torch.uint8),
            w.new_empty((n, k_pad // groupsize, 2), dtype=torch.float32))


def dequantize_gguf(blocks: torch.Tensor, ggml_type: int) -> torch.Tensor:
    """GGUF blocks ``uint8 [..., n * bytes]`` of ggml type 2 (Q4_0, 18 bytes), 3 (Q4_1, 20)
    or 8 (Q8_0, 34) -> fp32 ``[..., n * 32]``, bit for bit the ``gguf`` package's values."""
    require_tensors("dequantize_gguf", blocks=blocks)
    require_int64("dequantize_gguf", ggml_type=ggml_type)
    return _ops.dequantize_gguf(blocks, ggml_type)


@torch.library.register_fake("fastdecode::dequantize_gguf")
def _dequantize_gguf_fake(blocks, ggml_type):
    per_block = {2: 18, 3: 20, 8: 34}.get(ggml_type)
    if per_block is None:
        raise ValueError(f"fastdecode::dequantize_gguf: ggml_type must be 2, 3 or 8, got "
                         f"{ggml_type}")
    return blocks.new_empty((*blocks.shape[:-1], blocks.shape[-1] // per_block * 32),
                            dtype=torch.float32)


def repack_gguf(blocks: torch.Tensor, ggml_type: int):
    """GGUF rows kept in their precision: ``blocks`` uint8 ``[N, K / 32 * block bytes]`` ->
    Q8_0 (8): ``(q int8 [N, K], scales [N, K / 32])``, the grouped int8 format;
    Q4_0 (2) / Q4_1 (3): ``(packed uint8 [N, K / 2], scales_and_zeros [N, K / 32, 2])``, the
    int4 format with groupsize 32 (Q4_1's zero is m + 8d). Exactly the blocks' values."""
    require_tensors("repack_gguf", blocks=blocks)
    require_int64("repack_gguf", ggml_type=ggml_type)
    return _ops.repack_gguf(blocks, ggml_type)


@torch.library.register_fake("fastdecode::repack_gguf")
def _repack_gguf_fake(blocks, ggml_type):
    names = {2: "Q4_0", 3: "Q4_1", 8: "Q8_0"}
    n, k = blocks.shape[0], blocks.shape[1] // _C.gguf_block_bytes.get(
        names.get(ggml_type, ""), 1) * 32
    if ggml_type == 8:
        return (blocks.new_empty((n, k), dtype=torch.int8),
                blocks.new_empty((n, k // 32), dtype=torch.float32))
    return (blocks.new_empty((n, k // 2)), blocks.new_empty((n, k // 32, 2), dtype=torch.float32))


def int8_linear(x: torch.Tensor, q: torch.Tensor, scales: torch.Tensor,
                bias: Optional[torch.Tensor] = None) -> torch.Tensor:
    """``x [..., K]`` times the int8 weight ``q [N, K]`` with ``scales`` ``[N]`` (per channel)
    or ``[N, K / G]`` (groups of G, a multiple of 32, e.g. GGUF Q8_0), without dequantising
    the weight: ``[..., N]`` in the dtype of ``x``. Up to ``_C.quantized_gemv_max_rows`` (32)
    rows of x are rounded to 8-bit integers per 32 values (as llama.cpp) and multiplied as
    integers; more rows run a GEMM over the weight dequantised block by block. ``q`` may
    also be the uint8 weight of ``tile_int8`` (with its scales): the same product from the
    layout the kernels stream fastest."""
    require_tensors("int8_linear", x=x, q=q, scales=scales)
    return _ops.int8_linear(x, q, scales, bias)


@torch.library.register_fake("fastdecode::int8_linear")
def _int8_linear_fake(x, q, scales, bias=None):
    return x.new_empty((*x.shape[:-1], q.shape[0]))


def tile_int8(q: torch.Tensor, scales: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    """The int8 weight ``q [N, K]`` (K a multiple of 32) and its scales (``[N]`` or
    ``[N, K / G]``) in 16-row tiles: ``(packed uint8 [N, K], scales)``, bytes ``q + 128`` in
    words of four columns, each tile column-major (docs/formats.md). Exact; ``untile_int8``
    inverts it. ``int8_linear`` and ``int8_embedding`` take either layout."""
    require_tensors("tile_int8", q=q, scales=scales)
    return _ops.tile_int8(q, scales)


@torch.library.register_fake("fastdecode::tile_int8")
def _tile_int8_fake(q, scales):
    return q.new_empty(q.shape, dtype=torch.uint8), torch.empty_like(scales)


def tile_int8_(q: torch.Tensor, scales: torch.Tensor) -> torch.Tensor:
    """``tile_int8`` in place, without a second copy: the contiguous ``q`` and ``scales``
    are rearranged where they are; returns the tiled weight (``q`` viewed as uint8, the same
    memory). ``q`` as int8 is meaningless afterwards."""
    require_tensors("tile_int8_", q=q, scales=scales)
    _ops.tile_int8_(q, scales)
    return q.view(torch.uint8)


@torch.library.register_fake("fastdecode::tile_int8_")
def _tile_int8_in_place_fake(q, scales):
    return None


def untile_int8(packed: torch.Tensor, scales: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    """The inverse of ``tile_int8``: ``(q int8 [N, K], scales)`` row-major."""
    require_tensors("untile_int8", packed=packed, scales=scales)
    return _ops.untile_int8(packed, scales)


@torch.library.register_fake("fastdecode::untile_int8")
def _untile_int8_fake(packed, scales):
    return packed.new_empty(packed.shape, dtype=torch.int8), torch.empty_like(scales)


def int8_embedding(ids: torch.Tensor, q: torch.Tensor, scales: torch.Tensor) -> torch.Tensor:
    """ids int64 ``[...]`` -> fp32 ``[..., K]``: rows of the int8 table ``q [N, K]`` times
    ``scales`` (``[N]`` or ``[N, K / G]``), dequantised on lookup; ids in [0, N)."""
    require_tensors("int8_embedding", ids=ids, q=q, scales=scales)
    return _ops.int8_embedding(ids, q, scales)


@torch.library.register_fake("fastdecode::int8_embedding")
def _int8_embedding_fake(ids, q, scales):
    return ids.new_empty((*ids.shape, q.shape[1]), dtype=torch.float32)


def int4_embedding(ids: torch.Tensor, packed: torch.Tensor, scales_and_zeros: torch.Tensor,
                   groupsize: int, dim: int) -> torch.Tensor:
    """ids int64 ``[...]`` -> fp32 ``[..., dim]``: rows of the int4 table (``int4_linear``'s
    layout), its first ``dim`` columns, dequantised on lookup; ids in [0, N)."""
    require_tensors("int4_embedding", ids=ids, packed=packed, scales_and_zeros=scales_and_zeros)
    require_int64("int4_embedding", groupsize=groupsize, dim=dim)
    return _ops.int4_embedding(ids, packed, scales_and_zeros, groupsize, dim)


@torch.library.register_fake("fastdecode::int4_embedding")
def _int4_embedding_fake(ids, packed, scales_and_zeros, groupsize, dim):
    return ids.new_empty((*ids.shape, dim), dtype=torch.float32)


def int4_linear(x: torch.Tensor, packed: torch.Tensor, scales_and_zeros: torch.Tensor,
                groupsize: int, bias: Optional[torch.Tensor] = None) -> torch.Tensor:
    """``x [..., K]`` times the packed int4 weight (see ``quantize_int4_grouped``), fused
    dequantise-and-multiply: ``[..., N]`` in the dtype of ``x``. Up to
    ``_C.quantized_gemv_max_rows`` (32) rows of x are rounded to 8-bit integers per 32
    values (as llama.cpp) and multiplied as integers (error at most
    ``sum |(q - 8) * scale| * step / 2``); more rows run a GEMM over the weight dequantised
    block by block."""
    require_tensors("int4_linear", x=x, packed=packed, scales_and_zeros=scales_and_zeros)
    require_int64("int4_linear", groupsize=groupsize)
    return _ops.int4_linear(x, packed, scales_and_zeros, groupsize, bias)


@torch.library.register_fake("fastdecode::int4_linear")
def _int4_linear_fake(x, packed, scales_and_zeros, groupsize, bias=None):
    return x.new_empty((*x.shape[:-1], packed.shape[0]))


def decode_attention(qkv: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor,
                     input_pos: torch.Tensor, rope: torch.Tensor, n_head: int,
                     n_kv_head: int) -> torch.Tensor:
    """Attention for S decode positions (a step, a verify pass), fused: ``qkv [B, S, (H + 2
    Hkv) * D]`` (the fused projection, (re, im) pairs interleaved) -> ``[B, S, H * D]``.

    Rotates q and k by ``rope [positions, D / 2, 2]`` (cos, sin) at ``input_pos`` (``[S]`` or
    ``[B, S]`` int64), writes k and v into ``k_cache``/``v_cache`` ``[B_max, Hkv, L, D]`` (in
    place) and attends, causally, over cache positions ``0..pos`` of each query. qkv and rope
    fp32; the caches fp32, or fp16 (half the bytes a step reads: each key and value rounded to
    nearest-even when written, as ``.to(torch.float16)`` rounds it, and widened exactly when
    read). CPU.
    """
    require_tensors("decode_attention",
                     qkv=qkv, k_cache=k_cache, v_cache=v_cache, input_pos=input_pos, rope=rope)
    require_int64("decode_attention", n_head=n_head, n_kv_head=n_kv_head)
    return _ops.decode_attention(qkv, k_cache, v_cache, input_pos, rope, n_head, n_kv_head)


@torch.library.register_fake("fastdecode::decode_attention")
def _decode_attention_fake(qkv, k_cache, v_cache, input_pos, rope, n_head, n_kv_head):
    return qkv.new_empty((qkv.shape[0], qkv.shape[1], n_head * k_cache.shape[3]))


def rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    """RMSNorm over the last dim: ``x [..., E] * rsqrt(mean(x^2) + eps) * weight [E]``.

    fp32 in one C++ pass per row; other dtypes normalise in fp32 and scale in their own
    dtype (Hugging Face's order). CPU.
    """
    require_tensors("rms_norm", x=x, weight=weight)
    return _ops.rms_norm(x, weight, eps)


@torch.library.register_fake("fastdecode::rms_norm")
def _rms_norm_fake(x, weight, eps):
    return torch.empty_like(x)


def speculative_accept(draft_tokens: torch.Tensor, draft_probs: torch.Tensor,
                       target_probs: torch.Tensor, generator: Optional[torch.Generator] = None,
                       uniforms: Optional[torch.Tensor] = None):
    """Acceptance step of speculative sampling, all rows at once.

    draft_tokens ``[B, k]`` (drawn from ``draft_probs [B, k, V]``), target_probs
    ``[B, k + 1, V]`` (the target's distributions after ``cur`` and after each draft token).
    Draft token i is accepted with probability ``min(1, q_i / p_i)``; the first rejected one
    is replaced by a draw from ``norm(max(q_i - p_i, 0))``; if all k are accepted a bonus
    token is drawn from ``q_k``. Greedy (one-hot) distributions accept exactly the drafts the
    target's argmax agrees with.

    Returns ``(tokens int64 [B, k + 1], num_accepted int64 [B])``: row b's new tokens are
    ``tokens[b, :num_accepted[b] + 1]``, the rest is -1. ``uniforms [B, k + 1]`` in [0, 1)
    replace the draws from ``generator`` (for testing against an oracle).
    """
    require_tensors("speculative_accept",
                     draft_tokens=draft_tokens, draft_probs=draft_probs,
                     target_probs=target_probs)
    return _ops.speculative_accept(draft_tokens, draft_probs, target_probs, generator, uniforms)


@torch.library.register_fake("fastdecode::speculative_accept")
def _speculative_accept_fake(draft_tokens, draft_probs, target_probs, generator=None,
                             uniforms=None):
    bsz, k = draft_tokens.shape
    return (draft_tokens.new_empty((bsz, k + 1), dtype=torch.int64),
            draft_tokens.new_empty((bsz,), dtype=torch.int64))


def decode_layers(x: torch.Tensor, norms: List[torch.Tensor], eps: float,
                  weights: List[torch.Tensor], kinds: List[int], groupsizes: List[int],
                  k_caches: List[torch.Tensor], v_caches: List[torch.Tensor],
                  input_pos: torch.Tensor, rope: torch.Tensor, n_head: int,
                  n_kv_head: int) -> torch.Tensor:
    """Every pre-norm decoder layer of a model at ``S <= 16`` decode positions, in one call:
    ``x [B, S, E]`` fp32; per layer ``h = x + wo(attention(wqkv(rms_norm(x))))`` and
    ``x <- h + w2(silu(w1(n)) * w3(n))`` with ``n = rms_norm(h)``, attention as
    ``decode_attention`` (which writes the layer's caches). ``norms`` holds
    ``[attention_norm, ffn_norm]`` of each layer (2L); ``weights`` the tensors of each layer's
    wqkv, wo, w1, w3, w2, layer after layer, ``kinds`` saying which (0 fp32 ``[weight]``,
    1 int8 ``[q, scales]``, 2 int4 ``[packed, scales_and_zeros]`` with ``groupsizes``), 5L
    entries each; ``k_caches`` / ``v_caches`` L each, shaped alike, no two overlapping.
    Every layer is checked before the first cache write. One dispatcher trip per decode
    step: the ~20 Python calls per layer of the module path are gone."""
    require_tensors("decode_layers", x=x, input_pos=input_pos, rope=rope)
    require_int64("decode_layers", kinds=kinds, groupsizes=groupsizes, n_head=n_head,
                   n_kv_head=n_kv_head)
    return _ops.decode_layers(x, norms, eps, weights, kinds, groupsizes, k_caches, v_caches,
                              input_pos, rope, n_head, n_kv_head)


@torch.library.register_fake("fastdecode::decode_layers")
def _decode_layers_fake(x, norms, eps, weights, kinds, groupsizes, k_caches, v_caches,
                        input_pos, rope, n_head, n_kv_head):
    return torch.empty_like(x)


def decode_step(x: torch.Tensor, norms: List[torch.Tensor], eps: float,
                weights: List[torch.Tensor], kinds: List[int], groupsizes: List[int],
                k_caches: List[torch.Tensor], v_caches: List[torch.Tensor],
                input_pos: torch.Tensor, rope: torch.Tensor, n_head: int, n_kv_head: int,
                final_norm: torch.Tensor, head: List[torch.Tensor], head_kind: int,
                head_groupsize: int, last_only: bool = False
                ) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """A whole decode step in one call: ``decode_layers`` (same arguments), then the final
    norm (``final_norm [E]``, the layers' ``eps``) and the output head, given as one linear
    of ``decode_layers`` (``head_kind`` 0 fp32 ``[weight]``, 1 int8 ``[q, scales]``, 2 int4
    ``[packed, scales_and_zeros]`` with ``head_groupsize``), over the last position
    (``last_only``) or all S. Returns ``(logits [B, S', V], hidden [B, S', E], tokens
    int32 [B, S'])``: hidden is the last layer's output before the final norm, tokens each
    logits row's first maximum (the greedy token; -1 where the row holds NaN); S' = 1 with
    ``last_only``. Every argument is checked before the first cache write."""
    require_tensors("decode_step", x=x, input_pos=input_pos, rope=rope, final_norm=final_norm)
    require_int64("decode_step", kinds=kinds, groupsizes=groupsizes, n_head=n_head,
                   n_kv_head=n_kv_head, head_kind=head_kind, head_groupsize=head_groupsize)
    return _ops.decode_step(x, norms, eps, weights, kinds, groupsizes, k_caches, v_caches,
                            input_pos, rope, n_head, n_kv_head, final_norm, head, head_kind,
                            head_groupsize, last_only)


@torch.library.register_fake("fastdecode::decode_step")
def _decode_step_fake(x, norms, eps, weights, kinds, groupsizes, k_caches, v_caches,
                      input_pos, rope, n_head, n_kv_head, final_norm, head, head_kind,
                      head_groupsize, last_only):
    rows = 1 if last_only else x.shape[1]
    vocab = head[0].shape[0]  # out-features lead every kind's first tensor
    return (x.new_empty((x.shape[0], rows, vocab)), x.new_empty((x.shape[0], rows, x.shape[2])),
            x.new_empty((x.shape[0], rows), dtype=torch.int32))


def shard(t: torch.Tensor, dim: int, offsets: Sequence[int], lengths: Sequence[int]
          ) -> torch.Tensor:
    """A rank's part of ``t`` for tensor parallelism: the slices ``[offsets[i], offsets[i] +
    lengths[i])`` of dimension ``dim``, concatenated in order, contiguous (uneven parts and the
    fused wqkv's q / k / v segments alike). Every range must be non-empty and inside ``t``."""
    require_tensors("shard", t=t)
    require_int64("shard", dim=dim, offsets=list(offsets), lengths=list(lengths))
    return _ops.shard(t, dim, list(offsets), list(lengths))


@torch.library.register_fake("fastdecode::shard")
def _shard_fake(t, dim, offsets, lengths):
    shape = list(t.shape)
    shape[dim] = sum(lengths)
    return t.new_empty(shape)


def shard_int4(packed: torch.Tensor, scales_and_zeros: torch.Tensor, groupsize: int, dim: int,
               offsets: Sequence[int], lengths: Sequence[int]
               ) -> Tuple[torch.Tensor, torch.Tensor]:
    """``shard`` for an int4 linear (16-row tiles): ``dim`` 0 cuts output rows, 1 input
    columns (ranges on ``groupsize`` boundaries) of ``packed [N, K_pad / 2]`` and
    ``scales_and_zeros [N, K_pad / G, 2]`` together; the result is re-tiled, and equals
    ``quantize_int4_grouped`` of the same cut of the float weight, bit for bit."""
    require_tensors("shard_int4", packed=packed, scales_and_zeros=scales_and_zeros)
    require_int64("shard_int4", groupsize=groupsize, dim=dim, offsets=list(offsets),
                   lengths=list(lengths))
    return _ops.shard_int4(packed, scales_and_zeros, groupsize, dim, list(offsets), list(lengths))


@torch.library.register_fake("fastdecode::shard_int4")
def _shard_int4_fake(packed, scales_and_zeros, groupsize, dim, offsets, lengths):
    total = sum(lengths)
    if dim == 0:
        return packed.new_empty((total, packed.shape[1])), scales_and_zeros.new_empty(
            (total, *scales_and_zeros.shape[1:]))
    return (packed.new_empty((packed.shape[0], total // 2)),
            scales_and_zeros.new_empty((packed.shape[0], total // groupsize, 2)))
