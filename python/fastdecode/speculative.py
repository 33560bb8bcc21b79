"""Batched speculative decoding: a cheap draft proposes ``k`` tokens, the target checks all of
them in one forward pass, and ``ops.speculative_accept`` keeps a prefix so that the output is
distributed exactly as sampling from the target alone (greedy: identical tokens).

Shapes: B rows, k draft tokens per round, V vocabulary. Row b holds ``n[b]`` tokens (prompt
and output so far); its last token ``cur`` is not yet in either KV cache. Each round:

1. the draft decodes k tokens from ``cur`` at per-row positions ``n - 1 ...``;
2. the target runs ``[cur, d_1 .. d_k]`` at positions ``n - 1 .. n - 1 + k`` (``[B, k + 1]``);
3. row b keeps ``a_b`` drafts plus one target token and advances by ``a_b + 1``.

Cache entries written past a row's new length are stale but harmless: the next round writes
every position it attends to before attending. A draft that accepted all k never saw ``d_k``;
the next round's first draft step then feeds ``[prev, cur]`` (two positions) to fill it in.
Drafts that share layers with the target (``draft is model``, ``early_exit_draft``) share
their KV caches too, and the target's pass fills them.
"""
from __future__ import annotations

import copy
from typing import Callable, List, Optional, Tuple

import torch

from . import ops
from .cancel import check_cancelled
from .fusion import fuse
from .model import LayerList, ModelArgs, Transformer, empty_weights
from .sampling import sample

__all__ = ["early_exit_draft", "quantized_draft", "shares_caches", "speculative_decode_rows"]


def early_exit_draft(model: Transformer, n_layers: int) -> Transformer:
    """The target's first ``n_layers`` blocks, then its final norm and head (all shared, no
    copies): a draft that costs ``n_layers / n_layer`` of a target step and needs no weights
    of its own. Its KV caches are the target's for those layers."""
    total = model.config.n_layer
    if isinstance(n_layers, bool) or not isinstance(n_layers, int) or not 1 <= n_layers <= total:
        raise ValueError(f"n_layers must be an integer in [1, {total}] (the target's layers), "
                         f"got {n_layers!r}")
    config = ModelArgs(**{**model.config.to_dict(), "n_layer": n_layers})
    with empty_weights():  # modules replaced below: allocate nothing
        draft = Transformer(config)
    draft.tok_embeddings = model.tok_embeddings
    draft.layers = LayerList(model.layers[:n_layers])
    draft.norm = model.norm
    draft.output = model.output
    if model.decode_path == "fused":  # the target's decision holds for its first layers
        fuse(draft)
    return draft.eval()


def quantized_draft(model: Transformer, mode: str, groupsize: int = 32) -> Transformer:
    """A weight-only int8/int4 copy of ``model`` (``quantize_model`` on a deep copy)."""
    from .quantize import quantize_model

    caches = [layer.attention.kv_cache for layer in model.layers]
    for layer in model.layers:  # the copy gets its own caches in setup_caches
        layer.attention.kv_cache = None
    try:
        draft = copy.deepcopy(model)
    finally:
        for layer, cache in zip(model.layers, caches):
            layer.attention.kv_cache = cache
    draft.max_seq_length = draft.max_batch_size = -1
    draft.freqs_cis = None
    return quantize_model(draft, mode, groupsize).eval()


def shares_caches(draft: Transformer, model: Transformer) -> bool:
    """True when the draft's layers are the target's (their KV caches are the same objects)."""
    return draft is model or (len(draft.layers) > 0 and draft.layers[0] is model.layers[0])


def _per_position(knobs: dict, k1: int) -> dict:
    """Per-row knob tensors [B] repeated for the k + 1 target positions of each row."""
    return {name: v.repeat_interleave(k1) if isinstance(v, torch.Tensor) and v.dim() == 1 else v
            for name, v in knobs.items()}


