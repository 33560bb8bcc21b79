"""A token embedding read from a quantized table: a GGUF model keeps its embedding in the
file's blocks (a tied head's int8 or int4 weight, shared, not copied) and dequantises only
the rows it looks up, instead of holding a ``V x dim`` fp32 copy (113 MB for the default
model, more than its quantized linears together)."""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn as nn

from . import ops

__all__ = ["QuantizedEmbedding"]


class QuantizedEmbedding(nn.Module):
    """Rows of an int8 (``WeightOnlyInt8Linear``) or int4 (``WeightOnlyInt4Linear``) table,
    ``[V, dim]``, as fp32 activations. Built from the table module: the buffers are the
    module's own tensors (a tied head and its embedding share them; cutting the head for
    tensor parallelism assigns new tensors there and leaves these whole)."""

    def __init__(self, table: nn.Module):
        super().__init__()
        from .quantize import WeightOnlyInt4Linear, WeightOnlyInt8Linear

        if isinstance(table, WeightOnlyInt8Linear):
            self.kind, names = "int8", ("weight", "scales")
        elif isinstance(table, WeightOnlyInt4Linear):
            self.kind, names = "int4", ("weight", "scales_and_zeros")
        else:
            raise TypeError(f"QuantizedEmbedding reads an int8 or int4 linear's table, got "
                            f"{type(table).__name__}")
        self.num_embeddings, self.embedding_dim = table.out_features, table.in_features
        self.groupsize: Optional[int] = table.groupsize
        for name in names:
            self.register_buffer(name, table._buffers[name])
        # what the lookup returns (cast_float_tensors sets it); the tables' scales stay fp32
        self.activation_dtype = torch.float32

    @property
    def device(self) -> torch.device:
        return self.weight.device

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        ids = ids if ids.dtype == torch.int64 else ids.long()
        if self.kind == "int8":
            rows = ops.int8_embedding(ids, self.weight, self.scales)
        else:
            rows = ops.int4_embedding(ids, self.weight, self.scales_and_zeros, self.groupsize,
                                      self.embedding_dim)
        return rows if self.activation_dtype == torch.float32 else rows.to(self.activation_dtype)

    def extra_repr(self) -> str:
        g = "per channel" if self.groupsize is None else f"groupsize={self.groupsize}"
        return f"{self.num_embeddings}, {self.embedding_dim}, {self.kind}, {g}"
