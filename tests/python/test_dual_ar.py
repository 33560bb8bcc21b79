"""fish-speech's codebook models (fastdecode.dual_ar) and their decoding
(fastdecode.compat.fish_speech.codebook_decode, long_form's dispatch) against the float64 oracle in
tests/reference/dual_ar.py, on random-weight models (no trained DualAR checkpoint is
reachable): the fast transformer's codebook loop, semantic masking of the codes, codes in
range, greedy reproducibility, the agent early stop, folders round trip, bad arguments."""
import json

import pytest
import torch
from reference import dual_ar as ref
from conftest import fused_calls

import fastdecode
from fastdecode.compat.fish_speech import codebook_decode as cd
from fastdecode.compat.fish_speech import long_form
from fastdecode.dual_ar import (BaseModelArgs, DualARModelArgs, DualARTransformer,
                                NaiveModelArgs, NaiveTransformer)
from fastdecode.dual_ar_folder import load_codebook_model, save_pretrained
from fastdecode.quantize import quantize_model

SEMANTIC = list(range(100, 132))
SHAPE = dict(vocab_size=300, n_layer=2, n_head=4, dim=64, n_local_heads=2, head_dim=16,
             intermediate_size=128, max_seq_len=64, codebook_size=32, num_codebooks=4,
             semantic_begin_id=100, semantic_end_id=131)
FAST = dict(n_fast_layer=2, fast_dim=48, fast_n_head=4, fast_n_local_heads=2, fast_head_dim=12,
            fast_intermediate_size=96)


def dual_ar(seed=0, **overrides):
    torch.manual_seed(seed)
    model = DualARTransformer(DualARModelArgs(**{**SHAPE, **FAST, **overrides}))
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0, 0.3)
    fastdecode.fuse(model)
    return model.eval()


def naive(seed=0):
    torch.manual_seed(seed)
    model = NaiveTransformer(NaiveModelArgs(**SHAPE))
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0, 0.3)
    fastdecode.fuse(model)
    return model.eval()


def prompt(T=7):
    p = torch.zeros(5, T, dtype=torch.long)
    p[0] = torch.tensor([1, 2, 3, 100, 101, 102, 4][:T])
    p[1:, 3:6] = torch.tensor([[5], [9], [17], [30]])
    return p


def _sd(model):
    return {k: v for k, v in model.state_dict().items() if "kv_cache" not in k}


# -- config ---------------------------------------------------------------------------------

def test_config_defaults_and_json_round_trip(tmp_path):
    c = DualARModelArgs(**SHAPE)
    assert (c.fast_dim, c.fast_n_head, c.fast_n_local_heads, c.fast_head_dim,
            c.fast_intermediate_size) == (64, 4, 2, 16, 128)  # fast_* follow the slow ones
    assert c.model_type == "dual_ar" and NaiveModelArgs().model_type == "naive"
    c.save(tmp_path)
    assert json.loads((tmp_path / "config.json").read_text())["n_fast_layer"] == 4
    assert BaseModelArgs.from_pretrained(tmp_path) == c


@pytest.mark.parametrize("change,match", [
    (dict(attention_qk_norm=True), "attention_qk_norm=True is not supported"),
    (dict(semantic_begin_id=0, semantic_end_id=40), "more than codebook_size"),
    (dict(semantic_begin_id=10, semantic_end_id=5), "semantic_begin_id"),
    (dict(num_codebooks=0), "num_codebooks must be an integer >= 1"),
])
def test_bad_config_is_a_clear_error(change, match):
    with pytest.raises(ValueError, match=match):
        DualARModelArgs(**{**SHAPE, **change})


def test_bad_config_file_names_the_file(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "dual_ar", "bogus": 1}))
    with pytest.raises(ValueError, match=r"config.json: unknown config field\(s\) \['bogus'\]"):
        BaseModelArgs.from_pretrained(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "vits"}))
    with pytest.raises(ValueError, match="model_type must be one of"):
        BaseModelArgs.from_pretrained(tmp_path)


# -- the oracle -----------------------------------------------------------------------------

