"""``ModelArgs``: the Llama-family model config (gpt-fast's field names), every field checked
before it sizes anything (a config comes from a file)."""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Optional

__all__ = ["ModelArgs", "find_multiple", "check_size", "complete_sizes", "MAX_CONFIG_SIZE"]


# Above this a size is no model's (and products of sizes would pass int64)
MAX_CONFIG_SIZE = 2 ** 40


def complete_sizes(config, given, more=()) -> None:
    """Check the sizes named in ``given``, fill the derived defaults of a Llama-style config
    (``n_local_heads`` -1 = ``n_head``; ``intermediate_size`` from ``dim``; ``head_dim`` =
    ``dim // n_head``), then check those and the sizes named in ``more``. Errors name each
    field as the config names it."""
    for name in given:
        check_size(name, getattr(config, name))
    if config.n_local_heads == -1:
        config.n_local_heads = config.n_head
    if config.intermediate_size is None:
        config.intermediate_size = find_multiple(int(2 * (4 * config.dim) / 3), 256)
    if config.head_dim is None:
        config.head_dim = config.dim // config.n_head
    for name in ("n_local_heads", "intermediate_size", "head_dim", *more):
        check_size(name, getattr(config, name))


def check_size(name: str, value) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"model config: {name} must be an integer >= 1, got {value!r}")
    if value > MAX_CONFIG_SIZE:
        raise ValueError(f"model config: {name} must be at most 2^40, got {value!r}")


def find_multiple(n: int, k: int) -> int:
    return n if n % k == 0 else n + k - (n % k)


@dataclass
class ModelArgs:
    block_size: int = 2048           # longest sequence the model supports (cache cap)
    vocab_size: int = 32000
    n_layer: int = 32
    n_head: int = 32
    dim: int = 4096
    intermediate_size: Optional[int] = None
    n_local_heads: int = -1          # key/value heads; -1 = n_head (no GQA)
    head_dim: Optional[int] = None
    rope_base: float = 10000.0
    norm_eps: float = 1e-5
    tie_embeddings: bool = False     # output head shares tok_embeddings.weight

    def __post_init__(self):
        # a config comes from a file: every field is checked before it sizes anything
        complete_sizes(self, ("block_size", "vocab_size", "n_layer", "n_head", "dim"))
        if self.head_dim % 2:
            raise ValueError(f"head_dim must be even (RoPE rotates pairs), got {self.head_dim}")
        for name in ("rope_base", "norm_eps"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0 < v < float("inf"):
                raise ValueError(f"{name} must be a finite number > 0, got {v!r}")
        if self.n_head % self.n_local_heads:
            raise ValueError(f"n_head ({self.n_head}) must be a multiple of n_local_heads "
                             f"({self.n_local_heads})")

    def to_dict(self) -> dict:
        return asdict(self)
