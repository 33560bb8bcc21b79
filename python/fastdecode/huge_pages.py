"""A model's weights on 2 MiB pages (Linux, where transparent huge pages are only given on
request: ``/sys/kernel/mm/transparent_hugepage/enabled`` reads ``[madvise]``).

A decode step streams every weight once. On 4 KiB pages that stream crosses a page every
4 KiB, and each new page costs a page-table walk: on a 2-core AMD EPYC (Zen 4) a plain
streaming read reached ~22 GB/s on 4 KiB pages and ~33 GB/s on 2 MiB pages, and a decode
step of the default model took ~25% less time (docs/benchmarks.md, session 12).

``place_weights(model)`` moves the large contiguous CPU parameters and buffers of a model
into one buffer advised for huge pages before anything is written to it (the kernel then
backs it with 2 MiB pages as the copies touch it), one tensor at a time, each old copy freed
and given back to the system as it goes (the peak stays near one copy of the weights).
Tensors stay what they were (dtype, shape, values; a tied head and its embedding still share
one tensor); they become views of the one buffer (``torch.save`` of one of them writes the
whole buffer; ``save_quantized`` writes each tensor). Where the system gives no huge pages on
request (THP ``always`` or ``never``, not Linux, madvise refused), nothing moves.

``fastdecode.load`` places a quantized model's weights (the default GGUF: ~110 MB, +0.15-0.4 s
of load, the load's peak memory unchanged) and ``quantize_model`` the weights it makes. A
float model's are left where they are: the default's 538 MB took 0.9 s more to load here
(the kernel assembling free 2 MiB pages), past the 1 s cold-start budget; ``place_weights``
does it on request.

``zeros_on_huge_pages`` gives ``setup_caches(..., huge_pages=True)`` (the serving engine's
call) the KV caches on 2 MiB pages the same way.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import math
import sys
from typing import Dict, List, Optional, Tuple

import torch
import torch.nn as nn

__all__ = ["place_weights", "zeros_on_huge_pages", "huge_pages_on_request", "huge_page_bytes"]

HUGE_PAGE = 2 << 20       # bytes
MIN_BYTES = 64 << 10      # smaller tensors stay where they are (norms, biases)
_ALIGN = 64               # each tensor starts on a cache line
_TRIM_EVERY = 4 << 20     # bytes moved between giving freed heap memory back
_MADV_HUGEPAGE = 14
_MADV_DONTNEED = 4
_PAGE = 4096
_THP_ENABLED = "/sys/kernel/mm/transparent_hugepage/enabled"


def huge_pages_on_request() -> bool:
    """Whether this system gives 2 MiB pages only where a program asks (madvise): the case
    where placing the weights changes anything. ``always`` already backs large regions with
    them; ``never`` gives none."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        with open(_THP_ENABLED) as f:
            return "[madvise]" in f.read()
    except OSError:
        return False


def _libc():
    lib = ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)
    lib.madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
    lib.madvise.restype = ctypes.c_int
    return lib


# (module, "_parameters" or "_buffers", name) of every slot that holds one tensor
Slot = Tuple[nn.Module, str, str]


def _movable(model: nn.Module) -> List[Tuple[torch.Tensor, List[Slot]]]:
    """The tensors to move, each with the slots that hold it: CPU, contiguous, the whole of
    their storage, at least MIN_BYTES, not a KV cache (setup_caches replaces those), and no
    other tensor on the same storage (moving one would split them)."""
    from .model import KVCache

    by_id: Dict[int, Tuple[torch.Tensor, List[Slot]]] = {}
    for module in model.modules():
        if isinstance(module, KVCache):
            continue
        for where in ("_parameters", "_buffers"):
            for name, t in getattr(module, where).items():
                if t is not None:
                    by_id.setdefault(id(t), (t, []))[1].append((module, where, name))
    per_storage: Dict[int, int] = {}
    for t, _ in by_id.values():
        if t.device.type == "cpu":
            ptr = t.untyped_storage().data_ptr()
            per_storage[ptr] = per_storage.get(ptr, 0) + 1
    out = []
    for t, slots in by_id.values():
        nbytes = t.numel() * t.element_size()
        if (t.device.type == "cpu" and nbytes >= MIN_BYTES and t.is_contiguous()
                and t.storage_offset() == 0 and t.untyped_storage().nbytes() == nbytes
                and per_storage[t.untyped_storage().data_ptr()] == 1):
            out.append((t, slots))
    return out


def _python_refs(t: torch.Tensor) -> int:
    return sys.getrefcount(t)


def _frame_refs() -> int:
    """The references _python_refs counts for a tensor that one container holds, besides
    that container's: the caller's local name and the calls' own (measured, not assumed:
    interpreters count borrowed references differently)."""
    holder = [torch.empty(1)]
    t = holder[0]
    return _python_refs(t) - 1


def _only_held_by(t: torch.Tensor, slots: List[Slot], frame_refs: int) -> bool:
    """Whether nothing but the model's slots holds t or its storage (no view of it, no
    Python reference outside the model), so its pages can be given back while it moves.
    Call it as _frame_refs calls _python_refs: with t in one local name."""
    storage = t.untyped_storage()
    if torch._C._storage_Use_Count(storage._cdata) != 2:  # t's, and `storage` here
        return False
    return _python_refs(t) - len(slots) == frame_refs + 1  # + this frame's `t`


