"""fastdecode.huge_pages: a model's weights moved onto 2 MiB pages keep their values, dtypes,
shapes and ties, the model decodes the same tokens, and the kernel backs them with huge
pages where the system gives them on request."""
import gc

import pytest
import torch
from conftest import tiny_model

import fastdecode
from fastdecode import huge_pages
from fastdecode.quantize import quantize_model


def _snapshot(model):
    return {name: t.clone() for name, t in model.state_dict().items()}


def _greedy(model, ids, steps=6):
    out = fastdecode.generate(model, ids, steps, temperature=0)
    return out[0] if isinstance(out, tuple) else out


@pytest.mark.parametrize("mode", [None, "int8", "int4"])
def test_placed_weights_keep_values_ties_and_tokens(mode, monkeypatch):
    monkeypatch.setattr(huge_pages, "huge_pages_on_request", lambda: True)
    monkeypatch.setattr(huge_pages, "MIN_BYTES", 1024)  # the tiny model's tensors move too
    model = tiny_model(seed=21)
    if mode is not None:
        with monkeypatch.context() as m:  # quantize_model places its weights itself: not yet
            m.setattr(huge_pages, "huge_pages_on_request", lambda: False)
            quantize_model(model, mode, 32)
    ids = torch.randint(0, 101, (7,))
    want, before = _greedy(model, ids), _snapshot(model)
    fastdecode.unfuse(model)  # the fused plan holds the tensors: place before fusing
    moved = huge_pages.place_weights(model)
    fastdecode.fuse(model)
    after = model.state_dict()
    assert moved > 0
    assert before.keys() == after.keys()
    for name, t in before.items():
        assert after[name].dtype == t.dtype and torch.equal(after[name], t), name
    big = [t for t in model.parameters() if t.numel() * t.element_size() >= 1024]
    base = big[0].untyped_storage().data_ptr()
    assert all(t.untyped_storage().data_ptr() == base for t in big)  # one buffer
    assert base % 64 == 0 and all(t.data_ptr() % 64 == 0 for t in big)
    if model.config.tie_embeddings and mode is None:
        assert model.output.weight is model.tok_embeddings.weight
    assert torch.equal(_greedy(model, ids), want)


def test_nothing_moves_where_the_system_gives_no_pages_on_request(monkeypatch):
    monkeypatch.setattr(huge_pages, "huge_pages_on_request", lambda: False)
    model = tiny_model(seed=22)
    ptrs = [t.data_ptr() for t in model.parameters()]
    assert huge_pages.place_weights(model) == 0
    assert [t.data_ptr() for t in model.parameters()] == ptrs


def test_the_default_model_is_loaded_onto_huge_pages_where_the_system_gives_them():
    gc.collect()  # earlier tests' models go first, not during the measurement
    before = huge_pages.huge_page_bytes()
    model, _ = fastdecode.load("default")
    after = huge_pages.huge_page_bytes()
    one_buffer = (model.output.weight.untyped_storage().data_ptr()
                  == model.layers[0].attention.wqkv.weight.untyped_storage().data_ptr())
    if not huge_pages.huge_pages_on_request():  # THP always / never: nothing moves
        assert not one_buffer
        return
    weights = sum(t.numel() * t.element_size() for t in model.state_dict().values())
    # the kernel may refuse some 2 MiB pages (fragmented memory): most of them, not all
    assert after - before >= 0.5 * weights, (before, after, weights)
    assert one_buffer


