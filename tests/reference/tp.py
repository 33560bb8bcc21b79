"""Oracles for tensor-parallel sharding, written from seed 004's recipe (gpt-fast's
``_apply_tp_linear``: ``tensor_split`` of each q / k / v segment, colwise = output rows,
rowwise = input columns) generalised to uneven parts that follow KV groups. Row lists are
built head by head, independently of ``fastdecode.tp``'s range arithmetic."""
import torch


def shard_ref(t: torch.Tensor, dim: int, ranges):
    """The slices [offset, offset + length) of dimension ``dim``, concatenated."""
    return torch.cat([t.narrow(dim, o, n) for o, n in ranges], dim)


def wqkv_rows_ref(n_head: int, n_kv: int, head_dim: int, groups):
    """Row indices of the fused wqkv [q heads | k heads | v heads] that a rank holding KV
    ``groups`` keeps: its groups' query heads, then their key heads, then value heads."""
    per_group = n_head // n_kv
    q = [h for g in groups for h in range(g * per_group, (g + 1) * per_group)]
    rows = [h * head_dim + d for h in q for d in range(head_dim)]
    rows += [(n_head + g) * head_dim + d for g in groups for d in range(head_dim)]
    rows += [(n_head + n_kv + g) * head_dim + d for g in groups for d in range(head_dim)]
    return rows
