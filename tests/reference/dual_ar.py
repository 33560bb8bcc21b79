"""A pure-PyTorch oracle of fish-speech's codebook models, written from its documented
semantics (``fish_speech/models/text2semantic``): full recomputation in float64 over the
whole sequence, no KV cache, weights read from the model's state dict by name.

- embedding: token embedding, plus the sum of the codes' embeddings (codebook i's table at
  rows i * codebook_size ...) where the token is a semantic id;
- a Llama stack (RMSNorm, RoPE on interleaved pairs, grouped-query causal attention, SwiGLU);
- DualAR: the slow stack's last hidden state (before its final norm), projected, is position
  0 of the fast stack; position i > 0 is the fast embedding of code i - 1; the fast logits at
  position i give code i. Code 0 of ``decode_one_token_ar`` is ``token - semantic_begin_id``.
"""
import torch


def _rms(x, w, eps):
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps) * w


def _rope(x, base):
    """x [S, H, D] rotated at positions 0..S-1 (pairs (2j, 2j + 1))."""
    S, _, D = x.shape
    freqs = 1.0 / base ** (torch.arange(0, D, 2, dtype=torch.float64)[: D // 2] / D)
    ang = torch.arange(S, dtype=torch.float64)[:, None] * freqs  # [S, D/2]
    cos, sin = ang.cos()[:, None], ang.sin()[:, None]
    pairs = x.reshape(S, -1, D // 2, 2)
    a, b = pairs[..., 0], pairs[..., 1]
    return torch.stack([a * cos - b * sin, a * sin + b * cos], -1).reshape(S, -1, D)


def llama_hidden(sd, prefix, x, n_layer, n_head, n_kv, head_dim, eps, base):
    """x [S, E] float64 -> the last layer's output [S, E] (before the final norm)."""
    S = x.shape[0]
    causal = torch.ones(S, S, dtype=torch.bool).tril()
    for i in range(n_layer):
        w = {k[len(f"{prefix}layers.{i}."):]: v.double() for k, v in sd.items()
             if k.startswith(f"{prefix}layers.{i}.") and "kv_cache" not in k}
        h = _rms(x, w["attention_norm.weight"], eps)
        q, k, v = (h @ w["attention.wqkv.weight"].t()).split(
            [n_head * head_dim, n_kv * head_dim, n_kv * head_dim], -1)
        q = _rope(q.view(S, n_head, head_dim), base)
        k = _rope(k.view(S, n_kv, head_dim), base).repeat_interleave(n_head // n_kv, 1)
        v = v.view(S, n_kv, head_dim).repeat_interleave(n_head // n_kv, 1)
        scores = torch.einsum("qhd,khd->hqk", q, k) / head_dim ** 0.5
        att = scores.masked_fill(~causal, float("-inf")).softmax(-1)
        y = torch.einsum("hqk,khd->qhd", att, v).reshape(S, -1)
        x = x + y @ w["attention.wo.weight"].t()
        h = _rms(x, w["ffn_norm.weight"], eps)
        gate = h @ w["feed_forward.w1.weight"].t()
        x = x + (torch.nn.functional.silu(gate) * (h @ w["feed_forward.w3.weight"].t())) @ \
            w["feed_forward.w2.weight"].t()
    return x


def embed(sd, cfg, inp):
    """inp [rows, S] -> [S, dim] float64."""
    tokens, codes = inp[0].long(), inp[1:].long()
    x = sd["slow.tok_embeddings.weight"].double()[tokens]
    table = sd["codebook_embeddings.weight"].double()
    code_sum = sum(table[codes[i] + i * cfg.codebook_size] for i in range(cfg.num_codebooks))
    semantic = (tokens >= cfg.semantic_begin_id) & (tokens <= cfg.semantic_end_id)
    return x + code_sum * semantic[:, None].double()


def slow_step(sd, cfg, inp):
    """-> (token logits [V] of the last position, its hidden state [dim])."""
    h = llama_hidden(sd, "slow.", embed(sd, cfg, inp), cfg.n_layer, cfg.n_head,
                     cfg.n_local_heads, cfg.head_dim, cfg.norm_eps, cfg.rope_base)[-1]
    head = sd.get("slow.output.weight", sd["slow.tok_embeddings.weight"]).double()
    return _rms(h, sd["slow.norm.weight"].double(), cfg.norm_eps) @ head.t(), h


def dual_ar_greedy_step(sd, cfg, inp):
    """decode_one_token_ar at temperature 0: -> [token, code 0, ..., code C-1]."""
    logits, h = slow_step(sd, cfg, inp)
    token = int(logits.argmax())
    if "fast_project_in.weight" in sd:
        h = h @ sd["fast_project_in.weight"].double().t() + sd["fast_project_in.bias"].double()
    semantic = cfg.semantic_begin_id <= token <= cfg.semantic_end_id
    codes = [token - cfg.semantic_begin_id if semantic else 0]
    fast_emb = sd["fast.tok_embeddings.weight"].double()
    seq = [h]
    for _ in range(1, cfg.num_codebooks):
        seq.append(fast_emb[codes[-1]])
        hidden = llama_hidden(sd, "fast.", torch.stack(seq), cfg.n_fast_layer, cfg.fast_n_head,
                              cfg.fast_n_local_heads, cfg.fast_head_dim, cfg.norm_eps,
                              cfg.rope_base)[-1]
        out = _rms(hidden, sd["fast.norm.weight"].double(), cfg.norm_eps) @ \
            sd["fast.output.weight"].double().t()
        codes.append(int(out.argmax()))
    return [token] + codes


def naive_logits(sd, cfg, inp):
    """NaiveTransformer: -> (token logits [V], codebook logits [C, codebook_size])."""
    logits, h = slow_step(sd, cfg, inp)
    cb = _rms(h, sd["codebook_norm.weight"].double(), cfg.norm_eps) @ \
        sd["codebook_output.weight"].double().t()
    return logits, cb.view(cfg.num_codebooks, cfg.codebook_size)
