"""Tensor parallelism on ``torch.distributed`` (seed 004's recipe, any head layout).

Run with torchrun; every rank loads the same model and keeps its part::

    torchrun --standalone --nproc_per_node=2 -m fastdecode generate --prompt "..."

    rank = maybe_init_dist()            # None when not under torchrun / one process
    if rank is not None:
        apply_tp(model, rank, dist.get_world_size())

The split follows the KV groups, so the world size need not divide the head counts (gpt-fast
and vLLM require it to): a rank takes whole KV groups with their query heads (the default
model's 9 query / 3 KV heads over 2 ranks: groups {0, 1} with 6 query heads, and {2} with
3). The attention output projection ``wo`` is cut along its input (the rank's heads), the
FFN's gate/up along their outputs and down along its input, each in equal parts; the output
head along the vocabulary. Two all-reduces per layer (after ``wo`` and after ``w2``) and one
all-gather of the logits; functional collectives, so a compiled step traces through them.
Sharding is done by the C++ ops ``fastdecode::shard`` / ``fastdecode::shard_int4``, so
int8 / int4 / GGUF-quantized linears are cut as stored (no float round trip).
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import List, Optional, Tuple

import torch
import torch.distributed as dist
import torch.nn as nn
from torch.distributed import _functional_collectives as funcol

from . import ops
from .fusion import unfuse
from .model import Transformer
from .quantize import WeightOnlyInt4Linear, WeightOnlyInt8Linear

__all__ = ["maybe_init_dist", "TPPlan", "plan_tp", "apply_tp", "split_evenly",
           "allreduce_bytes_per_token"]

Range = Tuple[int, int]  # (offset, length)


def maybe_init_dist(backend: Optional[str] = None) -> Optional[int]:
    """Join the process group torchrun describes; the rank, or None for a single process.

    Reads ``LOCAL_RANK`` / ``LOCAL_WORLD_SIZE`` (set by torchrun); with fewer than 2 ranks
    tensor parallelism is a no-op. Backend: NCCL when CUDA is present, else gloo (CPU)."""
    if "LOCAL_RANK" not in os.environ:
        return None
    rank = int(os.environ["LOCAL_RANK"])
    world_size = int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
    if world_size < 2:
        return None
    if not dist.is_initialized():
        backend = backend or ("nccl" if torch.cuda.is_available() else "gloo")
        if backend == "nccl":
            torch.cuda.set_device(rank)
        dist.init_process_group(backend=backend, rank=rank, world_size=world_size)
    return rank


def split_evenly(total: int, parts: int, align: int = 1) -> List[Range]:
    """``total`` items in ``parts`` contiguous ranges as even as ``align``-sized units allow
    (the first ranges take the extra units; a remainder below ``align`` goes to the last)."""
    units, tail = divmod(total, align)
    if units < parts:
        raise ValueError(f"cannot split {total} into {parts} parts of whole {align}-item units")
    base, extra = divmod(units, parts)
    out, offset = [], 0
    for r in range(parts):
        length = (base + (r < extra)) * align + (tail if r == parts - 1 else 0)
        out.append((offset, length))
        offset += length
    return out


@dataclass(frozen=True)
class TPPlan:
    """Per-rank parts: ``kv_groups[r]`` (first group, count), ``ffn[r]`` and ``vocab[r]``
    (offset, length) of the intermediate and vocabulary dimensions."""
    world_size: int
    n_head: int
    n_local_heads: int
    head_dim: int
    kv_groups: Tuple[Range, ...]
    ffn: Tuple[Range, ...]
    vocab: Tuple[Range, ...]

    @property
    def heads_per_group(self) -> int:
        return self.n_head // self.n_local_heads

    def wqkv_rows(self, rank: int) -> List[Range]:
        """The rank's rows of the fused ``wqkv`` weight ``[q heads | k heads | v heads]``."""
        g0, ng = self.kv_groups[rank]
        hd, hpg = self.head_dim, self.heads_per_group
        q_rows, kv_rows = self.n_head * hd, self.n_local_heads * hd
        return [(g0 * hpg * hd, ng * hpg * hd), (q_rows + g0 * hd, ng * hd),
                (q_rows + kv_rows + g0 * hd, ng * hd)]

    def wo_columns(self, rank: int) -> Range:
        g0, ng = self.kv_groups[rank]
        width = self.heads_per_group * self.head_dim
        return g0 * width, ng * width


def plan_tp(config, world_size: int, ffn_align: int = 1) -> TPPlan:
    """How ``world_size`` ranks split a model of ``config`` (a ``ModelArgs``).

    Raises ValueError naming the head counts when the KV groups cannot give every rank one
    (more ranks than KV groups), before any weight is touched. ``ffn_align`` is the unit of
    the FFN split (the largest quantization group among the down projections)."""
    if isinstance(world_size, bool) or not isinstance(world_size, int) or world_size < 1:
        raise ValueError(f"world_size must be an integer >= 1, got {world_size!r}")
    n_head, n_kv = config.n_head, config.n_local_heads
    if world_size > n_kv:
        raise ValueError(
            f"cannot split n_head={n_head} query heads in n_local_heads={n_kv} KV groups over "
            f"{world_size} ranks: each rank needs a whole KV group (at most {n_kv} ranks)")
    return TPPlan(world_size, n_head, n_kv, config.head_dim,
                  tuple(split_evenly(n_kv, world_size)),
                  tuple(split_evenly(config.intermediate_size, world_size, ffn_align)),
                  tuple(split_evenly(config.vocab_size, world_size, 16)))


