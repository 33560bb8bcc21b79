"""generate(): shapes, batching, callback, EOS padding, interactive cap and every validation
rule of gpt-fast's generate (each a ValueError naming the argument)."""
import pytest
import torch
from conftest import tiny_model

import fastdecode
from fastdecode import generate


@pytest.fixture(scope="module")
def model():
    return tiny_model(seed=3)


def test_returns_documented_shapes(model):
    prompt = torch.randint(0, 101, (5,))
    seq, stats = generate(model, prompt, 7, temperature=0)
    assert seq.shape == (1, 12) and seq.dtype == torch.int64
    assert torch.equal(seq[0, :5], prompt)
    assert stats == {"accept_counts": [0] * 9}


def test_greedy_equals_step_by_step_argmax(model):
    prompt = torch.randint(0, 101, (1, 4))
    seq, _ = generate(model, prompt, 6, temperature=0)
    ids = prompt
    with torch.no_grad():
        for _ in range(6):
            model.setup_caches(1, ids.shape[1])
            nxt = model(ids, torch.arange(ids.shape[1]))[:, -1].argmax(-1, keepdim=True)
            ids = torch.cat([ids, nxt], 1)
    assert torch.equal(seq, ids)


def test_batch_rows_match_single_row_runs(model):
    prompts = torch.randint(0, 101, (3, 6))
    batched, _ = generate(model, prompts, 5, temperature=0)
    for r in range(3):
        single, _ = generate(model, prompts[r], 5, temperature=0)
        assert torch.equal(batched[r], single[0])


def test_one_d_prompt_repeated_batch_size_times(model):
    g = torch.Generator().manual_seed(0)
    seq, _ = generate(model, torch.tensor([1, 2, 3]), 20, batch_size=4, temperature=1.0,
                      generator=g)
    assert seq.shape == (4, 23)
    assert (seq[:, :3] == torch.tensor([1, 2, 3])).all()
    assert len({tuple(r.tolist()) for r in seq}) > 1  # rows sample independently


def test_seeded_sampling_reproduces(model):
    a, _ = generate(model, torch.tensor([5, 6]), 10, temperature=0.9, top_k=20,
                    generator=torch.Generator().manual_seed(11))
    b, _ = generate(model, torch.tensor([5, 6]), 10, temperature=0.9, top_k=20,
                    generator=torch.Generator().manual_seed(11))
    assert torch.equal(a, b)


def test_each_row_is_an_engine_request_seeded_seed_plus_its_row(model):
    """Plain generate runs on the serving engine, each prompt row a request: row b of a
    seeded batch is what that row alone gives with seed + b, whatever rows share the batch;
    a generator passed in is shared by the rows and drawn in the engine's fixed order."""
    from fastdecode.params import SamplingParams

    prompts = torch.randint(0, 101, (3, 4), generator=torch.Generator().manual_seed(2))
    params = SamplingParams(temperature=0.9, top_k=20, seed=40)
    batch, _ = generate(model, prompts, 12, params=params)
    for b in range(3):
        alone, _ = generate(model, prompts[b], 12, params=params.replace(seed=40 + b))
        assert torch.equal(batch[b], alone[0])
    assert len({tuple(r) for r in batch[:, 4:].tolist()}) == 3
    shared = [generate(model, prompts, 12, temperature=0.9, top_k=20,
                       generator=torch.Generator().manual_seed(7))[0] for _ in range(2)]
    assert torch.equal(shared[0], shared[1])


def test_a_callback_that_raises_ends_generate_and_the_model_serves_on(model):
    def callback(column):
        raise KeyError("stop here")
    with pytest.raises(KeyError, match="stop here"):
        generate(model, torch.tensor([[1, 2], [3, 4]]), 20, temperature=0, callback=callback)
    seq, _ = generate(model, torch.tensor([1, 2]), 3, temperature=0)
    assert seq.shape == (1, 5)


def test_callback_called_once_per_new_token(model):
    seen = []
    seq, _ = generate(model, torch.tensor([[1, 2], [3, 4]]), 9, temperature=0,
                      callback=lambda t: seen.append(t.clone()))
    assert len(seen) == 9
    assert torch.equal(torch.cat(seen, 1), seq[:, 2:])


def test_eos_stops_per_row_and_pads(model):
    prompts = torch.randint(0, 101, (4, 3))
    free, _ = generate(model, prompts, 12, temperature=0)
    eos = int(free[0, 5])  # the 3rd token generated for row 0
    seq, _ = generate(model, prompts, 12, temperature=0, eos_id=eos, pad_id=100)
    assert seq.shape == free.shape
    for r in range(4):
        new = free[r, 3:].tolist()
        if eos in new:
            stop = new.index(eos)
            assert seq[r, 3:3 + stop + 1].tolist() == new[:stop + 1]
            assert (seq[r, 3 + stop + 1:] == 100).all()
        else:
            assert torch.equal(seq[r], free[r])


