"""Hugging Face checkpoint directories (config.json + *.safetensors + tokenizer.json) for the
llama loader: config values checked by JSON type before use, q / k rows converted to the
interleaved RoPE layout."""
from __future__ import annotations

from pathlib import Path
from typing import Dict

import torch

from .model import ModelArgs
from .tokenizer import Tokenizer

__all__ = ["read_hf_dir"]


# Hugging Face config keys the llama loader reads -> the JSON type each must have: a string
# "false" is not a boolean and "abc" is not a token id (both used to load and fail later).
_HF_INT_KEYS = ("max_position_embeddings", "vocab_size", "num_hidden_layers",
                "num_attention_heads", "num_key_value_heads", "hidden_size",
                "intermediate_size", "head_dim")
_HF_NUMBER_KEYS = ("rope_theta", "rms_norm_eps")


def _check_hf_config_types(cfg: dict) -> None:
    def bad(key, want):
        raise ValueError(f"config.json: {key} must be {want}, got {cfg[key]!r}")

    for key in _HF_INT_KEYS:
        v = cfg.get(key)
        if v is not None and (isinstance(v, bool) or not isinstance(v, int)):
            bad(key, "an integer")
    for key in _HF_NUMBER_KEYS:
        v = cfg.get(key)
        if v is not None and (isinstance(v, bool) or not isinstance(v, (int, float))):
            bad(key, "a number")
    if "tie_word_embeddings" in cfg and not isinstance(cfg["tie_word_embeddings"], bool):
        bad("tie_word_embeddings", "true or false")
    for key in ("eos_token_id", "bos_token_id"):
        v = cfg.get(key)
        ids = v if isinstance(v, list) else [v]
        if v is not None and not all(isinstance(i, int) and not isinstance(i, bool) and
                                     0 <= i < 2 ** 63 for i in ids):
            bad(key, "a token id or a list of token ids")


def _args_from_hf_config(cfg: dict) -> ModelArgs:
    if cfg.get("model_type", "llama") not in ("llama", "mistral", "qwen2"):
        raise ValueError(f"unsupported Hugging Face model_type {cfg.get('model_type')!r}")
    _check_hf_config_types(cfg)
    rope = cfg.get("rope_parameters") or cfg.get("rope_scaling") or {}
    if not isinstance(rope, dict):
        raise ValueError(f"config.json: rope_scaling must be an object, got {rope!r}")
    if rope.get("rope_type", "default") not in ("default", None):
        raise ValueError(f"unsupported rope scaling {rope!r}: fastdecode implements plain RoPE")
    for key in ("num_attention_heads", "vocab_size", "num_hidden_layers", "hidden_size",
                "intermediate_size"):
        if key not in cfg:
            raise ValueError(f"config.json: {key} is missing")
    n_head = cfg["num_attention_heads"]
    return ModelArgs(
        block_size=cfg.get("max_position_embeddings", 2048),
        vocab_size=cfg["vocab_size"],
        n_layer=cfg["num_hidden_layers"],
        n_head=n_head,
        n_local_heads=cfg.get("num_key_value_heads", n_head),
        dim=cfg["hidden_size"],
        intermediate_size=cfg["intermediate_size"],
        head_dim=cfg.get("head_dim"),  # None: dim // n_head, once n_head is checked
        rope_base=float(cfg.get("rope_theta", rope.get("rope_theta", 10000.0))),
        norm_eps=cfg.get("rms_norm_eps", 1e-5),
        tie_embeddings=cfg.get("tie_word_embeddings", False),
    )


def _hf_to_interleaved(w: torch.Tensor, n_heads: int) -> torch.Tensor:
    """Hugging Face q/k rows [real half | imag half] per head -> interleaved (re, im) pairs."""
    out_dim, in_dim = w.shape
    head_dim = out_dim // n_heads
    return w.view(n_heads, 2, head_dim // 2, in_dim).transpose(1, 2).reshape(out_dim, in_dim)


def read_hf_dir(path: Path, cfg: dict):
    """``(ModelArgs, state dict in our names and RoPE layout, Tokenizer)`` of a Hugging Face
    directory whose ``config.json`` parsed to ``cfg``; the caller builds the model."""
    from safetensors.torch import load_file

    args = _args_from_hf_config(cfg)
    eos = cfg.get("eos_token_id")
    eos = (eos[0] if eos else None) if isinstance(eos, list) else eos
    for key, value in (("eos_token_id", eos), ("bos_token_id", cfg.get("bos_token_id"))):
        if value is not None and value >= args.vocab_size:
            raise ValueError(f"config.json: {key} {value} is not below vocab_size "
                             f"({args.vocab_size})")
    files = sorted(path.glob("*.safetensors"))
    if not files:
        raise FileNotFoundError(f"{path}: no *.safetensors files (pickled .bin weights are "
                                "not loaded; convert them to safetensors)")
    raw: Dict[str, torch.Tensor] = {}
    for f in files:
        raw.update(load_file(str(f)))
    raw = {k.removeprefix("model."): v for k, v in raw.items()}
    sd = {"tok_embeddings.weight": raw.pop("embed_tokens.weight"),
          "norm.weight": raw.pop("norm.weight")}
    if "lm_head.weight" in raw:
        sd["output.weight"] = raw.pop("lm_head.weight")
    for i in range(args.n_layer):
        p = f"layers.{i}."
        q = _hf_to_interleaved(raw.pop(p + "self_attn.q_proj.weight"), args.n_head)
        k = _hf_to_interleaved(raw.pop(p + "self_attn.k_proj.weight"), args.n_local_heads)
        v = raw.pop(p + "self_attn.v_proj.weight")
        sd[p + "attention.wqkv.weight"] = torch.cat([q, k, v])
        sd[p + "attention.wo.weight"] = raw.pop(p + "self_attn.o_proj.weight")
        sd[p + "feed_forward.w1.weight"] = raw.pop(p + "mlp.gate_proj.weight")
        sd[p + "feed_forward.w3.weight"] = raw.pop(p + "mlp.up_proj.weight")
        sd[p + "feed_forward.w2.weight"] = raw.pop(p + "mlp.down_proj.weight")
        sd[p + "attention_norm.weight"] = raw.pop(p + "input_layernorm.weight")
        sd[p + "ffn_norm.weight"] = raw.pop(p + "post_attention_layernorm.weight")
    if "output.weight" not in sd:
        args.tie_embeddings = True
    leftover = [k for k in raw if "rotary_emb" not in k]
    if leftover:
        raise ValueError(f"{path}: tensors not understood by the llama loader: {leftover[:5]}")
    tok_file = path / "tokenizer.json"
    if not tok_file.is_file():
        raise FileNotFoundError(f"{path}: tokenizer.json is missing")
    tokenizer = Tokenizer.from_file(str(tok_file), bos_id=cfg.get("bos_token_id"), eos_id=eos)
    return args, sd, tokenizer
