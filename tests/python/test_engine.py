"""The continuous-batching engine in-process, on the default model as served (the GGUF in
its blocks): batch invariance, slot reuse and prefix caching, chunked prefill, cancellation,
a failing sink, the model lock, and LLM.generate's list of prompts on it."""
import threading
import time

import pytest
import torch

import fastdecode
from fastdecode.engine import (Engine, ErrorEvent, FinishEvent, GenerationRequest, QueueFull,
                               TokenEvent)
from fastdecode.params import SamplingParams

PROMPTS = ["The capital of France is", "Once upon a time, in a land", "def fibonacci(n):",
           "The three most important inventions", "My favourite recipe starts with",
           "In 1969, astronauts"]


@pytest.fixture(scope="module")
def served():
    return fastdecode.load("default")


class Collector:
    def __init__(self):
        self.ids, self.text, self.finish, self.error = [], "", None, None
        self.times = []
        self.done = threading.Event()

    def __call__(self, event):
        if isinstance(event, TokenEvent):
            self.ids.append(event.token_id)
            self.text += event.text
            self.times.append(time.perf_counter())
        elif isinstance(event, FinishEvent):
            self.text += event.text
            self.finish = event
            self.done.set()
        elif isinstance(event, ErrorEvent):
            self.error = event.message
            self.done.set()


def _request(tok, text, max_tokens=24, **knobs):
    params = SamplingParams(max_tokens=max_tokens, **knobs)
    return GenerationRequest(tuple(tok.encode(text)), params, tuple(tok.stop_ids))


def _run(engine, requests):
    outs = [Collector() for _ in requests]
    for r, o in zip(requests, outs):
        engine.submit(r, o)
    for o in outs:
        assert o.done.wait(120)
    return outs


KNOBS = [{"temperature": 0}, {"temperature": 0.8, "seed": 3},
         {"temperature": 0.7, "top_k": 40, "top_p": 0.9, "seed": 11},
         {"temperature": 0}, {"temperature": 1.0, "min_p": 0.05, "seed": 5,
                              "repetition_penalty": 1.1},
         {"temperature": 0, "repetition_penalty": 1.2}]


@pytest.mark.parametrize("kv_cache_dtype", [None, torch.float16])  # fp32 caches, the server's
def test_a_requests_tokens_do_not_depend_on_the_batch(served, kv_cache_dtype):
    """Alone, then all six at once with different lengths (slots freed and swapped mid-run,
    so rows move), then in another order: the same tokens for every request, and for the
    greedy ones the tokens fastdecode.generate gives with the same caches."""
    model, tok = served
    requests = [_request(tok, p, max_tokens=12 + 4 * i, **k)
                for i, (p, k) in enumerate(zip(PROMPTS, KNOBS))]
    model.kv_cache_dtype = kv_cache_dtype
    try:
        with Engine(model, tok, max_batch=4, ctx=512) as engine:
            assert model.cache_dtype == (kv_cache_dtype or torch.float32)
            alone = [_run(engine, [r])[0].ids for r in requests]
            together = [o.ids for o in _run(engine, requests)]
            reversed_order = [o.ids for o in _run(engine, requests[::-1])][::-1]
            steps = engine.steps
        assert together == alone and reversed_order == alone
        assert steps < sum(len(a) for a in alone) * 2  # the shared steps were batched
        for r, ids in zip(requests, alone):
            if r.params.greedy and not r.params.penalised:
                ref = fastdecode.generate(model, torch.tensor(r.prompt_ids), len(ids),
                                          temperature=0)[0].reshape(-1)
                assert ref[len(r.prompt_ids):].tolist() == ids
    finally:
        model.kv_cache_dtype = None


def test_a_chat_turn_reuses_the_cached_prefix(served):
    model, tok = served
    first = "<|im_start|>user\nName a colour.<|im_end|>\n<|im_start|>assistant\n"
    with Engine(model, tok, max_batch=2, ctx=512) as engine:
        a = _run(engine, [_request(tok, first, temperature=0)])[0]
        follow = first + a.text + "<|im_end|>\n<|im_start|>user\nAnother one.<|im_end|>\n" \
            "<|im_start|>assistant\n"
        b = _run(engine, [_request(tok, follow, temperature=0)])[0]
        assert a.finish.cached_tokens == 0
        # the first turn's prompt and reply were not read again
        assert b.finish.cached_tokens >= len(tok.encode(first)) + len(a.ids) - 2
        cold = Engine  # the same turn from an empty cache gives the same reply
    with cold(model, tok, max_batch=2, ctx=512) as engine:
        c = _run(engine, [_request(tok, follow, temperature=0)])[0]
    assert c.finish.cached_tokens == 0 and c.text == b.text


