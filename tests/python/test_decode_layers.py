"""fastdecode::decode_layers (every decoder layer of a decode step in one C++ op) against
the model's module-by-module path, in fp32, int8 and int4; fusion as an explicit step
(fastdecode.fuse, model.decode_path, edits that un-fuse); opcheck, compile, bad input."""
import copy
import warnings

import pytest
import torch
from conftest import fused_calls, tiny_model

import fastdecode
from fastdecode import fusion, ops
from fastdecode.quantize import WeightOnlyInt4Linear, WeightOnlyInt8Linear, quantize_model


def _decode(model, ids, steps, fused):
    """Logits of `steps` greedy decode steps after a prefill of ids, and layer 0's k cache;
    fused=False runs the same decode step module by module."""
    fastdecode.fuse(model, warn=False) if fused else fastdecode.unfuse(model)
    with torch.no_grad():
        model.setup_caches(ids.shape[0], ids.shape[1] + steps)
        model(ids, torch.arange(ids.shape[1]))
        tok, logits = ids[:, -1:], []
        for i in range(steps):
            out = model(tok, torch.tensor([ids.shape[1] + i]))
            logits.append(out)
            tok = out[:, -1].argmax(-1, keepdim=True)
    return torch.cat(logits, 1), model.layers[0].attention.kv_cache.k_cache.clone()


def _runs_fused(model, ids, monkeypatch=None):
    """Whether a decode step of `model` (as it is) calls ops.decode_step or decode_layers."""
    with fused_calls() as seen:
        with torch.no_grad():
            model.setup_caches(ids.shape[0], ids.shape[1] + 1)
            model(ids, torch.arange(ids.shape[1]))
            model(ids[:, -1:], torch.tensor([ids.shape[1]]))
    return bool(seen)


@pytest.mark.parametrize("mode", [None, "int8", "int4"])
@pytest.mark.parametrize("batch", [1, 3])
def test_decode_layers_equals_module_path(mode, batch):
    model = tiny_model(seed=3, n_local_heads=2)
    if mode is not None:
        quantize_model(model, mode, 32)
    ids = torch.randint(0, 101, (batch, 5))
    assert model.decode_path == "fused" and _runs_fused(model, ids)
    fused, k_fused = _decode(model, ids, 6, True)
    composite, k_comp = _decode(model, ids, 6, False)
    # quantized: the GEMV rounds its activations to 8 bits, so a last-bit difference
    # between ATen's silu and ours can move a product by one rounding step (0.4% of the
    # block's largest activation), and such steps add up over layers
    scale = composite.abs().max().item()
    tol = 1e-5 if mode is None else 1e-3
    torch.testing.assert_close(fused, composite, rtol=0, atol=tol * scale)
    torch.testing.assert_close(k_fused, k_comp, rtol=0, atol=tol * k_comp.abs().max().item())


@pytest.mark.parametrize("w3_kind", ["int8", "int4 g64", "fp32"])
def test_gate_and_up_of_different_kinds(w3_kind):
    """gate and up share one pass when both are int8 or int4 with one group size; other
    pairs run one after the other and must give the same result."""
    model = tiny_model(seed=6, n_local_heads=2)
    dense_w3 = {i: layer.feed_forward.w3 for i, layer in enumerate(model.layers)}
    quantize_model(model, "int4", 32)
    for i, layer in enumerate(model.layers):
        if w3_kind == "int8":
            layer.feed_forward.w3 = WeightOnlyInt8Linear.from_float(dense_w3[i], 32)
        elif w3_kind == "int4 g64":
            layer.feed_forward.w3 = WeightOnlyInt4Linear.from_float(dense_w3[i], 64)
        else:
            layer.feed_forward.w3 = dense_w3[i]
    ids = torch.randint(0, 101, (2, 5))
    fastdecode.fuse(model)
    assert _runs_fused(model, ids)
    fused, _ = _decode(model, ids, 4, True)
    composite, _ = _decode(model, ids, 4, False)
    torch.testing.assert_close(fused, composite, rtol=0, atol=1e-3 * composite.abs().max().item())


