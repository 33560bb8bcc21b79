"""Oracle of fastdecode::repack_gguf, in numpy: GGUF Q4_0 / Q4_1 / Q8_0 rows kept in their
precision, as the quantized linears store them (docs/formats.md)."""
import numpy as np

BLOCK_BYTES = {2: 18, 3: 20, 8: 34}  # ggml type -> bytes per 32-value block
TILE = 16                            # int4 rows per tile


def _f16(blocks, offset):
    return np.ascontiguousarray(blocks[..., offset:offset + 2]).view(np.float16)[..., 0]


def tile_words(words):
    """[N, C] 4-byte words -> flat, in 16-row column-major tiles (the last tile: N % 16)."""
    full = words.shape[0] // TILE * TILE
    tiles = words[:full].reshape(-1, TILE, words.shape[1]).transpose(0, 2, 1)
    return np.concatenate([tiles.reshape(-1), words[full:].T.reshape(-1)])


def repack_gguf_ref(blocks: np.ndarray, ggml_type: int):
    """blocks uint8 [N, K / 32 * bytes] -> Q8_0: (q int8 [N, K], d [N, K / 32]); Q4_*:
    (packed uint8 [N, K / 2], scales_and_zeros [N, K / 32, 2]), tiled."""
    n = blocks.shape[0]
    b = blocks.reshape(n, -1, BLOCK_BYTES[ggml_type])
    d = _f16(b, 0).astype(np.float32)
    if ggml_type == 8:
        return np.ascontiguousarray(b[..., 2:]).view(np.int8).reshape(n, -1), d
    if ggml_type == 3:
        zero = _f16(b, 2).astype(np.float32) + np.float32(8) * d
        nibbles = b[..., 4:]
    else:
        zero = np.zeros_like(d)
        nibbles = b[..., 2:]
    words = np.ascontiguousarray(nibbles).reshape(n, -1).view(np.uint32)
    packed = tile_words(words).view(np.uint8).reshape(n, -1)
    sz = np.ascontiguousarray(np.stack([d, zero], axis=-1)).reshape(n, -1).view(np.uint32)
    return packed, tile_words(sz).view(np.float32).reshape(n, -1, 2)
