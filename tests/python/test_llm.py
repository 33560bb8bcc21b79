"""fastdecode.LLM (llm_utils' LLM.generate, modularforge's generate_samples) on the default
model: greedy equality with fastdecode.generate, n choices as requests of one engine run
(choice j seeded seed + j, as it is alone), a stream that raises, seeds, stop strings
that span tokens, finish reasons, log-probabilities, the raw response and every bad input
(a ValueError naming the argument, before any model work)."""
import pytest
import torch

import fastdecode
from fastdecode import LLM

PROMPT = "The three primary colours are"


@pytest.fixture(scope="module")
def llm(default_model):
    model, tokenizer = default_model
    return LLM.from_model(model, tokenizer)


def test_greedy_equals_generate(llm):
    out = llm.generate(PROMPT, max_tokens=24, temperature=0, return_token_ids=True)
    ids = llm.encode(PROMPT)
    seq, _ = fastdecode.generate(llm.model, torch.tensor(ids), 24, temperature=0,
                                 eos_id=llm.tokenizer.stop_ids)
    want = seq[0, len(ids):].tolist()
    assert out["token_ids"] == want[:len(out["token_ids"])]
    assert out["text"] == llm.decode(out["token_ids"], skip_special_tokens=True)
    assert out["finish_reason"] == "length" and len(out["token_ids"]) == 24


def test_token_ids_in_and_return_flags(llm):
    ids = llm.encode(PROMPT)
    a = llm.generate(ids, max_tokens=6, temperature=0, return_token_ids=True,
                     return_text=False)
    b = llm.generate(PROMPT, max_tokens=6, temperature=0)
    assert "text" not in a and "token_ids" not in b
    assert llm.decode(a["token_ids"]) == b["text"]


def test_n_samples_are_one_batch_and_distinct(llm, monkeypatch):
    batches = []
    real = llm.model.setup_caches
    monkeypatch.setattr(llm.model, "setup_caches",
                        lambda max_batch_size, max_seq_length, **kw: (
                            batches.append(max_batch_size),
                            real(max_batch_size, max_seq_length, **kw)))
    outs = llm.generate(PROMPT, max_tokens=16, temperature=1.0, n=4, seed=0)
    assert batches == [4]
    assert isinstance(outs, list) and len(outs) == 4
    assert len({o["text"] for o in outs}) == 4
    assert all(set(o) == {"text", "finish_reason", "_raw_response"} for o in outs)


def test_seed_reproduces_and_differs(llm):
    kw = dict(max_tokens=12, temperature=1.0, n=2, top_k=50)
    a = [o["text"] for o in llm.generate(PROMPT, seed=7, **kw)]
    b = [o["text"] for o in llm.generate(PROMPT, seed=7, **kw)]
    c = [o["text"] for o in llm.generate(PROMPT, seed=8, **kw)]
    assert a == b and a != c


def _boundary_stop(llm, ids):
    """A stop string made of the end of token 3's text and the start of token 4's."""
    pieces = [llm.decode(ids[:i]) for i in range(len(ids) + 1)]
    for i in range(3, len(ids) - 1):
        left, right = pieces[i], pieces[i + 1]
        if len(left) - len(pieces[i - 1]) >= 2 and len(right) - len(left) >= 2:
            return left[-2:] + right[len(left):len(left) + 2], i + 1, len(left) - 2
    raise AssertionError("no boundary with two characters on each side")


def test_stop_string_spanning_tokens(llm):
    greedy = llm.generate(PROMPT, max_tokens=20, temperature=0, return_token_ids=True)
    stop, tokens_to_stop, at = _boundary_stop(llm, greedy["token_ids"])
    out = llm.generate(PROMPT, max_tokens=20, temperature=0, return_token_ids=True, stop=stop)
    assert out["finish_reason"] == "stop"
    assert out["text"] == greedy["text"][:at] and stop not in out["text"]
    assert out["token_ids"] == greedy["token_ids"][:tokens_to_stop]
    # the earliest of several stops wins, whatever their order in the list
    later = greedy["text"][at + len(stop):at + len(stop) + 3]
    out2 = llm.generate(PROMPT, max_tokens=20, temperature=0, stop=[later, stop])
    assert out2["text"] == out["text"]


