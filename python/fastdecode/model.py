"""Llama-family decoder with a static KV cache (gpt-fast's module layout and names).

Shapes: B batch, S new positions, L cache length (``max_seq_length``), H query heads,
Hkv key/value heads (GQA), D head_dim, E model dim, V vocab.

RoPE is applied to interleaved (real, imag) pairs, the layout of Meta and GGUF checkpoints;
Hugging Face checkpoints are converted to it on load (``checkpoint.py``).
"""
from __future__ import annotations

import contextlib
import threading
import warnings
from typing import Optional, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F

from . import ops
from .config import ModelArgs, find_multiple  # noqa: F401 (re-exported)
from .fusion import FUSED_MAX_POSITIONS, FusionWatched
from .huge_pages import zeros_on_huge_pages
from .op_args import LinearKind  # noqa: F401 (re-exported: fastdecode.model.LinearKind)

__all__ = ["ModelArgs", "KVCache", "Transformer", "find_multiple", "empty_weights",
           "LinearKind"]


# Longer inputs run in chunks of at most this many positions: the attention of a chunk
# scores [chunk, L] per head, so memory stays linear in the context (a whole 40k-token
# prompt at once would need 40k x 40k scores).
PREFILL_CHUNK = 512
# ...and fewer where one chunk's scores (H x chunk x L fp32) would pass this many bytes.
_SCORE_BYTES = 1 << 26

_skip_init = threading.local()


@contextlib.contextmanager
def empty_weights():
    """Build a model whose weights will be loaded: on the meta device, allocating nothing,
    and without random initialisation (an init op on a meta tensor makes torch import its
    decompositions: ~2 s of a cold start)."""
    _skip_init.on = True
    try:
        with torch.device("meta"):
            yield
    finally:
        _skip_init.on = False


def _init_weights() -> bool:
    return not getattr(_skip_init, "on", False)


class Embedding(nn.Embedding):
    """``nn.Embedding`` that can skip its random init (``empty_weights``). Its table's dtype is
    the model's activation dtype (a quantized table: ``QuantizedEmbedding``)."""

    def reset_parameters(self) -> None:
        if _init_weights():
            super().reset_parameters()

    @property
    def activation_dtype(self) -> torch.dtype:
        return self.weight.dtype

    @property
    def device(self) -> torch.device:
        return self.weight.device


class Linear(FusionWatched, nn.Linear):
    """``nn.Linear`` (same parameters and state-dict names) running ``fastdecode.ops.linear``:
    a weight-streaming C++ GEMV when decoding a few rows, ATen's GEMM otherwise."""

    def reset_parameters(self) -> None:
        if _init_weights():
            super().reset_parameters()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return ops.linear(x, self.weight, self.bias)

    def decode_layer_args(self):
        """``([weight], LinearKind.FLOAT32, groupsize 0)`` for ``ops.decode_layers``; None
        when this linear cannot join it (a bias, or not fp32)."""
        params = self._parameters
        weight = params["weight"]
        if params.get("bias") is not None or weight.dtype != torch.float32:
            return None
        return [weight], LinearKind.FLOAT32, 0


def _from_position_zero(input_pos: torch.Tensor) -> bool:
    """True when ``input_pos`` is ``[S]`` = 0..S-1, S > 1 (never while compiling: the test
    reads its values)."""
    S = input_pos.shape[-1]
    return (input_pos.dim() == 1 and S > 1 and not torch.compiler.is_compiling()
            and torch.equal(input_pos, torch.arange(S, device=input_pos.device)))


