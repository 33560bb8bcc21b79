"""The OpenAI-compatible server end to end: ``python -m fastdecode serve`` in a subprocess on
a free loopback port, talked to with the real ``openai`` client and with raw HTTP. Every
request is bounded (max_tokens, client timeouts) and every server is stopped with SIGTERM."""
import asyncio
import http.client
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch

import fastdecode
from fastdecode.server.run import kv_cache_dtype_of

openai = pytest.importorskip("openai", reason="the server's test client (requirements-dev)")

KEY = "test-key"
PROMPT = "The capital of France is"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    def __init__(self, *args: str):
        self.port = _free_port()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "fastdecode", "serve", "--port", str(self.port), *args],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        deadline = time.time() + 90
        while time.time() < deadline:
            assert self.proc.poll() is None, self.proc.stdout.read()
            try:
                if self.get("/health")[0] == 200:
                    return
            except OSError:
                pass
            time.sleep(0.2)
        self.stop()
        raise TimeoutError("the server did not become healthy in 90 s")

    def request(self, method: str, path: str, body=None, headers=None):
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=60)
        data = body if isinstance(body, (bytes, type(None))) else json.dumps(body).encode()
        conn.request(method, path, body=data, headers={"Content-Type": "application/json",
                                                       **(headers or {})})
        resp = conn.getresponse()
        payload = resp.read()
        conn.close()
        return resp.status, payload, dict(resp.getheaders())

    def get(self, path: str, headers=None):
        return self.request("GET", path, headers=headers)

    def metric(self, name: str) -> float:
        text = self.get("/metrics")[1].decode()
        return float(re.search(rf"^{name} (\S+)$", text, re.M).group(1))

    def client(self, key: str = KEY):
        return openai.OpenAI(base_url=f"http://127.0.0.1:{self.port}/v1", api_key=key,
                             timeout=60, max_retries=0)

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            raise


@pytest.fixture(scope="module")
def server():
    s = Server("--api-key", KEY, "--max-batch", "8", "--ctx", "1024", "--max-waiting", "64")
    yield s
    assert s.stop() == 0


@pytest.fixture(scope="module")
def gguf_model():
    return fastdecode.load("default")  # what the server serves: the GGUF in its blocks


def _stream_text(stream, chat: bool):
    parts, finish, usage = {}, {}, None
    for chunk in stream:
        if chunk.usage is not None:
            usage = chunk.usage
        for c in chunk.choices:
            piece = (c.delta.content if chat else c.text) or ""
            parts[c.index] = parts.get(c.index, "") + piece
            if c.finish_reason:
                finish[c.index] = c.finish_reason
    return parts, finish, usage


def test_completion_stream_equals_whole_equals_generate(server, gguf_model):
    model, tok = gguf_model
    c = server.client()
    whole = c.completions.create(model="default", prompt=PROMPT, max_tokens=24, temperature=0)
    parts, finish, usage = _stream_text(c.completions.create(
        model="default", prompt=PROMPT, max_tokens=24, temperature=0, stream=True,
        stream_options={"include_usage": True}), chat=False)
    assert parts[0] == whole.choices[0].text
    assert finish[0] == whole.choices[0].finish_reason == "length"
    ids = tok.encode(PROMPT)
    served_dtype = kv_cache_dtype_of("auto", fastdecode.build_info()["active_isa"])
    assert whole.choices[0].text == _generated_text(model, tok, ids, 24, served_dtype)
    assert (whole.usage.prompt_tokens, whole.usage.completion_tokens,
            whole.usage.total_tokens) == (len(ids), 24, len(ids) + 24)
    assert (usage.prompt_tokens, usage.completion_tokens) == (len(ids), 24)


def _generated_text(model, tok, ids, n: int, kv_cache_dtype) -> str:
    """``fastdecode.generate``'s greedy continuation with the model's KV caches in
    ``kv_cache_dtype`` (the server's default is fp16 where the kernel path converts it in
    hardware, generate's the activations' dtype)."""
    model.kv_cache_dtype = kv_cache_dtype
    try:
        ref = fastdecode.generate(model, torch.tensor(ids), n, temperature=0)[0].reshape(-1)
    finally:
        model.kv_cache_dtype = None
    return tok.decode(ref[len(ids):].tolist(), skip_special_tokens=True)