@pytest.mark.parametrize("quantized,tol", [(False, 1e-5), (True, 5e-2)])
def test_decode_layers_on_the_default_model(quantized, tol):
    """fp32: equal to rounding; the GGUF's int4 blocks: within the accumulated 8-bit
    activation rounding, whose steps a last-bit difference upstream can flip (measured 2.5%
    of the largest logit), same greedy tokens."""
    model, tok = fastdecode.load("default", quantized=quantized)
    assert model.decode_path == "fused"  # the loader decides
    ids = torch.tensor([tok.encode("The capital of France is")])
    fused, _ = _decode(model, ids, 6, True)
    composite, _ = _decode(model, ids, 6, False)
    scale = composite.abs().max().item()
    torch.testing.assert_close(fused, composite, rtol=0, atol=tol * scale)
    assert torch.equal(fused.argmax(-1), composite.argmax(-1))


def test_a_linear_with_bias_keeps_the_module_path():
    model = tiny_model(seed=4)
    layer = model.layers[0]
    wo = layer.attention.wo
    biased = fastdecode.model.Linear(wo.in_features, wo.out_features, bias=True)
    with torch.no_grad():
        biased.weight.copy_(wo.weight)
        biased.bias.normal_()
    with pytest.warns(UserWarning, match="Attention.wo was replaced on a fused model"):
        layer.attention.wo = biased
    assert model.decode_path == "modules"
    with pytest.warns(UserWarning, match="layer 0 wo: Linear has a bias"):
        assert fastdecode.fuse(model) == "modules"
    assert "has a bias" in repr(model)
    ids = torch.randint(0, 101, (1, 4))
    assert not _runs_fused(model, ids)


def test_fusion_takes_exact_module_types_only():
    from fastdecode.model import LinearKind

    class ScaledLinear(fastdecode.model.Linear):  # a subclass may compute something else
        def forward(self, x):
            return 2.0 * super().forward(x)

    model = tiny_model(seed=6)
    w2 = model.layers[1].feed_forward.w2
    scaled = ScaledLinear(w2.in_features, w2.out_features, bias=False)
    with torch.no_grad():
        scaled.weight.copy_(w2.weight)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model.layers[1].feed_forward.w2 = scaled
        assert fastdecode.fuse(model) == "modules"
    assert "ScaledLinear does not define decode_layer_args" in repr(model)
    ids = torch.randint(0, 101, (1, 4))
    assert not _runs_fused(model, ids)  # its 2x applies
    # the kinds are the op's: the enum's values are the ones its error message names
    assert [int(k) for k in LinearKind] == [0, 1, 2]
    args = list(_layer_args())
    args[4] = [int(LinearKind.INT4) + 1] + list(args[4][1:])
    with pytest.raises(ValueError, match=r"must be 0 \(fp32\), 1 \(int8\) or 2 \(int4\)"):
        ops.decode_layers(*args)


def _plan_args(model, x, pos):
    """ops.decode_layers' arguments for `model`'s fused step."""
    step = fusion.plan(model)
    return (x, [t.detach() for t in step.norms], step.eps, [t.detach() for t in step.weights],
            step.kinds, step.groupsizes, [a.kv_cache.k_cache for a in step.attentions],
            [a.kv_cache.v_cache for a in step.attentions], pos, model.rope_table,
            step.n_head, step.n_kv_head)


def _layer_args(mode=None):
    """decode_layers' arguments for a one-layer model."""
    model = tiny_model(seed=5, n_local_heads=2, n_layer=1)
    if mode is not None:
        quantize_model(model, mode, 32)
    model.setup_caches(2, 8)
    return _plan_args(model, torch.randn(2, 1, model.config.dim), torch.tensor([3]))


@pytest.mark.parametrize("mode", [None, "int4"])
def test_opcheck_one_layer(mode):
    torch.library.opcheck(torch.ops.fastdecode.decode_layers.default, _layer_args(mode))


def test_compile_fullgraph_around_decode_layers():
    args = _layer_args("int8")

    def f(x):
        return torch.tanh(ops.decode_layers(x, *args[1:])) * 2

    x = args[0]
    want = f(x)
    got = torch.compile(f, fullgraph=True, backend="aot_eager")(x)
    torch.testing.assert_close(got, want)


