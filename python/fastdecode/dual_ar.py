"""fish-speech's codebook models: ``DualARTransformer`` and ``NaiveTransformer`` (seed 002).

A step of a codebook model reads ``1 + num_codebooks`` rows per position: a text / semantic
token in row 0 and one code per codebook below it. Where row 0 holds a semantic token
(``semantic_begin_id <= id <= semantic_end_id``) the codes' embeddings are added to the
token's embedding (``codebook_embeddings`` holds ``num_codebooks`` tables of
``codebook_size`` rows, stacked).

- ``DualARTransformer``: the slow transformer over time gives the next token's logits and
  its last hidden state; a fast transformer then steps over the codebooks of that one
  position (its own KV cache of ``num_codebooks`` positions): position 0 is the projected
  hidden state, position i the embedding of code i - 1, each giving the next code's logits.
- ``NaiveTransformer``: the slow transformer plus one head for all codebooks at once.

Both are built from ``fastdecode.model.Transformer`` stacks, so every one-position step
(the slow one and each fast one) runs the fused C++ decode step (``ops.decode_layers``),
``quantize_model`` quantizes their linears and the sampler is ``fastdecode.sample``.
Parameter names, ``config.json`` fields and ``model.pth`` are fish-speech's
(``dual_ar_folder``: ``load_codebook_model`` / ``save_pretrained``).
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from types import SimpleNamespace
from typing import Optional, Union

import torch
import torch.nn as nn

from .config import check_size, complete_sizes, find_multiple
from .model import Embedding, Linear, ModelArgs, RMSNorm, Transformer
from .validation import check_config_types

__all__ = ["BaseModelArgs", "NaiveModelArgs", "DualARModelArgs", "CodebookModel",
           "NaiveTransformer", "DualARTransformer", "CODEBOOK_PAD_TOKEN_ID"]

CODEBOOK_PAD_TOKEN_ID = 0  # the code written where row 0 is not a semantic token


@dataclass
class BaseModelArgs:
    """fish-speech's model config (field names and defaults of its ``BaseModelArgs``)."""
    model_type: str = "base"
    vocab_size: int = 32000
    n_layer: int = 32
    n_head: int = 32
    dim: int = 4096
    intermediate_size: Optional[int] = None
    n_local_heads: int = -1
    head_dim: int = 64
    rope_base: float = 10000
    norm_eps: float = 1e-5
    max_seq_len: int = 2048
    dropout: float = 0.0
    tie_word_embeddings: bool = True
    attention_qkv_bias: bool = False
    attention_o_bias: bool = False
    attention_qk_norm: bool = False
    codebook_size: int = 160
    num_codebooks: int = 4
    semantic_begin_id: int = 0
    semantic_end_id: int = 0
    use_gradient_checkpointing: bool = True
    initializer_range: float = 0.02
    is_reward_model: bool = False
    scale_codebook_embeddings: bool = False

    def __post_init__(self):
        # every size named as the config names it, before a module is sized from it
        complete_sizes(self, ("vocab_size", "n_layer", "n_head", "dim", "max_seq_len"),
                       ("codebook_size", "num_codebooks"))
        for name in ("attention_qkv_bias", "attention_o_bias", "attention_qk_norm",
                     "is_reward_model"):
            if getattr(self, name):
                raise ValueError(f"model config: {name}=True is not supported by fastdecode's "
                                 "codebook models (bias-free, no q/k norm, no reward head)")
        if not 0 <= self.semantic_begin_id <= self.semantic_end_id < self.vocab_size:
            raise ValueError(
                f"model config: need 0 <= semantic_begin_id ({self.semantic_begin_id}) <= "
                f"semantic_end_id ({self.semantic_end_id}) < vocab_size ({self.vocab_size})")

    def semantic_ids(self) -> list:
        """The semantic token ids, ``semantic_begin_id .. semantic_end_id``."""
        return list(range(self.semantic_begin_id, self.semantic_end_id + 1))

    def slow_args(self) -> ModelArgs:
        return ModelArgs(block_size=self.max_seq_len, vocab_size=self.vocab_size,
                         n_layer=self.n_layer, n_head=self.n_head, dim=self.dim,
                         intermediate_size=self.intermediate_size,
                         n_local_heads=self.n_local_heads, head_dim=self.head_dim,
                         rope_base=float(self.rope_base), norm_eps=self.norm_eps,
                         tie_embeddings=self.tie_word_embeddings)

    def save(self, path: Union[str, Path]) -> None:
        """Write the config as fish-speech's ``config.json`` (a file or into a directory)."""
        path = Path(path)
        if path.is_dir():
            path = path / "config.json"
        path.write_text(json.dumps(asdict(self), indent=2, sort_keys=True) + "\n")

    @staticmethod
    def from_pretrained(path: Union[str, Path]) -> "BaseModelArgs":
        """The config of a fish-speech folder (or its ``config.json``); ``model_type`` picks
        ``DualARModelArgs`` ("dual_ar") or ``NaiveModelArgs`` ("naive")."""
        from .checkpoint import read_json_file

        path = Path(path)
        file = path / "config.json" if path.is_dir() else path
        data = read_json_file(file)
        kinds = {"dual_ar": DualARModelArgs, "naive": NaiveModelArgs}
        model_type = data.get("model_type")
        cls = kinds.get(model_type) if isinstance(model_type, str) else None
        if cls is None:
            raise ValueError(f"{file}: model_type must be one of {sorted(kinds)}, got "
                             f"{data.get('model_type')!r}")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"{file}: unknown config field(s) {unknown}")
        check_config_types(file, cls, data)
        try:
            config = cls(**data)
            config.slow_args()  # the transformers' own checks (rope_base, head counts, ...)
            if isinstance(config, DualARModelArgs):
                config.fast_args()
            return config
        except (TypeError, ValueError) as e:
            raise ValueError(f"{file}: {e}") from None