class KVCache(nn.Module):
    """Static cache ``[B, Hkv, L, D]`` for keys and values, written in place."""

    def __init__(self, max_batch_size: int, max_seq_length: int, n_heads: int, head_dim: int,
                 dtype=torch.float32, storage: Optional[Tuple[torch.Tensor, torch.Tensor]] = None):
        """storage: zeroed (keys, values) of the cache's shape and dtype to use (the model's
        caches on huge pages, ``setup_caches``); new tensors otherwise."""
        super().__init__()
        shape = (max_batch_size, n_heads, max_seq_length, head_dim)
        k, v = storage if storage is not None else (torch.zeros(shape, dtype=dtype),
                                                    torch.zeros(shape, dtype=dtype))
        assert k.shape == v.shape == shape and k.dtype == v.dtype == dtype
        self.register_buffer("k_cache", k, persistent=False)
        self.register_buffer("v_cache", v, persistent=False)

    def rows(self, start: int, stop: int) -> "KVCache":
        """A cache over rows ``[start, stop)`` of this one: views, so writes land here (the
        serving engine prefills one request into its own row this way)."""
        view = KVCache.__new__(KVCache)
        nn.Module.__init__(view)
        view.register_buffer("k_cache", self.k_cache[start:stop], persistent=False)
        view.register_buffer("v_cache", self.v_cache[start:stop], persistent=False)
        return view

    def update(self, input_pos: torch.Tensor, k_val: torch.Tensor, v_val: torch.Tensor):
        """input_pos ``[S]`` (shared) or ``[B, S]`` (per row); k_val, v_val ``[B, Hkv, S, D]``.

        Returns the caches sliced to the batch in use: ``[B, Hkv, L, D]`` each.
        """
        bsz = k_val.shape[0]
        k_out, v_out = self.k_cache[:bsz], self.v_cache[:bsz]
        # (fp16 caches under fp32 activations: rounded to nearest-even, as the fused op writes)
        k_val, v_val = k_val.to(k_out.dtype), v_val.to(v_out.dtype)
        if input_pos.dim() == 1:
            k_out[:, :, input_pos] = k_val
            v_out[:, :, input_pos] = v_val
        else:
            # Advanced indices (rows [B,1], positions [B,S]) around a slice put the indexed
            # dims first: the target view is [B, S, Hkv, D].
            rows = torch.arange(bsz, device=input_pos.device).unsqueeze(1)
            k_out[rows, :, input_pos] = k_val.transpose(1, 2)
            v_out[rows, :, input_pos] = v_val.transpose(1, 2)
        return k_out, v_out


class RMSNorm(FusionWatched, nn.Module):
    def __init__(self, dim: int, eps: float = 1e-5):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.device.type == "cpu":  # one C++ pass (ATen's composite costs ~25 us a call)
            return ops.rms_norm(x, self.weight, self.eps)
        # normalise in fp32, scale in the model dtype (Hugging Face's order of operations)
        xf = F.rms_norm(x.float(), (x.shape[-1],), None, self.eps)
        return self.weight * xf.type_as(x)


def precompute_freqs_cis(seq_len: int, n_elem: int, base: float) -> torch.Tensor:
    """Rotations ``[seq_len, n_elem // 2]`` complex64: ``exp(i * pos * base^(-2j/n_elem))``."""
    inv_freq = 1.0 / (base ** (torch.arange(0, n_elem, 2, dtype=torch.int64).float() / n_elem))
    angles = torch.outer(torch.arange(seq_len, dtype=torch.float32), inv_freq)
    return torch.polar(torch.ones_like(angles), angles)


def apply_rotary_emb(x: torch.Tensor, freqs_cis: torch.Tensor) -> torch.Tensor:
    """x ``[B, S, H, D]`` with (re, im) pairs interleaved along D; freqs_cis ``[S, D/2]`` or
    ``[B, S, D/2]`` complex. One complex multiply (6 cheap ops instead of ~16 real ones: the
    decode step calls this 30 times per token)."""
    xc = torch.view_as_complex(x.float().reshape(*x.shape[:-1], -1, 2))
    fc = freqs_cis.view(-1 if freqs_cis.dim() == 3 else 1, x.shape[1], 1, xc.shape[-1])
    return torch.view_as_real(xc * fc).flatten(3).type_as(x)