def speculative_decode_rows(model: Transformer, draft_model: Transformer, seq: torch.Tensor,
                            prompt_len: int, speculate_k: int, callback: Callable,
                            stop_ids: Optional[torch.Tensor], pad_id: int,
                            sampling_kwargs: dict, *,
                            stop_rows: Optional[Callable] = None,
                            done: Optional[List[bool]] = None) -> Tuple[List[int], int]:
    """Fill ``seq [B, T_new]`` after column ``prompt_len`` (which holds the first new token,
    already drawn by the target's prefill; both models are prefilled) by speculative rounds.

    ``callback`` gets each output column ``[B, 1]`` once every row has produced it, so it is
    called once per new token exactly as in plain decoding; ``stop_rows`` (see
    ``generate.decode``) is asked after each column and ends the rows it names there.
    ``done[b]``: row b already ended at its first token. Returns ``(accept_counts, columns)``:
    ``accept_counts[a]`` = number of (row, round) pairs that accepted ``a`` draft tokens;
    ``columns``: new-token columns holding some row's output.
    """
    bsz, t_new = seq.shape
    k = speculate_k
    device = seq.device
    generator = sampling_kwargs.get("generator")
    knobs = {n: v for n, v in sampling_kwargs.items() if n not in ("generator",
                                                                    "repetition_penalty")}
    draft_kwargs = {**knobs, "generator": generator}
    target_knobs = _per_position(knobs, k + 1)
    shared = shares_caches(draft_model, model)
    accept_counts = [0] * (k + 1)
    lengths = [prompt_len + 1] * bsz   # tokens in each row so far
    done = list(done) if done is not None else [False] * bsz
    stops = set(stop_ids.tolist()) if stop_ids is not None else set()
    for b in range(bsz):
        if done[b]:
            seq[b, prompt_len + 1:] = pad_id
    done = [d or n >= t_new for d, n in zip(done, lengths)]
    emitted = prompt_len + 1           # columns already passed to the callback
    need_prev = False                  # some row's draft cache lacks its previous token
    offsets = torch.arange(k + 1, device=device)
    while not all(done):
        check_cancelled()
        n = torch.tensor(lengths, device=device)
        cur = seq.gather(1, (n - 1).unsqueeze(1))
        # 1. k draft tokens. Finished rows ride along at frozen positions; their output is
        # never read.
        drafts, draft_probs = [], []
        if need_prev and not shared:
            x = seq.gather(1, torch.stack([n - 2, n - 1], 1))
            logits = draft_model(x, torch.stack([n - 2, n - 1], 1))
        else:
            logits = draft_model(cur, (n - 1).unsqueeze(1))
        for i in range(k):
            token, probs = sample(logits, None, **draft_kwargs)
            drafts.append(token.to(torch.int64))
            draft_probs.append(probs)
            if i + 1 < k:
                logits = draft_model(drafts[-1], (n + i).unsqueeze(1))
        draft_tokens = torch.cat(drafts, 1)                                    # [B, k]
        # 2. one target pass over [cur, d_1 .. d_k]
        positions = (n - 1).unsqueeze(1) + offsets                              # [B, k + 1]
        logits = model(torch.cat([cur, draft_tokens], 1), positions)           # [B, k+1, V]
        vocab = logits.shape[-1]
        target_probs = ops.logits_to_probs(logits.reshape(-1, vocab), None, **target_knobs)
        # 3. accept a prefix per row
        tokens, accepted = ops.speculative_accept(
            draft_tokens, torch.stack(draft_probs, 1), target_probs.view(bsz, k + 1, vocab),
            generator)
        tokens, accepted = tokens.tolist(), accepted.tolist()
        need_prev = False
        for b in range(bsz):
            if done[b]:
                continue
            a = accepted[b]
            accept_counts[a] += 1
            need_prev |= a == k
            new = tokens[b][:min(a + 1, t_new - lengths[b])]
            if stops:
                hit = next((i for i, t in enumerate(new) if t in stops), None)
                if hit is not None:
                    new = new[:hit + 1]
                    seq[b, lengths[b] + len(new):] = pad_id
                    done[b] = True
            seq[b, lengths[b]:lengths[b] + len(new)] = torch.tensor(new, device=device)
            lengths[b] += len(new)
            done[b] = done[b] or lengths[b] >= t_new
        complete = min(t_new if d else n_b for d, n_b in zip(done, lengths))
        for col in range(emitted, complete):
            column = seq[:, col:col + 1]
            callback(column)
            hit = stop_rows(column) if stop_rows is not None else None
            if hit is None:
                continue
            for b in torch.nonzero(hit).view(-1).tolist():
                if lengths[b] > col + 1 or not done[b]:  # ends here: drop what follows
                    seq[b, col + 1:] = pad_id
                    lengths[b] = min(lengths[b], col + 1)
                    done[b] = True
        emitted = max(emitted, complete)
    return accept_counts, max(lengths) - prompt_len