def test_a_float32_kv_cache_server_equals_generate_and_float16_differs_from_it(gguf_model):
    """--kv-cache-dtype float32 serves what generate decodes by default; the default fp16
    caches round each key and value, which moves this quantized model's greedy text."""
    model, tok = gguf_model
    prompt = "The three most important inventions of the last century are"
    ids = tok.encode(prompt)
    s = Server("--kv-cache-dtype", "float32", "--max-batch", "2", "--ctx", "256")
    try:
        got = s.client().completions.create(model="default", prompt=prompt, max_tokens=40,
                                            temperature=0, extra_body={"ignore_eos": True}
                                            ).choices[0].text
    finally:
        assert s.stop() == 0
    assert got == _generated_text(model, tok, ids, 40, None)
    assert got != _generated_text(model, tok, ids, 40, torch.float16)


def test_chat_stream_equals_whole_and_uses_the_template(server, gguf_model):
    tok = gguf_model[1]
    c = server.client()
    messages = [{"role": "user", "content": "Name a fruit."}]
    whole = c.chat.completions.create(model="default", messages=messages, max_tokens=40,
                                      temperature=0)
    parts, finish, _ = _stream_text(c.chat.completions.create(
        model="default", messages=messages, max_tokens=40, temperature=0, stream=True),
        chat=True)
    assert whole.choices[0].message.role == "assistant"
    assert parts[0] == whole.choices[0].message.content and parts[0]
    assert finish[0] == whole.choices[0].finish_reason
    prompt = tok.encode(tok.apply_chat_template(messages))
    assert whole.usage.prompt_tokens == len(prompt)
    if whole.choices[0].finish_reason == "stop":  # ended by <|im_end|>, counted
        assert whole.usage.completion_tokens <= 40


def test_n_choices_stop_strings_and_seeds(server):
    c = server.client()
    r = c.completions.create(model="default", prompt="List three colors:\n1.", max_tokens=30,
                             temperature=0.9, n=3, seed=7)
    assert sorted(ch.index for ch in r.choices) == [0, 1, 2]
    again = c.completions.create(model="default", prompt="List three colors:\n1.",
                                 max_tokens=30, temperature=0.9, n=3, seed=7)
    assert [ch.text for ch in r.choices] == [ch.text for ch in again.choices]
    other = c.completions.create(model="default", prompt="List three colors:\n1.",
                                 max_tokens=30, temperature=0.9, n=3, seed=8)
    assert [ch.text for ch in other.choices] != [ch.text for ch in r.choices]
    full = c.completions.create(model="default", prompt=PROMPT, max_tokens=24, temperature=0)
    text = full.choices[0].text
    stop = next(w for w in text.split()[1:] if len(w) >= 4)  # a word inside the greedy text
    cut = c.completions.create(model="default", prompt=PROMPT, max_tokens=24, temperature=0,
                               stop=[stop, "zzzz"])
    assert cut.choices[0].text == text[:text.index(stop)]
    assert cut.choices[0].finish_reason == "stop"
    parts, _, _ = _stream_text(c.completions.create(
        model="default", prompt=PROMPT, max_tokens=24, temperature=0, stop=stop, stream=True),
        chat=False)
    assert parts[0] == cut.choices[0].text


def test_logprobs(server):
    c = server.client()
    r = c.completions.create(model="default", prompt=PROMPT, max_tokens=6, temperature=0,
                             logprobs=3)
    lp = r.choices[0].logprobs
    assert len(lp.tokens) == len(lp.token_logprobs) == len(lp.top_logprobs) == 6
    assert "".join(lp.tokens) == r.choices[0].text
    for chosen, top in zip(lp.token_logprobs, lp.top_logprobs):
        assert chosen <= 0 and len(top) == 3
        assert abs(max(top.values()) - chosen) < 1e-5  # greedy: the chosen is the top one
    chat = c.chat.completions.create(model="default", messages=[{"role": "user",
                                                                 "content": "Hi"}],
                                     max_tokens=5, temperature=0, logprobs=True,
                                     top_logprobs=2)
    content = chat.choices[0].logprobs.content
    assert content and all(len(t.top_logprobs) == 2 and t.logprob <= 0 for t in content)