@pytest.mark.parametrize("fused", [True, False])
def test_decode_one_token_ar_greedy_equals_the_oracle(fused):
    model = dual_ar()
    fastdecode.fuse(model) if fused else fastdecode.unfuse(model)
    assert model.slow.decode_path == model.fast.decode_path == ("fused" if fused else "modules")
    p = prompt()
    model.setup_caches(1, 32)
    sd = _sd(model)
    seq = p.clone()
    pos = torch.arange(p.shape[1])
    x = p.view(1, 5, -1)
    for _ in range(4):  # the prefill step, then three one-position steps
        out = cd.decode_one_token_ar(model, x, pos, SEMANTIC, temperature=0)
        want = ref.dual_ar_greedy_step(sd, model.config, seq)
        assert out.shape == (5, 1) and out.view(-1).tolist() == want
        seq = torch.cat([seq, out], 1)
        x, pos = out.view(1, 5, 1), pos[-1:] + 1


def test_slow_logits_and_naive_codebook_logits_equal_the_oracle():
    p = prompt()
    model = dual_ar()
    model.setup_caches(1, 16)
    got = model.forward_generate(p.view(1, 5, -1), torch.arange(7))
    want, _ = ref.slow_step(_sd(model), model.config, p)
    torch.testing.assert_close(got.logits.view(-1).double(), want, rtol=1e-4, atol=1e-4)
    nv = naive()
    nv.setup_caches(1, 16)
    out = nv.forward_generate(p.view(1, 5, -1), torch.arange(7))
    tok, cb = ref.naive_logits(_sd(nv), nv.config, p)
    torch.testing.assert_close(out.token_logits.view(-1).double(), tok, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(out.codebook_logits.view(4, 32).double(), cb, rtol=1e-4,
                               atol=1e-4)


def test_fast_steps_run_the_fused_decode_step():
    model = dual_ar()
    with fused_calls() as seen:
        long_form.generate(model=model, prompt=prompt(), max_new_tokens=3, temperature=0)
    calls = [shape[-1] for op, shape in seen if op == "step"]  # layers, norm and head fused
    assert 64 in calls and 48 in calls  # slow (dim 64) and fast (fast_dim 48) steps fused


# -- generation -----------------------------------------------------------------------------

def test_generate_shapes_codes_in_range_and_greedy_reproducible():
    model = dual_ar()
    a = long_form.generate(model=model, prompt=prompt(), max_new_tokens=12, temperature=0)
    b = long_form.generate(model=model, prompt=prompt(), max_new_tokens=12, temperature=0)
    assert a.shape == (5, 7 + 12) and torch.equal(a, b) and torch.equal(a[:, :7], prompt())
    g1, g2 = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    s1 = long_form.generate(model=model, prompt=prompt(), max_new_tokens=20, temperature=1.0,
                            generator=g1)
    s2 = long_form.generate(model=model, prompt=prompt(), max_new_tokens=20, temperature=1.0,
                            generator=g2)
    assert torch.equal(s1, s2)
    codes = s1[1:, 7:]
    assert int(codes.min()) >= 0 and int(codes.max()) < 32
    nv = long_form.generate(model=naive(), prompt=prompt(), max_new_tokens=10, temperature=1.0)
    assert nv.shape == (5, 17) and int(nv[1:, 7:].max()) < 32


def test_generate_stops_after_im_end():
    model = dual_ar()
    first = long_form.generate(model=model, prompt=prompt(), max_new_tokens=10, temperature=0)
    end = int(first[0, 9])  # the greedy token of the third new position
    out = long_form.generate(model=model, prompt=prompt(), max_new_tokens=10, temperature=0,
                             im_end_id=end)
    assert out.shape[1] <= 10 and int(out[0, -1]) == end


@pytest.mark.parametrize("builder,step", [(dual_ar, cd.decode_one_token_ar_agent),
                                          (naive, cd.decode_one_token_naive_agent)])
def test_agent_steps_mask_codes_of_non_semantic_tokens(builder, step):
    model = builder()
    few = [100, 101]  # most tokens are then "not semantic": their codes must be the pad (0)
    steps = list(cd.generate_agent(model=model, prompt=prompt(), max_new_tokens=8,
                                   semantic_ids=few, decode_one_token=step, num_samples=3,
                                   im_end_id=299, temperature=1.0,
                                   generator=torch.Generator().manual_seed(1)))
    assert all(s.shape == (3, 5, 1) for s in steps) and len(steps) == 8
    codes = torch.cat(steps, 2)  # [3, 5, 8]
    not_semantic = ~torch.isin(codes[:, 0], torch.tensor(few))
    assert bool((codes[:, 1:][not_semantic.unsqueeze(1).expand(-1, 4, -1)] == 0).all())
    assert int(codes[:, 1:].max()) < 32


def test_agent_early_stop_at_the_threshold_and_ended_rows_stay_ended():
    model = dual_ar()
    model.setup_caches(5, 32)
    seen = []

    def step(model, x, input_pos, semantic_ids, previous_tokens=None, **kw):
        i = len(seen)
        seen.append(i)
        out = torch.full((5, 5, 1), 7, dtype=torch.long)
        out[:i + 1, 0] = 9  # row r produces im_end 9 at step r
        out[4, 0] = 7 if i < 4 else 9
        return out

    cur = torch.zeros(5, 5, 1, dtype=torch.long)
    steps = list(cd.decode_n_tokens_agent(model, cur, torch.tensor([7]), 10, SEMANTIC,
                                          im_end_id=9, decode_one_token=step,
                                          early_stop_threshold=0.6))
    assert len(steps) == 3  # round(5 * 0.6) = 3 rows ended after the third step
    steps = list(cd.decode_n_tokens_agent(model, cur, torch.tensor([7]), 10, SEMANTIC,
                                          im_end_id=9, decode_one_token=step,
                                          early_stop_threshold=1.0))  # 1 = wait for all
    assert bool((torch.cat(steps, 2)[:, 0, -1] == 9).all())


def test_quantized_dual_ar_generates_codes_in_range():
    model = quantize_model(dual_ar(), "int8", 32)
    out = long_form.generate(model=model, prompt=prompt(), max_new_tokens=6, temperature=0.8)
    assert out.shape == (5, 13) and int(out[1:, 7:].max()) < 32


# -- folders, load_model, the queue ---------------------------------------------------------

def test_folder_round_trip_and_load_model(tmp_path):
    model = dual_ar(seed=5, tie_word_embeddings=False)
    save_pretrained(model, tmp_path)
    state = torch.load(tmp_path / "model.pth", weights_only=True)
    assert "fast_layers.0.attention.wqkv.weight" in state and "embeddings.weight" in state
    loaded, step = long_form.load_model(tmp_path, "cpu", torch.float32)
    assert step is cd.decode_one_token_ar and isinstance(loaded, DualARTransformer)
    assert long_form.load_model(tmp_path, "cpu", torch.float32, is_agent=True)[1] is \
        cd.decode_one_token_ar_agent
    a = long_form.generate(model=model, prompt=prompt(), max_new_tokens=5, temperature=0)
    b = long_form.generate(model=loaded, prompt=prompt(), max_new_tokens=5, temperature=0)
    assert torch.equal(a, b)
    save_pretrained(naive(), tmp_path / "naive")
    assert long_form.load_model(tmp_path / "naive", "cpu", torch.float32)[1] is \
        long_form.decode_one_token_naive
    with pytest.raises(ValueError, match="compile=True is not available"):
        long_form.load_model(tmp_path, "cpu", torch.float32, compile=True)
    (tmp_path / "model.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="model.pth: cannot read the weights"):
        load_codebook_model(tmp_path)


def test_agent_queue_serves_a_dual_ar_folder(tmp_path):
    import queue
    save_pretrained(dual_ar(), tmp_path)
    q, tokenizer, config = fastdecode.launch_thread_safe_queue_agent(tmp_path, "cpu",
                                                                     torch.float32)
    assert tokenizer is None and config.num_codebooks == 4
    out = queue.Queue()
    q.put(fastdecode.GenerateRequest(request=dict(prompt=prompt().tolist(), max_new_tokens=4,
                                                  num_samples=2, temperature=0.7),
                                     response_queue=out))
    bad = queue.Queue()
    q.put(fastdecode.GenerateRequest(request=dict(prompt=prompt()[:3].tolist()),
                                     response_queue=bad))
    q.put(None)
    q.worker.join(60)
    got = []
    while not out.empty():
        got.append(out.get().response)
    assert [r.action for r in got] == ["sample"] * 4 + ["next"]
    assert all(r.codes.shape == (2, 5, 1) for r in got[:-1])
    err = bad.get()
    assert err.status == "error" and "num_codebooks + 1 = 5" in str(err.response)


# -- encode_tokens and bad arguments --------------------------------------------------------

@pytest.fixture(scope="module")
def semantic_tokenizer(default_model):
    import copy
    tok = copy.deepcopy(default_model[1])
    tok._tok.add_special_tokens(["<|semantic|>"])
    return tok


def test_encode_tokens_text_and_reference_codes(semantic_tokenizer):
    tok = semantic_tokenizer
    p = cd.encode_tokens(tok, "Hello there", device="cpu")
    ids = tok.encode("<|im_start|>user\nHello there<|im_end|><|im_start|>assistant\n", bos=False)
    assert p.shape == (5, len(ids)) and p[0].tolist() == ids and not bool(p[1:].any())
    codes = torch.tensor([[3, 1, 4], [1, 5, 9], [2, 6, 5], [3, 5, 8], [9, 7, 9]])  # K = 5 > 4
    p2 = cd.encode_tokens(tok, "Hello there", device="cpu", prompt_tokens=codes[None])
    tail = p2[:, len(ids):]
    assert tail.shape == (5, 4)
    assert tail[0].tolist() == [tok.token_to_id("<|semantic|>")] * 3 + [tok.im_end_id]
    assert torch.equal(tail[1:, :3], codes[:4] + 1) and not bool(tail[1:, 3].any())
    assert cd.encode_tokens(tok, "x", device="cpu", num_codebooks=2).shape[0] == 3
    with pytest.raises(ValueError, match="K >= num_codebooks = 4"):
        cd.encode_tokens(tok, "x", device="cpu", prompt_tokens=codes[:3])
    with pytest.raises(ValueError, match=r"3-D prompt_tokens must be \[1, K, N\]"):
        cd.encode_tokens(tok, "x", device="cpu", prompt_tokens=torch.stack([codes, codes]))


@pytest.mark.parametrize("call,match", [
    (lambda m: cd.decode_one_token_ar(m, prompt()[:4].view(1, 4, -1), torch.arange(7),
                                      SEMANTIC), r"num_codebooks \+ 1 = 5"),
    (lambda m: cd.decode_one_token_ar(m, prompt(), torch.arange(7), SEMANTIC),
     r"\[B, num_codebooks \+ 1 = 5, S >= 1\]"),
    (lambda m: cd.decode_one_token_ar(m, prompt().view(1, 5, -1).repeat(2, 1, 1),
                                      torch.arange(7), SEMANTIC), "one row"),
    (lambda m: cd.decode_one_token_ar(m, prompt().view(1, 5, -1) + 40, torch.arange(7),
                                      SEMANTIC), r"codes .* must be in \[0, 32\)"),
    (lambda m: long_form.generate(model=m, prompt=prompt()[:3], max_new_tokens=2),
     r"prompt must be \[num_codebooks \+ 1 = 5, T\]"),
    (lambda m: next(cd.generate_agent(model=m, prompt=prompt(), max_new_tokens=2,
                                      semantic_ids=SEMANTIC, early_stop_threshold=1.5)),
     r"early_stop_threshold must be in \[0.0, 1.0\]"),
    (lambda m: next(cd.generate_agent(model=m, prompt=prompt(), max_new_tokens=2,
                                      semantic_ids=SEMANTIC, num_samples=0)),
     "num_samples must be an integer >= 1"),
    (lambda m: m.setup_caches(1, 65), r"max_seq_len must be in \[1, 64\]"),
    (lambda m: m.setup_caches(1, 8, torch.bfloat16), "differs from the model's activation"),
    (lambda m: long_form.generate(model=m, prompt=prompt(), max_new_tokens=2, temperature=-1),
     "temperature"),
])
def test_bad_arguments_are_clear_errors(call, match):
    with pytest.raises(ValueError, match=match):
        call(dual_ar())


def test_a_naive_step_on_a_dual_ar_model_is_a_type_error():
    with pytest.raises(TypeError, match="decodes a NaiveTransformer"):
        cd.decode_one_token_naive_agent(dual_ar(), prompt().view(1, 5, -1), torch.arange(7),
                                        SEMANTIC)
