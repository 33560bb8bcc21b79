"""A GGUF reader that checks the file as it reads it: every length, count, type and tensor
extent is compared with the file before it is used, and every error is a ``ValueError`` that
names the file and says what is wrong ("truncated: tensor X needs N bytes at offset O, the
file has M"). Metadata is parsed with ``struct`` straight from a memory map (the ``gguf``
package's reader builds a numpy view per value and took ~5 s on the default model's
tokenizer arrays); tensors are numpy views of the map, shaped as ``gguf.GGUFReader`` shapes
them, so ``gguf.quants.dequantize`` reads them.

Layout (GGUF v2/v3, little-endian): magic "GGUF", u32 version, u64 tensor count, u64
metadata count; metadata entries (string key, u32 type, value); tensor infos (string name,
u32 n_dims, u64 dims, u32 type, u64 offset); padding to ``general.alignment`` (32); data.
"""
from __future__ import annotations

import enum
import mmap
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Tuple

import numpy as np

from . import _C

__all__ = ["GGUFFile", "GGUFTensor", "read_gguf", "dequantize", "BLOCK_BYTES"]

# 32-value blocks fastdecode decodes itself (and keeps as int4 / int8 with quantized=True):
# type -> bytes per block (an fp16 scale d, Q4_1 an fp16 minimum m, then the values), from
# the C++ table (csrc/kernels/gguf_blocks.cpp)
BLOCK_BYTES = dict(_C.gguf_block_bytes)

_MAGIC = b"GGUF"
_VERSIONS = (2, 3)
# value type -> (struct format, size) for the scalar types
_SCALARS = {0: ("<B", 1), 1: ("<b", 1), 2: ("<H", 2), 3: ("<h", 2), 4: ("<I", 4), 5: ("<i", 4),
            6: ("<f", 4), 7: ("<?", 1), 10: ("<Q", 8), 11: ("<q", 8), 12: ("<d", 8)}
_NUMPY = {0: np.uint8, 1: np.int8, 2: np.uint16, 3: np.int16, 4: np.uint32, 5: np.int32,
          6: np.float32, 7: np.bool_, 10: np.uint64, 11: np.int64, 12: np.float64}
_STRING, _ARRAY = 8, 9


class GGMLType(enum.IntEnum):
    """The tensor types fastdecode reads without the ``gguf`` package (its enum's names and
    numbers, which the GGUF format fixes); a file with any other type imports ``gguf`` for
    it (``import gguf`` costs ~3 MB and ~0.1 s of a default load)."""
    F32 = 0
    F16 = 1
    Q4_0 = 2
    Q4_1 = 3
    Q8_0 = 8
    BF16 = 30


# type -> (values per block, bytes per block); the block types' bytes from the C++ table
_OWN_SIZES = {GGMLType.F32: (1, 4), GGMLType.F16: (1, 2), GGMLType.BF16: (1, 2),
              **{GGMLType[name]: (32, size) for name, size in BLOCK_BYTES.items()}}


def _tensor_type(raw: int):
    """``(type, (block values, block bytes))`` of a raw type number; ValueError if unknown."""
    try:
        ttype = GGMLType(raw)
        return ttype, _OWN_SIZES[ttype]
    except ValueError:
        pass
    import gguf

    ttype = gguf.GGMLQuantizationType(raw)  # ValueError for a number it does not know
    return ttype, gguf.GGML_QUANT_SIZES[ttype]
# element types stored as themselves (not in blocks): numpy dtype
_PLAIN_TENSORS = {"F32": np.float32, "F16": np.float16, "F64": np.float64, "I8": np.int8,
                  "I16": np.int16, "I32": np.int32, "I64": np.int64}


@dataclass
class GGUFTensor:
    name: str
    tensor_type: Any          # GGMLType, or gguf.GGMLQuantizationType for other types
    shape: List[int]          # GGUF order: the fastest-varying dimension first
    n_elements: int
    n_bytes: int
    data_offset: int          # in the file
    data: np.ndarray          # a view of the map, shaped like gguf.GGUFReader's


