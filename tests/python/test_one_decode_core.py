"""Every entry point reaches the one decode core: each forward pass of a text model runs
inside ``decode_core.decode`` (fish-speech's ``decode_n_tokens``: inside the core loop,
``iter_decode_loop``) or, for the entry points that serve requests (the REPL, the server,
``LLM.generate``, ``generate_samples``, gpt-fast's ``generate`` without a draft), inside
the serving engine's iteration; and a
codebook model decodes every position after its prefill in the core loop, whatever API
style drove it. Traced from the model's own forward hook and its ``logits_and_greedy`` (a
decode step's call), so a second loop anywhere would show up."""
import queue
import sys

import pytest
import torch

import fastdecode
from fastdecode import decode_core
from fastdecode.engine import engine as engine_module
from fastdecode.compat.fish_speech import long_form, serving
from fastdecode.compat.modularforge import ChatSession
from fastdecode.params import SamplingParams

CORE = decode_core.__file__
ENGINE = engine_module.__file__


def _core_frame() -> str:
    """The outermost decode-core function on the current stack ("decode", "iter_positions",
    "iter_decode_loop"), "engine" inside the serving engine's iteration, or ""."""
    frame = sys._getframe(1)
    found = ""
    while frame is not None:
        name = frame.f_code.co_name
        if frame.f_code.co_filename == CORE and name in ("decode", "iter_positions",
                                                         "iter_decode_loop"):
            found = name
        elif frame.f_code.co_filename == ENGINE and name == "_iteration":
            found = "engine"
        frame = frame.f_back
    return found


def _loop_frames() -> list:
    """The decode-core loop functions on the current stack, innermost first."""
    frame, names = sys._getframe(1), []
    while frame is not None:
        if frame.f_code.co_filename == CORE and frame.f_code.co_name in ("iter_positions",
                                                                         "iter_decode_loop"):
            names.append(frame.f_code.co_name)
        frame = frame.f_back
    return names


@pytest.fixture(scope="module")
def traced(default_model):
    model, tokenizer = default_model
    seen = []
    handle = model.register_forward_pre_hook(lambda _m, _a: seen.append(_core_frame()))
    step = model.logits_and_greedy  # a decode step's other way in (no forward call)

    def traced_step(*args, **kwargs):
        seen.append(_core_frame())
        return step(*args, **kwargs)
    model.logits_and_greedy = traced_step
    yield model, tokenizer, seen
    del model.logits_and_greedy
    handle.remove()


def _drain(q: queue.Queue):
    items = []
    while True:
        item = q.get(timeout=120)
        items.append(item)
        if item.status == "error" or item.response.action == "next":
            return items


ENTRY_POINTS = {
    "generate (gpt-fast)": lambda m, t: fastdecode.generate(
        m, torch.tensor(t.encode("Hello")), 4, temperature=0),
    "generate, speculative": lambda m, t: fastdecode.generate(
        m, torch.tensor(t.encode("Hello")), 4, temperature=0,
        draft_model=fastdecode.early_exit_draft(m, 4), speculate_k=2),
    "generate, SamplingParams": lambda m, t: fastdecode.generate(
        m, torch.tensor(t.encode("Hello")), 4, params=SamplingParams(temperature=0.7, seed=1)),
    "LLM.generate (llm_utils)": lambda m, t: fastdecode.LLM.from_model(m, t).generate(
        "Hello", max_tokens=4, n=2, seed=0),
    "LLM.generate_samples (modularforge)": lambda m, t: fastdecode.LLM.from_model(
        m, t).generate_samples("Hello", max_new_tokens=3),
    "the REPL (ChatSession.reply)": lambda m, t: _session_reply(m, t),
    "LLM.generate, a list of prompts": lambda m, t: fastdecode.LLM.from_model(m, t).generate(
        ["Hello", "Hi"], max_tokens=3, temperature=0),
    "fish-speech generate": lambda m, t: long_form.generate(
        model=m, prompt=torch.tensor(t.encode("Hello")), max_new_tokens=4, temperature=0.5),
    "fish-speech generate_long": lambda m, t: list(long_form.generate_long(
        model=m, device="cpu", decode_one_token=long_form.decode_one_token_naive,
        text="Hello there.", max_new_tokens=4)),
}


def _session_reply(model, tokenizer):
    with ChatSession(fastdecode.LLM.from_model(model, tokenizer), max_new_tokens=4,
                     temperature=0) as session:
        session.reply("Hi", lambda _s: None)


# the entry points that submit to the serving engine; the others run decode()
ON_THE_ENGINE = ("the REPL (ChatSession.reply)", "LLM.generate, a list of prompts",
                 "LLM.generate (llm_utils)", "LLM.generate_samples (modularforge)",
                 "generate (gpt-fast)", "generate, SamplingParams")


