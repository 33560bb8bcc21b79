"""FASTDECODE_ISA picks the kernel path for the process (so every path can be tested and
measured on one machine), build_info reports it, and a path the CPU lacks or an unknown
name is refused at import with the paths that would work."""
import os
import subprocess
import sys

import pytest
import torch

import fastdecode

INFO = fastdecode.build_info()
SUPPORTED = INFO["supported_isas"].split(",")


def _run(code: str, isa: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "FASTDECODE_ISA": isa}
    return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                          text=True, timeout=120)


def test_the_default_is_the_best_path_this_cpu_runs():
    assert os.environ.get("FASTDECODE_ISA") or INFO["active_isa"] == SUPPORTED[0]
    assert SUPPORTED[-1] in ("scalar", "neon")
    assert set(SUPPORTED) <= set(INFO["compiled_isas"].split(","))


@pytest.mark.parametrize("isa", SUPPORTED)
def test_each_path_is_selected_reported_and_agrees(isa, tmp_path):
    """The path runs (build_info says which) and a quantized GEMV and the sampler's softmax
    give the default path's figures within float rounding."""
    code = ("import torch, fastdecode\n"
            "print(fastdecode.build_info()['active_isa'])\n"
            "g = torch.Generator().manual_seed(0)\n"
            "x = torch.randn(3, 256, generator=g)\n"
            "w = torch.randn(64, 256, generator=g)\n"
            "q, s = fastdecode.ops.quantize_int8_per_channel(w)\n"
            "y = fastdecode.ops.int8_linear(x, q, s)\n"
            "p = fastdecode.ops.logits_to_probs(x, temperature=0.7, top_p=0.9)\n"
            "torch.save((y, p), __import__('sys').argv[-1])\n")
    outputs = {}
    for path in sorted({isa, SUPPORTED[0]}):
        target = str(tmp_path / f"{path}.pt")
        done = subprocess.run([sys.executable, "-c", code, target],
                              env={**os.environ, "FASTDECODE_ISA": path},
                              capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr
        assert done.stdout.split()[0] == path
        outputs[path] = torch.load(target, weights_only=True)
    for ours, best in zip(outputs[isa], outputs[SUPPORTED[0]]):
        torch.testing.assert_close(ours, best, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("isa,message", [
    ("avx1024", "is not a kernel path"),
    ("neon" if "neon" not in SUPPORTED else "avx2", "cannot run that kernel path"),
])
def test_a_path_this_cpu_cannot_run_is_refused_at_import(isa, message):
    done = _run("import fastdecode", isa)
    assert done.returncode != 0
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("ValueError: FASTDECODE_ISA=" + isa) and message in last, last
    assert INFO["supported_isas"] in last
