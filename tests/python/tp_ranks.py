"""Run by test_tp_distributed.py under torchrun (gloo on loopback): every rank builds the same
random tiny model (6 query heads in 3 KV groups), quantizes it as asked, keeps its part with
``fastdecode.tp.apply_tp`` and computes prefill logits, a compiled step's logits and 8 greedy
tokens (plus a speculative run with a replicated draft); rank 0 saves them to argv[1].

    torchrun --standalone --nproc_per_node=N tests/python/tp_ranks.py OUT.pt
"""
import os
import sys
from pathlib import Path

import torch
import torch.distributed as dist

sys.path.insert(0, str(Path(__file__).resolve().parent))
from conftest import tiny_model  # noqa: E402

import fastdecode  # noqa: E402
from fastdecode import tp  # noqa: E402
from fastdecode.quantize import quantize_model  # noqa: E402

SHAPE = dict(n_head=6, n_local_heads=3, dim=96, intermediate_size=256, vocab_size=301)
PROMPT = torch.tensor([5, 17, 42, 99, 3, 250, 7])


def build(variant: str):
    model = tiny_model(seed=3, **SHAPE)
    if variant != "fp32":
        quantize_model(model, variant, groupsize=32)
    return model


def run(model, compiled: bool = False):
    model.setup_caches(1, 64)
    pos = torch.arange(len(PROMPT))
    forward = model
    if compiled:
        forward = torch.compile(lambda idx, p: model(idx, p), fullgraph=True, backend="aot_eager")
    with torch.no_grad():
        logits = forward(PROMPT[None], pos)
    tokens, _ = fastdecode.generate(model, PROMPT, 8, temperature=0)
    return logits, tokens


def main(out_path: str) -> int:
    rank = tp.maybe_init_dist()
    assert rank is not None, "run under torchrun with at least 2 ranks"
    world = dist.get_world_size()
    results = {}
    for variant in ("fp32", "int8", "int4"):
        model = build(variant)
        tp.apply_tp(model, rank, world)
        results[variant] = run(model)
    model = build("fp32")
    tp.apply_tp(model, rank, world)
    results["compiled"] = run(model, compiled=True)
    draft = build("int8")  # replicated: every rank drafts the same tokens
    tokens, info = fastdecode.generate(model, PROMPT, 8, temperature=0, draft_model=draft,
                                       speculate_k=3)
    results["speculative"] = (tokens, info["accept_counts"])
    if rank == 0:
        torch.save(results, out_path)
    dist.barrier()
    dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    code = main(sys.argv[1])
    # Every result is on disk and the group is gone. The interpreter's own teardown then
    # aborted a rank about once in ten runs here ("terminate called without an active
    # exception": a joinable std::thread of torch's destroyed at exit, after our work), so
    # the rank leaves without it.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