@pytest.mark.parametrize("change,match", [
    (lambda a: a[:4] + (a[4][:4],) + a[5:], "5L kinds"),
    (lambda a: a[:4] + ([0, 0, 3, 0, 0],) + a[5:], r"kinds\[2\] \(w1\) must be 0"),
    (lambda a: a[:3] + (a[3][:-1],) + a[4:], "too few"),
    (lambda a: a[:3] + (a[3] + a[3][:1],) + a[4:], "take 5"),
    (lambda a: a[:4] + ([0, 0, 1, 0, 0],) + a[5:], "too few|take|int8"),
    (lambda a: (a[0].double(),) + a[1:], "x must be float32"),
    (lambda a: (a[0][:, :, :-1],) + a[1:], r"weight must have shape \[E\] = \[31\], got \[32\]"),
    (lambda a: a[:3] + ([a[3][0], a[3][1][:, :-1], *a[3][2:]],) + a[4:],
     r"\(wo\): takes 31 in-features, the layer gives it 32"),
])
def test_bad_input_is_a_clear_error(change, match):
    # a wrong dtype is a TypeError; a wrong shape, count or value a ValueError
    with pytest.raises(TypeError if match == "x must be float32" else ValueError, match=match):
        ops.decode_layers(*change(tuple(_layer_args())))


@pytest.mark.parametrize("which,match", [
    (1, r"\(wo\): (takes|scales must be)"), (4, r"\(w2\): (takes|scales must be)"),
    (3, r"\(w3\): (takes|scales must be)|w1 and w3"),
])
def test_a_mismatched_later_linear_fails_before_the_cache_is_written(which, match):
    args = _layer_args("int8")
    weights = list(args[3])
    q, scales = weights[2 * which], weights[2 * which + 1]
    weights[2 * which] = q[:, :-32]  # 32 in-features short
    weights[2 * which + 1] = scales[:, :-1] if scales.dim() == 2 else scales  # groups of 32
    k_before, v_before = args[6][0].clone(), args[7][0].clone()
    with pytest.raises(ValueError, match=match):
        ops.decode_layers(*args[:3], weights, *args[4:])
    assert torch.equal(args[6][0], k_before) and torch.equal(args[7][0], v_before)


@pytest.mark.parametrize("change,exc,match", [
    (lambda a: a[:1] + ([a[1][0], a[1][1][:-1]],) + a[2:], ValueError,
     r"weight must have shape \[E\]"),
    (lambda a: a[:1] + ([a[1][0], a[1][1].double()],) + a[2:], TypeError,
     "share one floating dtype"),
    (lambda a: a[:3] + ([*a[3][:5], a[3][5][:-1], *a[3][6:]],) + a[4:], ValueError,
     r"\(w1\): scales must be \[N\]"),
    (lambda a: a[:3] + ([*a[3][:5], a[3][5].double(), *a[3][6:]],) + a[4:], TypeError,
     r"\(w1\): scales must be float32"),
])
def test_bad_ffn_norm_or_scales_fail_before_the_cache_is_written(change, exc, match):
    args = tuple(_layer_args("int8"))
    k_before, v_before = args[6][0].clone(), args[7][0].clone()
    with pytest.raises(exc, match=match):
        ops.decode_layers(*change(args))
    assert torch.equal(args[6][0], k_before) and torch.equal(args[7][0], v_before)


# -- decode_layers: every layer in one call --------------------------------------------------

def _stack_args(mode=None, layers=3):
    model = tiny_model(seed=7, n_layer=layers)
    if mode is not None:
        quantize_model(model, mode, 32)
    model.setup_caches(2, 8)
    for layer in model.layers:  # caches with history, so attention reads more than one row
        layer.attention.kv_cache.k_cache.normal_()
        layer.attention.kv_cache.v_cache.normal_()
    return model, _plan_args(model, torch.randn(2, 1, model.config.dim), torch.tensor([3]))


@pytest.mark.parametrize("mode", [None, "int8", "int4"])
def test_all_layers_in_one_call_equal_one_layer_at_a_time(mode):
    model, args = _stack_args(mode)
    x, norms, eps, weights, kinds, groupsizes, k_caches, v_caches = args[:8]
    k_copies, v_copies = [k.clone() for k in k_caches], [v.clone() for v in v_caches]
    got = ops.decode_layers(*args)
    h, next_weight = x, 0
    for i, layer in enumerate(model.layers):
        n = sum(1 if k == 0 else 2 for k in kinds[5 * i:5 * i + 5])
        h = ops.decode_layers(h, norms[2 * i:2 * i + 2], eps,
                              weights[next_weight:next_weight + n], kinds[5 * i:5 * i + 5],
                              groupsizes[5 * i:5 * i + 5], [k_copies[i]], [v_copies[i]],
                              *args[8:])
        next_weight += n
    assert torch.equal(got, h)
    for i in range(len(model.layers)):
        assert torch.equal(k_caches[i], k_copies[i]) and torch.equal(v_caches[i], v_copies[i])