def test_tensors_held_outside_the_model_keep_their_values(monkeypatch):
    """A moved tensor's old pages are given back during its move only when nothing outside
    the model holds it or a view of it: what the caller still holds stays intact."""
    monkeypatch.setattr(huge_pages, "huge_pages_on_request", lambda: True)
    torch.manual_seed(23)
    model = torch.nn.Sequential(*(torch.nn.Linear(1024, 1024, bias=False) for _ in range(4)))
    model[3].register_buffer("table", torch.randn(1024, 1024))  # 4 MiB each
    held_param = model[0].weight                      # the Parameter itself: follows the move
    held_view = model[1].weight.detach()[100:200]     # a view of its storage
    held_buffer = model[3].table                      # the buffer object
    want = {name: t.clone() for name, t in model.state_dict().items()}
    want_view, want_buffer = held_view.clone(), held_buffer.clone()
    assert huge_pages.place_weights(model) >= 5 * 4 * 1024 * 1024
    assert all(torch.equal(model.state_dict()[name], t) for name, t in want.items())
    assert held_param is model[0].weight and torch.equal(held_param, want["0.weight"])
    assert torch.equal(held_view, want_view) and torch.equal(held_buffer, want_buffer)
    assert model[3].table is not held_buffer  # the model's own moved; the caller's kept


def test_kv_caches_on_huge_pages_decode_the_same_logits(monkeypatch):
    """setup_caches(..., huge_pages=True) (the server's engine's call): every layer's keys
    and values are zeroed views of one 2 MiB-aligned buffer, and a prompt and two decode
    steps give the logits they give on plain caches."""
    model = tiny_model(seed=24)
    ids = torch.randint(0, 101, (2, 9))

    def logits():
        out = [model(ids, torch.arange(9))]
        for p in (9, 10):
            out.append(model(out[-1][:, -1:].argmax(-1), torch.tensor([p])))
        return out
    model.setup_caches(2, 64)
    plain = model.layers[0].attention.kv_cache.k_cache
    want = logits()
    monkeypatch.setattr(huge_pages, "huge_pages_on_request", lambda: True)
    model.max_seq_length = None  # allocate again
    model.setup_caches(2, 64, huge_pages=True)
    caches = [b for layer in model.layers
              for b in (layer.attention.kv_cache.k_cache, layer.attention.kv_cache.v_cache)]
    base = caches[0].untyped_storage().data_ptr()
    assert all(c.untyped_storage().data_ptr() == base for c in caches)  # one buffer
    assert caches[0].data_ptr() % huge_pages.HUGE_PAGE == 0
    assert all(c.data_ptr() % 64 == 0 and not c.any() for c in caches)
    assert caches[0].shape == plain.shape and caches[0].dtype == plain.dtype
    assert all(torch.equal(g, w) for g, w in zip(logits(), want))
    monkeypatch.setattr(huge_pages, "huge_pages_on_request", lambda: False)
    model.max_seq_length = None
    model.setup_caches(2, 64, huge_pages=True)  # nothing on request: plain tensors
    k = model.layers[0].attention.kv_cache.k_cache
    assert k.untyped_storage().nbytes() == k.numel() * k.element_size()


def test_the_servers_engine_keeps_its_kv_caches_on_huge_pages(default_model):
    """The server's engine (huge_pages=True): its 16 slots x 512 positions (377 MB, a fresh
    mapping: small buffers may come from memory the allocator already touched) sit on 2 MiB
    pages where the system gives them on request."""
    from fastdecode.engine import Engine
    model, tokenizer = default_model
    gc.collect()
    before = huge_pages.huge_page_bytes()
    with Engine(model, tokenizer, max_batch=16, ctx=512, huge_pages=True):
        after = huge_pages.huge_page_bytes()
        k = model.layers[0].attention.kv_cache.k_cache
        kv = 2 * sum(layer.attention.kv_cache.k_cache.nbytes for layer in model.layers)
        one_buffer = all(layer.attention.kv_cache.v_cache.untyped_storage().data_ptr()
                         == k.untyped_storage().data_ptr() for layer in model.layers)
    model.max_seq_length = None  # the next user allocates its own caches
    if not huge_pages.huge_pages_on_request():
        assert not one_buffer
        return
    assert one_buffer and after - before >= 0.5 * kv, (before, after, kv)
