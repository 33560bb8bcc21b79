"""SamplingParams: one frozen, typed object per request, checked once when built (by the C++
op's own range check) and carried as it is to the sampler; each API style converts its own
spelling of "off" where it enters."""
import dataclasses

import pytest
import torch
from conftest import tiny_model

import fastdecode
from fastdecode import ops
from fastdecode.params import SamplingParams, generator_for


@pytest.fixture(scope="module")
def tiny():
    return tiny_model(seed=9)


def test_defaults_and_frozen():
    p = SamplingParams()
    assert (p.temperature, p.top_k, p.top_p, p.min_p, p.repetition_penalty) == \
        (1.0, None, 1.0, 0.0, 1.0)
    assert p.stop == () and p.seed is None and p.max_tokens is None
    with pytest.raises(dataclasses.FrozenInstanceError):
        p.temperature = 0.5


@pytest.mark.parametrize("kwargs,match", [
    (dict(temperature=-1), r"check_sampling_params: temperature must be a finite number >= 0"),
    (dict(top_p=0.0), r"top_p must be in \(0, 1\]"),
    (dict(min_p=1.0), r"min_p must be in \[0, 1\)"),
    (dict(repetition_penalty=0), r"repetition_penalty must be a finite float32 number > 0"),
    (dict(top_k=0), r"top_k must be None \(off\) or an integer >= 1, got 0"),
    (dict(top_k=-1), r"top_k must be None \(off\) or an integer >= 1, got -1"),
    (dict(top_k=2.0), r"top_k must be None \(off\) or an integer >= 1"),
    (dict(temperature="hot"), r"temperature must be a number or a per-row tensor"),
    (dict(seed=-1), r"seed must be None or an int in \[0, 2\^64 - 1\]"),
    (dict(seed=1, generator=torch.Generator()), r"pass seed or generator, not both"),
    (dict(stop=[""]), r"stop must be a non-empty str or a list of non-empty str"),
    (dict(max_tokens=0), r"max_tokens must be an integer >= 1"),
    (dict(temperature=torch.ones(2), top_p=torch.ones(3)), r"top_p has 3 rows, another knob"),
])
def test_bad_values_are_refused_when_built(kwargs, match):
    with pytest.raises(ValueError, match=match):
        SamplingParams(**kwargs)


def test_checked_once_per_request(tiny, monkeypatch, default_model):
    calls = []
    real = ops.check_sampling_params
    monkeypatch.setattr(ops, "check_sampling_params",
                        lambda *a, **k: calls.append(1) or real(*a, **k))
    llm = fastdecode.LLM.from_model(*default_model)
    llm.generate("Hello", max_tokens=4, temperature=0.7, top_k=40, seed=3)
    assert len(calls) == 1  # llm_utils' spellings -> SamplingParams -> the sampler
    calls.clear()
    fastdecode.generate(tiny, torch.tensor([1, 2]), 4, temperature=0.5, top_p=0.9)
    assert len(calls) == 1
    calls.clear()
    p = SamplingParams(temperature=0.5, seed=1, max_tokens=4)
    assert len(calls) == 1
    p.replace(seed=2, max_tokens=9)  # a chat turn: the knobs are not checked again
    assert len(calls) == 1


def test_one_meaning_of_off_per_api(tiny):
    want, _ = fastdecode.generate(tiny, torch.tensor([1, 2]), 6, temperature=0.9,
                                  generator=torch.Generator().manual_seed(1))
    for top_k in (None, 0):  # gpt-fast's two spellings become None
        got, _ = fastdecode.generate(tiny, torch.tensor([1, 2]), 6, temperature=0.9,
                                     top_k=top_k, generator=torch.Generator().manual_seed(1))
        assert torch.equal(got, want)
    assert SamplingParams.from_kwargs({"top_k": 0}).top_k is None


def test_params_and_keywords_give_the_same_tokens(tiny, default_model):
    kw = dict(temperature=0.8, top_k=20, top_p=0.9, min_p=0.05, repetition_penalty=1.2)
    a, _ = fastdecode.generate(tiny, torch.tensor([1, 2, 3]), 8, **kw,
                               generator=torch.Generator().manual_seed(5))
    b, _ = fastdecode.generate(tiny, torch.tensor([1, 2, 3]), 8,
                               params=SamplingParams(**kw, seed=5))
    assert torch.equal(a, b)
    with pytest.raises(TypeError, match="pass params or sampling keywords, not both"):
        fastdecode.generate(tiny, torch.tensor([1]), 2, params=SamplingParams(), top_k=3)
    with pytest.raises(ValueError, match="stop strings need LLM.complete"):
        fastdecode.generate(tiny, torch.tensor([1]), 2, params=SamplingParams(stop="x"))
    with pytest.raises(ValueError, match="max_tokens must be None or max_new_tokens"):
        fastdecode.generate(tiny, torch.tensor([1]), 2, params=SamplingParams(max_tokens=3))
    llm = fastdecode.LLM.from_model(*default_model)
    text = llm.generate("Once upon a time", max_tokens=8, seed=2, **kw)["text"]
    params = SamplingParams(**kw, seed=2, max_tokens=8)
    assert llm.complete("Once upon a time", params)[0]["text"] == text


def test_per_row_knobs_must_match_the_batch(tiny):
    p = SamplingParams(temperature=torch.tensor([0.0, 1.0]))
    assert p.rows == 2 and not p.greedy
    with pytest.raises(ValueError, match=r"temperature must be a scalar or a per-row tensor "
                                         r"of shape \[3\]"):
        fastdecode.generate(tiny, torch.tensor([1, 2]), 3, batch_size=3, params=p)
    seq, _ = fastdecode.generate(tiny, torch.tensor([1, 2]), 3, batch_size=2, params=p)
    assert seq.shape == (2, 5)


def test_a_seed_gives_each_request_its_own_generator():
    a = generator_for(7, "cpu")
    b = generator_for(7, "cpu")
    assert torch.equal(torch.rand(4, generator=a), torch.rand(4, generator=b))
    assert generator_for(None, "cpu") is None
    p = SamplingParams(seed=7).with_generator("cpu")
    assert p.seed is None and isinstance(p.generator, torch.Generator)
