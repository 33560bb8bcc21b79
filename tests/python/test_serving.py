"""launch_thread_safe_queue: 8 client threads x 5 requests, each getting its own responses in
order; bad requests answered with "error" while the worker goes on; load failures raised in
the caller; None stops the worker; the agent variant; the demo command."""
import queue
import subprocess
import sys
import threading
import time

import pytest
import torch

from fastdecode import (GenerateRequest, GenerateResponse, WrappedGenerateResponse,
                        launch_thread_safe_queue, launch_thread_safe_queue_agent)


@pytest.fixture(scope="module")
def worker_queue():
    q = launch_thread_safe_queue("default", "cpu", torch.float32)
    yield q
    q.put(None)


def _collect(responses: queue.Queue, timeout=120):
    out = []
    while True:
        wrapped = responses.get(timeout=timeout)
        assert isinstance(wrapped, WrappedGenerateResponse)
        out.append(wrapped)
        if wrapped.status == "error" or wrapped.response.action == "next":
            return out


def test_many_threads_get_their_own_responses(worker_queue):
    results = {}

    def client(c):
        for r in range(5):
            responses = queue.Queue()
            # the reply budget encodes (client, request): 1..8 tokens, checked below
            worker_queue.put(GenerateRequest(
                request=dict(text=f"Client {c} asks question {r}. Count to three.",
                             chunk_length=30, max_new_tokens=1 + (c + r) % 8, temperature=0.5),
                response_queue=responses))
            results[c, r] = _collect(responses)

    threads = [threading.Thread(target=client, args=(c,)) for c in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=600)
    assert len(results) == 40
    for (c, r), out in results.items():
        assert all(w.status == "success" for w in out), out
        actions = [w.response.action for w in out]
        assert actions == ["sample", "sample", "next"], actions  # two segments, one sample
        for w in out[:2]:
            assert isinstance(w.response, GenerateResponse)
            assert 1 <= len(w.response.codes) <= 1 + (c + r) % 8


def _fish_speech_request(**overrides):
    """A request dict written the way fish-speech's API server writes it
    (TTSInferenceEngine.send_Llama_request): generate_long's keywords but model and
    decode_one_token, the device a torch.device, the references as lists."""
    request = dict(
        device=torch.device("cpu"),
        max_new_tokens=8,
        text="Hello there. How are you today?",
        top_p=0.7,
        repetition_penalty=1.2,
        temperature=0.7,
        compile=False,
        iterative_prompt=True,
        chunk_length=200,
        prompt_tokens=[],
        prompt_text=[],
    )
    request.update(overrides)
    return request


@pytest.mark.parametrize("overrides", [{}, dict(prompt_tokens=None, prompt_text=None),
                                       dict(device="cpu", max_length=1024)])
def test_fish_speech_request_is_served_as_it_is(worker_queue, overrides):
    responses = queue.Queue()
    worker_queue.put(GenerateRequest(request=_fish_speech_request(**overrides),
                                     response_queue=responses))
    out = _collect(responses)
    assert [w.status for w in out] == ["success", "success"]
    assert [w.response.action for w in out] == ["sample", "next"]
    assert 1 <= len(out[0].response.codes) <= 8


@pytest.mark.parametrize("request_dict,exc,match", [
    (dict(text="Hi.", colour="red"), TypeError, "unknown request key"),
    (dict(text="Hi.", top_p=0), ValueError, "top_p must be in"),
    (dict(text="Hi.", temperature=2), ValueError, "temperature must be in"),
    (dict(text="Hi.", temperature=-1), ValueError, "temperature must be in"),
    (dict(), TypeError, "text"),
    (_fish_speech_request(device=torch.device("meta")), ValueError,
     "device 'meta' is not the model's device ('cpu')"),
    (_fish_speech_request(device="cuda"), ValueError, "device 'cuda' is not the model's"),
    (_fish_speech_request(compile="yes"), ValueError, "compile must be True or False"),
])
def test_bad_request_gets_error_and_worker_goes_on(worker_queue, request_dict, exc, match):
    responses = queue.Queue()
    worker_queue.put(GenerateRequest(request=request_dict, response_queue=responses))
    out = _collect(responses, timeout=60)
    assert len(out) == 1 and out[0].status == "error"
    assert type(out[0].response) is exc and match in str(out[0].response)
    worker_queue.put(GenerateRequest(request=dict(text="Say yes.", max_new_tokens=2),
                                     response_queue=responses))
    assert [w.status for w in _collect(responses)] == ["success", "success"]


