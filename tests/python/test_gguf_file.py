"""fastdecode.gguf_file against the gguf package on the default model: the same metadata,
the same tensors (names, types, shapes, bytes), and dequantisation bit for bit its values
(ops.dequantize_gguf for Q4_0 / Q4_1 / Q8_0); the op's opcheck, compile and bad input."""
import gguf
import numpy as np
import pytest
import torch
from fuzz.tiny_gguf import write_tiny_gguf

import fastdecode
from fastdecode import ops
from fastdecode.gguf_file import dequantize, read_gguf


@pytest.fixture(scope="module")
def both():
    path = fastdecode.default_checkpoint_path()
    return read_gguf(path), gguf.GGUFReader(str(path))


def test_metadata_equals_the_gguf_package(both):
    ours, theirs = both
    want = {k: f.contents() for k, f in theirs.fields.items() if not k.startswith("GGUF.")}
    assert ours.fields == want and ours.version == 3


def test_tensors_equal_the_gguf_package(both):
    ours, theirs = both
    assert [t.name for t in ours.tensors] == [t.name for t in theirs.tensors]
    for a, b in zip(ours.tensors, theirs.tensors):
        assert a.tensor_type == b.tensor_type and a.shape == [int(d) for d in b.shape]
        assert a.data_offset == b.data_offset and a.n_bytes == b.n_bytes
        assert a.data.shape == b.data.shape and np.array_equal(a.data, b.data)


def test_dequantize_is_bit_for_bit_the_gguf_package(both, tmp_path):
    ours, _ = both
    tiny = read_gguf(write_tiny_gguf(tmp_path / "tiny.gguf"))
    seen = set()
    for t in [*ours.tensors[:40], *tiny.tensors]:  # Q8_0, Q4_1, F32 and the tiny's Q8_0/Q4_1
        got = dequantize(t)
        want = torch.from_numpy(np.asarray(gguf.quants.dequantize(t.data, t.tensor_type),
                                           dtype=np.float32))
        assert got.shape == want.shape and torch.equal(got, want), t.name
        seen.add(t.tensor_type.name)
    assert {"Q8_0", "Q4_1", "F32"} <= seen


def test_q4_0_blocks_too():
    w = np.random.default_rng(0).standard_normal((8, 64)).astype(np.float32)
    blocks = gguf.quants.quantize(w, gguf.GGMLQuantizationType.Q4_0)
    got = ops.dequantize_gguf(torch.from_numpy(blocks), 2)
    want = gguf.quants.dequantize(blocks, gguf.GGMLQuantizationType.Q4_0)
    assert torch.equal(got, torch.from_numpy(want))


def test_opcheck_and_compile():
    blocks = torch.randint(0, 256, (3, 2 * 34), dtype=torch.uint8)
    blocks[:, 0:2] = torch.tensor([0, 60], dtype=torch.uint8)   # finite fp16 scales
    blocks[:, 34:36] = torch.tensor([0, 56], dtype=torch.uint8)
    torch.library.opcheck(torch.ops.fastdecode.dequantize_gguf.default, (blocks, 8))
    f = torch.compile(lambda b: ops.dequantize_gguf(b, 8) * 2, fullgraph=True,
                      backend="aot_eager")
    assert torch.equal(f(blocks), ops.dequantize_gguf(blocks, 8) * 2)


@pytest.mark.parametrize("blocks,kind,exc,match", [
    (torch.zeros(2, 34, dtype=torch.uint8), 12, ValueError, "ggml_type must be 2"),
    (torch.zeros(2, 35, dtype=torch.uint8), 8, ValueError, "whole blocks of 34 bytes"),
    (torch.zeros(2, 34, dtype=torch.int8), 8, TypeError, "blocks must be uint8"),
    (None, 8, TypeError, "blocks must be a torch.Tensor"),
])
def test_bad_input(blocks, kind, exc, match):
    with pytest.raises(exc, match=match):
        ops.dequantize_gguf(blocks, kind)