@dataclass
class NaiveModelArgs(BaseModelArgs):
    model_type: str = "naive"


@dataclass
class DualARModelArgs(BaseModelArgs):
    """fast_* default to the slow transformer's values, as in fish-speech."""
    model_type: str = "dual_ar"
    n_fast_layer: int = 4
    fast_dim: Optional[int] = None
    fast_n_head: Optional[int] = None
    fast_n_local_heads: Optional[int] = None
    fast_head_dim: Optional[int] = None
    fast_intermediate_size: Optional[int] = None
    fast_attention_qkv_bias: Optional[bool] = None
    fast_attention_qk_norm: Optional[bool] = None
    fast_attention_o_bias: Optional[bool] = None

    def __post_init__(self):
        super().__post_init__()
        check_size("n_fast_layer", self.n_fast_layer)
        for name in ("fast_dim", "fast_n_head", "fast_n_local_heads", "fast_head_dim",
                     "fast_intermediate_size"):
            if getattr(self, name) is not None:
                check_size(name, getattr(self, name))
        self.fast_dim = self.fast_dim or self.dim
        self.fast_n_head = self.fast_n_head or self.n_head
        self.fast_n_local_heads = self.fast_n_local_heads or self.n_local_heads
        self.fast_head_dim = self.fast_head_dim or self.head_dim
        self.fast_intermediate_size = self.fast_intermediate_size or self.intermediate_size
        for name in ("qkv_bias", "qk_norm", "o_bias"):
            if getattr(self, f"fast_attention_{name}") is None:
                setattr(self, f"fast_attention_{name}", getattr(self, f"attention_{name}"))
            if getattr(self, f"fast_attention_{name}"):
                raise ValueError(f"model config: fast_attention_{name}=True is not supported")
        self.check_first_code()

    def check_first_code(self) -> None:
        """decode_one_token_ar derives code 0 from the semantic token (id - begin): the
        semantic range must fit in one codebook."""
        if self.semantic_end_id - self.semantic_begin_id >= self.codebook_size:
            raise ValueError(
                f"model config: the semantic ids [{self.semantic_begin_id}, "
                f"{self.semantic_end_id}] are more than codebook_size ({self.codebook_size})")

    def fast_args(self) -> ModelArgs:
        """The fast transformer: a sequence of num_codebooks positions over the codes."""
        return ModelArgs(block_size=self.num_codebooks, vocab_size=self.codebook_size,
                         n_layer=self.n_fast_layer, n_head=self.fast_n_head, dim=self.fast_dim,
                         intermediate_size=self.fast_intermediate_size,
                         n_local_heads=self.fast_n_local_heads, head_dim=self.fast_head_dim,
                         rope_base=float(self.rope_base), norm_eps=self.norm_eps)