def _move(libc, t: torch.Tensor, dst: torch.Tensor, release: bool) -> None:
    """t's bytes into dst (uint8, as long), HUGE_PAGE at a time. ``release``: the whole
    pages of t already copied are given back at once (MADV_DONTNEED; t is dropped after its
    move and nothing else reads it), so a large tensor is never held twice (the load's
    peak memory)."""
    src = t.view(-1).view(torch.uint8)
    base = src.data_ptr()
    for begin in range(0, src.numel(), HUGE_PAGE):
        end = min(begin + HUGE_PAGE, src.numel())
        dst[begin:end].copy_(src[begin:end])
        lo = -(-(base + begin) // _PAGE) * _PAGE  # the whole pages of this part of t
        hi = (base + end) // _PAGE * _PAGE
        if release and hi > lo:
            libc.madvise(lo, hi - lo, _MADV_DONTNEED)


def _slot_bytes(nbytes: int) -> int:
    """A tensor's bytes rounded up to the next cache line: where the next one starts."""
    return -(-nbytes // _ALIGN) * _ALIGN


def _advised_buffer(libc, nbytes: int) -> Optional[Tuple[torch.Tensor, int]]:
    """(buffer, start): an untouched uint8 buffer whose bytes from ``start`` (2 MiB aligned)
    on hold ``nbytes``, advised for huge pages before any page exists; None where madvise
    refuses."""
    total = -(-nbytes // HUGE_PAGE) * HUGE_PAGE
    buffer = torch.empty(total + HUGE_PAGE, dtype=torch.uint8)  # untouched: no page yet
    start = -buffer.data_ptr() % HUGE_PAGE
    if libc.madvise(buffer.data_ptr() + start, total, _MADV_HUGEPAGE) != 0:
        return None
    return buffer, start


def zeros_on_huge_pages(shapes: List[Tuple[int, ...]], dtype: torch.dtype
                        ) -> Optional[List[torch.Tensor]]:
    """Zeroed CPU tensors of ``shapes`` in one buffer on 2 MiB pages (each starting on a
    cache line), or None where the system gives no huge pages on request (then allocate as
    usual). ``setup_caches(..., huge_pages=True)`` (the serving engine's) puts the KV caches
    here: a batched decode step reads each row's keys and values, tens of MB a step, in runs
    of a few KiB, one page-table walk per 4 KiB page otherwise (docs/benchmarks.md, session
    14). Zeroing them assembles the pages: ~0.55 s for the engine's 377 MB here."""
    if not huge_pages_on_request():
        return None
    item = dtype.itemsize
    sizes = [_slot_bytes(math.prod(shape) * item) for shape in shapes]
    advised = _advised_buffer(_libc(), sum(sizes))
    if advised is None:
        return None
    buffer, offset = advised
    out = []
    for shape, size in zip(shapes, sizes):
        nbytes = math.prod(shape) * item
        out.append(buffer[offset:offset + nbytes].view(dtype).view(shape).zero_())
        offset += size
    return out


@torch.no_grad()
def place_weights(model: nn.Module) -> int:
    """Move ``model``'s large weights onto 2 MiB pages (module docstring); returns the bytes
    moved (0: nothing moved). Call it before ``fastdecode.fuse``, which reads the tensors
    (the loader and ``quantize_model`` do)."""
    if not huge_pages_on_request():
        return 0
    tensors = _movable(model)
    if not tensors:
        return 0
    sizes = [_slot_bytes(t.numel() * t.element_size()) for t, _ in tensors]
    libc = _libc()
    advised = _advised_buffer(libc, sum(sizes))
    if advised is None:
        return 0
    buffer, start = advised
    trim = getattr(libc, "malloc_trim", None)  # glibc: freed heap pages back to the system
    if trim is not None:
        trim(0)  # what the load freed goes back before the buffer's pages come
    offset, since_trim, frame_refs = start, 0, _frame_refs()
    for i, size in enumerate(sizes):
        t, slots = tensors[i]
        tensors[i] = None  # the list's reference goes: the old copy is freed after its move
        nbytes = t.numel() * t.element_size()
        view = buffer[offset:offset + nbytes].view(t.dtype).view(t.shape)
        release = _only_held_by(t, slots, frame_refs)  # (not inside a call holding t)
        _move(libc, t, buffer[offset:offset + nbytes], release)
        for module, where, name in slots:
            if where == "_parameters":
                module._parameters[name].data = view  # the Parameter object stays
            else:
                module._buffers[name] = view  # (not setattr: no edit reported to fusion)
        offset += size
        since_trim += size
        del t, slots
        if trim is not None and since_trim >= _TRIM_EVERY:
            trim(0)
            since_trim = 0
    if trim is not None:
        trim(0)
    return offset - start


def huge_page_bytes() -> Optional[int]:
    """This process's anonymous memory on huge pages (``AnonHugePages`` of
    ``/proc/self/smaps_rollup``), in bytes; None where the kernel does not say."""
    try:
        with open("/proc/self/smaps_rollup") as f:
            for line in f:
                if line.startswith("AnonHugePages:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None