def test_stop_strings_end_each_row_on_its_own(llm):
    outs = llm.generate(PROMPT, max_tokens=40, temperature=1.0, n=3, seed=3, stop=".",
                        return_token_ids=True)
    for o in outs:
        assert "." not in o["text"]
        if o["finish_reason"] == "stop":
            assert "." in llm.decode(o["token_ids"])  # the token that completed the stop
    assert len({len(o["token_ids"]) for o in outs}) > 1


def test_end_of_turn_is_stop_and_budget_is_length(llm):
    chat = llm.tokenizer.apply_chat_template([{"role": "user", "content": "Say hi."}])
    done = llm.generate(chat, max_tokens=60, temperature=0, return_token_ids=True)
    assert done["finish_reason"] == "stop"
    assert llm.tokenizer.im_end_id not in done["token_ids"]
    assert done["_raw_response"]["completion_tokens"] == len(done["token_ids"]) + 1
    short = llm.generate(chat, max_tokens=2, temperature=0)
    assert short["finish_reason"] == "length"


def test_logprobs_are_the_unmodified_softmax(llm):
    out = llm.generate(PROMPT, max_tokens=8, temperature=0.7, top_k=5, seed=1, logprobs=True,
                       return_token_ids=True)
    ids = llm.encode(PROMPT)
    full = torch.tensor([ids + out["token_ids"]])
    llm.model.setup_caches(1, full.shape[1])
    with torch.no_grad():
        logits = llm.model(full, torch.arange(full.shape[1]))
    want = torch.log_softmax(logits[0, len(ids) - 1:-1], -1).gather(
        -1, torch.tensor(out["token_ids"]).view(-1, 1)).view(-1)
    assert len(out["logprobs"]) == len(out["token_ids"])
    torch.testing.assert_close(torch.tensor(out["logprobs"]), want, rtol=1e-3, atol=1e-3)


def test_raw_response(llm):
    out = llm.generate(PROMPT, max_tokens=5, temperature=0.5, top_p=0.9, seed=4)
    raw = out["_raw_response"]
    assert raw["prompt_tokens"] == len(llm.encode(PROMPT))
    assert raw["completion_tokens"] == 5
    assert raw["prefill_seconds"] > 0 and raw["decode_seconds"] > 0
    assert raw["tokens_per_second"] > 0
    assert raw["sampling"]["temperature"] == 0.5 and raw["sampling"]["top_p"] == 0.9
    assert raw["sampling"]["seed"] == 4 and raw["sampling"]["top_k"] == -1


@pytest.mark.parametrize("args,kwargs,match", [
    ((PROMPT,), dict(temperature=-0.1), "temperature"),
    ((PROMPT,), dict(temperature=2.5), r"temperature must be in \[0, 2\]"),
    ((PROMPT,), dict(n=0), "n must be an integer >= 1"),
    ((PROMPT,), dict(max_tokens=0), "max_tokens must be an integer >= 1"),
    ((PROMPT,), dict(top_p=0.0), r"top_p must be in \(0, 1\]"),
    ((PROMPT,), dict(top_p=1.5), r"top_p must be in \(0, 1\]"),
    ((PROMPT,), dict(top_k=0), "top_k must be -1"),
    ((PROMPT,), dict(top_k=-2), "top_k must be -1"),
    ((PROMPT,), dict(repetition_penalty=0.0), "repetition_penalty"),
    ((PROMPT,), dict(repetition_penalty=-1.0), "repetition_penalty"),
    ((PROMPT,), dict(min_p=1.0), "min_p"),
    (("",), {}, "input_context must not be empty"),
    (([],), {}, "input_context must not be empty"),
    (([1, 10 ** 6],), {}, r"token ids must be in \[0, 49152\)"),
    ((3.5,), {}, "input_context must be a str or a list"),
    ((PROMPT,), dict(stop=[""]), "stop must be"),
    ((PROMPT,), dict(seed="x"), "seed must be None or an int"),
    ((PROMPT,), dict(logprobs="yes"), "logprobs must be True or False"),
    ((PROMPT,), dict(stream=print, n=2), "stream"),
    ((PROMPT,), dict(max_tokens=10 ** 6), r"max_tokens \(1000000\) \+ prompt length"),
])
def test_bad_input_is_a_value_error_before_any_work(llm, monkeypatch, args, kwargs, match):
    def no_work(*a, **k):
        raise AssertionError("model work started")
    monkeypatch.setattr(llm.model, "setup_caches", no_work)
    with pytest.raises(ValueError, match=match):
        llm.generate(*args, **kwargs)