def test_fish_speech_request_with_compile_compiles_the_workers_step(worker_queue):
    from torch._dynamo.utils import counters

    graphs_before = counters["stats"]["unique_graphs"]
    responses = queue.Queue()
    worker_queue.put(GenerateRequest(request=_fish_speech_request(compile=True, temperature=0.5),
                                     response_queue=responses))
    out = _collect(responses, timeout=600)
    assert [w.status for w in out] == ["success", "success"], out
    assert counters["stats"]["unique_graphs"] > graphs_before  # the decode step was compiled


def test_missing_checkpoint_raises_in_the_caller_quickly():
    t0 = time.perf_counter()
    with pytest.raises(FileNotFoundError):
        launch_thread_safe_queue("/nonexistent/model.gguf", "cpu", torch.float32)
    assert time.perf_counter() - t0 < 10


def test_none_stops_the_worker():
    q = launch_thread_safe_queue("default", "cpu", torch.float32)
    assert q.worker.is_alive()
    q.put(None)
    q.worker.join(timeout=30)
    assert not q.worker.is_alive()


def test_agent_queue_serves_token_requests():
    q, tokenizer, config = launch_thread_safe_queue_agent("default", "cpu", torch.float32)
    try:
        assert config.vocab_size == 49152 and tokenizer.im_end_id is not None
        responses = queue.Queue()
        prompt = torch.tensor(tokenizer.encode("The capital of France is"))
        q.put(GenerateRequest(request=dict(prompt=prompt, max_new_tokens=3, temperature=0),
                              response_queue=responses))
        out = _collect(responses)
        assert [w.response.action for w in out] == ["sample", "next"]
        assert out[0].response.codes.shape == (1, 3) and "Paris" in out[0].response.text
        q.put(GenerateRequest(request=dict(max_new_tokens=3), response_queue=responses))
        assert _collect(responses)[0].status == "error"
    finally:
        q.put(None)


def test_demo_command_interleaves_clients():
    r = subprocess.run([sys.executable, "-m", "fastdecode", "serve-queue-demo", "--clients", "2",
                        "--requests", "2", "--max-new-tokens", "3"], capture_output=True,
                       text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    done = [line for line in r.stdout.splitlines() if line.endswith(": done")]
    assert len(done) == 4 and {"client 0", "client 1"} <= {d.split("s ", 1)[1][:8] for d in done}
    assert "worker stopped: True" in r.stderr


def test_waiting_text_requests_decode_together(monkeypatch):
    """The requests waiting together advance in rounds: every round's segments go to the
    engine in one batched run (complete_all), each request's responses in its order."""
    from fastdecode.compat.fish_speech import long_form, serving

    rounds = []
    real = serving.complete_all

    def recording(model, tokenizer, prompts, params, end_ids, **kw):
        rounds.append(len(prompts))
        return real(model, tokenizer, prompts, params, end_ids, **kw)

    monkeypatch.setattr(serving, "complete_all", recording)
    loaded = long_form.load_model("default", "cpu", torch.float32, False)
    outs = [queue.Queue() for _ in range(4)]
    # split in 16 characters: three segments, one, two, one
    texts = ["First part here. Second part here.", "Only one.",
             "Another first. Another second.", "Just this."]
    segments = [len(long_form.split_text(t, 16)) for t in texts]
    assert segments == [3, 1, 2, 1]
    items = [GenerateRequest(dict(text=t, chunk_length=16, max_new_tokens=4, temperature=0.5),
                             out) for t, out in zip(texts, outs)]
    serving._serve_text_together(loaded, items, threading.Event(), "cpu", None)
    assert rounds == [4, 2, 1]  # a round per segment, every request still going in each
    for n, out in zip(segments, outs):
        got = [out.get_nowait() for _ in range(out.qsize())]
        assert all(w.status == "success" for w in got)
        assert [w.response.action for w in got] == ["sample"] * n + ["next"]
