"""Tensor-parallel sharding ops (fastdecode::shard, fastdecode::shard_int4) against the
oracles in tests/reference/tp.py: exact for every dtype, int4 shards equal to quantizing the
float shard bit for bit; the KV-group plan; opcheck, compile and bad input."""
import pytest
import torch
from conftest import tiny_args
from reference.tp import shard_ref, wqkv_rows_ref

import fastdecode
from fastdecode import ops, tp
from fastdecode.quantize import WeightOnlyInt8Linear

UNEVEN = [[(0, 5)], [(3, 7), (20, 4)], [(0, 1), (10, 2), (29, 3)]]


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.int8])
@pytest.mark.parametrize("dim", [0, 1])
@pytest.mark.parametrize("ranges", UNEVEN)
def test_shard_equals_reference(dtype, dim, ranges):
    t = (torch.randn(32, 32) * 50).to(dtype)
    got = ops.shard(t, dim, [o for o, _ in ranges], [n for _, n in ranges])
    assert got.is_contiguous() and torch.equal(got, shard_ref(t, dim, ranges))


@pytest.mark.parametrize("groupsize", [32, 64, 128])
@pytest.mark.parametrize("dim,ranges", [(0, [(0, 16)]), (0, [(5, 11)]), (0, [(3, 9), (40, 7)]),
                                        (1, [(0, 128)]), (1, [(128, 256)]),
                                        (1, [(0, 128), (256, 128)])])
def test_int4_shard_equals_quantized_float_shard(groupsize, dim, ranges):
    g = torch.Generator().manual_seed(groupsize + dim)
    w = torch.randn(50, 384, generator=g)
    packed, sz = ops.quantize_int4_grouped(w, groupsize)  # column cuts: on every group size
    got = ops.shard_int4(packed, sz, groupsize, dim, [o for o, _ in ranges],
                         [n for _, n in ranges])
    want = ops.quantize_int4_grouped(shard_ref(w, dim, ranges), groupsize)
    assert torch.equal(got[0], want[0]) and torch.equal(got[1], want[1])


def test_int8_shards_equal_quantizing_the_float_shard():
    w = torch.randn(40, 96)
    lin = torch.nn.Linear(96, 40, bias=False)
    lin.weight.data.copy_(w)
    per_channel = WeightOnlyInt8Linear.from_float(lin)
    rows = [(4, 10), (30, 6)]
    rows_lin = torch.nn.Linear(96, 16, bias=False)
    rows_lin.weight.data.copy_(shard_ref(w, 0, rows))
    want = WeightOnlyInt8Linear.from_float(rows_lin)
    assert torch.equal(ops.shard(per_channel.weight, 0, [4, 30], [10, 6]), want.weight)
    assert torch.equal(ops.shard(per_channel.scales, 0, [4, 30], [10, 6]), want.scales)
    # grouped (GGUF Q8_0): a column cut on group boundaries cuts the scales with it
    grouped = WeightOnlyInt8Linear.from_float(lin, groupsize=32)
    cut = torch.nn.Linear(32, 40, bias=False)
    cut.weight.data.copy_(shard_ref(w, 1, [(64, 32)]))
    want = WeightOnlyInt8Linear.from_float(cut, groupsize=32)
    assert torch.equal(ops.shard(grouped.weight, 1, [64], [32]), want.weight)
    assert torch.equal(ops.shard(grouped.scales, 1, [2], [1]), want.scales)


def test_plan_follows_kv_groups_of_the_default_shape():
    args = fastdecode.ModelArgs(vocab_size=49152, n_layer=1, n_head=9, n_local_heads=3,
                                dim=576, intermediate_size=1536)
    plan = tp.plan_tp(args, 2, ffn_align=32)
    assert plan.kv_groups == ((0, 2), (2, 1))
    assert plan.ffn == ((0, 768), (768, 768)) and plan.vocab == ((0, 24576), (24576, 24576))
    for rank, groups in ((0, [0, 1]), (1, [2])):
        rows = [r for o, n in plan.wqkv_rows(rank) for r in range(o, o + n)]
        assert rows == wqkv_rows_ref(9, 3, 64, groups)
    assert plan.wo_columns(1) == (384, 192)
    assert tp.plan_tp(args, 3).kv_groups == ((0, 1), (1, 1), (2, 1))
    with pytest.raises(ValueError, match=r"n_head=9 .* n_local_heads=3 KV groups over 4 ranks"):
        tp.plan_tp(args, 4)