def test_choice_j_is_what_seed_plus_j_gives_alone(llm):
    """The n choices are engine requests decoded together: choice j of seed s is the
    completion n = 1 gives with seed s + j (a request's tokens depend on its own prompt,
    parameters and seed, not on the rows beside it)."""
    kw = dict(max_tokens=10, temperature=1.0, top_k=50, return_token_ids=True)
    many = llm.generate(PROMPT, n=3, seed=11, **kw)
    assert len({tuple(o["token_ids"]) for o in many}) == 3
    for j in range(3):
        alone = llm.generate(PROMPT, n=1, seed=11 + j, **kw)
        assert alone["token_ids"] == many[j]["token_ids"]


def test_a_stream_that_raises_ends_the_call_and_the_llm_serves_on(llm):
    def stream(piece):
        raise KeyError("the client went away")
    with pytest.raises(KeyError, match="the client went away"):
        llm.generate(PROMPT, max_tokens=8, temperature=0, stream=stream)
    assert llm.generate(PROMPT, max_tokens=4, temperature=0)["finish_reason"] == "length"


def test_unknown_keyword_is_named(llm):
    with pytest.raises(TypeError, match="num_beams"):
        llm.generate(PROMPT, num_beams=4)


def test_stream_gets_the_text_as_it_is_decoded(llm):
    pieces = []
    out = llm.generate(PROMPT, max_tokens=12, temperature=0, stream=pieces.append)
    assert len(pieces) > 3 and "".join(pieces) == out["text"]


def test_generate_samples_separates_the_prompt(llm):
    prompts = ["The capital of France is", "Water boils at"]
    samples = llm.generate_samples(prompts, max_new_tokens=8, temperature=0)
    assert [s["prompt"] for s in samples] == prompts
    for s in samples:
        assert s["full_text"].startswith(s["prompt"])
        assert s["full_text"] == s["prompt"] + s["continuation"]
        assert s["continuation"]
    one = llm.generate(prompts[0], max_tokens=8, temperature=0, top_k=50, top_p=0.95)
    assert samples[0]["continuation"] == one["text"]


def test_generate_samples_keeps_the_full_text_when_decoding_changes_the_prompt(llm):
    # special tokens are skipped in full_text, so it cannot start with this prompt
    prompt = "<|im_start|>user\nName a colour"
    sample = llm.generate_samples([prompt], max_new_tokens=3, temperature=0)[0]
    assert not sample["full_text"].startswith(prompt)
    assert sample["continuation"] == sample["full_text"]
    assert sample["full_text"].startswith("user\nName a colour")


def test_quantized_llms_generate(default_model):
    model, tokenizer = default_model
    gguf = LLM("default", quantize="gguf")
    out = gguf.generate(PROMPT, max_tokens=6, temperature=0)
    assert out["finish_reason"] == "length" and out["text"]
    with pytest.raises(ValueError, match="quantize must be one of"):
        LLM("default", quantize="int3")


def test_streamed_pieces_stop_where_the_text_stops(llm):
    """A stop string that spans tokens: the pieces held back while they could begin it are
    never streamed, so the stream adds up to the returned text exactly."""
    full = llm.generate(PROMPT, max_tokens=16, temperature=0)["text"]
    stop = full[len(full) // 2:len(full) // 2 + 3]
    pieces = []
    out = llm.generate(PROMPT, max_tokens=16, temperature=0, stop=stop, stream=pieces.append)
    assert out["finish_reason"] == "stop" and out["text"] == full[:full.index(stop)]
    assert "".join(pieces) == out["text"]
