"""fastdecode::repack_gguf (GGUF blocks kept in their precision, in C++) against its numpy
oracle, bit for bit, on random blocks of every type and on the default model's tensors;
the values it keeps equal the gguf package's dequantisation; opcheck; bad input."""
import numpy as np
import pytest
import torch
from reference.gguf_repack import repack_gguf_ref
from reference.quant import dequantize_int4_ref

import fastdecode
from fastdecode import ops
from fastdecode.gguf_file import read_gguf

BYTES = {2: 18, 3: 20, 8: 34}


def _random_blocks(ggml_type, n, blocks_per_row, seed=0):
    rng = np.random.default_rng(seed)
    raw = rng.integers(0, 256, (n, blocks_per_row, BYTES[ggml_type]), dtype=np.uint8)
    scales = rng.normal(0, 0.05, (n, blocks_per_row, 2)).astype(np.float16)
    raw[..., :4] = scales.view(np.uint8).reshape(n, blocks_per_row, 4)  # finite d (and m)
    return raw.reshape(n, -1)


@pytest.mark.parametrize("ggml_type", [2, 3, 8])
@pytest.mark.parametrize("n,blocks_per_row", [(1, 1), (16, 2), (37, 3)])
def test_equals_the_numpy_oracle_bit_for_bit(ggml_type, n, blocks_per_row):
    blocks = _random_blocks(ggml_type, n, blocks_per_row, seed=n)
    got = ops.repack_gguf(torch.from_numpy(blocks), ggml_type)
    want = repack_gguf_ref(blocks, ggml_type)
    for g, w in zip(got, want):
        assert g.shape == w.shape and torch.equal(g, torch.from_numpy(np.ascontiguousarray(w)))


def test_the_default_models_tensors_repack_exactly_and_keep_their_values():
    path = fastdecode.default_checkpoint_path()
    tensors = {t.name: t for t in read_gguf(path).tensors}
    for name in ("blk.0.attn_q.weight", "blk.3.ffn_down.weight"):
        t = tensors[name]
        k = int(t.shape[0])
        blocks = np.asarray(t.data).reshape(int(t.shape[1]), -1)
        ggml_type = int(t.tensor_type)
        packed, sz = ops.repack_gguf(torch.from_numpy(blocks.copy()), ggml_type)
        want = repack_gguf_ref(blocks, ggml_type)
        assert torch.equal(packed, torch.from_numpy(want[0]))
        assert torch.equal(sz, torch.from_numpy(np.ascontiguousarray(want[1])))
        dense = ops.dequantize_gguf(torch.from_numpy(blocks.copy()), ggml_type)
        kept = dequantize_int4_ref(packed, sz, 32).float()
        torch.testing.assert_close(kept, dense.view(-1, k), rtol=0, atol=1e-6)


def test_opcheck_and_bad_input():
    blocks = torch.from_numpy(_random_blocks(3, 16, 2))
    torch.library.opcheck(torch.ops.fastdecode.repack_gguf.default, (blocks, 3))
    torch.library.opcheck(torch.ops.fastdecode.repack_gguf.default,
                          (torch.from_numpy(_random_blocks(8, 3, 1)), 8))
    with pytest.raises(ValueError, match="ggml_type must be 2 \\(Q4_0\\), 3 \\(Q4_1\\) or 8"):
        ops.repack_gguf(blocks, 7)
    with pytest.raises(ValueError, match="each row whole blocks of 20 bytes"):
        ops.repack_gguf(blocks[:, :-1], 3)
    with pytest.raises(TypeError, match="blocks must be uint8"):
        ops.repack_gguf(blocks.to(torch.int16), 3)
    with pytest.raises(ValueError, match=r"ggml_type must fit in a 64-bit integer"):
        ops.repack_gguf(blocks, 2 ** 70)
