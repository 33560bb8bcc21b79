"""The one decode core (generate.decode): every entry point raises the same exception type
for the same bad knob (the C++ op's ValueError), the compiled step is chosen per model,
caller stop conditions end rows in plain and speculative decoding alike, and fish-speech's
spellings run the core's loop (the repetition penalty over a fixed history buffer)."""
import pytest
import torch
from conftest import tiny_model

import fastdecode
from fastdecode import LLM, early_exit_draft, ops
from fastdecode.decode_core import decode, decode_one_token, decode_step_of
from fastdecode.compat.fish_speech.long_form import decode_n_tokens, generate_long
from fastdecode.compat.fish_speech.long_form import generate as fish_generate
from fastdecode.params import SamplingParams


@pytest.fixture(scope="module")
def tiny():
    return tiny_model(seed=5)


BAD_KNOBS = [dict(temperature=-1.0), dict(top_p=0.0), dict(repetition_penalty=0.0),
             dict(top_p=float("nan"))]


@pytest.mark.parametrize("knob", BAD_KNOBS)
def test_every_entry_point_raises_value_error_for_a_bad_knob(default_model, knob):
    model, tokenizer = default_model
    name = next(iter(knob))
    logits = torch.randn(2, 49152)
    prompt = torch.tensor(tokenizer.encode("Hello"))
    calls = {
        "op": lambda: ops.logits_to_probs(logits, **knob),
        "sample": lambda: fastdecode.sample(logits, **knob),
        "generate": lambda: fastdecode.generate(model, prompt, 4, **knob),
        "fish generate": lambda: fish_generate(model=model, prompt=prompt, max_new_tokens=4,
                                               **knob),
        "LLM.generate": lambda: LLM.from_model(model, tokenizer).generate("Hello",
                                                                          max_tokens=4, **knob),
    }
    model.tokenizer = tokenizer
    calls["generate_long"] = lambda: next(generate_long(
        model=model, device="cpu", decode_one_token=fastdecode.compat.fish_speech.long_form.decode_one_token_naive,
        text="Hello.", max_new_tokens=4, **knob))
    for where, call in calls.items():
        with pytest.raises(ValueError, match=name) as info:
            call()
        assert type(info.value) is ValueError, where


def test_op_range_message_is_the_same_through_generate(tiny):
    with pytest.raises(ValueError) as from_op:
        ops.logits_to_probs(torch.randn(3), min_p=1.0)
    with pytest.raises(ValueError) as from_generate:
        fastdecode.generate(tiny, torch.tensor([1, 2]), 3, min_p=1.0)
    tail = "min_p must be in [0, 1) (0 = off), got 1"
    assert tail in str(from_op.value) and tail in str(from_generate.value)


def test_compiled_step_is_chosen_per_model(tiny):
    other = tiny_model(seed=6)
    fastdecode.compile_decode_step(tiny)
    try:
        assert decode_step_of(tiny) is not decode_one_token
        assert decode_step_of(other) is decode_one_token
        with pytest.raises(ValueError, match="generator cannot be passed to a compiled"):
            fastdecode.generate(tiny, torch.tensor([1, 2]), 3,
                                generator=torch.Generator().manual_seed(0))
    finally:
        fastdecode.compile_decode_step(tiny, enable=False)
    assert decode_step_of(tiny) is decode_one_token


def _stop_row_at(row, column):
    """A stop_rows hook that ends ``row`` at its ``column``-th new token."""
    seen = [0]

    def hook(tokens):
        seen[0] += 1
        if seen[0] == column:
            hit = torch.zeros(tokens.shape[0], dtype=torch.bool)
            hit[row] = True
            return hit
        return None
    return hook


@pytest.mark.parametrize("draft", [False, True])
def test_stop_rows_end_a_row_and_pad_the_rest(tiny, draft):
    rows = torch.randint(0, 101, (3, 5), generator=torch.Generator().manual_seed(1))
    params = SamplingParams(temperature=0.0)
    plain = decode(tiny, rows, 12, params=params).seq
    got = decode(tiny, rows, 12, params=params, stop_rows=_stop_row_at(1, 4),
                 pad_id=7, draft_model=early_exit_draft(tiny, 1) if draft else None,
                 speculate_k=3)
    assert torch.equal(got.seq[[0, 2]], plain[[0, 2]])
    assert torch.equal(got.seq[1, :5 + 4], plain[1, :5 + 4])
    assert (got.seq[1, 5 + 4:] == 7).all()


def test_all_rows_stopped_ends_decoding_early(tiny):
    rows = torch.randint(0, 101, (2, 4), generator=torch.Generator().manual_seed(2))
    params = SamplingParams(temperature=0.0)
    steps = []
    result = decode(tiny, rows, 20, params=params, callback=steps.append,
                    stop_rows=lambda col: torch.ones(2, dtype=torch.bool) if len(steps) == 3
                    else None)
    assert result.steps == 3 and len(steps) == 3
    assert (result.seq[:, 4 + 3:] == 0).all()


def test_fish_decode_n_tokens_penalty_matches_generate(tiny):
    prompt = torch.randint(0, 101, (2, 6), generator=torch.Generator().manual_seed(3))
    want, _ = fastdecode.generate(tiny, prompt, 10, temperature=0, repetition_penalty=3.0)
    tiny.setup_caches(2, 16)
    with torch.no_grad():
        tiny(prompt[:, :-1], torch.arange(5))
        got = decode_n_tokens(tiny, prompt[:, -1:], torch.tensor([5]), 10,
                              previous_tokens=prompt[:, :-1], temperature=0,
                              repetition_penalty=3.0)
    assert torch.equal(got, want[:, 6:])


def test_fish_generate_trims_to_the_last_row_that_ended(tiny):
    prompt = torch.randint(0, 101, (2, 4), generator=torch.Generator().manual_seed(4))
    plain, _ = fastdecode.generate(tiny, prompt, 12, temperature=0)
    stop = int(plain[0, 4 + 2])  # row 0's third new token

    def new_tokens_through_stop(row):
        hits = (row[4:] == stop).nonzero()
        return int(hits[0]) + 1 if len(hits) else 12
    ends = [new_tokens_through_stop(plain[b]) for b in range(2)]
    seq = fish_generate(model=tiny, prompt=prompt, max_new_tokens=12, im_end_id=stop,
                        temperature=0)
    assert seq.shape == (2, 4 + max(ends))
    for b, end in enumerate(ends):
        assert torch.equal(seq[b, :4 + end], plain[b, :4 + end])
        assert (seq[b, 4 + end:] == stop).all()