BAD_REQUESTS = [
    ("temperature", {"prompt": "x", "temperature": -1}),
    ("temperature", {"prompt": "x", "temperature": "hot"}),
    ("top_p", {"prompt": "x", "top_p": 0}),
    ("n", {"prompt": "x", "n": 0}),
    ("max_tokens", {"prompt": "x", "max_tokens": 0}),
    ("max_tokens", {"prompt": "x", "max_tokens": 5000}),
    ("stop", {"prompt": "x", "stop": [1, 2]}),
    ("seed", {"prompt": "x", "seed": -3}),
    ("prompt", {"prompt": ""}),
    ("prompt", {"prompt": [10**9]}),
    ("logprobs", {"prompt": "x", "logprobs": 99}),
    ("top_k", {"prompt": "x", "top_k": 1.5}),
    ("repetition_penalty", {"prompt": "x", "repetition_penalty": 0}),
]


@pytest.mark.parametrize("param,body", BAD_REQUESTS,
                         ids=[f"{p}={list(b.values())[-1]!r}" for p, b in BAD_REQUESTS])
def test_a_bad_parameter_is_a_400_naming_it(server, param, body):
    status, payload, _ = server.request("POST", "/v1/completions", {"model": "default", **body},
                                        {"Authorization": f"Bearer {KEY}"})
    error = json.loads(payload)["error"]
    assert status == 400, payload
    assert error["param"] == param and param in error["message"], error
    assert set(error) == {"message", "type", "param", "code"}


def test_errors_keep_openai_shape_and_the_server_serves_on(server):
    auth = {"Authorization": f"Bearer {KEY}"}
    cases = [
        (404, "POST", "/v1/completions", {"model": "gpt-9", "prompt": "x"}, auth),
        (404, "GET", "/v1/nothing", None, auth),
        (400, "POST", "/v1/completions", b"{not json", auth),
        (400, "POST", "/v1/chat/completions", {"model": "default", "messages": []}, auth),
        (400, "POST", "/v1/chat/completions",
         {"model": "default", "messages": [{"role": "robot", "content": "x"}]}, auth),
        (401, "POST", "/v1/completions", {"model": "default", "prompt": "x"}, {}),
        (401, "GET", "/v1/models", None, {"Authorization": "Bearer wrong"}),
    ]
    for status, method, path, body, headers in cases:
        got, payload, _ = server.request(method, path, body, headers)
        assert got == status, (path, payload)
        assert set(json.loads(payload)["error"]) == {"message", "type", "param", "code"}
    models = server.client().models.list()
    assert [m.id for m in models.data] == ["default"]
    with pytest.raises(openai.AuthenticationError):
        server.client("wrong").completions.create(model="default", prompt="x", max_tokens=2)
    ok = server.client().completions.create(model="default", prompt="x", max_tokens=2)
    assert ok.choices[0].finish_reason in ("length", "stop")


def test_sixteen_concurrent_streams_each_equal_their_solo_output(server):
    c = server.client()
    prompts = [f"Write about topic number {i}:" for i in range(16)]
    kinds = [{"temperature": 0} if i % 2 == 0 else {"temperature": 0.8, "seed": 100 + i}
             for i in range(16)]

    def run(i):
        parts, _, _ = _stream_text(c.completions.create(
            model="default", prompt=prompts[i], max_tokens=20, stream=True, **kinds[i]),
            chat=False)
        return parts[0]
    solo = [run(i) for i in range(16)]
    together = [None] * 16
    steps_before = server.metric("fastdecode_decode_steps_total")
    threads = [threading.Thread(target=lambda i=i: together.__setitem__(i, run(i)))
               for i in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert together == solo
    # batched for real: far fewer steps than 16 x 20
    assert server.metric("fastdecode_decode_steps_total") - steps_before < 16 * 20 / 2


def test_a_client_gone_mid_stream_frees_its_slot(server):
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=30)
    body = json.dumps({"model": "default", "prompt": "Once upon a time", "max_tokens": 800,
                       "temperature": 0, "stream": True, "ignore_eos": True}).encode()
    sock.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                 + f"Authorization: Bearer {KEY}\r\nContent-Length: {len(body)}\r\n\r\n".encode()
                 + body)
    seen = b""
    while seen.count(b"data:") < 3:
        seen += sock.recv(4096)
    assert server.metric("fastdecode_requests_running") == 1
    before = server.metric("fastdecode_generated_tokens_total")
    sock.close()
    deadline = time.time() + 10
    while server.metric("fastdecode_requests_running") != 0:
        assert time.time() < deadline, "the slot of a client gone was not freed"
        time.sleep(0.05)
    after = server.metric("fastdecode_generated_tokens_total")
    assert after - before < 100  # far from the 800 it asked for
    time.sleep(0.3)
    assert server.metric("fastdecode_generated_tokens_total") == after