def test_split_evenly():
    assert tp.split_evenly(10, 3) == [(0, 4), (4, 3), (7, 3)]
    assert tp.split_evenly(100, 3, 32) == [(0, 32), (32, 32), (64, 36)]
    with pytest.raises(ValueError, match="cannot split 48 into 2 parts of whole 32"):
        tp.split_evenly(48, 2, 32)


def test_apply_tp_with_one_rank_is_a_no_op_and_checks_arguments():
    from conftest import tiny_model
    model = tiny_model()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    tp.apply_tp(model, 0, 1)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    with pytest.raises(ValueError, match="already applied"):
        tp.apply_tp(model, 0, 1)
    with pytest.raises(ValueError, match=r"n_head=4 .* n_local_heads=2 KV groups over 3"):
        tp.apply_tp(tiny_model(), 0, 3)
    with pytest.raises(ValueError, match=r"rank must be in \[0, 2\)"):
        tp.apply_tp(tiny_model(), 2, 2)
    assert tiny_args().n_local_heads == 2


def test_opcheck_and_compile():
    t = torch.randn(20, 64)
    torch.library.opcheck(torch.ops.fastdecode.shard.default, (t, 0, [2, 10], [3, 5]))
    torch.library.opcheck(torch.ops.fastdecode.shard.default, (t, 1, [32], [32]))
    packed, sz = ops.quantize_int4_grouped(t, 32)
    torch.library.opcheck(torch.ops.fastdecode.shard_int4.default, (packed, sz, 32, 0, [4], [9]))
    torch.library.opcheck(torch.ops.fastdecode.shard_int4.default, (packed, sz, 32, 1, [32], [32]))
    fn = torch.compile(lambda x: ops.shard(x * 2, 0, [1, 5], [2, 2]), fullgraph=True,
                       backend="aot_eager")
    assert torch.equal(fn(t), shard_ref(t * 2, 0, [(1, 2), (5, 2)]))


@pytest.mark.parametrize("call,exc,match", [
    (lambda t, p, s: ops.shard(t, 2, [0], [1]), ValueError, r"dim must be in \[0, 2\)"),
    (lambda t, p, s: ops.shard(t, 0, [0], [0]), ValueError, r"range 0 \[0, 0\) must be non-empty"),
    (lambda t, p, s: ops.shard(t, 0, [15], [6]), ValueError, r"inside \[0, 20\) entries"),
    (lambda t, p, s: ops.shard(t, 0, [0, 1], [1]), ValueError, "equal length"),
    (lambda t, p, s: ops.shard(t, 0, [], []), ValueError, "non-empty lists"),
    (lambda t, p, s: ops.shard_int4(p, s, 32, 1, [16], [32]), ValueError,
     "multiple of 32 columns"),
    (lambda t, p, s: ops.shard_int4(p, s, 64, 0, [0], [1]), ValueError,
     r"scales_and_zeros must be \[N, K_pad / groupsize, 2\]"),
    (lambda t, p, s: ops.shard_int4(p, s, 32, 2, [0], [1]), ValueError, "dim must be 0"),
    (lambda t, p, s: ops.shard_int4(p.float(), s, 32, 0, [0], [1]), TypeError, "uint8"),
    (lambda t, p, s: ops.shard_int4(p, s, 48, 0, [0], [1]), ValueError, "groupsize must be"),
])
def test_bad_input_is_a_clear_error(call, exc, match):
    t = torch.randn(20, 64)
    packed, sz = ops.quantize_int4_grouped(t, 32)
    with pytest.raises(exc, match=match):
        call(t, packed, sz)
