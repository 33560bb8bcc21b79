"""Each reproducible failure found by trying fastdecode as a hostile user would, fixed: empty
sizes that divided by zero, NaN zeroed on one kernel path, bad stop / pad ids, the
interactive cap on small models, caches sized from the config, threads sharing a model,
duck-typed response queues, Ctrl-C in the CLI, and scripts that end with a queue running."""
import io
import queue
import subprocess
import sys
import textwrap
import threading
import time

import pexpect
import pytest
import torch
from conftest import tiny_model
from reference.quant import dequantize_int4_ref

import fastdecode
from fastdecode import ops
from fastdecode.cancel import DecodeCancelled, cancel_on


@pytest.fixture(scope="module")
def tiny():
    return tiny_model(seed=11)


# -- zero sizes and non-finite activations -----------------------------------------------------

@pytest.mark.parametrize("x,n", [(torch.zeros(1, 0), 4), (torch.zeros(0, 64), 4),
                                 (torch.randn(2, 64), 0)])
def test_empty_int8_linear_is_the_empty_sum(x, n):
    q = torch.zeros(n, x.shape[-1], dtype=torch.int8)
    y = ops.int8_linear(x, q, torch.ones(n), torch.arange(n, dtype=torch.float32))
    assert y.shape == (*x.shape[:-1], n)
    assert torch.equal(y, torch.arange(n, dtype=torch.float32).expand_as(y))


def test_empty_int4_linear_is_the_empty_sum():
    y = ops.int4_linear(torch.zeros(3, 0), torch.zeros(4, 0, dtype=torch.uint8),
                        torch.zeros(4, 0, 2), 32)
    assert y.shape == (3, 4) and not y.any()


@pytest.mark.parametrize("rows", [1, 4, 17])  # the integer GEMV path and the GEMM path
@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_non_finite_activations_propagate_as_in_float(rows, bad):
    g = torch.Generator().manual_seed(0)
    w = torch.randn(24, 64, generator=g)
    x = torch.randn(rows, 64, generator=g)
    x[0, 5] = bad
    q, s = ops.quantize_int8_per_channel(w)
    packed, sz = ops.quantize_int4_grouped(w, 32)
    for got, w_hat in ((ops.int8_linear(x, q, s), q.float() * s[:, None]),
                       (ops.int4_linear(x, packed, sz, 32), dequantize_int4_ref(packed, sz, 32))):
        want = x @ w_hat.float().t()
        assert torch.equal(torch.isnan(got), torch.isnan(want))
        assert torch.equal(torch.isinf(got), torch.isinf(want))
        assert torch.isfinite(got[1:]).all()  # the other rows are untouched


# -- generate's ids and sizes ------------------------------------------------------------------

@pytest.mark.parametrize("kwargs,match", [
    (dict(eos_id=10 ** 6), r"eos_id must hold token ids in \[0, 101\)"),
    (dict(eos_id=[3, -2]), r"eos_id must hold token ids in \[0, 101\)"),
    (dict(eos_id=3, pad_id=-1), r"pad_id must be a token id in \[0, 101\), got -1"),
    (dict(pad_id=101), r"pad_id must be a token id in \[0, 101\)"),
])
def test_stop_and_pad_ids_are_checked_before_any_work(tiny, kwargs, match):
    calls = []
    with pytest.raises(ValueError, match=match):
        fastdecode.generate(tiny, torch.tensor([[1, 2], [3, 4]]), 8, callback=calls.append,
                            **kwargs)
    assert calls == []


def test_rows_ending_at_different_times_are_padded(tiny):
    prompt = torch.randint(0, 101, (4, 3), generator=torch.Generator().manual_seed(1))
    plain, _ = fastdecode.generate(tiny, prompt, 12, temperature=0)
    stop = int(plain[0, 5])
    seq, _ = fastdecode.generate(tiny, prompt, 12, temperature=0, eos_id=stop, pad_id=7)
    for b in range(4):
        hits = (plain[b, 3:] == stop).nonzero()
        end = int(hits[0]) + 1 if len(hits) else 12
        assert torch.equal(seq[b, :3 + end], plain[b, :3 + end])
        assert (seq[b, 3 + end:] == 7).all()


