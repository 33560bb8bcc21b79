"""Fusion as an explicit step: ``fastdecode.fuse(model)`` decides once whether a model's
decode steps run the fused C++ step (``ops.decode_step``: every layer, the final norm, the
head and the greedy tokens in one call; ``ops.decode_layers``, the layers alone, for a
prompt's chunks that need no logits) or module by module, and the model says which
(``model.decode_path``, its repr).

The loader fuses what it loads, ``quantize_model`` keeps the decision it found, tensor
parallelism un-fuses (the fused op has no collective inside). A fused model watches its
modules: replacing a module, parameter or buffer under it (``model.layers[0].attention.wqkv
= ...``, ``load_state_dict(..., assign=True)``) un-fuses it with a warning; call ``fuse``
again to decide anew. Changing dtype or device (``model.to``) decides again at once. No
global ``nn.Module`` hook is involved: only the model's own module classes report edits.

A model fuses when every layer is exactly ``model.TransformerBlock`` with exactly
``Attention``, ``FeedForward`` and ``RMSNorm`` inside, and each of its five linears is of a
class that itself defines ``decode_layer_args`` (``model.Linear`` and the quantized linears:
a subclass that does not redefine it may compute something else in ``forward``) and gives
arguments (no bias, fp32 weights), with one eps and one pair of head counts throughout, on
the CPU in float32. The final norm and the output head join the call when they are
``RMSNorm`` (the layers' eps) and such a linear; otherwise they run as modules after it.
"""
from __future__ import annotations

import warnings
import weakref
from typing import List, Optional, Tuple, Union

import torch
import torch.nn as nn

from .op_args import LinearKind  # (importing op_args loads _C: torch.ops.fastdecode)

# Steps of up to this many new positions (decode, speculative verify and draft steps, short
# chunks) of a fused model run the fused C++ layers (ops.decode_layers): 32 rows is as far
# as the quantized linears take their integer GEMV; an fp32 model's fused calls take 16 (its
# dense GEMV's rows). A quantized model reads its whole prompt in such calls (2-2.6x the
# dequantise-then-GEMM module path); an fp32 model's longer prompts take the module path
# (BLAS GEMM and SDPA: as fast, and the logits of the Hugging Face parity tests).
FUSED_MAX_POSITIONS = 32
FP32_FUSED_POSITIONS = 16

__all__ = ["fuse", "unfuse", "FusedStep", "FusedHead", "FusionWatched"]

_decode_layers = torch.ops.fastdecode.decode_layers
_decode_step = torch.ops.fastdecode.decode_step

# module -> the fused models it belongs to (a draft may share layers with its target); kept
# beside the modules, so a deep copy or a pickle of a module carries none of it
_OWNERS: "weakref.WeakKeyDictionary[nn.Module, weakref.WeakSet]" = weakref.WeakKeyDictionary()


class FusionWatched:
    """Mixin for the module classes a fused step reads: a module, parameter or buffer
    assigned on one of them tells the fused models it belongs to (``Transformer._edited``).
    The KV caches, which ``setup_caches`` replaces, are read afresh every step."""

    def __setattr__(self, name, value):
        super().__setattr__(name, value)
        if name == "kv_cache" or not (name in self._modules or name in self._parameters
                                      or name in self._buffers):
            return  # a plain attribute (the RoPE tables), or the caches
        owners = _OWNERS.get(self)
        if owners:
            for model in list(owners):
                model._edited(f"{type(self).__name__}.{name}")


class FusedHead:
    """The final norm's weight and the output head's tensors, kind and groupsize, as
    ``ops.decode_step`` takes them."""

    def __init__(self, norm, tensors, kind, groupsize):
        self.norm, self.tensors, self.kind, self.groupsize = norm, tensors, kind, groupsize


