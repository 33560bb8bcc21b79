"""The Transformer on small random models: cache semantics, per-row positions, shapes."""
import pytest
import torch
from conftest import tiny_args, tiny_model

import fastdecode


def _full_forward(model, ids):
    model.setup_caches(ids.shape[0], ids.shape[1])
    return model(ids, torch.arange(ids.shape[1]))


def test_incremental_decode_equals_full_forward():
    model = tiny_model()
    ids = torch.randint(0, 101, (2, 12))
    with torch.no_grad():
        full = _full_forward(model, ids)
        model.setup_caches(2, 16)
        parts = [model(ids[:, :5], torch.arange(5))]
        for t in range(5, 12):
            parts.append(model(ids[:, t:t + 1], torch.tensor([t])))
    torch.testing.assert_close(torch.cat(parts, 1), full, rtol=1e-4, atol=1e-5)


def test_per_row_positions_let_rows_advance_independently():
    """Row 0 decodes at position 7 while row 1 is at position 4: each must match its own
    single-row computation."""
    model = tiny_model(seed=1)
    ids = torch.randint(0, 101, (2, 8))
    with torch.no_grad():
        model.setup_caches(2, 16)
        model(ids[:, :4], torch.arange(4))
        # advance row 0 only (row 1 rewrites its position 4 later)
        model(ids[:, 4:7], torch.tensor([[4, 5, 6], [4, 5, 6]]))
        step = model(torch.stack([ids[0, 7:8], ids[1, 4:5]]), torch.tensor([[7], [4]]))
        ref0 = _full_forward(model, ids[:1, :8])[:, -1]
        ref1 = _full_forward(model, ids[1:, :5])[:, -1]
    torch.testing.assert_close(step[0, 0], ref0[0], rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(step[1, 0], ref1[0], rtol=1e-4, atol=1e-5)


def test_last_only_returns_last_position_logits():
    model = tiny_model()
    ids = torch.randint(0, 101, (3, 6))
    with torch.no_grad():
        full = _full_forward(model, ids)
        model.setup_caches(3, 6)
        last = model(ids, torch.arange(6), last_only=True)
    assert last.shape == (3, 1, 101)
    torch.testing.assert_close(last, full[:, -1:], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("overrides", [dict(n_local_heads=4), dict(n_local_heads=1),
                                       dict(tie_embeddings=True), dict(rope_base=500000.0)])
def test_config_variants_run(overrides):
    model = tiny_model(**overrides)
    with torch.no_grad():
        out = _full_forward(model, torch.randint(0, 101, (1, 5)))
    assert out.shape == (1, 5, 101) and torch.isfinite(out).all()
    if overrides.get("tie_embeddings"):
        assert model.output.weight is model.tok_embeddings.weight


def test_forward_before_setup_caches_is_a_clear_error():
    model = fastdecode.Transformer(tiny_args())
    with pytest.raises(RuntimeError, match="setup_caches"):
        model(torch.zeros(1, 1, dtype=torch.long), torch.tensor([0]))


def test_setup_caches_longer_than_block_size_is_rejected():
    with pytest.raises(ValueError, match="block_size"):
        tiny_model().setup_caches(1, 65)


def test_gqa_heads_must_divide():
    with pytest.raises(ValueError, match="n_local_heads"):
        tiny_args(n_head=4, n_local_heads=3)


def test_prompt_from_position_zero_attends_causally_without_a_mask(monkeypatch):
    """Queries 0..S-1 take SDPA's causal path over the cache's first S positions (no
    [S, L] mask): the same logits as the masked path, which per-row positions take."""
    model = tiny_model(seed=2)
    fastdecode.unfuse(model)  # every position through the layers' SDPA
    ids = torch.randint(0, 101, (2, 40))
    calls = []
    sdpa = torch.nn.functional.scaled_dot_product_attention

    def recording_sdpa(q, k, v, attn_mask=None, is_causal=False, **kw):
        calls.append((is_causal, attn_mask is None, k.shape[2]))
        return sdpa(q, k, v, attn_mask=attn_mask, is_causal=is_causal, **kw)

    monkeypatch.setattr(torch.nn.functional, "scaled_dot_product_attention", recording_sdpa)
    with torch.no_grad():
        model.setup_caches(2, 64)
        causal = model(ids, torch.arange(40))
        assert calls and all(c == (True, True, 40) for c in calls)
        calls.clear()
        masked = model(ids, torch.arange(40).expand(2, 40))  # per-row positions: the mask
        assert calls and all(c == (False, False, 64) for c in calls)
        calls.clear()
        later = model(ids[:, :8], torch.arange(40, 48))  # not from 0: the mask
        assert calls and all(c == (False, False, 64) for c in calls)
    torch.testing.assert_close(causal, masked, rtol=1e-5, atol=1e-5)
    assert later.shape == (2, 8, 101)