def test_interactive_on_a_model_shorter_than_the_cap(tiny):
    assert tiny.config.block_size == 64
    seq, _ = fastdecode.generate(tiny, torch.tensor([1, 2, 3]), 10, interactive=True,
                                 temperature=0)
    plain, _ = fastdecode.generate(tiny, torch.tensor([1, 2, 3]), 10, temperature=0)
    assert torch.equal(seq, plain)
    with pytest.raises(ValueError, match=r"interactive cache \(64\)"):
        fastdecode.generate(tiny, torch.tensor([1, 2, 3]), 62, interactive=True)


def test_caches_size_themselves_from_the_request_not_the_config():
    model = tiny_model(seed=2, block_size=2 ** 31)
    t0 = time.perf_counter()
    seq, _ = fastdecode.generate(model, torch.tensor([1, 2, 3]), 4, temperature=0)
    assert time.perf_counter() - t0 < 5 and seq.shape == (1, 7)
    assert model.freqs_cis.shape[0] == 7
    assert model.causal_mask(torch.arange(3), torch.float32).shape == (1, 1, 3, 7)
    assert model.layers[0].attention.kv_cache.k_cache.shape[2] == 7


# -- threads ----------------------------------------------------------

def test_threads_sharing_a_model_each_get_their_own_answer(default_model):
    model, tok = default_model
    prompts = [torch.tensor(tok.encode(f"Question {i}: what is {i} plus {i}?")) for i in range(8)]
    alone = [fastdecode.generate(model, p, 10, temperature=0)[0] for p in prompts]
    results = {}

    def client(i):
        results[i] = fastdecode.generate(model, prompts[i], 10, temperature=0)[0]

    threads = [threading.Thread(target=client, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    assert all(torch.equal(results[i], alone[i]) for i in range(8))


def test_cancel_on_stops_a_decode_from_another_thread(tiny):
    stop = threading.Event()
    seen = []

    def cb(token):
        seen.append(token)
        if len(seen) == 3:
            stop.set()

    with cancel_on(stop), pytest.raises(DecodeCancelled):
        fastdecode.generate(tiny, torch.tensor([1, 2]), 40, callback=cb)
    assert len(seen) == 3
    fastdecode.generate(tiny, torch.tensor([1, 2]), 4)  # outside the block: unaffected


# -- queues ----------------------------------------------------------

class ListQueue:
    """Not a queue.Queue: anything with put() may receive responses."""

    def __init__(self):
        self.items = queue.Queue()

    def put(self, item):
        self.items.put(item)


def test_duck_typed_response_queue_gets_the_error_response():
    q = fastdecode.launch_thread_safe_queue("default", "cpu", torch.float32)
    try:
        out = ListQueue()
        q.put(fastdecode.GenerateRequest(request=dict(text="Hi.", top_p=0), response_queue=out))
        wrapped = out.items.get(timeout=60)
        assert wrapped.status == "error" and isinstance(wrapped.response, ValueError)
    finally:
        q.put(None)
        q.worker.join(timeout=60)
    assert not q.worker.is_alive()


README_QUEUE = """
import queue, torch, fastdecode
q = fastdecode.launch_thread_safe_queue("default", "cpu", torch.float32)
responses = queue.Queue()
q.put(fastdecode.GenerateRequest(request=dict(text="Hi. How are you?", max_new_tokens=48),
                                 response_queue=responses))
wrapped = responses.get()
print(wrapped.status)
{ending}
"""


@pytest.mark.parametrize("ending", [
    "q.put(None)",                      # the README's old ending: the worker still decoding
    "",                                 # the queue left running mid-request
    "q.put(None)\nq.worker.join()",     # the README's shutdown
])
def test_a_script_ending_with_a_queue_exits_cleanly(ending):
    code = textwrap.dedent(README_QUEUE).format(ending=ending)
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "terminate called" not in r.stderr and r.stdout.strip() == "success"


# -- the command line ----------------------------------------------------------

def test_ctrl_c_during_cli_generate_exits_130_without_a_traceback():
    child = pexpect.spawn(sys.executable, ["-m", "fastdecode", "generate", "--max-new-tokens",
                                           "2000", "--prompt", "Once upon a time"],
                          encoding="utf-8", timeout=180)
    child.logfile_read = io.StringIO()
    child.expect_exact("Once upon a time")
    child.expect(r"\w+ \w+ \w+")  # generating
    child.sendintr()
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 130 and "Traceback" not in child.logfile_read.getvalue()
