"""Every precision of the default model takes the fused C++ step for every step shape
decoding uses (the 1-position decode step, a 2-position draft step, a k + 1-position verify
step, a 32-position prompt chunk of a quantized model), with no silent fall-back to the
module path: counted at the fused calls (layers, final norm and head in one ops.decode_step
wherever logits are returned) and at the module path's attention and head."""
import pytest
import torch
from conftest import fused_calls

import fastdecode
from fastdecode import fusion
from fastdecode.model import Attention
from fastdecode.quantize import quantize_model


def _float():
    return fastdecode.load("default", quantized=False)[0]


FORMATS = {
    "fp32": _float,
    "int8 per channel": lambda: quantize_model(_float(), "int8", None),
    "int8 groups of 32": lambda: quantize_model(_float(), "int8", 32),
    "int4 groups of 32": lambda: quantize_model(_float(), "int4", 32),
    "GGUF Q4_1 + Q8_0 as stored": lambda: fastdecode.load("default")[0],
}


@pytest.mark.parametrize("name", list(FORMATS))
def test_each_format_runs_every_step_shape_fused(name, monkeypatch):
    model = FORMATS[name]()
    assert model.decode_path == "fused", (name, model.__dict__.get("_fusion_reason"))
    calls = {"modules": 0}

    def counted(real):
        def call(self, *args):
            calls["modules"] += 1
            return real(self, *args)
        return call
    monkeypatch.setattr(Attention, "forward", counted(Attention.forward))
    head = type(model.output)
    monkeypatch.setattr(head, "forward", counted(head.forward))
    quantized = name != "fp32"
    shapes = [1, 2, 5] + ([32, 64] if quantized else [16])
    model.setup_caches(2, 128)
    start = 0
    with torch.no_grad(), fused_calls() as seen:
        for s in shapes:
            ids = torch.randint(0, 1000, (2, s))
            model(ids, torch.arange(start, start + s))
            start += s
    calls["fused"] = [(op, shape[1]) for op, shape in seen]
    per_call = fusion.FUSED_MAX_POSITIONS if quantized else fusion.FP32_FUSED_POSITIONS
    expected = [("step", c) for s in shapes for c in [per_call] * (s // per_call) + (
        [s % per_call] if s % per_call else [])]
    assert calls == {"fused": expected, "modules": 0}, (name, calls)
