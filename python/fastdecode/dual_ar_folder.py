"""fish-speech's codebook-model folders: ``config.json`` (``BaseModelArgs``) and ``model.pth``
(a plain state dict under fish-speech's parameter names), read and written. Loading checks
the layer counts, then every tensor's name, type and shape against the model built on the
meta device, before any weight memory is taken; errors name the file."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Dict, Union

import torch

from .dual_ar import (BaseModelArgs, CodebookModel, DualARModelArgs, DualARTransformer,
                      NaiveTransformer)
from .fusion import fuse

__all__ = ["load_codebook_model", "save_pretrained", "is_codebook_checkpoint",
           "fish_state_dict"]


# fish-speech parameter name prefix -> ours (the layers keep gpt-fast's names on both sides)
_FISH_PREFIXES = (("embeddings.", "slow.tok_embeddings."), ("layers.", "slow.layers."),
                  ("norm.", "slow.norm."), ("output.", "slow.output."),
                  ("fast_embeddings.", "fast.tok_embeddings."),
                  ("fast_layers.", "fast.layers."), ("fast_norm.", "fast.norm."),
                  ("fast_output.", "fast.output."))


def _to_ours(name: str) -> str:
    for fish, ours in _FISH_PREFIXES:
        if name.startswith(fish):
            return ours + name[len(fish):]
    return name


def _to_fish(name: str) -> str:
    for fish, ours in _FISH_PREFIXES:
        if name.startswith(ours):
            return fish + name[len(ours):]
    return name


def fish_state_dict(model: CodebookModel) -> Dict[str, torch.Tensor]:
    """The weights under fish-speech's names (a tied head is left out, as fish-speech does)."""
    out = {}
    for name, tensor in model.state_dict().items():
        if ".kv_cache." in name or (name == "slow.output.weight" and
                                    model.config.tie_word_embeddings):
            continue
        out[_to_fish(name)] = tensor
    return out


def save_pretrained(model: CodebookModel, path: Union[str, Path]) -> Path:
    """A fish-speech folder: ``config.json`` and ``model.pth`` (a plain state dict)."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    model.config.save(path / "config.json")
    torch.save(fish_state_dict(model), path / "model.pth")
    return path


def is_codebook_checkpoint(path: Union[str, Path]) -> bool:
    """True for a folder whose ``config.json`` names a codebook ``model_type``."""
    file = Path(path) / "config.json"
    if not file.is_file():
        return False
    try:
        return json.loads(file.read_text()).get("model_type") in ("dual_ar", "naive")
    except (ValueError, AttributeError):
        return False


def load_codebook_model(path: Union[str, Path]) -> CodebookModel:
    """A fish-speech folder -> ``DualARTransformer`` / ``NaiveTransformer`` (eval mode):
    ``config.json`` (``BaseModelArgs.from_pretrained``) and ``model.pth`` read with
    ``weights_only=True``. Errors name the file."""
    path = Path(path)
    config = BaseModelArgs.from_pretrained(path)
    weights = path / "model.pth"
    if not weights.is_file():
        raise FileNotFoundError(f"{weights} is missing")
    try:
        state = torch.load(str(weights), map_location="cpu", weights_only=True, mmap=True)
    except Exception as e:  # a pickle with code, a truncated file: name the file
        raise ValueError(f"{weights}: cannot read the weights ({type(e).__name__}: {e})") \
            from None
    if not isinstance(state, dict):
        raise ValueError(f"{weights}: expected a state dict, got {type(state).__name__}")
    model = _load_weights(config, state, weights).eval()
    fuse(model, warn=False)  # its slow and fast transformers
    return model


def _load_weights(config: BaseModelArgs, state: dict, weights: Path) -> CodebookModel:
    """The model built on the meta device (nothing allocated), every tensor of ``state``
    checked against the parameter it fills (name, type, shape), then assigned in the
    parameter's dtype. A config whose sizes do not match the file (fish-speech's defaults
    next to a small model) is refused before any memory is taken."""
    from .model import empty_weights

    state = {_to_ours(k.removeprefix("model.")) if isinstance(k, str) else k: v
             for k, v in state.items()}
    # layer counts against the file before a module exists: a count of 10^9 would build
    # modules (even on the meta device) for hours
    counts = [("slow.layers.", "n_layer", config.n_layer)]
    if isinstance(config, DualARModelArgs):
        counts.append(("fast.layers.", "n_fast_layer", config.n_fast_layer))
    for prefix, field, count in counts:
        found = {k[len(prefix):].split(".", 1)[0] for k in state
                 if isinstance(k, str) and k.startswith(prefix)}
        if len(found) != count or found != {str(i) for i in range(count)}:
            raise ValueError(f"{weights}: the config's {field} is {count}, the file holds "
                             f"{len(found)} such layers")
    try:
        with empty_weights():  # meta tensors: sizes, no memory
            model = (DualARTransformer if config.model_type == "dual_ar" else
                     NaiveTransformer)(config)
    except (TypeError, RuntimeError, OverflowError) as e:  # a product of sizes past int64
        raise ValueError(f"{weights.parent / 'config.json'}: the model's sizes cannot be "
                         f"built ({type(e).__name__}: {str(e).splitlines()[0][:200]})") \
            from None
    if config.tie_word_embeddings and "slow.tok_embeddings.weight" in state:
        state["slow.output.weight"] = state["slow.tok_embeddings.weight"]
    params = dict(model.named_parameters(remove_duplicate=False))  # a tied head too
    missing = sorted(set(params) - set(state))
    unknown = sorted(str(k) for k in set(state) - set(params))
    if missing or unknown:
        raise ValueError(f"{weights}: tensors missing {missing[:5]}, not understood "
                         f"{unknown[:5]}")
    for name, param in params.items():
        value = state[name]
        if not isinstance(value, torch.Tensor):
            raise ValueError(f"{weights}: {name} must be a tensor, got "
                             f"{type(value).__name__}")
        if tuple(value.shape) != tuple(param.shape):
            raise ValueError(f"{weights}: {name} has shape {tuple(value.shape)}, the config "
                             f"({weights.parent / 'config.json'}) makes it "
                             f"{tuple(param.shape)}")
        if not value.is_floating_point():
            raise ValueError(f"{weights}: {name} must be a floating tensor, got {value.dtype}")
        state[name] = value.to(param.dtype)
    model.load_state_dict(state, strict=True, assign=True)
    if config.tie_word_embeddings:
        model.slow.output.weight = model.slow.tok_embeddings.weight
    return model