class Attention(FusionWatched, nn.Module):
    def __init__(self, config: ModelArgs):
        super().__init__()
        total_head_dim = (config.n_head + 2 * config.n_local_heads) * config.head_dim
        # q, k and v projections fused into one GEMV: one weight read per token instead of 3.
        self.wqkv = Linear(config.dim, total_head_dim, bias=False)
        self.wo = Linear(config.n_head * config.head_dim, config.dim, bias=False)
        self.kv_cache: Optional[KVCache] = None
        self.n_head = config.n_head
        self.head_dim = config.head_dim
        self.n_local_heads = config.n_local_heads
        self.dim = config.dim

    def forward(self, x, freqs_cis, mask, input_pos):
        bsz, seqlen, _ = x.shape
        q_size = self.n_head * self.head_dim
        kv_size = self.n_local_heads * self.head_dim
        if self.kv_cache is None:
            raise RuntimeError("call model.setup_caches(max_batch_size, max_seq_length) first")
        qk, v = self.wqkv(x).split([q_size + kv_size, kv_size], dim=-1)
        # q and k heads rotated together: one RoPE pass over H + Hkv heads
        qk = apply_rotary_emb(qk.view(bsz, seqlen, self.n_head + self.n_local_heads,
                                      self.head_dim), freqs_cis)
        q, k = qk.split([self.n_head, self.n_local_heads], dim=2)
        v = v.view(bsz, seqlen, self.n_local_heads, self.head_dim)
        q, k, v = (t.transpose(1, 2) for t in (q, k, v))  # [B, heads, S, D]
        k, v = self.kv_cache.update(input_pos, k, v)
        if mask is None:  # queries 0..S-1 (_from_position_zero): causal over the cache's
            # first S positions, with no [S, L] mask to build and add and no scores for the
            # cache positions past S
            k, v = k[:, :, :seqlen], v[:, :, :seqlen]
        k, v = k.to(q.dtype), v.to(q.dtype)  # fp16 caches (kv_cache_dtype): widened
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=mask is None,
                                           enable_gqa=self.n_head != self.n_local_heads)
        return self.wo(y.transpose(1, 2).reshape(bsz, seqlen, q_size))


class FeedForward(FusionWatched, nn.Module):
    def __init__(self, config: ModelArgs):
        super().__init__()
        self.w1 = Linear(config.dim, config.intermediate_size, bias=False)  # gate
        self.w3 = Linear(config.dim, config.intermediate_size, bias=False)  # up
        self.w2 = Linear(config.intermediate_size, config.dim, bias=False)  # down

    def forward(self, x):
        return self.w2(F.silu(self.w1(x)) * self.w3(x))


class TransformerBlock(FusionWatched, nn.Module):
    def __init__(self, config: ModelArgs):
        super().__init__()
        self.attention = Attention(config)
        self.feed_forward = FeedForward(config)
        self.ffn_norm = RMSNorm(config.dim, config.norm_eps)
        self.attention_norm = RMSNorm(config.dim, config.norm_eps)

    def forward(self, x, freqs_cis, mask, input_pos):
        h = x + self.attention(self.attention_norm(x), freqs_cis, mask, input_pos)
        return h + self.feed_forward(self.ffn_norm(h))


class LayerList(FusionWatched, nn.ModuleList):
    """The layers: ``model.layers[i] = block`` on a fused model un-fuses it."""