def test_requests_sharing_a_prompt_copy_a_running_rows_prefix(served):
    """Four requests with one prompt (greedy and seeded), waiting together on an empty
    cache: the first is prefilled; the others take a copy of its row's keys and values for
    all but the last prompt token, which their first step reads (no prefill call of their
    own), and each gets the tokens it gets alone on a cold engine."""
    model, tok = served
    prompt = "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n" \
        "Name three rivers.<|im_end|>\n<|im_start|>assistant\n"
    knobs = [{"temperature": 0}, {"temperature": 0.8, "seed": 1}, {"temperature": 0},
             {"temperature": 0.9, "top_p": 0.9, "seed": 2, "repetition_penalty": 1.1}]
    requests = [_request(tok, prompt, max_tokens=6, **k) for k in knobs]
    alone = []
    for r in requests:  # each on a cold engine: its whole prompt read
        with Engine(model, tok, max_batch=1, ctx=256) as engine:
            alone.append(_run(engine, [r])[0])
    assert all(o.finish.cached_tokens == 0 for o in alone)
    engine = Engine(model, tok, max_batch=4, ctx=256)
    reads = []
    prefill_chunk = engine._prefill_chunk
    engine._prefill_chunk = lambda seq, end: (reads.append(end - seq.fed),
                                              prefill_chunk(seq, end))
    outs = [Collector() for _ in requests]
    for r, o in zip(requests, outs):
        engine.submit(r, o)
    with engine:
        for o in outs:
            assert o.done.wait(120)
    assert reads == [len(requests[0].prompt_ids)]  # one prefill, of the first request
    assert [o.finish.cached_tokens for o in outs] == [0] + [len(requests[0].prompt_ids) - 1] * 3
    assert [o.ids for o in outs] == [a.ids for a in alone]
    # the first request's first token came from its prefill, the others' from step 1:
    # 6 tokens each, the last three requests one step behind the first
    assert engine.steps == 6


def test_a_long_prompt_is_read_in_chunks_between_decode_steps(served):
    model, tok = served
    long_prompt = "word " * 1100  # three chunks of 512 positions
    with Engine(model, tok, max_batch=2, ctx=1200) as engine:
        short = Collector()
        engine.submit(_request(tok, "Count: one, two,", max_tokens=40, temperature=0), short)
        while not short.ids:
            time.sleep(0.001)
        long = Collector()
        engine.submit(_request(tok, long_prompt, max_tokens=4, temperature=0), long)
        assert long.done.wait(120) and short.done.wait(120)
    # the short stream got tokens while the long prompt was being read
    assert sum(t < long.times[0] for t in short.times) >= 3
    alone = fastdecode.generate(model, torch.tensor(tok.encode(long_prompt)), 4,
                                temperature=0)[0].reshape(-1)[-4:].tolist()
    assert long.ids == alone


def test_prompts_arriving_together_are_read_within_one_chunk_an_iteration(served):
    """Short prompts waiting together are all read in the first iteration and decode
    together from the first step; prompts whose positions add up to more than a chunk (512)
    take one iteration each. Each request's tokens are those it gets alone."""
    model, tok = served
    short = [_request(tok, p, max_tokens=3, temperature=0) for p in PROMPTS[:4]]
    long = [_request(tok, "word " * 300, max_tokens=3, temperature=0),
            _request(tok, "text " * 300, max_tokens=3, temperature=0)]
    assert all(len(r.prompt_ids) > 256 for r in long)
    for requests, steps in ((short, 2), (long, 3)):
        with Engine(model, tok, max_batch=4, ctx=512) as engine:
            alone = [_run(engine, [r])[0].ids for r in requests]
        engine = Engine(model, tok, max_batch=4, ctx=512)
        outs = [Collector() for _ in requests]
        for r, o in zip(requests, outs):  # all waiting before the loop starts
            engine.submit(r, o)
        with engine:
            for o in outs:
                assert o.done.wait(120)
        # a first token from each prompt, then two steps; one iteration a request would
        # have taken 2 + len(requests) - 1 steps
        assert engine.steps == steps
        assert [o.ids for o in outs] == alone


