"""Weight-only int8 / int4 linears, the quantize tool, and GGUF quantized tensors.

Formats (docs/formats.md):
- int8: ``weight int8 [N, K]`` and ``scales fp32 [N]`` (per channel) or ``[N, K / G]``
  (groups, GGUF Q8_0); ``w = weight * scale``. Loaded models hold it tiled
  (``tile_int8_weights``): ``weight uint8 [N, K]`` = q + 128 in 16-row tiles of 4-byte
  words, grouped scales tiled alike, the layout the kernels stream.
- int4: ``weight uint8 [N, K_pad / 2]`` (GGML nibble order in 32-value blocks, rows in
  16-row tiles of 4-byte words) and ``scales_and_zeros fp32 [N, K_pad / G, 2]`` (tiled the
  same way); ``w = (q - 8) * scale + zero``.

The quantized checkpoint directory: ``quantized_checkpoint.py``.
"""
from __future__ import annotations

import warnings
from typing import Optional

import numpy as np
import torch
import torch.nn as nn

from . import _C, ops
from .fusion import FusionWatched, fuse, unfuse
from .huge_pages import place_weights
from .model import LinearKind
from .gguf_file import BLOCK_BYTES

__all__ = ["WeightOnlyInt8Linear", "WeightOnlyInt4Linear", "quantize_model", "has_float_linears",
           "GROUPSIZES", "QUANTIZED_TYPES", "quantized_linear_from_gguf", "cast_float_tensors",
           "replace_module", "tile_int8_weights"]

GROUPSIZES = tuple(_C.int4_groupsizes)  # csrc/kernels/int4_layout.h, the one definition


def _with_bias_of(mod: nn.Module, linear: nn.Linear) -> nn.Module:
    if linear.bias is not None:
        mod.bias.data.copy_(linear.bias.detach())
    return mod