class Transformer(FusionWatched, nn.Module):
    def __init__(self, config: ModelArgs):
        super().__init__()
        self.config = config
        self.tok_embeddings = Embedding(config.vocab_size, config.dim)
        self.layers = LayerList(TransformerBlock(config) for _ in range(config.n_layer))
        self.norm = RMSNorm(config.dim, eps=config.norm_eps)
        self.output = Linear(config.dim, config.vocab_size, bias=False)
        if config.tie_embeddings:
            self.output.weight = self.tok_embeddings.weight
        self.max_batch_size = -1
        self.max_seq_length = -1
        self._kv_cache_dtype: Optional[torch.dtype] = None  # kv_cache_dtype
        self.cache_dtype: Optional[torch.dtype] = None  # the allocated caches' dtype
        self.freqs_cis: Optional[torch.Tensor] = None
        self.rope_table: Optional[torch.Tensor] = None
        # fastdecode.fuse decides whether decode steps run fused (the loader calls it)
        self.__dict__["_fused"] = None
        self.__dict__["_fusion_reason"] = "not fused (fastdecode.fuse decides)"

    # -- the decode path (fastdecode.fusion) --------------------------------------------------
    @property
    def decode_path(self) -> str:
        """"fused" (short steps run ``ops.decode_layers``) or "modules"."""
        return "fused" if self.__dict__.get("_fused") is not None else "modules"

    def extra_repr(self) -> str:
        reason = self.__dict__.get("_fusion_reason")
        return f"decode_path={self.decode_path}" + (f" ({reason})" if reason else "")

    def _edited(self, what: str) -> None:
        """A module, parameter or buffer under this fused model was replaced."""
        from .fusion import unfuse

        if self.__dict__.get("_fused") is None:
            return
        unfuse(self, f"{what} was replaced after fusing")
        warnings.warn(f"{what} was replaced on a fused model: it now decodes module by module "
                      "(decode_path='modules'); call fastdecode.fuse(model) to fuse it again",
                      stacklevel=3)

    def _apply(self, fn, *args, **kwargs):
        """``.to()``, ``.float()``...: a fused model decides again for its new dtype/device."""
        from .fusion import fuse

        was_fused = self.__dict__.get("_fused") is not None
        out = super()._apply(fn, *args, **kwargs)
        if was_fused:
            fuse(self, warn=True)
        return out

    def __getstate__(self):
        """Copies and pickles carry the decision, not the plan: ``__setstate__`` fuses the
        copy from its own modules."""
        state = dict(super().__getstate__() if hasattr(super(), "__getstate__")
                     else self.__dict__)
        state["_fused_on_load"] = state.pop("_fused", None) is not None
        return state

    def __setstate__(self, state):
        fused = state.pop("_fused_on_load", False)
        super().__setstate__({**state, "_fused": None})
        if fused:
            from .fusion import fuse
            fuse(self)

    @property
    def kv_cache_dtype(self) -> Optional[torch.dtype]:
        """The dtype ``setup_caches`` gives the KV caches: None (the default) for the
        activations' (fp32 on the CPU), or ``torch.float16``: half the bytes, which a batched
        decode step reads for every row and position (37 MB a step at 8 rows and 100
        positions of the default model in fp32), at the cost of rounding each key and value
        to fp16 once, when written (to nearest-even, as ``.to(torch.float16)``; the fused CPU
        step widens them exactly when it reads them, the module path converts them back to
        the activations' dtype). Every entry point decoding this model uses it; the server
        sets it to fp16 (``serve --kv-cache-dtype``)."""
        return self._kv_cache_dtype

    @kv_cache_dtype.setter
    def kv_cache_dtype(self, dtype: Optional[torch.dtype]) -> None:
        if dtype not in (None, self.tok_embeddings.activation_dtype, torch.float16):
            raise ValueError(f"kv_cache_dtype must be None, "
                             f"{self.tok_embeddings.activation_dtype} (the activations') or "
                             f"torch.float16, got {dtype!r}")
        self._kv_cache_dtype = dtype

    def setup_caches(self, max_batch_size: int, max_seq_length: int, *,
                     huge_pages: bool = False) -> None:
        """Allocate KV caches ``[max_batch_size, Hkv, max_seq_length, D]`` per layer, in
        ``kv_cache_dtype``.

        Re-allocates only when a larger batch, a different length or another dtype is asked
        for; the caches live on the device of the embedding table.
        huge_pages: CPU caches in one buffer on 2 MiB pages where the system gives them on
        request (``huge_pages.zeros_on_huge_pages``): a batched step reads them faster, but
        the kernel takes ~1.5 s a GB to assemble the pages, so the server's engine asks
        for it (one allocation at start) and ``generate``, which sizes the caches per call,
        does not. It applies when the call allocates: caches of the size asked for are kept
        as they are.
        """
        if max_seq_length > self.config.block_size:
            raise ValueError(f"max_seq_length ({max_seq_length}) exceeds the model's "
                             f"block_size ({self.config.block_size})")
        # the activations' dtype (the embedding's output) unless kv_cache_dtype says fp16
        dtype = self.kv_cache_dtype or self.tok_embeddings.activation_dtype
        if (self.max_seq_length == max_seq_length and self.max_batch_size >= max_batch_size
                and self.cache_dtype == dtype):
            return
        from .memory import check_decode_memory

        check_decode_memory(self, max_batch_size, max_seq_length)  # before any allocation
        device = self.tok_embeddings.device
        for layer in self.layers:  # the old caches go first: old and new never coexist
            layer.attention.kv_cache = None
        self.max_seq_length = max_seq_length
        self.max_batch_size = max_batch_size
        self.cache_dtype = dtype
        shapes = [(max_batch_size, layer.attention.n_local_heads, max_seq_length,
                   layer.attention.head_dim) for layer in self.layers]
        # on the CPU, all of them in one buffer on 2 MiB pages where the system gives them
        # (two tensors a layer: its keys, then its values)
        placed = (zeros_on_huge_pages([s for s in shapes for _ in range(2)], dtype)
                  if huge_pages and device.type == "cpu" else None)
        for i, layer in enumerate(self.layers):
            att = layer.attention  # its own head counts: tensor parallelism keeps a part
            storage = None if placed is None else (placed[2 * i], placed[2 * i + 1])
            att.kv_cache = KVCache(max_batch_size, max_seq_length, att.n_local_heads,
                                   att.head_dim, dtype, storage).to(device)
        # rotations for the cache's positions only: a config may allow far more (2^31)
        self.freqs_cis = precompute_freqs_cis(max_seq_length, self.config.head_dim,
                                              self.config.rope_base).to(device)
        self.rope_table = torch.view_as_real(self.freqs_cis)  # [L, D/2, 2] (cos, sin), a view

    def prefill_chunk(self) -> int:
        """Positions per chunk of a long input (``PREFILL_CHUNK``, fewer for long caches):
        a prompt is read in chunks of this size from position 0."""
        return self._chunk_positions()

    def _chunk_positions(self) -> int:
        """Positions per chunk of a long input (``PREFILL_CHUNK``, fewer for long caches)."""
        per_position = max(self.config.n_head * self.max_seq_length * 4, 1)
        return max(FUSED_MAX_POSITIONS, min(PREFILL_CHUNK, _SCORE_BYTES // per_position))

    def causal_mask(self, input_pos: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        """Additive mask (0 where attended, -inf elsewhere) of the queries at ``input_pos``
        (``[S]`` or ``[B, S]``) over the cache: ``[1 or B, 1, S, L]`` in ``dtype``. Built per
        call, ``S x L``: never an ``L x L`` table."""
        cols = torch.arange(self.max_seq_length, device=input_pos.device)
        allowed = cols <= input_pos.unsqueeze(-1)  # [S, L] or [B, S, L]
        mask = torch.zeros(allowed.shape, dtype=dtype, device=input_pos.device)
        mask.masked_fill_(~allowed, float("-inf"))
        return mask.view(-1 if input_pos.dim() == 2 else 1, 1, *allowed.shape[-2:])

    def forward(self, idx: torch.Tensor, input_pos: torch.Tensor,
                last_only: bool = False, *, head: bool = True) -> Optional[torch.Tensor]:
        """idx ``[B, S]`` token ids; input_pos ``[S]`` or ``[B, S]`` cache positions.

        Returns logits ``[B, S, V]`` (``[B, 1, V]`` with ``last_only``, which skips the
        output head for all but the last position: a prefill of S tokens then costs one
        vocabulary projection, not S); with ``head=False`` only the cache is filled (a
        prompt's chunks before its last) and None is returned.
        """
        return self.forward_embeddings(self.tok_embeddings(idx), input_pos, last_only,
                                       head=head)[0]

    def _fused_step(self, x: torch.Tensor):
        """The fused step (fastdecode.fusion.FusedStep) activations ``x`` may take: the
        model's, for fp32 activations on the CPU; else None."""
        fused = self.__dict__.get("_fused")
        ok = fused is not None and x.dtype == torch.float32 and x.device.type == "cpu"
        return fused if ok else None

    def logits_and_greedy(self, idx: torch.Tensor, input_pos: torch.Tensor
                          ) -> Tuple[torch.Tensor, torch.Tensor]:
        """A decode step's logits ``[B, S, V]`` (as ``forward``) and each position's greedy
        token, int32 ``[B, S]``: the first maximum of its logits, -1 where they hold NaN. A
        fused model computes both in its one C++ call (``ops.decode_step``)."""
        x = self.tok_embeddings(idx)
        fused = self._fused_step(x)
        if (fused is not None and fused.head is not None and self.freqs_cis is not None
                and x.shape[1] <= fused.positions):
            logits, _, tokens = fused.step(x, input_pos, self.rope_table, False)
            return logits, tokens
        logits = self.forward_embeddings(x, input_pos)[0]
        if logits.device.type == "cpu":
            try:  # the library's argmax (ATen's would wake OpenMP's spinning threads)
                rows = ops.argmax_token(logits.reshape(-1, logits.shape[-1]))
                return logits, rows.view(logits.shape[:-1])
            except ValueError:  # a row holds NaN: -1 there, as ops.decode_step gives
                pass
        tokens = logits.argmax(-1).to(torch.int32)
        return logits, tokens.masked_fill_(logits.isnan().any(-1), -1)

    def _in_chunks(self, x: torch.Tensor, input_pos: torch.Tensor, last_only: bool,
                   chunk: int, head: bool) -> Tuple[Optional[torch.Tensor], torch.Tensor]:
        """``forward_embeddings`` over ``chunk`` positions at a time, each attending to the
        cache the ones before filled."""
        seqlen = x.shape[1]
        logits, hidden = [], []
        for start in range(0, seqlen, chunk):
            end = min(start + chunk, seqlen)
            last = end == seqlen
            # (the head only where its logits are returned: a chunk before the last of a
            # last_only call fills the cache, and its [chunk, V] logits would be dropped)
            keep = last or not last_only
            part = self.forward_embeddings(x[:, start:end], input_pos[..., start:end],
                                           last_only and last, head=head and keep)
            if keep:
                logits.append(part[0])
                hidden.append(part[1])
        return (torch.cat(logits, dim=1) if head else None), torch.cat(hidden, dim=1)

    def forward_embeddings(self, x: torch.Tensor, input_pos: torch.Tensor,
                           last_only: bool = False, *, head: bool = True
                           ) -> Tuple[Optional[torch.Tensor], torch.Tensor]:
        """The layers, final norm and head over embeddings ``x [B, S, E]`` (models that embed
        their inputs their own way: DualAR's codebook sums, its fast transformer's hidden
        state). Returns ``(logits, hidden)``: logits as ``forward`` (None with
        ``head=False``: the layers only), hidden the last layer's output before the final
        norm (``[B, 1, E]`` with ``last_only``)."""
        if self.freqs_cis is None:
            raise RuntimeError("call model.setup_caches(max_batch_size, max_seq_length) first")
        seqlen = x.shape[1]
        fused = self._fused_step(x)
        if fused is not None and fused.reads_prompts and seqlen > fused.positions:
            # a prompt in fused calls of fused.positions: for quantized linears the integer
            # GEMV beats dequantise-then-GEMM at every prompt length (docs/benchmarks.md)
            return self._in_chunks(x, input_pos, last_only, fused.positions, head)
        # (a decode step never needs the chunk size: it is at least FUSED_MAX_POSITIONS)
        if seqlen > FUSED_MAX_POSITIONS and seqlen > (chunk := self._chunk_positions()):
            return self._in_chunks(x, input_pos, last_only, chunk, head)
        if fused is not None and seqlen <= fused.positions:
            if head and fused.head is not None:
                # the layers, final norm and head in one C++ call
                logits, hidden, _ = fused.step(x, input_pos, self.rope_table, last_only)
                return logits, hidden
            x = fused.run(x, input_pos, self.rope_table)  # every layer in one C++ call
        else:
            # queries 0..S-1 (a prompt's first chunk) need no mask: the layers attend
            # causally over the cache's first S positions
            mask = None if _from_position_zero(input_pos) else self.causal_mask(input_pos, x.dtype)
            freqs_cis = self.freqs_cis[input_pos]
            for layer in self.layers:
                x = layer(x, freqs_cis, mask, input_pos)
        if last_only:
            x = x[:, -1:]
        return (self.output(self.norm(x)) if head else None), x