def test_a_full_queue_is_a_429_and_sigterm_exits_cleanly():
    s = Server("--max-batch", "1", "--max-waiting", "1", "--ctx", "512")
    try:
        results = []

        def call():
            results.append(s.request("POST", "/v1/completions",
                                     {"model": "default", "prompt": "Tell me a story",
                                      "max_tokens": 300, "ignore_eos": True}))
        # the first one running (its slot taken), then four at once: one waits, three are
        # turned away (all five at once could find the first still waiting: five 429s but one)
        threads = [threading.Thread(target=call) for _ in range(5)]
        threads[0].start()
        deadline = time.time() + 60
        while s.metric("fastdecode_requests_running") != 1:
            assert time.time() < deadline, "the first request never started"
            time.sleep(0.02)
        for t in threads[1:]:
            t.start()
        for t in threads:
            t.join(timeout=120)
        statuses = sorted(r[0] for r in results)
        assert statuses.count(200) >= 2 and 429 in statuses, statuses
        busy = next(r for r in results if r[0] == 429)
        assert busy[2].get("retry-after") == "1"
        assert json.loads(busy[1])["error"]["code"] == "queue_full"
    finally:
        assert s.stop() == 0


def _asgi_get(app, path: str):
    """GET ``path`` from an ASGI app in-process: (status, body)."""
    sent = []

    async def receive():
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message):
        sent.append(message)
    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1",
             "method": "GET", "scheme": "http", "path": path, "raw_path": path.encode(),
             "query_string": b"", "root_path": "", "headers": [],
             "server": ("127.0.0.1", 80), "client": ("127.0.0.1", 1)}
    asyncio.run(app(scope, receive, send))
    start = next(m for m in sent if m["type"] == "http.response.start")
    return start["status"], b"".join(m.get("body", b"") for m in sent
                                     if m["type"] == "http.response.body")


def test_health_is_503_while_the_model_loads():
    from fastdecode.server.app import ServerState, build_app
    from fastdecode.server.metrics import PrometheusMetrics

    state = ServerState("default", None, PrometheusMetrics())
    app = build_app(state)
    assert _asgi_get(app, "/health")[0] == 503
    status, body = _asgi_get(app, "/v1/models")
    assert status == 200  # the id is known before the weights are
    state.engine = object()
    assert _asgi_get(app, "/health") == (200, b'{"status":"ok"}')


def test_serve_refuses_bad_flags_before_loading():
    for flags in (["--max-batch", "64"], ["--port", "70000"], ["--ctx", "0"],
                  ["--kv-cache-dtype", "bfloat16"]):
        done = subprocess.run([sys.executable, "-m", "fastdecode", "serve", *flags],
                              capture_output=True, text=True, timeout=60,
                              env={**os.environ})
        assert done.returncode == 2 and "error" in done.stderr, (flags, done.stderr)


def test_the_readme_server_examples_run(server, capsys):
    """The README's openai-client and curl examples, against this test's server."""
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    section = readme[readme.index("## Serve many users"):]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    code = code.replace("http://127.0.0.1:8000", f"http://127.0.0.1:{server.port}")
    code = code.replace('api_key="KEY"', f'api_key="{KEY}"')
    exec(compile(code, "README.md", "exec"), {})
    assert capsys.readouterr().out.strip()
    curl = re.search(r"curl (\S+) .*?-d '(.*?)'", section, re.S)
    path = curl.group(1).replace("http://127.0.0.1:8000", "")
    status, payload, _ = server.request("POST", path, json.loads(curl.group(2)),
                                        {"Authorization": f"Bearer {KEY}"})
    assert status == 200 and "Paris" in json.loads(payload)["choices"][0]["text"]