@pytest.mark.parametrize("name", sorted(ENTRY_POINTS))
def test_every_text_entry_point_runs_inside_decode(traced, name):
    model, tokenizer, seen = traced
    if "generate_long" in name:
        model.tokenizer = tokenizer
    seen.clear()
    ENTRY_POINTS[name](model, tokenizer)
    core = "engine" if name in ON_THE_ENGINE else "decode"
    assert seen and all(where == core for where in seen), (name, seen)


def test_fish_speech_decode_n_tokens_runs_the_core_loop(traced):
    model, tokenizer, seen = traced
    ids = torch.tensor([tokenizer.encode("Hello")])
    model.setup_caches(1, ids.shape[1] + 5)
    with torch.no_grad():
        model(ids, torch.arange(ids.shape[1]))
        seen.clear()
        long_form.decode_n_tokens(model, ids[:, -1:], torch.tensor([ids.shape[1]]), 4,
                                  temperature=0.5)
    assert seen and all(where == "iter_decode_loop" for where in seen), seen


@pytest.mark.parametrize("entry", ["generate", "generate_agent"])
def test_codebook_models_decode_their_positions_in_the_core_loop(entry):
    """DualAR: the prefill position runs in the core's ``iter_positions`` (the step
    interface's prefill), every later position (the slow step and the fast steps over its
    codebooks) in the core loop under it, with its stopping rules."""
    from test_dual_ar import SEMANTIC, dual_ar, prompt

    from fastdecode.compat.fish_speech import codebook_decode

    model = dual_ar()
    seen = []
    for t in (model.slow, model.fast):  # codebook models call forward_embeddings
        real = t.forward_embeddings
        t.forward_embeddings = (lambda real: lambda *a, **k: seen.append(_loop_frames())
                                or real(*a, **k))(real)
    if entry == "generate":
        out = long_form.generate(model=model, prompt=prompt(), max_new_tokens=5, temperature=0)
        assert out.shape[1] > 7
    else:
        steps = list(codebook_decode.generate_agent(
            model=model, prompt=prompt(), max_new_tokens=5, semantic_ids=SEMANTIC,
            num_samples=2, decode_one_token=codebook_decode.decode_one_token_ar_agent,
            temperature=0.7))
        assert len(steps) > 1
    prefill = 1 + model.config.num_codebooks  # the first position: slow step + fast steps
    assert seen[:prefill] == [["iter_positions"]] * prefill, seen
    assert seen[prefill:] and all(w == ["iter_decode_loop", "iter_positions"]
                                  for w in seen[prefill:]), seen


def test_the_queues_run_inside_the_core(monkeypatch):
    """The worker thread loads its own model: traced through a global forward hook on every
    Transformer and its class's ``logits_and_greedy`` (test-only), for both queues: the
    text queue's segments and the agent queue's token requests (gpt-fast's generate) on
    the engine."""
    seen = []

    def hook(module, _args):
        if isinstance(module, fastdecode.Transformer):
            seen.append(_core_frame())
    step = fastdecode.Transformer.logits_and_greedy

    def traced_step(self, *args, **kwargs):
        seen.append(_core_frame())
        return step(self, *args, **kwargs)
    monkeypatch.setattr(fastdecode.Transformer, "logits_and_greedy", traced_step)

    handle = torch.nn.modules.module.register_module_forward_pre_hook(hook)
    try:
        q = serving.launch_thread_safe_queue("default", "cpu", torch.float32)
        agent_q, tokenizer, _ = serving.launch_thread_safe_queue_agent("default", "cpu",
                                                                       torch.float32)
        for target, request, core in (
                (q, {"text": "Hi", "max_new_tokens": 3, "temperature": 0.5}, "engine"),
                (agent_q, {"prompt": tokenizer.encode("Hi"), "max_new_tokens": 3}, "engine")):
            out = queue.Queue()
            seen.clear()
            target.put(serving.GenerateRequest(request, out))
            items = _drain(out)
            target.put(None)
            target.worker.join(timeout=60)
            assert items[-1].status == "success", items
            assert seen and all(where == core for where in seen), seen
    finally:
        handle.remove()


def test_codebook_decodes_take_the_models_decode_lock():
    """generate_agent holds the model for the decode (the core's decode_session): a decode
    started between its positions in the same thread raises instead of clobbering its KV
    cache; once the generator is done, the model is free again."""
    from test_dual_ar import SEMANTIC, dual_ar, prompt

    from fastdecode.compat.fish_speech import codebook_decode

    model = dual_ar()
    agent = codebook_decode.generate_agent(
        model=model, prompt=prompt(), max_new_tokens=4, semantic_ids=SEMANTIC,
        decode_one_token=codebook_decode.decode_one_token_ar_agent, temperature=0.7)
    next(agent)
    with pytest.raises(decode_core.ReentrantDecodeError):
        long_form.generate(model=model, prompt=prompt(), max_new_tokens=2, temperature=0)
    rest = list(agent)
    assert rest
    out = long_form.generate(model=model, prompt=prompt(), max_new_tokens=2, temperature=0)
    assert out.shape[1] >= 8
