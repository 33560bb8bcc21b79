"""The quantized checkpoint directory (``python -m fastdecode quantize``): ``model.safetensors``
(no pickle), ``fastdecode.json`` (model arguments, the quantization of every linear and of
the embedding) and ``tokenizer.json``. Written by ``save_quantized``; ``fastdecode.load``
reads it back (``checkpoint._load_quantized_dir``) through the builders here.

Tensors are stored as the model holds them: int8 weights row-major (int8) or in the tiles
of ``ops.tile_int8`` (uint8), the dtype saying which; loading assigns them as they are.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Dict, Optional

import torch
import torch.nn as nn

from .quantize import QUANTIZED_TYPES, WeightOnlyInt4Linear, WeightOnlyInt8Linear, replace_module

__all__ = ["save_quantized", "linear_specs", "embedding_spec", "build_quantized_linears",
           "build_quantized_embedding", "FORMAT_VERSION", "READABLE_VERSIONS"]

# 2: int4 weights in 16-row tiles (version 1 stored them row-major); 3: int8 weights as the
# model holds them, tiled (uint8) or row-major (int8). Version 2 files still load (row-major
# int8, tiled by fastdecode.load).
FORMAT_VERSION = 3
READABLE_VERSIONS = (2, 3)


def linear_specs(model: nn.Module) -> Dict[str, dict]:
    """Module name -> {"kind": "int8"|"int4", "groupsize": G or None, "bias": bool,
    "in_features", "out_features"}."""
    specs = {}
    for name, m in model.named_modules():
        if isinstance(m, QUANTIZED_TYPES):
            specs[name] = {"kind": "int8" if isinstance(m, WeightOnlyInt8Linear) else "int4",
                           "groupsize": m.groupsize, "bias": m.bias is not None,
                           "in_features": m.in_features, "out_features": m.out_features}
    return specs


def embedding_spec(model: nn.Module) -> Optional[dict]:
    """``{"kind", "groupsize"}`` of a quantized embedding table (``QuantizedEmbedding``), or
    None for a float one. Its tensors are saved as ``tok_embeddings.*``; a tied head's are
    the same tensors (stored once)."""
    from .quantized_embedding import QuantizedEmbedding

    emb = model.tok_embeddings
    if not isinstance(emb, QuantizedEmbedding):
        return None
    return {"kind": emb.kind, "groupsize": emb.groupsize}


def _empty_quantized_linear(kind: str, in_features: int, out_features: int, bias: bool,
                            groupsize: Optional[int]) -> nn.Module:
    cls = WeightOnlyInt8Linear if kind == "int8" else WeightOnlyInt4Linear
    kwargs = {"groupsize": groupsize} if groupsize is not None else {}
    return cls(in_features, out_features, bias, **kwargs)


def build_quantized_embedding(model: nn.Module, spec: Optional[dict],
                              state: Dict[str, torch.Tensor]) -> None:
    """Swap in an empty ``QuantizedEmbedding`` described by ``spec`` (``embedding_spec``)
    and, for a tied head, give ``state`` the head's entries (the same tensors as the
    embedding's, which ``save_quantized`` stored once)."""
    from .quantized_embedding import QuantizedEmbedding

    if spec is None:
        return
    c = model.config
    model.tok_embeddings = QuantizedEmbedding(_empty_quantized_linear(
        spec["kind"], c.dim, c.vocab_size, False, spec["groupsize"]))
    if c.tie_embeddings:
        for name in model.tok_embeddings._buffers:
            if f"tok_embeddings.{name}" in state:
                state.setdefault(f"output.{name}", state[f"tok_embeddings.{name}"])


def build_quantized_linears(model: nn.Module, specs: Dict[str, dict]) -> None:
    """Swap in empty quantized modules named by ``specs`` (before loading a state dict)."""
    for name, s in specs.items():
        replace_module(model, name, _empty_quantized_linear(
            s["kind"], s["in_features"], s["out_features"], s["bias"], s["groupsize"]))


def save_quantized(model, tokenizer, directory) -> Path:
    """Write ``model.safetensors`` + ``fastdecode.json`` + ``tokenizer.json`` to ``directory``."""
    from safetensors.torch import save_file

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    state = {}
    seen = {}
    for k, v in model.state_dict().items():
        key = v.untyped_storage().data_ptr(), v.storage_offset(), tuple(v.shape)
        if key in seen:  # a tied tensor is stored once; fastdecode.json records the tie
            continue
        seen[key] = k
        state[k] = v.detach().contiguous().cpu()
    save_file(state, str(directory / "model.safetensors"))
    meta = {"format": "fastdecode-quantized", "version": FORMAT_VERSION,
            "model_args": model.config.to_dict(), "linears": linear_specs(model),
            "embedding": embedding_spec(model)}
    (directory / "fastdecode.json").write_text(json.dumps(meta, indent=1))
    tokenizer.save(str(directory / "tokenizer.json"))
    return directory
