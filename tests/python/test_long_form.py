"""generate_long on the default model: one "sample" per segment and one "next" per sample,
the history budget, the first pair kept, validation before any work; the fish-speech
spellings."""
import pytest
import torch

import fastdecode
from fastdecode.compat.fish_speech.long_form import (SYSTEM_PROMPT, build_prompt, decode_n_tokens,
                                  decode_one_token_naive, generate, generate_long)

THREE_SEGMENTS = ("Name one fruit that is red. Name one animal that can fly. "
                  "Name one planet in the solar system.")


@pytest.fixture(scope="module")
def chat_model(default_model):
    model, tokenizer = default_model
    model.tokenizer = tokenizer
    return model


def _run(model, **kw):
    kw.setdefault("max_new_tokens", 6)
    return list(generate_long(model=model, device="cpu", decode_one_token=decode_one_token_naive,
                              **kw))


def test_three_segments_three_samples_and_one_next_per_sample(chat_model):
    torch.manual_seed(0)
    out = _run(chat_model, text=THREE_SEGMENTS, chunk_length=40, num_samples=2)
    assert [r.action for r in out] == ["sample"] * 3 + ["next"] + ["sample"] * 3 + ["next"]
    im_end = chat_model.tokenizer.im_end_id
    for r in out:
        if r.action == "sample":
            assert r.codes.dtype == torch.int64 and 0 < len(r.codes) <= 6
            assert im_end not in r.codes.tolist()
            assert r.text == chat_model.tokenizer.decode(r.codes.tolist(),
                                                         skip_special_tokens=True)


def test_greedy_reply_matches_plain_generate(chat_model):
    tok = chat_model.tokenizer
    out = _run(chat_model, text="What is the capital of France?", temperature=1e-6,
               repetition_penalty=1.0, top_p=1.0, max_new_tokens=8)
    ids, _ = build_prompt(tok, "What is the capital of France?", [], [], True, 2048, 8)
    seq, _ = fastdecode.generate(chat_model, torch.tensor(ids), 8, temperature=0,
                                 eos_id=tok.im_end_id)
    want = [t for t in seq[0, len(ids):].tolist() if t != tok.im_end_id]
    assert out[0].codes.tolist() == want[:len(out[0].codes)]
    assert "Paris" in out[0].text


def test_history_budget_keeps_first_pair_and_fits(default_model):
    _, tok = default_model
    history = [(f"segment number {i} " * 3, f"reply number {i} " * 4) for i in range(40)]
    for max_length in (200, 400, 900):
        ids, kept = build_prompt(tok, "the current segment", history, [], True, max_length, 50)
        assert len(ids) <= max_length - 50
        text = tok.decode(ids)
        assert "segment number 0 " in text  # the first pair always
        assert 1 <= kept < len(history)
        if kept > 1:  # then the most recent ones
            assert "segment number 39 " in text
        assert SYSTEM_PROMPT in text and text.endswith("<|im_start|>assistant\n")
    ids, kept = build_prompt(tok, "x", history, [], False, 900, 50)
    assert kept == 0 and "segment number" not in tok.decode(ids)


def test_references_come_first(default_model):
    _, tok = default_model
    ref_tokens = torch.tensor(tok.encode("REFERENCE REPLY"))
    ids, _ = build_prompt(tok, "now", [("first", "one")], [("REF QUESTION", "REFERENCE REPLY")],
                          True, 500, 10)
    text = tok.decode(ids)
    assert text.index("REF QUESTION") < text.index("first") < text.index("now")
    assert ref_tokens.dim() == 1


def test_no_room_is_a_clear_error(chat_model):
    with pytest.raises(ValueError, match=r"max_length \(30\) leaves no room"):
        _run(chat_model, text="A short question?", max_length=30)
    with pytest.raises(ValueError, match=r"max_length \(60\) leaves no room"):
        _run(chat_model, text="A short question?", max_length=60, max_new_tokens=50)


@pytest.mark.parametrize("kwargs,match", [
    (dict(top_p=0), r"top_p must be in \(0, 1\]"),
    (dict(temperature=2), r"temperature must be in \(0, 2\)"),
    (dict(repetition_penalty=2.0), r"repetition_penalty must be in \(0, 2\)"),
    (dict(num_samples=0), "num_samples must be an integer >= 1"),
    (dict(max_new_tokens=-1), "max_new_tokens must be an integer >= 0"),
    (dict(max_length=10 ** 6), "exceeds the model's block_size"),
    (dict(chunk_length=2), "chunk_length must be an integer >= 4"),
    (dict(text="   "), "at least one non-space character"),
    (dict(prompt_text=["a"]), "prompt_text and prompt_tokens must pair up"),
])
def test_bad_arguments_raise_before_any_work(chat_model, kwargs, match):
    kwargs.setdefault("text", "Hello there.")
    gen = generate_long(model=chat_model, device="cpu", decode_one_token=decode_one_token_naive,
                        **{"max_new_tokens": 4, **kwargs})
    with pytest.raises(ValueError, match=match):
        next(gen)


def test_fish_spellings(default_model):
    model, tok = default_model
    prompt = torch.tensor(tok.encode("The capital of France is"))
    seq = generate(model=model, prompt=prompt, max_new_tokens=4, temperature=0)
    plain, _ = fastdecode.generate(model, prompt, 4, temperature=0)
    assert torch.equal(seq, plain[0])
    model.setup_caches(1, len(prompt) + 5)
    with torch.no_grad():
        model(prompt.view(1, -1)[:, :-1], torch.arange(len(prompt) - 1))
        tokens = decode_n_tokens(model, prompt[-1:].view(1, 1), torch.tensor([len(prompt) - 1]),
                                 4, temperature=0)
    assert torch.equal(tokens[0], plain[0, len(prompt):])
    with pytest.raises(ValueError, match="semantic_ids must be None"):
        decode_n_tokens(model, prompt[-1:].view(1, 1), torch.tensor([3]), 1, [1, 2])