class CodebookModel(nn.Module):
    """What both codebook models share: the slow transformer and the codebook embeddings."""

    def __init__(self, config: BaseModelArgs):
        super().__init__()
        self.config = config
        self.slow = Transformer(config.slow_args())
        self.codebook_embeddings = Embedding(config.codebook_size * config.num_codebooks,
                                             config.dim)

    # fish-speech's attribute names for the slow transformer's parts
    @property
    def embeddings(self) -> nn.Embedding:
        return self.slow.tok_embeddings

    @property
    def layers(self) -> nn.ModuleList:
        return self.slow.layers

    @property
    def norm(self) -> RMSNorm:
        return self.slow.norm

    @property
    def max_seq_len(self) -> int:
        return self.slow.max_seq_length

    def setup_caches(self, max_batch_size: int, max_seq_len: int,
                     dtype: Optional[torch.dtype] = None) -> None:
        """KV caches for ``max_batch_size`` rows of ``max_seq_len`` positions (rounded up to
        a multiple of 8, as fish-speech does). The caches take the model's activation dtype:
        ``dtype`` may name it, any other dtype is refused (fish-speech's default, bfloat16,
        is not the CPU models' float32)."""
        act = self.slow.tok_embeddings.activation_dtype
        if dtype is not None and dtype != act:
            raise ValueError(f"setup_caches: dtype {dtype} differs from the model's activation "
                             f"dtype {act}; convert the model with .to({dtype}) instead")
        if isinstance(max_seq_len, bool) or not isinstance(max_seq_len, int) or \
                not 1 <= max_seq_len <= self.config.max_seq_len:
            raise ValueError(f"setup_caches: max_seq_len must be in [1, {self.config.max_seq_len}]"
                             f" (the config's max_seq_len), got {max_seq_len!r}")
        self.slow.setup_caches(max_batch_size, min(find_multiple(max_seq_len, 8),
                                                   self.config.max_seq_len))

    def check_input(self, inp: torch.Tensor, name: str = "x") -> None:
        """``inp [B, 1 + num_codebooks, S]`` of token ids and codes in range, or ValueError."""
        rows = self.config.num_codebooks + 1
        if not isinstance(inp, torch.Tensor) or inp.dim() != 3 or inp.shape[1] != rows or \
                inp.shape[2] < 1 or inp.dtype.is_floating_point or inp.dtype == torch.bool:
            raise ValueError(f"{name} must be an integer tensor [B, num_codebooks + 1 = {rows}, "
                             f"S >= 1], got {getattr(inp, 'shape', inp)!r} "
                             f"{getattr(inp, 'dtype', '')}")
        if inp.numel() == 0:
            return
        tokens, codes = inp[:, 0], inp[:, 1:]
        if int(tokens.min()) < 0 or int(tokens.max()) >= self.config.vocab_size:
            raise ValueError(f"{name}: token ids (row 0) must be in [0, "
                             f"{self.config.vocab_size})")
        if int(codes.min()) < 0 or int(codes.max()) >= self.config.codebook_size:
            raise ValueError(f"{name}: codes (rows 1..{rows - 1}) must be in [0, "
                             f"{self.config.codebook_size}) (codebook_size)")

    def embed(self, inp: torch.Tensor) -> torch.Tensor:
        """``inp [B, 1 + C, S]`` -> ``[B, S, dim]``: token embedding plus, where row 0 is a
        semantic token, the sum of the codes' embeddings."""
        c = self.config
        offsets = torch.arange(c.num_codebooks, device=inp.device).view(1, -1, 1) * \
            c.codebook_size
        codes = self.codebook_embeddings(inp[:, 1:].long() + offsets).sum(1)  # [B, S, dim]
        tokens = inp[:, 0].long()
        semantic = (tokens >= c.semantic_begin_id) & (tokens <= c.semantic_end_id)
        x = self.slow.tok_embeddings(tokens) + codes * semantic.unsqueeze(-1).to(codes.dtype)
        if c.scale_codebook_embeddings:
            x = torch.where(semantic.unsqueeze(-1), x / (c.num_codebooks + 1) ** 0.5, x)
        return x

    def _slow_step(self, inp: torch.Tensor, input_pos: Optional[torch.Tensor]):
        if input_pos is None:
            input_pos = torch.arange(inp.shape[-1], device=inp.device)
        return self.slow.forward_embeddings(self.embed(inp), input_pos, last_only=True)


