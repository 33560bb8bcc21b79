"""The REPL's session on its serving engine: a greedy reply equals ``LLM.generate``'s, the
next turn re-reads only what its slot does not hold yet, Ctrl-C during a reply cancels it
and the session goes on, and ``close()`` gives the model back."""
import threading

import pytest
import torch

import fastdecode
from fastdecode.compat.modularforge import REPL_CONTEXT, ChatSession
from fastdecode.params import SamplingParams


@pytest.fixture(scope="module")
def llm():
    return fastdecode.LLM("default")


def test_a_greedy_reply_equals_llm_generate(llm):
    with ChatSession(llm, max_new_tokens=24, temperature=0) as session:
        ids, _ = session.prompt_ids("What is the capital of France?")
        out = session.reply("What is the capital of France?", lambda _s: None)
    want = llm.complete(ids, SamplingParams(temperature=0, max_tokens=24))[0]  # decode()
    assert out["text"] == want["text"] and out["token_ids"] == want["token_ids"]
    assert out["finish_reason"] == want["finish_reason"]


def test_the_next_turn_rereads_only_what_is_new(llm):
    streamed = []
    with ChatSession(llm, max_new_tokens=16, temperature=0) as session:
        assert session.context == min(llm.model.config.block_size, REPL_CONTEXT)
        first_ids, _ = session.prompt_ids("Name a colour.")
        first = session.reply("Name a colour.", streamed.append)
        assert "".join(streamed) == first["text"]
        second = session.reply("And another one?", lambda _s: None)
    raw = second["_raw_response"]
    # the whole first prompt (and usually its reply) was in the slot already
    assert raw["cached_tokens"] >= len(first_ids), raw
    assert raw["prompt_tokens"] > raw["cached_tokens"]


def test_ctrl_c_during_a_reply_cancels_it_and_the_session_goes_on(llm):
    def interrupt(_text):
        raise KeyboardInterrupt

    with ChatSession(llm, max_new_tokens=200, temperature=0) as session:
        with pytest.raises(KeyboardInterrupt):
            session.reply("Tell me a long story about a dragon.", interrupt)
        out = session.reply("Say hello.", lambda _s: None)
        assert out["token_ids"] and session.engine.running == 0


def test_close_gives_the_model_back(llm):
    session = ChatSession(llm, max_new_tokens=4, temperature=0)
    session.reply("Hi", lambda _s: None)
    session.close()
    done = []
    worker = threading.Thread(target=lambda: done.append(
        fastdecode.generate(llm.model, torch.tensor(llm.encode("Hi")), 2, temperature=0)))
    worker.start()
    worker.join(timeout=60)
    assert done, "a decode after close() still waited for the session's engine"
