"""fastdecode::int8_embedding / int4_embedding (rows of a quantized table dequantised on
lookup) against the dequantised reference tables; opcheck; bad input. And the model side:
a GGUF loads its embedding as a ``QuantizedEmbedding`` sharing the tied head's tensors (no
fp32 copy), equal to its fp32 twin's table, through save/load, a bf16 cast and a head cut."""
import pytest
import torch
from reference.quant import dequantize_int4_ref, dequantize_int8_ref

import fastdecode
from fastdecode import ops
from fastdecode.quantized_checkpoint import save_quantized
from fastdecode.quantized_embedding import QuantizedEmbedding


def _table(n, k, seed=0):
    return torch.randn(n, k, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("grouped", [False, True])
@pytest.mark.parametrize("ids_shape", [(), (7,), (2, 5)])
def test_int8_rows_equal_the_dequantised_table(grouped, ids_shape):
    n, k = 37, 64
    w = _table(n, k)
    if grouped:
        q, s = ops.quantize_int8_per_channel(w.reshape(-1, 32))
        q, s = q.view(n, k), s.view(n, k // 32)
    else:
        q, s = ops.quantize_int8_per_channel(w)
    ids = torch.randint(0, n, ids_shape, generator=torch.Generator().manual_seed(1))
    got = ops.int8_embedding(ids, q, s)
    assert got.shape == (*ids_shape, k) and got.dtype == torch.float32
    # an int8 times an fp32 scale is exact in double: the fp32 product is its rounding
    assert torch.equal(got, dequantize_int8_ref(q, s).float()[ids])


@pytest.mark.parametrize("groupsize,k", [(32, 64), (128, 200), (32, 40)])
def test_int4_rows_equal_the_dequantised_table(groupsize, k):
    n = 37  # three 16-row tiles, the last one partial
    packed, sz = ops.quantize_int4_grouped(_table(n, k, seed=2), groupsize)
    ids = torch.tensor([[0, 15, 16, 36], [36, 5, 32, 0]])
    got = ops.int4_embedding(ids, packed, sz, groupsize, k)
    want = dequantize_int4_ref(packed, sz, groupsize).float()[:, :k][ids]
    assert got.shape == (2, 4, k)
    torch.testing.assert_close(got, want, rtol=1e-6, atol=1e-6)


def test_opcheck_and_bad_input():
    q, s = ops.quantize_int8_per_channel(_table(16, 32))
    packed, sz = ops.quantize_int4_grouped(_table(16, 64), 32)
    ids = torch.tensor([[1, 2, 15]])
    torch.library.opcheck(torch.ops.fastdecode.int8_embedding.default, (ids, q, s))
    torch.library.opcheck(torch.ops.fastdecode.int4_embedding.default, (ids, packed, sz, 32, 64))
    for bad in (torch.tensor([16]), torch.tensor([-1, 3])):
        with pytest.raises(ValueError, match=r"ids must be in \[0, 16\)"):
            ops.int8_embedding(bad, q, s)
        with pytest.raises(ValueError, match=r"ids must be in \[0, 16\)"):
            ops.int4_embedding(bad, packed, sz, 32, 64)
    with pytest.raises(TypeError, match="ids must be int64"):
        ops.int8_embedding(ids.int(), q, s)
    with pytest.raises(ValueError, match=r"dim must be in \[33, 64\]"):
        ops.int4_embedding(ids, packed, sz, 32, 65)
    with pytest.raises(ValueError, match="scales must be"):
        ops.int8_embedding(ids, q, s[:3])
    assert ops.int8_embedding(torch.zeros(0, dtype=torch.long), q, s).shape == (0, 32)


@pytest.fixture(scope="module")
def gguf_model():
    return fastdecode.load("default")[0]


def test_a_gguf_keeps_its_embedding_quantized_in_the_heads_tensors(gguf_model, default_model):
    fp32_twin = default_model[0]
    emb = gguf_model.tok_embeddings
    assert isinstance(emb, QuantizedEmbedding) and emb.kind == "int8"  # the file's Q8_0
    assert emb.weight is gguf_model.output.weight and emb.scales is gguf_model.output.scales
    # no V x dim float tensor anywhere in the model
    c = gguf_model.config
    assert not [n for n, t in gguf_model.state_dict().items()
                if t.is_floating_point() and t.numel() >= c.vocab_size * c.dim]
    ids = torch.randint(0, c.vocab_size, (3, 11), generator=torch.Generator().manual_seed(3))
    assert torch.equal(emb(ids), fp32_twin.tok_embeddings(ids))  # its dequantised table
    assert torch.equal(emb(ids.int()), emb(ids))


def test_save_and_load_keep_the_tie(gguf_model, tmp_path):
    _, tok = fastdecode.load("default")
    save_quantized(gguf_model, tok, tmp_path)
    loaded, _ = fastdecode.load(tmp_path)
    emb = loaded.tok_embeddings
    assert isinstance(emb, QuantizedEmbedding)
    assert emb.weight is loaded.output.weight and torch.equal(emb.weight, gguf_model.output.weight)
    ids = torch.tensor(tok.encode("The capital of France is"))
    a, _ = fastdecode.generate(gguf_model, ids, 8, temperature=0)
    b, _ = fastdecode.generate(loaded, ids, 8, temperature=0)
    assert torch.equal(a, b)


def test_cutting_the_head_leaves_the_embedding_whole():
    from fastdecode.tp import _shard_linear

    model, _ = fastdecode.load("default")
    table = model.tok_embeddings.weight
    ids = torch.tensor([0, 40000, 49151])
    before = model.tok_embeddings(ids)
    with pytest.warns(UserWarning, match="was replaced on a fused model"):
        _shard_linear(model.output, 0, [(0, 16384)])
    assert model.output.weight.shape[0] == 16384 and model.tok_embeddings.weight is table
    assert torch.equal(model.tok_embeddings(ids), before)
