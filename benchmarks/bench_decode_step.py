"""One decode step (model forward for one token, no sampling) of SmolLM2-135M in fp32, int8
and int4, interleaved in rounds so that the shared host's drift hits all three alike; then
the same int4 step with every quantized linear replaced by a zero-filling stub, which leaves
the work outside the linears (norms, attention, residuals, SwiGLU, module calls; module by
module, as the fused layer op would call the real linears).

    python benchmarks/bench_decode_step.py [--steps 60] [--rounds 3]
"""
from __future__ import annotations

import argparse
import time

import torch

import fastdecode
from fastdecode.quantize import QUANTIZED_TYPES, quantize_model


def ms_per_step(model, steps: int) -> float:
    x, pos = torch.tensor([[42]]), torch.tensor([10])
    with torch.no_grad():
        model(x, pos)
        t0 = time.perf_counter()
        for _ in range(steps):
            model(x, pos)
    return (time.perf_counter() - t0) / steps * 1e3


def stub_linears(model) -> None:
    fastdecode.unfuse(model)  # module by module, so that the stubs are what runs
    for mod in model.modules():
        if isinstance(mod, QUANTIZED_TYPES):
            n_out = mod.out_features
            mod.forward = (lambda n: lambda inp: inp.new_zeros(*inp.shape[:-1], n))(n_out)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=60)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    models = {"fp32": fastdecode.load("default", quantized=False)[0],
              "int8": quantize_model(fastdecode.load("default", quantized=False)[0], "int8"),
              "int4": quantize_model(fastdecode.load("default", quantized=False)[0], "int4")}
    for m in models.values():
        m.setup_caches(1, 256)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; ms per decode step")
    print(f"{'round':>5s} {'fp32':>7s} {'int8':>7s} {'int4':>7s} {'int8 vs fp32':>13s} "
          f"{'int4 vs fp32':>13s}")
    for r in range(args.rounds):
        t = {name: ms_per_step(m, args.steps) for name, m in models.items()}
        print(f"{r:5d} {t['fp32']:7.2f} {t['int8']:7.2f} {t['int4']:7.2f} "
              f"{t['fp32'] / t['int8']:12.2f}x {t['fp32'] / t['int4']:12.2f}x")
    stub_linears(models["int4"])
    print(f"int4 step with the quantized linears stubbed out: "
          f"{ms_per_step(models['int4'], args.steps):.2f} ms")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