def _shard_linear(mod: nn.Module, dim: int, ranges: List[Range]) -> None:
    """Cut a linear in place: ``dim`` 0 keeps output rows, 1 input columns."""
    offsets, lengths = [o for o, _ in ranges], [n for _, n in ranges]
    total = sum(lengths)
    if getattr(mod, "bias", None) is not None:
        raise ValueError(f"tensor parallelism does not cut linears with a bias ({mod})")
    if isinstance(mod, WeightOnlyInt4Linear):
        packed, sz = ops.shard_int4(mod.weight, mod.scales_and_zeros, mod.groupsize, dim,
                                    offsets, lengths)
        mod.weight, mod.scales_and_zeros = packed, sz
    elif isinstance(mod, WeightOnlyInt8Linear):
        mod.untile_()  # cut row-major: the tiles' bytes are not rows and columns
        mod.weight = ops.shard(mod.weight, dim, offsets, lengths)
        if dim == 0:
            mod.scales = ops.shard(mod.scales, 0, offsets, lengths)
        elif mod.groupsize is not None:  # grouped scales follow their columns
            g = mod.groupsize
            if any(o % g or n % g for o, n in ranges):
                raise ValueError(f"int8 groups of {g} columns cannot be cut at {ranges}")
            mod.scales = ops.shard(mod.scales, 1, [o // g for o in offsets],
                                   [n // g for n in lengths])
        # per-channel scales cover whole rows: a column cut keeps them as they are
    elif isinstance(mod, nn.Linear):
        mod.weight = nn.Parameter(ops.shard(mod.weight.detach(), dim, offsets, lengths),
                                  requires_grad=False)
    else:
        raise TypeError(f"cannot shard a {type(mod).__name__}")
    if dim == 0:
        mod.out_features = total
    else:
        mod.in_features = total


def _column_group(mods) -> int:
    """The unit a column cut of these linears must respect: their largest quantization group
    (int4, grouped int8), 1 for float and per-channel int8 weights."""
    return max([1] + [m.groupsize or 1 for m in mods
                      if isinstance(m, (WeightOnlyInt4Linear, WeightOnlyInt8Linear))])


def apply_tp(model: Transformer, rank: int, world_size: int, group=None) -> TPPlan:
    """Keep ``rank``'s part of every layer of ``model`` (in place) and add the collectives.

    Call after loading / quantizing and before ``setup_caches``; every rank must call it with
    the same model. Returns the plan. ``group``: the process group (default: the world)."""
    if not isinstance(model, Transformer):
        raise TypeError(f"apply_tp takes a fastdecode Transformer, got {type(model).__name__}")
    if getattr(model, "tp_plan", None) is not None:
        raise ValueError("apply_tp was already applied to this model")
    downs = [layer.feed_forward.w2 for layer in model.layers]
    plan = plan_tp(model.config, world_size, ffn_align=_column_group(downs))
    if isinstance(rank, bool) or not isinstance(rank, int) or not 0 <= rank < world_size:
        raise ValueError(f"rank must be in [0, {world_size}), got {rank!r}")
    group = group if group is not None else dist.group.WORLD
    if world_size > 1:  # before any module is cut: the fused op has no collective inside
        unfuse(model, "tensor parallel: the fused op has no collective inside")
    if world_size == 1:
        model.tp_plan = plan
        return plan
    g0, ng = plan.kv_groups[rank]
    for layer in model.layers:
        att, ffn = layer.attention, layer.feed_forward
        _shard_linear(att.wqkv, 0, plan.wqkv_rows(rank))
        _shard_linear(att.wo, 1, [plan.wo_columns(rank)])
        att.n_head, att.n_local_heads = ng * plan.heads_per_group, ng
        for w in (ffn.w1, ffn.w3):
            _shard_linear(w, 0, [plan.ffn[rank]])
        _shard_linear(ffn.w2, 1, [plan.ffn[rank]])
        att.register_forward_hook(lambda _m, _i, out: funcol.all_reduce(out, "sum", group))
        ffn.register_forward_hook(lambda _m, _i, out: funcol.all_reduce(out, "sum", group))
    head = model.output  # a head tied to the embedding gets its own part (a new tensor)
    _shard_linear(head, 0, [plan.vocab[rank]])
    lengths = [n for _, n in plan.vocab]
    head.register_forward_hook(
        lambda _m, _i, out: _gather_last_dim(out, lengths, group))
    model.tp_plan = plan
    return plan


def _gather_last_dim(part: torch.Tensor, lengths: List[int], group) -> torch.Tensor:
    """Concatenate every rank's ``[..., lengths[r]]`` along the last dimension (uneven parts
    are padded to the longest for the all-gather, then trimmed)."""
    widest = max(lengths)
    padded = torch.nn.functional.pad(part, (0, widest - part.shape[-1])).contiguous()
    gathered = funcol.all_gather_tensor(padded.unsqueeze(0), 0, group)  # [R, ..., widest]
    return torch.cat([gathered[r, ..., :n] for r, n in enumerate(lengths)], dim=-1)


def allreduce_bytes_per_token(config, world_size: int, bytes_per_value: int = 4) -> dict:
    """Bytes each rank sends and receives per decoded token in a ring all-reduce of the
    layer outputs (2 per layer, ``dim`` values each) and the all-gather of the logits."""
    if world_size < 2:
        return {"allreduce": 0, "allgather": 0, "total": 0}
    ring = 2 * (world_size - 1) / world_size  # a ring all-reduce moves 2(R-1)/R of the data
    allreduce = 2 * config.n_layer * config.dim * bytes_per_value * ring
    allgather = config.vocab_size * bytes_per_value * (world_size - 1) / world_size
    return {"allreduce": int(allreduce), "allgather": int(allgather),
            "total": int(allreduce + allgather)}
