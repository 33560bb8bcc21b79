"""Tensor parallelism over real processes: torchrun with gloo on loopback, 2 and 3 ranks.

A tiny random model (fp32, int8, int4) split by ``fastdecode.tp.apply_tp`` must give the
logits and greedy tokens of the one-process model, eager, compiled (fullgraph, functional
collectives) and speculative; the CLI on the default model prints from rank 0 only, the same
greedy text as one process, and refuses a world size the KV groups cannot give at once."""
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import tp_ranks

HERE = Path(__file__).resolve().parent
TIMEOUT_S = 300


def torchrun(nproc: int, *args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    return subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone",
                           f"--nproc_per_node={nproc}", *args], capture_output=True, text=True,
                          timeout=TIMEOUT_S, env=env)


@pytest.fixture(scope="module")
def one_process():
    out = {}
    for variant in ("fp32", "int8", "int4"):
        out[variant] = tp_ranks.run(tp_ranks.build(variant))
    return out


@pytest.mark.parametrize("nproc", [2, 3])
def test_ranks_match_one_process(nproc, one_process, tmp_path):
    out = tmp_path / "ranks.pt"
    proc = torchrun(nproc, str(HERE / "tp_ranks.py"), str(out))
    assert proc.returncode == 0, proc.stderr[-3000:]
    got = torch.load(out, weights_only=True)
    for variant in ("fp32", "int8", "int4"):
        logits, tokens = got[variant]
        want_logits, want_tokens = one_process[variant]
        # the rank's partial sums add in another order; the integer GEMVs scale per block
        tol = 1e-4 if variant == "fp32" else 1e-3
        torch.testing.assert_close(logits, want_logits, rtol=tol, atol=tol)
        assert torch.equal(tokens, want_tokens), variant
    logits, tokens = got["compiled"]
    torch.testing.assert_close(logits, one_process["fp32"][0], rtol=1e-4, atol=1e-4)
    assert torch.equal(tokens, one_process["fp32"][1])
    spec_tokens, accept_counts = got["speculative"]
    assert torch.equal(spec_tokens, one_process["fp32"][1])
    assert sum(accept_counts) > 0


def _cli(nproc, *flags):
    args = ["-m", "fastdecode", "generate", "--prompt", "The capital of France is",
            "--max-new-tokens", "12", "--temperature", "0", *flags]
    if nproc == 1:
        return subprocess.run([sys.executable, *args], capture_output=True, text=True,
                              timeout=TIMEOUT_S)
    return torchrun(nproc, *args)


def _text(stdout: str) -> str:
    return stdout.split("\n[")[0]  # the streamed text, before the timing line


@pytest.mark.parametrize("nproc,flags,exact", [(2, ("--dequantize",), True), (3, (), False)])
def test_cli_under_torchrun_prints_once_and_matches_one_process(nproc, flags, exact):
    """fp32: the same text. The GGUF blocks (the default): the ranks add their parts of the
    row-parallel layers in another order than one process, and a last-bit difference can
    flip an 8-bit activation rounding downstream, so a dozen greedy tokens may part after a
    few; the first line (the answer) is the same."""
    single = _cli(1, *flags)
    assert single.returncode == 0, single.stderr[-2000:]
    ranks = _cli(nproc, *flags)
    assert ranks.returncode == 0, ranks.stderr[-3000:]
    if exact:
        assert _text(ranks.stdout) == _text(single.stdout)
    else:
        assert _text(ranks.stdout).splitlines()[0] == _text(single.stdout).splitlines()[0]
    assert ranks.stdout.count("tokens/s]") == 1  # rank 0 only
    assert f"tensor parallel over {nproc} ranks" in ranks.stderr


def test_cli_refuses_more_ranks_than_kv_groups_at_once():
    proc = torchrun(4, "-m", "fastdecode", "generate", "--max-new-tokens", "2")
    assert proc.returncode != 0
    assert "n_head=9 query heads in n_local_heads=3 KV groups over 4 ranks" in proc.stderr