@pytest.mark.parametrize("mode", [None, "int4"])
def test_opcheck_decode_layers(mode):
    torch.library.opcheck(torch.ops.fastdecode.decode_layers.default, _stack_args(mode)[1])


def test_decode_layers_checks_every_layer_before_the_first_write():
    model, args = _stack_args("int8")
    weights = list(args[3])
    weights[-4] = weights[-4][:, :-32]  # the last layer's w3 (int8 q), 32 in-features short
    weights[-3] = weights[-3][:, :-1]
    before = [c.clone() for c in args[6]]
    with pytest.raises(ValueError, match=r"\(w3\)"):
        ops.decode_layers(*args[:3], weights, *args[4:])
    assert all(torch.equal(a, b) for a, b in zip(args[6], before))
    bad_cache = list(args[6])
    bad_cache[2] = bad_cache[2][:, :, :4]
    with pytest.raises(ValueError, match="the caches of layer 2 differ from layer 0's"):
        ops.decode_layers(*args[:6], bad_cache, *args[7:])
    with pytest.raises(ValueError, match="for L layers pass L k_caches"):
        ops.decode_layers(args[0], args[1][:-1], *args[2:])


def test_an_edit_un_fuses_visibly_and_fuse_decides_again():
    model = tiny_model(seed=8, n_layer=2)
    ids = torch.randint(0, 101, (1, 4))
    first, _ = _decode(model, ids, 2, True)
    ffn = model.layers[1].feed_forward
    with pytest.warns(UserWarning, match=r"Linear.weight was replaced on a fused model"):
        with torch.no_grad():  # a parameter replaced (as load_state_dict(assign=True) does)
            ffn.w2.weight = torch.nn.Parameter(ffn.w2.weight * 2)
    assert model.decode_path == "modules" and not _runs_fused(model, ids)
    with torch.no_grad():
        ffn.w2.weight = torch.nn.Parameter(ffn.w2.weight / 2)  # no warning: not fused
    assert fastdecode.fuse(model) == "fused"
    again, _ = _decode(model, ids, 2, True)
    torch.testing.assert_close(again, first, rtol=1e-5, atol=1e-6)
    with pytest.warns(UserWarning, match=r"LayerList.1 was replaced"):
        model.layers[1] = model.layers[0]
    assert model.decode_path == "modules"


def test_copies_keep_the_decision_and_conversions_decide_again():
    model = tiny_model(seed=8, n_layer=2)
    copied = copy.deepcopy(model)
    assert copied.decode_path == "fused" and fusion.plan(copied).weights[0] is not \
        fusion.plan(model).weights[0]
    with pytest.warns(UserWarning, match="float64"):
        model.double()
    assert model.decode_path == "modules"
    model.float()
    assert model.decode_path == "modules"  # un-fused models stay so until fuse is called
    assert fastdecode.fuse(model) == "fused"
    draft = fastdecode.early_exit_draft(model, 1)
    assert draft.decode_path == "fused"
    fastdecode.unfuse(model)
    with pytest.warns(UserWarning, match="Attention.wqkv was replaced"):  # the draft's layer
        assert quantize_model(model, "int8").decode_path == "modules"
    assert draft.decode_path == "modules"


def test_a_replaced_cache_is_read_at_the_next_step():
    """The fused step re-reads a layer's caches when its cache module changed."""
    model = tiny_model(seed=8, n_layer=3)
    ids = torch.randint(0, 101, (1, 4))
    with torch.no_grad():
        model.setup_caches(1, 8)
        model(ids, torch.arange(4))
        att = model.layers[1].attention
        fresh = fastdecode.KVCache(1, 8, att.n_local_heads, att.head_dim)
        fresh.k_cache.copy_(att.kv_cache.k_cache)
        fresh.v_cache.copy_(att.kv_cache.v_cache)
        att.kv_cache = fresh  # not an edit that un-fuses: caches are the step's state
        assert model.decode_path == "fused"
        model(ids[:, -1:], torch.tensor([4]))
        assert fresh.k_cache[0, :, 4].abs().sum() > 0  # the step wrote the new cache