@dataclass
class GGUFFile:
    path: Path
    version: int
    fields: Dict[str, Any]    # metadata: str, int, float, bool or lists of them
    tensors: List[GGUFTensor]
    buffer: Any = None        # the read-only map the tensors view

    def release(self, tensor: GGUFTensor) -> None:
        """Drop the map's pages under ``tensor`` from this process's memory (they stay in
        the page cache; reading the tensor again maps them again). A loader that copies the
        tensors one at a time and releases each then holds one tensor of the file in its
        resident memory, not the whole file (mapped pages count in its RSS)."""
        if not isinstance(self.buffer, mmap.mmap) or not hasattr(mmap, "MADV_DONTNEED"):
            return
        start = tensor.data_offset // mmap.PAGESIZE * mmap.PAGESIZE
        self.buffer.madvise(mmap.MADV_DONTNEED, start,
                            tensor.data_offset + tensor.n_bytes - start)


class _Cursor:
    """Reads little-endian values from the map, checking each read against the file size."""

    def __init__(self, path: Path, buf):
        self.path, self.buf, self.size, self.pos = path, buf, len(buf), 0

    def fail(self, what: str) -> ValueError:
        return ValueError(f"{self.path}: {what}")

    def need(self, n: int, what: str) -> None:
        if n < 0 or self.pos + n > self.size:
            raise self.fail(f"truncated: {what} needs {n} bytes at offset {self.pos}, the file "
                            f"has {self.size}")

    def scalar(self, fmt: str, size: int, what: str):
        self.need(size, what)
        value = struct.unpack_from(fmt, self.buf, self.pos)[0]
        self.pos += size
        return value

    def u32(self, what: str) -> int:
        return self.scalar("<I", 4, what)

    def u64(self, what: str) -> int:
        return self.scalar("<Q", 8, what)

    def string(self, what: str) -> str:
        n = self.u64(f"the length of {what}")
        self.need(n, what)
        raw = self.buf[self.pos:self.pos + n]
        self.pos += n
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError as e:
            raise self.fail(f"{what} is not UTF-8 ({e.reason} at byte {e.start})") from None

    def strings(self, count: int, what: str) -> List[str]:
        """``count`` strings (a tokenizer's vocabulary: ~50k of them, read in one loop)."""
        buf, size, pos, out = self.buf, self.size, self.pos, []
        unpack = struct.Struct("<Q").unpack_from
        try:
            for _ in range(count):
                if pos + 8 > size:
                    break
                (n,) = unpack(buf, pos)
                if n > size - pos - 8:
                    break
                out.append(buf[pos + 8:pos + 8 + n].decode("utf-8"))
                pos += 8 + n
        except UnicodeDecodeError as e:
            raise self.fail(f"{what}[{len(out)}] is not UTF-8 ({e.reason})") from None
        self.pos = pos
        if len(out) < count:  # report the element that did not fit
            self.string(f"{what}[{len(out)}]")
        return out

    def value(self, vtype: int, what: str):
        if vtype in _SCALARS:
            return self.scalar(*_SCALARS[vtype], what)
        if vtype == _STRING:
            return self.string(what)
        if vtype == _ARRAY:
            etype = self.u32(f"the element type of {what}")
            count = self.u64(f"the length of {what}")
            if etype in _NUMPY:
                size = np.dtype(_NUMPY[etype]).itemsize
                if count > (self.size - self.pos) // size:
                    self.need(count * size, what)
                arr = np.frombuffer(self.buf, dtype=_NUMPY[etype], count=count,
                                    offset=self.pos)
                self.pos += count * size
                return arr.tolist()
            if etype not in (_STRING, _ARRAY):
                raise self.fail(f"{what} has elements of unknown type {etype}")
            if count > self.size - self.pos:  # every element takes at least one byte
                raise self.fail(f"corrupt: {what} claims {count} elements, more than the "
                                f"{self.size - self.pos} bytes left in the file")
            if etype == _STRING:
                return self.strings(count, what)
            return [self.value(etype, f"{what}[{i}]") for i in range(count)]
        raise self.fail(f"{what} has unknown value type {vtype}")