class FusedStep:
    """One model's arguments of ``ops.decode_layers`` and ``ops.decode_step`` (all but x, the
    positions, the rotations and the caches, which are read from the layers at every step).
    ``head``: the final norm and output head ``decode_step`` runs after the layers, or None
    when the model's norm or head cannot join it (``head_reason`` says why): the layers run
    fused and the head module by module."""

    def __init__(self, norms, eps, weights, kinds, groupsizes, attentions, n_head, n_kv_head,
                 head: Union["FusedHead", str]):
        self.norms, self.eps = norms, eps
        self.weights, self.kinds, self.groupsizes = weights, kinds, groupsizes
        self.attentions, self.n_head, self.n_kv_head = attentions, n_head, n_kv_head
        self.head = head if isinstance(head, FusedHead) else None
        self.head_reason = head if isinstance(head, str) else None
        self._caches = (None, [], [])  # (the cache module they came from, k list, v list)
        # positions per fused call; with every linear quantized, whole prompts are read in
        # such calls too (the integer GEMV beats dequantise-then-GEMM at every prompt length
        # measured, docs/benchmarks.md)
        self.reads_prompts = all(k != LinearKind.FLOAT32 for k in kinds)
        self.positions = FUSED_MAX_POSITIONS if self.reads_prompts else FP32_FUSED_POSITIONS

    def caches(self):
        """The layers' k and v caches, re-read only when a layer's cache module is another
        one than last step (``setup_caches`` replaces them): one identity test per layer
        instead of building two lists every step."""
        modules = [a._modules["kv_cache"] for a in self.attentions]
        last = self._caches[0]
        if last is None or any(m is not c for m, c in zip(modules, last)):
            bufs = [m._buffers for m in modules]
            self._caches = (modules, [b["k_cache"] for b in bufs], [b["v_cache"] for b in bufs])
        return self._caches[1], self._caches[2]

    def run(self, x: torch.Tensor, input_pos: torch.Tensor, rope: torch.Tensor) -> torch.Tensor:
        """x ``[B, S <= 16, E]`` fp32 at ``input_pos`` -> the last layer's output. The
        registered op directly: its integer arguments were checked when the plan was built,
        and the op checks every tensor itself."""
        k_caches, v_caches = self.caches()
        return _decode_layers(x, self.norms, self.eps, self.weights, self.kinds,
                              self.groupsizes, k_caches, v_caches, input_pos, rope,
                              self.n_head, self.n_kv_head)

    def step(self, x: torch.Tensor, input_pos: torch.Tensor, rope: torch.Tensor,
             last_only: bool) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``run``, the final norm and the head in one call (``ops.decode_step``; needs
        ``self.head``) -> ``(logits [B, S', V], hidden [B, S', E], greedy tokens int32
        [B, S'], -1 where a row's logits hold NaN)``, S' = 1 with ``last_only``."""
        k_caches, v_caches = self.caches()
        head = self.head
        return _decode_step(x, self.norms, self.eps, self.weights, self.kinds, self.groupsizes,
                            k_caches, v_caches, input_pos, rope, self.n_head, self.n_kv_head,
                            head.norm, head.tensors, head.kind, head.groupsize, last_only)


def _linear_args(mod: nn.Module):
    """``([tensors], kind, groupsize)`` of a linear the fused op can read, or the reason."""
    own = type(mod).__dict__.get("decode_layer_args")
    if own is None:
        return f"{type(mod).__name__} does not define decode_layer_args"
    args = mod.decode_layer_args()
    return args if args is not None else f"{type(mod).__name__} has a bias or non-fp32 weights"


def plan(model) -> Union[FusedStep, str]:
    """The fused step of ``model`` (a ``Transformer``), or why it cannot have one."""
    from .model import Attention, FeedForward, RMSNorm, TransformerBlock

    dtype, device = model.tok_embeddings.activation_dtype, model.tok_embeddings.device
    if dtype != torch.float32 or device.type != "cpu":
        return f"activations are {dtype} on {device} (fused: float32 on the CPU)"
    norms, weights, kinds, groupsizes, attentions, shared = [], [], [], [], [], None
    for i, block in enumerate(model.layers):
        mods = block._modules
        att, ffn = mods.get("attention"), mods.get("feed_forward")
        if type(block) is not TransformerBlock or type(att) is not Attention or \
                type(ffn) is not FeedForward or type(mods.get("attention_norm")) is not RMSNorm \
                or type(mods.get("ffn_norm")) is not RMSNorm:
            return f"layer {i} is not made of fastdecode's own block modules"
        eps = mods["attention_norm"].eps
        if mods["ffn_norm"].eps != eps:
            return f"layer {i} has two norm eps"
        key = (eps, att.n_head, att.n_local_heads)
        if shared is not None and key != shared:
            return f"layer {i} differs from layer 0 in eps or head counts"
        shared = key
        for name, mod in (("wqkv", att.wqkv), ("wo", att.wo), ("w1", ffn.w1), ("w3", ffn.w3),
                          ("w2", ffn.w2)):
            args = _linear_args(mod)
            if isinstance(args, str):
                return f"layer {i} {name}: {args}"
            weights += args[0]
            kinds.append(int(args[1]))
            groupsizes.append(args[2])
        norms += [mods["attention_norm"]._parameters["weight"],
                  mods["ffn_norm"]._parameters["weight"]]
        attentions.append(att)
    if shared is None:
        return "the model has no layers"
    return FusedStep(norms, shared[0], weights, kinds, groupsizes, attentions, shared[1],
                     shared[2], _plan_head(model, shared[0]))


def _plan_head(model, eps: float) -> Union[FusedHead, str]:
    """The model's final norm and output head as ``ops.decode_step`` reads them, or why
    they cannot join it."""
    from .model import RMSNorm

    norm = model._modules.get("norm")
    if type(norm) is not RMSNorm or norm.eps != eps:
        return "the final norm is not fastdecode's RMSNorm with the layers' eps"
    args = _linear_args(model._modules.get("output"))
    if isinstance(args, str):
        return f"the output head: {args}"
    return FusedHead(norm._parameters["weight"], args[0], int(args[1]), args[2])


def _transformers(model: nn.Module) -> List[nn.Module]:
    from .model import Transformer
    return [m for m in model.modules() if isinstance(m, Transformer)]


def fuse(model: nn.Module, *, warn: bool = True) -> str:
    """Decide whether ``model``'s decode steps run fused; returns ``model.decode_path``
    ("fused" or "modules"). A codebook model (DualAR / Naive) fuses each of its transformers.
    ``warn``: say why a model that cannot fuse runs module by module."""
    paths = [_fuse_one(t, warn) for t in _transformers(model)]
    if not paths:
        raise TypeError(f"fuse takes a fastdecode Transformer (or a model made of them), got "
                        f"{type(model).__name__}")
    return "fused" if all(p == "fused" for p in paths) else "modules"


def _fuse_one(model, warn: bool) -> str:
    unfuse(model)
    step = plan(model)
    if isinstance(step, str):
        model.__dict__["_fusion_reason"] = step
        if warn:
            warnings.warn(f"this model decodes module by module: {step}", stacklevel=3)
        return "modules"
    model.__dict__["_fused"] = step
    model.__dict__["_fusion_reason"] = None
    for m in model.modules():
        _OWNERS.setdefault(m, weakref.WeakSet()).add(model)
    return "fused"


def unfuse(model: nn.Module, reason: Optional[str] = None) -> None:
    """``model`` (and the transformers inside it) decodes module by module from now on."""
    for t in _transformers(model):
        if t.__dict__.get("_fused") is None:
            continue
        t.__dict__["_fused"] = None
        t.__dict__["_fusion_reason"] = reason or "un-fused (fastdecode.unfuse)"
        for m in t.modules():
            owners = _OWNERS.get(m)
            if owners is not None:
                owners.discard(t)
