"""fastdecode::decode_step (the layers, final norm, output head and greedy tokens of a decode
step in one C++ op) against decode_layers followed by the norm and head ops and argmax, for
fp32, int8 and int4 heads; the engine and models take its greedy tokens; opcheck, compile,
NaN and bad input (refused before the first cache write)."""
import pytest
import torch
from conftest import fused_calls, tiny_model

import fastdecode
from fastdecode import fusion, ops
from fastdecode.quantize import quantize_model


def _step_args(mode=None, positions=1, seed=11):
    """A 2-layer model with history in its caches and ops.decode_step's arguments for it
    (last_only left off)."""
    model = tiny_model(seed=seed, n_layer=2)
    if mode is not None:
        quantize_model(model, mode, 32)  # every linear, the head included
    model.setup_caches(2, 8)
    for layer in model.layers:
        layer.attention.kv_cache.k_cache.normal_()
        layer.attention.kv_cache.v_cache.normal_()
    step = fusion.plan(model)
    assert step.head is not None, step.head_reason
    x = torch.randn(2, positions, model.config.dim)
    pos = torch.arange(3, 3 + positions)
    head = step.head
    return model, (x, [t.detach() for t in step.norms], step.eps,
                   [t.detach() for t in step.weights], step.kinds, step.groupsizes,
                   [a.kv_cache.k_cache for a in step.attentions],
                   [a.kv_cache.v_cache for a in step.attentions], pos, model.rope_table,
                   step.n_head, step.n_kv_head, head.norm.detach(),
                   [t.detach() for t in head.tensors], head.kind, head.groupsize)


@pytest.mark.parametrize("mode", [None, "int8", "int4"])
@pytest.mark.parametrize("positions,last_only", [(1, False), (3, False), (3, True)])
def test_step_equals_layers_then_norm_head_and_argmax(mode, positions, last_only):
    model, args = _step_args(mode, positions)
    k_copies, v_copies = [k.clone() for k in args[6]], [v.clone() for v in args[7]]
    logits, hidden, tokens = ops.decode_step(*args, last_only=last_only)
    want_hidden = ops.decode_layers(args[0], *args[1:6], k_copies, v_copies, *args[8:12])
    if last_only:
        want_hidden = want_hidden[:, -1:]
    with torch.no_grad():  # the head as the module path runs it: the same ops
        want_logits = model.output(ops.rms_norm(want_hidden, args[12], args[2]))
    rows = 1 if last_only else positions
    assert logits.shape == (2, rows, model.config.vocab_size) and tokens.dtype == torch.int32
    assert torch.equal(hidden, want_hidden) and torch.equal(logits, want_logits)
    assert torch.equal(tokens, logits.argmax(-1).int())
    assert all(torch.equal(a, b) for a, b in zip(args[6] + args[7], k_copies + v_copies))


def test_a_row_of_nan_logits_has_no_greedy_token():
    model, args = _step_args("int8")
    q, scales = args[13]
    scales = scales.clone()
    scales.view(-1)[0] = float("nan")  # an output row of the head: NaN logits in every row
    logits, _, tokens = ops.decode_step(*args[:13], [q, scales], *args[14:])
    assert logits.isnan().any(-1).all() and torch.equal(tokens, torch.full((2, 1), -1,
                                                                           dtype=torch.int32))


@pytest.mark.parametrize("change,exc,match", [
    (lambda a: a[:14] + (3,) + a[15:], ValueError, r"head_kind must be 0 \(fp32\), 1 \(int8\)"),
    (lambda a: a[:13] + (a[13][:1],) + a[14:], ValueError, "a head of kind 1 takes 2 tensors"),
    (lambda a: a[:13] + (list(ops.quantize_int8_per_channel(torch.randn(101, 64))),) + a[14:],
     ValueError, r"decode_step \(head\): takes 64 in-features, the layer gives it 32"),
    (lambda a: a[:12] + (a[12][:-1],) + a[13:], ValueError, r"weight must have shape \[E\]"),
    (lambda a: a[:12] + (a[12].double(),) + a[13:], TypeError, "share one floating dtype"),
    (lambda a: a[:13] + ([a[13][0], a[13][1].double()],) + a[14:], TypeError,
     r"\(head\): scales must be float32"),
])
def test_a_bad_head_or_norm_fails_before_the_cache_is_written(change, exc, match):
    _, args = _step_args("int8")
    before = [c.clone() for c in args[6] + args[7]]
    with pytest.raises(exc, match=match):
        ops.decode_step(*change(args))
    assert all(torch.equal(a, b) for a, b in zip(args[6] + args[7], before))


@pytest.mark.parametrize("mode", [None, "int4"])
def test_opcheck_decode_step(mode):
    _, args = _step_args(mode, positions=2)
    for last_only in (False, True):
        torch.library.opcheck(torch.ops.fastdecode.decode_step.default, args + (last_only,))


def test_compile_fullgraph_around_decode_step():
    _, args = _step_args("int8")

    def f(x):
        logits, hidden, tokens = ops.decode_step(x, *args[1:], last_only=True)
        return torch.log_softmax(logits, -1), hidden * 2, tokens + 1

    want = f(args[0])
    got = torch.compile(f, fullgraph=True, backend="aot_eager")(args[0])
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b)


def test_a_model_step_is_one_call_and_its_greedy_tokens_are_the_argmax():
    model = tiny_model(seed=12)
    model.setup_caches(2, 16)
    ids = torch.randint(0, 101, (2, 5))
    with torch.no_grad(), fused_calls() as seen:
        logits, tokens = model.logits_and_greedy(ids, torch.arange(5))
        step_logits = model(tokens[:, -1:].long(), torch.tensor([5]))
    assert [op for op, _ in seen] == ["step", "step"]  # no head module, no argmax op
    assert torch.equal(tokens, logits.argmax(-1).int())
    # the same logits module by module
    fastdecode.unfuse(model)
    with torch.no_grad():
        want, want_tokens = model.logits_and_greedy(ids, torch.arange(5))
        want_step = model(tokens[:, -1:].long(), torch.tensor([5]))
    torch.testing.assert_close(logits, want, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(step_logits, want_step, rtol=1e-4, atol=1e-4)
    assert torch.equal(want_tokens, want.argmax(-1).int())


def test_a_head_that_cannot_join_runs_as_a_module_after_the_fused_layers():
    model = tiny_model(seed=13)
    with torch.no_grad():
        model.norm.eps = model.norm.eps * 2  # another eps than the layers'
    assert fastdecode.fuse(model) == "fused"
    step = model.__dict__["_fused"]
    assert step.head is None and "the layers' eps" in step.head_reason
    model.setup_caches(1, 8)
    ids = torch.randint(0, 101, (1, 3))
    with torch.no_grad(), fused_calls() as seen:
        got = model(ids, torch.arange(3))
    fastdecode.unfuse(model)
    with torch.no_grad():
        want = model(ids, torch.arange(3))
    assert [op for op, _ in seen] == ["layers"]
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)