def read_gguf(path) -> GGUFFile:
    """Parse and check ``path``; tensors are views of a read-only memory map. A missing file
    raises FileNotFoundError; anything wrong inside it a ValueError naming it."""
    path = Path(path)
    with open(path, "rb") as f:
        try:
            buf = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
        except ValueError:  # an empty file cannot be mapped
            buf = b""
    c = _Cursor(path, buf)
    c.need(24, "the GGUF header")
    if buf[:4] != _MAGIC:
        raise c.fail(f"not a GGUF file (it starts with {buf[:4]!r}, not b'GGUF')")
    c.pos = 4
    version = c.u32("the version")
    if version not in _VERSIONS:
        raise c.fail(f"GGUF version {version}; fastdecode reads versions 2 and 3")
    n_tensors, n_fields = c.u64("the tensor count"), c.u64("the metadata count")
    # a tensor info takes >= 28 bytes, a metadata entry >= 13
    if n_tensors * 28 + n_fields * 13 > c.size:
        raise c.fail(f"corrupt header: {n_tensors} tensors and {n_fields} metadata entries "
                     f"cannot fit in {c.size} bytes")
    fields: Dict[str, Any] = {}
    for i in range(n_fields):
        key = c.string(f"metadata key #{i}")
        fields[key] = c.value(c.u32(f"the type of metadata {key!r}"), f"metadata {key!r}")
    infos: List[Tuple[str, List[int], int, int]] = []
    for i in range(n_tensors):
        name = c.string(f"the name of tensor #{i}")
        n_dims = c.u32(f"the rank of tensor {name!r}")
        if not 1 <= n_dims <= 4:
            raise c.fail(f"corrupt: tensor {name!r} has {n_dims} dimensions (GGUF allows 1-4)")
        dims = [c.u64(f"the shape of tensor {name!r}") for _ in range(n_dims)]
        infos.append((name, dims, c.u32(f"the type of tensor {name!r}"),
                      c.u64(f"the offset of tensor {name!r}")))
    alignment = fields.get("general.alignment", 32)
    if not isinstance(alignment, int) or alignment <= 0 or alignment & (alignment - 1):
        raise c.fail(f"general.alignment must be a power of two, got {alignment!r}")
    data_start = (c.pos + alignment - 1) // alignment * alignment
    # the metadata is parsed into Python values: its pages (the vocabulary's strings, MBs)
    # can leave this process's memory now
    metadata_pages = c.pos // mmap.PAGESIZE * mmap.PAGESIZE
    if isinstance(buf, mmap.mmap) and hasattr(mmap, "MADV_DONTNEED") and metadata_pages:
        buf.madvise(mmap.MADV_DONTNEED, 0, metadata_pages)
    tensors, names = [], set()
    for name, dims, raw_type, offset in infos:
        if name in names:
            raise c.fail(f"corrupt: tensor {name!r} appears twice")
        names.add(name)
        try:
            ttype, (block, type_size) = _tensor_type(raw_type)
        except ValueError:
            raise c.fail(f"tensor {name!r} has unknown type {raw_type}") from None
        n = 1
        for d in dims:
            n *= d
        if n == 0 or n > c.size * block or dims[0] % block:
            raise c.fail(f"corrupt: tensor {name!r} has an impossible shape {dims} for "
                         f"{ttype.name}")
        n_bytes = n // block * type_size
        start = data_start + offset
        if start + n_bytes > c.size:
            raise c.fail(f"truncated: tensor {name!r} needs {n_bytes} bytes at offset {start}, "
                         f"the file has {c.size}")
        np_dims = tuple(reversed(dims))
        if ttype.name in _PLAIN_TENSORS:
            data = np.frombuffer(buf, dtype=_PLAIN_TENSORS[ttype.name], count=n, offset=start)
        else:
            data = np.frombuffer(buf, dtype=np.uint8, count=n_bytes, offset=start)
            np_dims = (*np_dims[:-1], np_dims[-1] // block * type_size)
        tensors.append(GGUFTensor(name, ttype, dims, n, n_bytes, start, data.reshape(np_dims)))
    return GGUFFile(path, version, fields, tensors, buf)


def dequantize(t: GGUFTensor):
    """fp32 torch tensor of ``t`` in PyTorch order (the GGUF shape reversed): Q4_0, Q4_1 and
    Q8_0 blocks through ``ops.dequantize_gguf`` (C++, all cores; bit for bit the ``gguf``
    package's values, whose numpy path took ~2.5 s for the default model), F32 / F16 as
    stored, other types through the ``gguf`` package."""
    import torch

    shape = tuple(reversed(t.shape))
    if t.tensor_type.name in BLOCK_BYTES:
        from . import ops
        blocks = torch.from_numpy(np.array(t.data, copy=True))
        return ops.dequantize_gguf(blocks, int(t.tensor_type)).reshape(shape)
    if t.tensor_type.name in ("F32", "F16"):  # stored as themselves: a float32 copy
        return torch.from_numpy(np.array(t.data, dtype=np.float32)).reshape(shape)
    import gguf
    from gguf.quants import dequantize as gguf_dequantize
    ttype = gguf.GGMLQuantizationType(int(t.tensor_type))
    return torch.from_numpy(np.array(gguf_dequantize(t.data, ttype),
                                     dtype=np.float32)).reshape(shape)