def test_cancel_frees_the_slot_and_a_raising_sink_cancels_only_its_request(served):
    model, tok = served
    with Engine(model, tok, max_batch=2, ctx=512) as engine:
        hog = Collector()
        handle = engine.submit(_request(tok, "Tell me everything", max_tokens=400,
                                        temperature=0), hog)
        while len(hog.ids) < 2:
            time.sleep(0.001)
        handle.cancel()
        deadline = time.time() + 5
        while engine.running:
            assert time.time() < deadline
            time.sleep(0.001)
        assert len(hog.ids) < 50 and not hog.done.is_set()  # no finish for a cancelled one

        def bad_sink(event):
            raise RuntimeError("client gone")
        engine.submit(_request(tok, "x", max_tokens=50), bad_sink)
        ok = _run(engine, [_request(tok, PROMPTS[0], temperature=0)])[0]
        assert ok.finish.finish_reason in ("length", "stop") and engine.running == 0


def test_bad_requests_and_a_full_queue_are_refused_before_any_work(served):
    model, tok = served
    with Engine(model, tok, max_batch=1, ctx=64, max_waiting=1) as engine:
        with pytest.raises(ValueError, match="exceeds the context of 64"):
            engine.submit(_request(tok, "hello", max_tokens=100), Collector())
        with pytest.raises(ValueError, match=r"token ids must be in \[0, "):
            engine.submit(GenerationRequest((10 ** 9,), SamplingParams(max_tokens=2)),
                          Collector())
        with pytest.raises(ValueError, match="max_tokens must be set"):
            GenerationRequest((1,), SamplingParams())
        outs = []
        with pytest.raises(QueueFull):
            for _ in range(5):  # one runs (once admitted), one waits, the next is refused
                outs.append(Collector())
                engine.submit(_request(tok, "hi", max_tokens=30), outs[-1])
        for o in outs[:-1]:  # the refused one gets nothing
            assert o.done.wait(60)
        assert len(outs) in (2, 3) and not outs[-1].done.is_set()  # (admission timing)
    with pytest.raises(ValueError, match="max_batch must be"):
        Engine(model, tok, max_batch=0)


def test_the_engine_holds_the_model_until_it_stops(served):
    model, tok = served
    engine = Engine(model, tok, max_batch=1, ctx=128).start()
    finished = threading.Event()

    def other_decode():
        fastdecode.generate(model, torch.tensor(tok.encode("Hi")), 2, temperature=0)
        finished.set()
    t = threading.Thread(target=other_decode)
    t.start()
    time.sleep(0.3)
    assert not finished.is_set()  # waits for the engine: the caches are its own
    reentrant = Collector()

    def sink_that_decodes(event):
        if isinstance(event, TokenEvent):
            fastdecode.generate(model, torch.tensor([1, 2]), 1, temperature=0)
    engine.submit(_request(tok, "x", max_tokens=3), sink_that_decodes)  # raises: cancelled
    _run(engine, [_request(tok, "y", max_tokens=3)])
    engine.stop()
    t.join(60)
    assert finished.is_set()
    del reentrant


def test_llm_generate_takes_a_list_of_prompts(served):
    model, tok = served
    llm = fastdecode.LLM.from_model(model, tok)
    many = llm.generate(PROMPTS[:4], max_tokens=10, temperature=0)
    assert [m["text"] for m in many] == [llm.generate(p, max_tokens=10, temperature=0)["text"]
                                         for p in PROMPTS[:4]]
    seeded = llm.generate(PROMPTS[:2], max_tokens=8, temperature=0.9, n=3, seed=4,
                          return_token_ids=True)
    assert [len(s) for s in seeded] == [3, 3]
    again = llm.generate(PROMPTS[:2], max_tokens=8, temperature=0.9, n=3, seed=4,
                         return_token_ids=True)
    assert [[c["token_ids"] for c in s] for s in seeded] == \
        [[c["token_ids"] for c in s] for s in again]
    with pytest.raises(ValueError, match="stream takes one prompt"):
        llm.generate(PROMPTS[:2], max_tokens=4, stream=print)