class WeightOnlyInt8Linear(FusionWatched, nn.Module):
    """int8 weight ``[N, K]`` with fp32 scales ``[N]`` (``groupsize=None``: per channel) or
    ``[N, K / groupsize]``; the product runs in ``fastdecode::int8_linear``.

    Built row-major (gpt-fast's layout: its state dicts load as they are); ``tile_()`` puts
    the weight in the tiled layout of ``ops.tile_int8`` (``weight`` uint8, the same values),
    which the kernels stream ~2x faster for several rows; ``fastdecode.load`` does so. A
    state dict loaded with ``assign=True`` brings its own layout (the weight's dtype)."""

    def __init__(self, in_features: int, out_features: int, bias: bool = False,
                 groupsize: Optional[int] = None, device=None):
        super().__init__()
        self.in_features, self.out_features, self.groupsize = in_features, out_features, groupsize
        if groupsize is not None and in_features % groupsize:
            raise ValueError(f"in_features ({in_features}) must be a multiple of groupsize "
                             f"({groupsize}) for grouped int8")
        scales_shape = (out_features,) if groupsize is None else (out_features,
                                                                  in_features // groupsize)
        self.register_buffer("weight", torch.empty(out_features, in_features, dtype=torch.int8,
                                                   device=device))
        self.register_buffer("scales", torch.ones(scales_shape, dtype=torch.float32,
                                                  device=device))
        self.bias = nn.Parameter(torch.zeros(out_features, device=device)) if bias else None

    @classmethod
    def from_float(cls, linear: nn.Linear,
                   groupsize: Optional[int] = None) -> "WeightOnlyInt8Linear":
        """Per channel (``groupsize=None``, gpt-fast's scheme) or one scale per group of
        ``groupsize`` in-features (the same symmetric rule applied to each group); layers
        whose in-features are not a multiple of the group fall back to per channel."""
        w = linear.weight.detach()
        n, k = w.shape
        if groupsize is not None and k % groupsize:
            groupsize = None
        if groupsize is None:
            q, scales = ops.quantize_int8_per_channel(w)
        else:
            q, scales = ops.quantize_int8_per_channel(w.reshape(n * k // groupsize, groupsize))
            q, scales = q.view(n, k), scales.view(n, k // groupsize)
        mod = cls(linear.in_features, linear.out_features, linear.bias is not None, groupsize)
        mod.weight.copy_(q)
        mod.scales.copy_(scales)
        return _with_bias_of(mod, linear)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # the registered op directly: ~150 of these calls per decoded token
        return torch.ops.fastdecode.int8_linear(x, self.weight, self.scales, self.bias)

    @property
    def tiled(self) -> bool:
        """Whether ``weight`` is in the tiled layout (uint8) rather than row-major (int8)."""
        return self.weight.dtype == torch.uint8

    def tile_(self) -> "WeightOnlyInt8Linear":
        """Put the weight and scales in the tiled layout, rearranged where they are
        (``ops.tile_int8_``, exact: no second copy of a 49152-row head while loading); a
        no-op when tiled already or when in_features is not a multiple of 32. Anything else
        holding the module's tensors sees tiled bytes."""
        if not self.tiled and self.in_features % 32 == 0:
            scales = self.scales.contiguous()
            self.weight, self.scales = ops.tile_int8_(self.weight.contiguous(), scales), scales
        return self

    def untile_(self) -> "WeightOnlyInt8Linear":
        """Back to the row-major int8 layout, in place (exact)."""
        if self.tiled:
            self.weight, self.scales = ops.untile_int8(self.weight, self.scales)
        return self

    def decode_layer_args(self):
        """``([q, scales], LinearKind.INT8, 0)`` for ``ops.decode_layers``; None with a
        bias."""
        if self._parameters.get("bias") is not None:
            return None
        buffers = self._buffers
        return [buffers["weight"], buffers["scales"]], LinearKind.INT8, 0

    def extra_repr(self) -> str:
        g = "per channel" if self.groupsize is None else f"groupsize={self.groupsize}"
        return (f"in_features={self.in_features}, out_features={self.out_features}, {g}"
                f"{', tiled' if self.tiled else ''}")


class WeightOnlyInt4Linear(FusionWatched, nn.Module):
    """Packed int4 weight with per-group scale and zero; ``fastdecode::int4_linear``."""

    def __init__(self, in_features: int, out_features: int, bias: bool = False,
                 groupsize: int = 128, device=None):
        super().__init__()
        if groupsize not in GROUPSIZES:
            raise ValueError(f"groupsize must be one of {GROUPSIZES}, got {groupsize}")
        self.in_features, self.out_features, self.groupsize = in_features, out_features, groupsize
        k_pad = (in_features + groupsize - 1) // groupsize * groupsize
        self.register_buffer("weight", torch.empty(out_features, k_pad // 2, dtype=torch.uint8,
                                                   device=device))
        self.register_buffer("scales_and_zeros", torch.empty(out_features, k_pad // groupsize, 2,
                                                             dtype=torch.float32, device=device))
        self.bias = nn.Parameter(torch.zeros(out_features, device=device)) if bias else None

    @classmethod
    def from_float(cls, linear: nn.Linear, groupsize: int = 128) -> "WeightOnlyInt4Linear":
        mod = cls(linear.in_features, linear.out_features, linear.bias is not None, groupsize)
        packed, sz = ops.quantize_int4_grouped(linear.weight.detach(), groupsize)
        mod.weight.copy_(packed)
        mod.scales_and_zeros.copy_(sz)
        return _with_bias_of(mod, linear)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.ops.fastdecode.int4_linear(x, self.weight, self.scales_and_zeros,
                                                self.groupsize, self.bias)

    def decode_layer_args(self):
        """``([packed, scales_and_zeros], LinearKind.INT4, groupsize)`` for
        ``ops.decode_layers``; None with a bias."""
        if self._parameters.get("bias") is not None:
            return None
        buffers = self._buffers
        return [buffers["weight"], buffers["scales_and_zeros"]], LinearKind.INT4, self.groupsize

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, "
                f"groupsize={self.groupsize}")


QUANTIZED_TYPES = (WeightOnlyInt8Linear, WeightOnlyInt4Linear)




def replace_module(model: nn.Module, name: str, new: nn.Module) -> None:
    """Put ``new`` at the dotted path ``name`` of ``model`` (e.g. "layers.3.attention.wo")."""
    parent_name, _, child = name.rpartition(".")
    setattr(model.get_submodule(parent_name) if parent_name else model, child, new)


@torch.no_grad()
def has_float_linears(model: nn.Module) -> bool:
    """Whether ``model`` has float linears to quantize (a GGUF loaded in its blocks has
    none)."""
    return any(isinstance(m, nn.Linear) for m in model.modules())


def quantize_model(model: nn.Module, mode: str, groupsize: Optional[int] = 32,
                   head_int8: bool = True) -> nn.Module:
    """Replace every ``nn.Linear`` of ``model`` by its weight-only quantized version, in
    place; returns ``model``.

    mode: ``"int8"`` or ``"int4"``. groupsize: 32, 64, 128 or 256 in-features per scale
    (int4: also per zero, in-features padded to the group); for int8, ``None`` gives
    gpt-fast's one scale per output channel. head_int8: in int4 mode, quantize the output
    head (``model.output``) to int8 with groups of 32 instead, as llama.cpp's Q4 files do:
    on the default model a 4-bit head costs ~10% perplexity, an int8 one ~0.2%.
    A tied output head gets its own quantized copy; the embedding table stays in floating
    point (a lookup reads one row). Perplexities per setting: docs/benchmarks.md.
    """
    if mode not in ("int8", "int4"):
        raise ValueError(f"mode must be 'int8' or 'int4', got {mode!r}")
    if groupsize not in GROUPSIZES and not (mode == "int8" and groupsize is None):
        raise ValueError(f"groupsize must be one of {GROUPSIZES}"
                         f"{' (or None for int8 per channel)' if mode == 'int8' else ''}, "
                         f"got {groupsize}")
    if not has_float_linears(model) and any(isinstance(m, QUANTIZED_TYPES)
                                            for m in model.modules()):
        raise ValueError("the model's linears are already quantized (a GGUF file loads in its "
                         "own blocks by default): load it with quantized=False to requantize "
                         "the float weights")
    fused = [t for t in model.modules() if getattr(t, "decode_path", None) == "fused"]
    unfuse(model)  # quietly: the decision is made again below
    targets = [(n, m) for n, m in model.named_modules() if isinstance(m, nn.Linear)]
    for name, linear in targets:
        if mode == "int8":
            new = WeightOnlyInt8Linear.from_float(linear, groupsize)
        elif head_int8 and name == "output":
            new = WeightOnlyInt8Linear.from_float(linear, 32)
        else:
            new = WeightOnlyInt4Linear.from_float(linear, groupsize)
        replace_module(model, name, new.to(linear.weight.device))
    tile_int8_weights(model)
    place_weights(model)  # the new weights on 2 MiB pages, as the loader places its own
    for t in fused:  # what was fused is fused again, over the quantized linears
        fuse(t)
    return model


@torch.no_grad()
def tile_int8_weights(model: nn.Module) -> nn.Module:
    """``tile_()`` on every int8 linear of ``model``, once per weight tensor (linears sharing
    one take the same tiled tensors); an int8 embedding table that is a tied head's weight
    follows the head (the lookup reads either layout). Returns ``model``. Call it before
    ``fastdecode.fuse`` (the fused step holds the tensors it had)."""
    from .quantized_embedding import QuantizedEmbedding

    tables = [m for m in model.modules() if isinstance(m, QuantizedEmbedding) and m.kind == "int8"]
    tiled = {}  # data_ptr of a weight tiled here -> (uint8 view, scales)
    for mod in model.modules():
        if not isinstance(mod, WeightOnlyInt8Linear) or mod.tiled:
            continue
        old, key = mod.weight, mod.weight.data_ptr()
        if key in tiled:
            mod.weight, mod.scales = tiled[key]
        elif mod.tile_().tiled:
            tiled[key] = mod.weight, mod.scales
        for table in tables:
            if table.weight is old and mod.tiled:
                table.weight, table.scales = mod.weight, mod.scales
    return model


def cast_float_tensors(model: nn.Module, dtype: torch.dtype) -> nn.Module:
    """Cast floating parameters and buffers to ``dtype``, except the fp32 scales of the
    quantized linears (the kernels read them as fp32)."""
    from .quantized_embedding import QuantizedEmbedding

    for mod in model.modules():
        if isinstance(mod, QuantizedEmbedding):  # int tables, fp32 scales: the output casts
            mod.activation_dtype = dtype
            continue
        if isinstance(mod, QUANTIZED_TYPES):
            if mod.bias is not None:
                mod.bias.data = mod.bias.data.to(dtype)
            continue
        for p in mod.parameters(recurse=False):
            if p.is_floating_point():
                p.data = p.data.to(dtype)
        for name, b in list(mod.named_buffers(recurse=False)):
            if b is not None and b.is_floating_point():
                setattr(mod, name, b.to(dtype))
    return model


# -- GGUF quantized blocks -------------------------------------------------------------------

def quantized_linear_from_gguf(parts, in_features: int) -> Optional[nn.Module]:
    """A quantized linear for GGUF tensors ``parts`` (fused along N, e.g. q, k, v), straight
    from their blocks, or ``None`` when they are not all Q4_0, Q4_1 or Q8_0 of one type.

    Q4_1 (d, m) -> int4 groupsize 32 with scale d, zero m + 8d; Q4_0 (d) -> scale d, zero 0;
    the nibbles are copied as they are. Q8_0 (d) -> grouped int8 with G = 32.
    """
    kinds = {p.tensor_type.name for p in parts}
    if len(kinds) != 1 or not kinds <= set(BLOCK_BYTES) or in_features % 32:
        return None
    kind = kinds.pop()
    rows = [int(p.shape[1]) if len(p.shape) > 1 else 1 for p in parts]
    row_bytes = in_features // 32 * BLOCK_BYTES[kind]
    # the parts stacked along N: one tensor is read where the file maps it (no copy; the op
    # only reads it), several (q, k, v) are copied together
    arrays = [np.asarray(p.data).reshape(r, row_bytes) for p, r in zip(parts, rows)]
    with warnings.catch_warnings():  # torch warns that the map is read-only: nothing writes
        warnings.simplefilter("ignore", UserWarning)
        blocks = torch.from_numpy(arrays[0] if len(arrays) == 1 else np.concatenate(arrays))
    first, second = ops.repack_gguf(blocks, int(parts[0].tensor_type))  # in C++, exactly
    n = blocks.shape[0]
    del blocks  # the load's peak memory is one tensor's transients: free them as they go
    # the module's buffers are the repacked tensors themselves (built on meta: no copy)
    with torch.device("meta"):
        if kind == "Q8_0":
            mod = WeightOnlyInt8Linear(in_features, n, groupsize=32)
        else:
            mod = WeightOnlyInt4Linear(in_features, n, groupsize=32)
    names = ("weight", "scales") if kind == "Q8_0" else ("weight", "scales_and_zeros")
    for name, value in zip(names, (first, second)):
        mod._buffers[name] = value
    return mod