class NaiveTransformer(CodebookModel):
    """The slow transformer with one head for every codebook (fish-speech's layout)."""

    def __init__(self, config: NaiveModelArgs):
        super().__init__(config)
        self.codebook_norm = RMSNorm(config.dim, config.norm_eps)
        self.codebook_output = Linear(config.dim, config.codebook_size * config.num_codebooks,
                                      bias=False)

    def forward_generate(self, inp: torch.Tensor, input_pos: Optional[torch.Tensor] = None):
        """``inp [B, 1 + C, S]`` at ``input_pos [S]`` -> ``.token_logits [B, 1, V]`` and
        ``.codebook_logits [B, 1, C, codebook_size]`` of the last position."""
        logits, hidden = self._slow_step(inp, input_pos)
        codebook = self.codebook_output(self.codebook_norm(hidden))
        codebook = codebook.view(*codebook.shape[:2], self.config.num_codebooks, -1)
        return SimpleNamespace(token_logits=logits, logits=logits, codebook_logits=codebook,
                               hidden_states=hidden)


class DualARTransformer(CodebookModel):
    """The slow transformer over time and the fast one over each position's codebooks."""

    def __init__(self, config: DualARModelArgs):
        super().__init__(config)
        self.fast = Transformer(config.fast_args())
        self.fast_project_in = (Linear(config.dim, config.fast_dim, bias=True)
                                if config.fast_dim != config.dim else nn.Identity())

    @property
    def fast_layers(self) -> nn.ModuleList:
        return self.fast.layers

    @property
    def fast_embeddings(self) -> nn.Embedding:
        return self.fast.tok_embeddings

    @property
    def fast_norm(self) -> RMSNorm:
        return self.fast.norm

    @property
    def fast_output(self) -> nn.Linear:
        return self.fast.output

    def setup_caches(self, max_batch_size: int, max_seq_len: int,
                     dtype: Optional[torch.dtype] = None) -> None:
        super().setup_caches(max_batch_size, max_seq_len, dtype)
        self.fast.setup_caches(max_batch_size, self.config.num_codebooks)

    def forward_generate(self, inp: torch.Tensor, input_pos: Optional[torch.Tensor] = None):
        """``inp [B, 1 + C, S]`` at ``input_pos [S]`` -> ``.logits [B, 1, V]`` (next token)
        and ``.hidden_states [B, 1, fast_dim]`` (the last position's state, projected for
        the fast transformer)."""
        logits, hidden = self._slow_step(inp, input_pos)
        return SimpleNamespace(logits=logits, token_logits=logits,
                               hidden_states=self.fast_project_in(hidden))

    def forward_generate_fast(self, x: torch.Tensor,
                              input_pos: Optional[torch.Tensor] = None) -> torch.Tensor:
        """One fast step: ``x [B, fast_dim]`` (or ``[B, 1, fast_dim]``) at codebook position
        ``input_pos [1]`` -> the next code's logits ``[B, 1, codebook_size]``."""
        if input_pos is None:
            input_pos = torch.zeros(1, dtype=torch.long, device=x.device)
        return self.fast.forward_embeddings(x.reshape(x.shape[0], 1, -1), input_pos)[0]