def test_interactive_caps_cache_at_350():
    model = tiny_model(block_size=1024)
    generate(model, torch.tensor([1, 2]), 3, interactive=True, temperature=0)
    assert model.max_seq_length == 350
    with pytest.raises(ValueError, match="max_new_tokens"):
        generate(model, torch.tensor([1, 2]), 349, interactive=True)
    generate(model, torch.tensor([1, 2]), 348, interactive=True, temperature=0)


@pytest.mark.parametrize("args,kwargs,match", [
    ((torch.tensor([1, 2]), 0), {}, "max_new_tokens"),
    ((torch.tensor([1, 2]), -3), {}, "max_new_tokens"),
    ((torch.tensor([1, 2]), 2.5), {}, "max_new_tokens"),
    ((torch.tensor([1, 2]), 4, 0), {}, "batch_size"),
    ((torch.tensor([1, 2]), 4, -1), {}, "batch_size"),
    ((torch.tensor([[1, 2], [3, 4]]), 4, 3), {}, "batch_size"),
    ((torch.tensor([1, 2]), 4), {"speculate_k": -1}, "speculate_k"),
    ((torch.arange(65), 1), {}, "prompt has 65 tokens"),
    ((torch.arange(60), 5), {}, "max_new_tokens"),
    ((torch.tensor([1, 101]), 4), {}, r"token ids must be in \[0, 101\)"),
    ((torch.tensor([-1, 3]), 4), {}, r"token ids must be in \[0, 101\)"),
    ((torch.tensor([1.0, 2.0]), 4), {}, "integer token ids"),
    ((torch.zeros(1, 0, dtype=torch.long), 4), {}, "T >= 1"),
    ((torch.tensor([1, 2]), 4), {"temperature": -0.1}, "temperature"),
    ((torch.tensor([1, 2]), 4), {"top_k": -2}, "top_k"),
])
def test_bad_arguments_raise_value_error_naming_them(model, args, kwargs, match):
    with pytest.raises(ValueError, match=match):
        generate(model, *args, **kwargs)


def test_unknown_sampling_kwarg_is_rejected(model):
    with pytest.raises(TypeError, match="top_q"):
        generate(model, torch.tensor([1]), 2, top_q=0.3)


def test_compiled_decode_step_matches_eager(model):
    prompt = torch.randint(0, 101, (2, 4))
    eager, _ = generate(model, prompt, 8, temperature=0)
    try:
        fastdecode.compile_decode_step(model)
        compiled, _ = generate(model, prompt, 8, temperature=0)
    finally:
        fastdecode.compile_decode_step(model, enable=False)
    assert torch.equal(eager, compiled)


def test_every_sampling_knob_reaches_generate(model):
    prompt = torch.randint(0, 101, (3, 4))
    knobs = dict(temperature=torch.tensor([0.0, 0.7, 1.2]), top_k=torch.tensor([0, 5, 20]),
                 top_p=0.9, min_p=torch.tensor([0.0, 0.05, 0.1]), repetition_penalty=1.4)
    a, _ = generate(model, prompt, 12, generator=torch.Generator().manual_seed(2), **knobs)
    b, _ = generate(model, prompt, 12, generator=torch.Generator().manual_seed(2), **knobs)
    assert torch.equal(a, b)
    greedy_row, _ = generate(model, prompt[0], 12, temperature=0, repetition_penalty=1.4)
    assert torch.equal(a[0], greedy_row[0])  # row 0 is greedy


def test_repetition_penalty_uses_prompt_and_generated_tokens(model):
    """Greedy decoding with a huge penalty never repeats a token already present."""
    prompt = torch.tensor([3, 4, 5])
    seq, _ = generate(model, prompt, 30, temperature=0, repetition_penalty=1e4)
    ids = seq[0].tolist()
    assert len(set(ids)) == len(ids)


@pytest.mark.parametrize("kwargs,match", [
    ({"top_p": 0.0}, "top_p"), ({"min_p": 1.0}, "min_p"), ({"repetition_penalty": 0.0},
                                                           "repetition_penalty"),
    ({"temperature": torch.tensor([0.5, 0.5, 0.5])}, r"shape \[2\]"),
])
def test_sampling_knobs_checked_before_any_work(model, kwargs, match):
    calls = []
    with pytest.raises(ValueError, match=match):
        generate(model, torch.tensor([[1, 2], [3, 4]]), 4, callback=calls.append, **kwargs)
    assert calls == []
