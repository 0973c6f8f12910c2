"""The per-signature caches (validation, dispatch, launch plans), the backends' declared limits, the
fixed-argument launch and its fallback, launches per op call, and the captured step."""
import collections
import functools

import pytest
import torch

import fastvid
from fastvid.dispatch import BackendUnsupportedError, dispatchers
from fastvid.ops import _launch, _library
from fastvid.ops import add_layer_norm as aln_op
from fastvid.ops import alpha_blend as ab_op
from fastvid.ops import frame_attention as fa_op
from fastvid.ops import geglu as gg_op
from fastvid.ops import group_norm_silu as gn_op
from fastvid.ops import temporal_attention as ta_op
from fastvid.ops import temporal_conv as tc_op
from fastvid.registry import OPS
from fastvid.testing import counting_launches, poisoned_outputs, stubbed_launches
from fastvid.validation import FastvidInputError

from conftest import DEVICE

TA = dispatchers()["temporal_attention"]


def _qkv(shape=(1, 3, 5, 2, 16), dtype=torch.float32, requires_grad=False):
    return [torch.randn(shape, dtype=dtype, device=DEVICE, requires_grad=requires_grad) for _ in range(3)]


def _ta(q, k, v, **kwargs):
    return fastvid.temporal_attention(q, k, v, backend="triton", **kwargs)


def test_a_repeated_call_is_a_lookup_and_a_changed_signature_a_new_plan():
    TA.calls.clear()
    q, k, v = _qkv()
    _ta(q, k, v)
    assert len(TA.calls) == 1
    _ta(*_qkv())  # fresh tensors, same signature
    assert len(TA.calls) == 1
    qt = torch.randn(1, 5, 3, 2, 16, device=DEVICE).transpose(1, 2)  # same shape, other strides
    variants = [
        (qt, k, v, {}),
        (q.half(), k.half(), v.half(), {}),
        (q, k, v, {"causal": True}),
        (q, k, v, {"scale": 0.5}),
        (torch.randn(2 * q.numel() + 1, device=DEVICE)[1:1 + q.numel()].view(q.shape), k, v, {}),  # 4-byte offset
    ]
    for a, b, c, kwargs in variants:
        before = len(TA.calls)
        out = _ta(a, b, c, **kwargs)
        assert len(TA.calls) == before + 1
        ref = fastvid.temporal_attention(a, b, c, backend="reference", **kwargs)
        torch.testing.assert_close(out.float(), ref.float(), atol=2e-3, rtol=2e-3)
    before = len(TA.calls)
    with torch.no_grad():  # grad mode is part of the signature
        _ta(q, k, v)
    assert len(TA.calls) == before + 1


def test_alignment_changes_the_launch_plan():
    """frame attention's 128-bit loads depend on the data pointer mod 16: another alignment, another plan."""
    q, k, v = _qkv((1, 2, 4, 1, 16))
    buf = torch.randn(q.numel() + 1, device=DEVICE)
    shifted = buf[1:].view(q.shape)
    aligned = fa_op._FwdPlan(q, k, v, fa_op.frame_table("first", 2, q.device), 0.25)
    unaligned = fa_op._FwdPlan(shifted, k, v, fa_op.frame_table("first", 2, q.device), 0.25)
    assert aligned.launch.kwargs["ALIGN"] == 4 and unaligned.launch.kwargs["ALIGN"] == 1
    assert _launch.call_key(q, k) != _launch.call_key(shifted, k)


def test_requires_grad_and_tf32_are_part_of_the_key():
    q, k, v = _qkv()
    plain = _launch.call_key(q, k, v)
    assert _launch.call_key(q.requires_grad_(), k, v) != plain
    previous = torch.backends.cuda.matmul.allow_tf32
    try:
        torch.backends.cuda.matmul.allow_tf32 = not previous
        assert _launch.call_key(q.detach(), k, v) != plain
    finally:
        torch.backends.cuda.matmul.allow_tf32 = previous


@pytest.mark.parametrize("bad", ["shape", "causal", "device_type", "scale"])
def test_bad_input_raises_the_same_error_on_every_call(bad):
    q, k, v = _qkv()
    _ta(q, k, v)  # a good call of the neighbouring signature is cached
    args, kwargs = [q, k, v], {}
    if bad == "shape":
        args[1] = torch.randn(1, 3, 5, 2, 8, device=DEVICE)
    elif bad == "causal":
        kwargs["causal"] = 1  # an int equal to True: the key tells them apart by type
    elif bad == "device_type":
        args[2] = v.double().to(torch.int32)
    else:
        kwargs["scale"] = -1.0
    messages = []
    for _ in range(3):
        with pytest.raises(FastvidInputError) as info:
            _ta(*args, **kwargs)
        messages.append(str(info.value))
    assert len(set(messages)) == 1


def test_table_values_are_checked_on_every_call():
    q, k, v = _qkv((1, 3, 4, 1, 16))
    good = torch.tensor([[0, -1], [0, 1], [1, 2]])
    fastvid.frame_attention(q, k, v, frames=good, backend="torch")
    bad = torch.tensor([[0, -1], [0, 1], [1, 7]])  # same signature, values out of range
    for _ in range(2):
        with pytest.raises(FastvidInputError, match="frames"):
            fastvid.frame_attention(q, k, v, frames=bad, backend="torch")


def test_plan_cache_is_bounded():
    cache = _launch.PlanCache(size=3)
    for i in range(5):
        cache.lookup(("key", i), lambda i: i, i)
    assert len(cache) == 3 and set(cache.plans) == {("key", 2), ("key", 3), ("key", 4)}
    with pytest.raises(ValueError):
        cache.lookup(("bad",), lambda: (_ for _ in ()).throw(ValueError("refused")))
    assert ("bad",) not in cache.plans


def test_wide_heads_run_on_torch_and_reference_and_triton_says_why_not():
    for op, call in (("temporal_attention", fastvid.temporal_attention), ("frame_attention", fastvid.frame_attention)):
        q, k, v = _qkv((1, 2, 3, 1, 260))
        out = call(q, k, v, backend="torch")
        torch.testing.assert_close(out, call(q, k, v, backend="reference"), atol=1e-5, rtol=1e-5)
        with pytest.raises(BackendUnsupportedError, match="head_dim = 260 > 256"):
            call(q, k, v, backend="triton")
        reasons = dispatchers()[op].explain(q, k, v)
        assert "head_dim = 260 > 256" in reasons["triton"] and reasons["torch"] is None


def test_each_limit_is_declared_once_per_backend():
    assert ta_op.TRITON_LIMITS.maxima["frames"][0] == 128
    q, k, v = _qkv((1, 130, 1, 1, 16))
    assert "frames = 130 > 128" in TA.explain(q, k, v)["triton"]
    x = torch.randn(1, 1030, 1, 1, 1, device=DEVICE)
    assert "channels per group = 1030 > 512" in dispatchers()["group_norm_silu"].explain(x, 1)["triton"]
    assert "dtype float64" in TA.explain(*(t.double() for t in _qkv()))["triton"]


@pytest.mark.skipif(DEVICE == "cuda", reason="the interpreter's fallback")
def test_the_interpreter_takes_the_kernel_grid_fallback():
    q, k, v = _qkv()
    plan = ta_op._FwdPlan(q, k, v, None, False, 0.25)
    out = [ta_op._fwd_run(plan, q, k, v, None, False, 0.25)[0] for _ in range(2)]
    assert plan.launch.tried and plan.launch.fixed is None
    torch.testing.assert_close(out[0], out[1])


def _fixed_arguments(launch, tensors, monkeypatch, best_config=None):
    """The argument list the fixed launch hands a compiled kernel's launcher, with the CUDA queries faked
    (the kernel object rebuilt as a JITFunction: under the interpreter it is an InterpretedFunction)."""
    from types import SimpleNamespace

    from triton.runtime.jit import JITFunction

    kernel = launch.kernel.fn if best_config is not None else launch.kernel
    jit = JITFunction(kernel.fn)
    target = jit if best_config is None else SimpleNamespace(fn=jit, best_config=best_config)
    fixed = _launch.Launch(target, launch.grid, launch.scalars, **launch.kwargs)
    calls = []
    compiled = SimpleNamespace(run=lambda *args: calls.append(args), function="function", packed_metadata="meta")
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    monkeypatch.setattr(torch._C, "_cuda_getDevice", lambda: 0, raising=False)  # a CUDA build without a GPU
    monkeypatch.setattr(torch._C, "_cuda_getCurrentRawStream", lambda device: 7, raising=False)
    launcher = _launch._fixed_launcher(fixed, compiled, len(tensors))
    assert launcher is not None and launcher(tensors)
    (args,) = calls
    assert args[3:7] == (7, "function", "meta", None)
    return jit, args[:3], args[9:]


def test_fixed_argument_list_is_every_parameter_in_signature_order(monkeypatch):
    """What JITFunction.run passes the launcher (Triton 3.6 and 3.9): every parameter in signature order,
    constexprs included, after grid, stream, function, metadata, launch metadata and the two hooks."""
    q, k, v = _qkv((1, 3, 5, 2, 16))
    bias = torch.randn(2, 3, 3, device=DEVICE)
    plan = ta_op._FwdPlan(q, k, v, bias, True, 0.25)
    tensors = (q, k, v, bias, q, q)
    jit, grid, args = _fixed_arguments(plan.launch, tensors, monkeypatch)
    assert len(args) == len(jit.arg_names) and grid == (plan.launch.grid[0], 1, 1)
    named = dict(zip(jit.arg_names, args))
    assert args[:6] == tensors and named["CAUSAL"] is True and named["HAS_BIAS"] is True
    assert named["BLOCK_N"] == plan.launch.kwargs["BLOCK_N"] and named["num_frames"] == 3
    assert "num_warps" not in named  # an option, not a parameter

    import triton

    table = fa_op.frame_table("first", 3, q.device)
    fa_plan = fa_op._FwdPlan(q, k, v, table, 0.25)
    config = triton.Config(dict(BLOCK_N=32, BLOCK_M=16), num_warps=4, num_stages=1)
    jit, grid, args = _fixed_arguments(fa_plan.launch, (q, k, v, table, q, q), monkeypatch, best_config=config)
    named = dict(zip(jit.arg_names, args))
    assert len(args) == len(jit.arg_names) and named["BLOCK_N"] == 32 and named["BLOCK_M"] == 16
    assert grid == (_launch.cdiv(5, 32) * 1 * 3 * 2, 1, 1)  # the tuned BLOCK_N sizes the grid


@pytest.mark.gpu
@pytest.mark.skipif(DEVICE != "cuda", reason="the fixed-argument launch runs compiled CUDA kernels")
def test_fixed_argument_launch_is_used_and_gives_identical_results():
    q, k, v = _qkv((2, 8, 33, 2, 64), dtype=torch.float16)
    bias = torch.randn(2, 8, 8, device=DEVICE, dtype=torch.float16)
    plan = ta_op._FwdPlan(q, k, v, bias, True, 0.125)
    first = ta_op._fwd_run(plan, q, k, v, bias, True, 0.125)  # through kernel[grid]
    assert plan.launch.fixed is not None
    second = ta_op._fwd_run(plan, q, k, v, bias, True, 0.125)  # through the fixed arguments
    calls = []
    plan.launch.kernel.run = lambda *a, **kw: calls.append(1)
    try:
        ta_op._fwd_run(plan, q, k, v, bias, True, 0.125)
    finally:
        del plan.launch.kernel.run
    assert not calls  # kernel.run (kernel[grid]) was not taken
    for a, b in zip(first, second):
        assert torch.equal(a, b)
    tq, tk, tv = (t[:, :, :32].contiguous() for t in (q, k, v))  # autotuned kernels: after tuning
    fa_plan = fa_op._FwdPlan(tq, tk, tv, fa_op.frame_table("first", 8, q.device), 0.125)
    runs = [fa_op._fwd_run(fa_plan, tq, tk, tv, fa_op.frame_table("first", 8, q.device), 0.125) for _ in range(2)]
    assert fa_plan.launch.fixed is not None
    assert all(torch.equal(a, b) for a, b in zip(*runs))


def _counts(fn):
    with counting_launches(launch=False):
        fn()  # caches filled (plans, frame counts) before counting
    with counting_launches(launch=False) as counter:
        fn()
    return sum(counter.triton.values()), dict(counter.torch)


def test_launches_per_call():
    """Device kernels per call of each op's implementation (Triton launches, aten ops that run a kernel)."""
    q, k, v = _qkv((1, 3, 4, 2, 16))
    bias = torch.randn(2, 3, 3, device=DEVICE)
    scale = 0.25
    with counting_launches(launch=False):  # only the outputs' shapes matter here
        out, lse = ta_op._fwd_op(q, k, v, bias, False, scale)
        fout, flse = fa_op._fwd_op(q, k, v, fa_op.frame_table("first", 3, q.device), scale)
    assert _counts(lambda: ta_op._fwd_op.planned(q, k, v, bias, False, scale)) == (1, {})
    # backward: the kernel and the bias gradient's fixed-order reduce, which writes the bias dtype
    assert _counts(lambda: ta_op._bwd_op.planned(out, q, k, v, bias, out, lse, False, scale, True)) == (2, {})
    lq, lk, lv = _qkv((1, 20, 4, 2, 16))  # past 16 frames: the key-block kernel, the same two launches
    lbias = torch.randn(2, 20, 20, device=DEVICE)
    with counting_launches(launch=False):
        lout, llse = ta_op._fwd_op(lq, lk, lv, lbias, False, scale)
    assert _counts(lambda: ta_op._bwd_op.planned(lout, lq, lk, lv, lbias, lout, llse, False, scale, True)) == (2, {})
    table = fa_op.frame_table("first", 3, q.device)
    assert _counts(lambda: fa_op._fwd_op.planned(q, k, v, table, scale)) == (1, {})
    assert _counts(lambda: fa_op._bwd_op.planned(fout, q, k, v, table, fout, flse, scale)) == (2, {})
    x = torch.randn(1, 8, 3, 2, 3, device=DEVICE)
    w, gw, gb = torch.randn(8, 8, 3, device=DEVICE), torch.randn(8, device=DEVICE), torch.randn(8, device=DEVICE)
    with counting_launches(launch=False):
        y, stats = gn_op._fwd_op(x, gw, gb, 2, 1e-5, False)
    # GroupNorm over all frames: statistics partials, then normalise (+ SiLU) with the group combine folded in;
    # per frame, whole groups per program (enough programs off the GPU): one launch; with add or without SiLU alike
    for args, launches in (((x, gw, gb, 2, 1e-5, False), 2), ((x, gw, gb, 2, 1e-5, True, gw[None, :, None], False), 1)):
        assert _counts(functools.partial(gn_op._fwd_op.planned, *args)) == (launches, {})
    assert _counts(lambda: gn_op._bwd_op.planned(y, x, gw, gb, stats, 2, False)) == (3, {})
    # the weight to tap-major (k, C_out, C_in): one small copy; in the backward its flip: one small gather
    assert _counts(lambda: tc_op._fwd_op.planned(x, w, None, None, 1)) == (1, {"aten::permute_copy": 1})
    assert _counts(lambda: tc_op._bwd_op.planned(x, x, w, 1, True, True, True)) == (3, {"aten::index_select": 1})
    # GEGLU reads both halves in place: one launch each way, also for a slice of a wider buffer
    proj = torch.randn(2, 3, 24, device=DEVICE)[..., 4:20]
    dy = torch.randn(2, 3, 8, device=DEVICE)
    assert _counts(lambda: gg_op._fwd_op.planned(proj, "none")) == (1, {})
    assert _counts(lambda: gg_op._bwd_op.planned(dy, proj, "tanh")) == (1, {})
    # add + LayerNorm: one launch; backward: dx and per-program partials, then their fixed-order sum (no torch op)
    t, r, w1, b1 = (torch.randn(*shape, device=DEVICE) for shape in ((2, 3, 6), (2, 3, 6), (6,), (6,)))
    with counting_launches(launch=False):
        s, _, stats = aln_op._fwd_op.planned(t, r, w1, b1, 1e-5, None)
    assert _counts(lambda: aln_op._fwd_op.planned(t, r, w1, b1, 1e-5, None)) == (1, {})
    # without the residual and with a per-frame table added after the norm (AnimateDiff's positions): one launch
    table = torch.randn(2, 6, device=DEVICE)
    assert _counts(lambda: aln_op._fwd_op.planned(t, None, w1, b1, 1e-5, table)) == (1, {})
    assert _counts(lambda: aln_op._bwd_op.planned(t, t, s, w1, stats, True)) == (2, {})
    # alpha blend: one launch each way; alpha's gradient one sum of the per-tile partials (fp32 alpha: no cast)
    xs, xt, alpha = torch.randn(2, 4, 3, 5, 2), torch.randn(2, 4, 3, 5, 2), torch.rand(2, 1, 3, 1, 1)
    xs, xt, alpha = xs.to(DEVICE), xt.to(DEVICE), alpha.to(DEVICE)
    assert _counts(lambda: ab_op._fwd_op.planned(xs, xt, alpha, None, "alpha", False)) == (1, {})
    assert _counts(lambda: ab_op._bwd_op.planned(xs, xs, xt, alpha, None, "alpha", False)) == (1, {"aten::sum": 1})
    # alpha made in the kernel from diffusers' mix factor and the image-only indicator: no torch op before the
    # launch; the mix factor's gradient one sum
    mixed = (torch.randn(1, device=DEVICE), torch.tensor([[0.0, 1.0, 0.0], [1.0, 0.0, 0.0]], device=DEVICE),
             "learned_with_images", True)
    assert _counts(lambda: ab_op._fwd_op.planned(xs, xt, *mixed)) == (1, {})
    assert _counts(lambda: ab_op._bwd_op.planned(xs, xs, xt, *mixed)) == (1, {"aten::sum": 1})


def test_geglu_validates_and_plans_once_per_signature():
    calls, plans = dispatchers()["geglu"].calls, gg_op._fwd_op.plans
    calls.clear()
    plans.clear()
    proj = torch.randn(2, 3, 16, device=DEVICE)
    for p in (proj, torch.randn(2, 3, 16, device=DEVICE)):  # fresh tensors, same signature
        fastvid.geglu(p, backend="triton")  # the call cache binds the plan
        gg_op._fwd_op(p, "none")  # the op's own plan cache (the custom op's implementation)
    assert (len(calls), len(plans)) == (1, 1)
    for p, approximate in ((proj[:, :2], "none"), (proj.transpose(0, 1), "none"), (proj, "tanh")):
        out = fastvid.geglu(p, approximate=approximate, backend="triton")
        torch.testing.assert_close(out, fastvid.reference.geglu(p, approximate=approximate))
    assert len(calls) == 4


def _counting(monkeypatch, obj, name, counts):
    """obj.name replaced (on the instance) by a wrapper counting its calls in counts[name]."""
    original = getattr(obj, name)

    def counted(*args, **kwargs):
        counts[name] += 1
        return original(*args, **kwargs)
    monkeypatch.setattr(obj, name, counted)


@pytest.mark.parametrize("op", list(OPS))
def test_a_repeated_call_validates_dispatches_and_plans_once(op, monkeypatch):
    """Every op: the first call of a signature validates (``arguments``), chooses the backend (``select``)
    and plans; a repeated call with fresh tensors of that signature does none of it, forward (no grad) or
    forward and backward (the backward's entry cached alike). Launches stubbed: only the host path runs."""
    spec = OPS[op]
    dispatcher, module = spec.dispatcher, spec.module
    counts = collections.Counter()
    for obj, name in ((dispatcher, "arguments"), (dispatcher, "select"), (module._fwd_op, "prepare"),
                      (module._bwd_op, "plan")):
        _counting(monkeypatch, obj, name, counts)
    dispatcher.calls.clear()
    for cache in (module._fwd_op.plans, module._fwd_op.runners, module._bwd_op.plans, module._bwd_op.runners):
        cache.clear()

    def call(grad):
        inputs = spec.examples.make(1, 4, device=DEVICE, dtype=torch.float32)
        with torch.set_grad_enabled(grad):
            leaves = {k: t.requires_grad_(grad) for k, t in inputs.items()}
            outs = spec.function(**leaves, **spec.examples.kwargs, backend="triton")
            if grad:
                outs = [outs] if isinstance(outs, torch.Tensor) else list(outs)
                torch.autograd.backward(outs, [torch.ones_like(o) for o in outs])

    with stubbed_launches():
        for grad in (False, True):
            call(grad)
            first = collections.Counter(counts)
            assert first["arguments"] >= 1 and first["select"] >= 1 and first["prepare"] >= 1
            assert first["plan"] >= grad  # the backward's plan
            call(grad)
            assert counts == first, f"{op} (grad={grad}): a repeated call re-ran {counts - first}"
            counts.clear()


def test_bound_calls_merge_into_one_generated_function():
    def fn(*args):
        return args

    inner = _library.bound(fn, 3, (2, _library.Const("c"), 0), prefix=("plan",), output=slice(1, None))
    outer = _library.bound(inner, 2, (1, _library.Const("k"), 0))
    assert inner("a", "b", "x") == ("x", "c", "a")  # fn("plan", "x", "c", "a")[1:]
    assert outer("p", "q") == ("p", "c", "q")  # inner("q", "k", "p")
    assert outer.bound_spec[0] is fn  # one frame: the outer binding calls fn itself


def test_planned_outputs_are_allocated_as_planned_and_poisoned_under_tests():
    shape, strides = (2, 3, 4), (1, 8, 2)  # a permuted dense layout
    for poison in (True, False):
        with poisoned_outputs():  # a plan made while tests poison outputs (the signature holds the state)
            alloc = _launch.allocator(shape, strides, torch.float16, torch.device(DEVICE), poison=poison)
        t = alloc()
        assert (tuple(t.shape), t.stride(), t.dtype, t.device.type) == (shape, strides, torch.float16, DEVICE)
        if poison:
            assert torch.isnan(t).all()
    with poisoned_outputs():
        t = _launch.empty_strided(shape, strides, dtype=torch.float32, device=torch.device(DEVICE))
    assert t.stride() == strides and torch.isnan(t).all()


@pytest.mark.skipif(DEVICE == "cuda", reason="the CPU refusal")
def test_capture_step_refuses_a_cpu_denoiser():
    module = torch.nn.Linear(4, 4)
    with pytest.raises(FastvidInputError, match="CUDA"):
        fastvid.capture_step(module)
    assert "forward" not in module.__dict__


def test_capture_step_names_what_it_needs():
    with pytest.raises(FastvidInputError, match="unet"):
        fastvid.capture_step(object())


class _TemporalBlock(torch.nn.Module):
    """silu(GroupNorm(x)) then a temporal conv with a residual: fastvid's ops inside a captured step."""

    def __init__(self, channels=8):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.randn(channels, channels, 3) / 5)
        self.bias = torch.nn.Parameter(torch.randn(channels))

    def forward(self, x, scale):
        h = fastvid.group_norm_silu(x, 2, backend="triton")
        return {"sample": fastvid.temporal_conv(h, self.weight, self.bias, residual=x, backend="triton") * scale}


@pytest.mark.gpu
@pytest.mark.skipif(DEVICE != "cuda", reason="CUDA graphs")
def test_captured_step_replays_and_recaptures_per_shape():
    model = _TemporalBlock().to(DEVICE)
    scale = torch.tensor(0.5, device=DEVICE)
    step = fastvid.capture_step(model)
    try:
        for frames in (4, 4, 4, 6, 4):
            x = torch.randn(1, 8, frames, 8, 8, device=DEVICE)
            with torch.no_grad():
                expected = step._forward(x, scale)["sample"]
            out = model(x, scale)["sample"]
            torch.testing.assert_close(out, expected)
        assert step.captures == 2  # one graph per frame count, the first replayed four times
        kept = model(x, scale)["sample"]
        model(torch.randn_like(x), scale)
        torch.testing.assert_close(kept, expected)  # copied out: the next replay leaves it alone
    finally:
        step.remove()
    assert "forward" not in model.__dict__


class _TableAttention(torch.nn.Module):
    """Frame attention over a user's index table: its values are read by eager calls, not under capture."""

    def __init__(self, backend: str):
        super().__init__()
        self.backend = backend

    def forward(self, q, k, v, table):
        return fastvid.frame_attention(q, k, v, frames=table, backend=self.backend)


@pytest.mark.gpu
@pytest.mark.skipif(DEVICE != "cuda", reason="CUDA graphs")
@pytest.mark.parametrize("backend", ["triton", "torch"])
def test_a_frame_table_is_not_read_while_a_graph_captures(backend):
    q, k, v = _qkv((1, 4, 32, 2, 16))
    table = torch.tensor([[0, -1], [0, 1], [1, 2], [2, 3]], device=DEVICE, dtype=torch.int32)
    model = _TableAttention(backend)
    model.register_parameter("anchor", torch.nn.Parameter(torch.zeros(1, device=DEVICE)))  # capture_step's device
    step = fastvid.capture_step(model)
    try:
        with torch.no_grad():
            expected = step._forward(q, k, v, table)
        torch.testing.assert_close(model(q, k, v, table), expected)  # captured (the table read by warm-ups only)
        torch.testing.assert_close(model(q, k, v, table), expected)  # replayed
        assert step.captures == 1
    finally:
        step.remove()


def _unet3d():
    from diffusers import UNet3DConditionModel

    unet = UNet3DConditionModel(
        block_out_channels=(32,), layers_per_block=1, cross_attention_dim=16, attention_head_dim=8,
        norm_num_groups=8, sample_size=4, in_channels=4, out_channels=4,
        down_block_types=("CrossAttnDownBlock3D",), up_block_types=("CrossAttnUpBlock3D",),
    )
    return unet, (torch.randn(1, 4, 2, 4, 4, device=DEVICE), torch.tensor([10], device=DEVICE),
                  torch.randn(1, 3, 16, device=DEVICE))


def _motion_unet():
    """AnimateDiff: motion modules on frame-major tokens, sinusoidal positions per frame."""
    from diffusers import MotionAdapter, UNet2DConditionModel, UNetMotionModel

    unet2d = UNet2DConditionModel(
        block_out_channels=(32,), layers_per_block=1, cross_attention_dim=16, attention_head_dim=8,
        norm_num_groups=8, sample_size=4, in_channels=4, out_channels=4,
        down_block_types=("CrossAttnDownBlock2D",), up_block_types=("CrossAttnUpBlock2D",))
    adapter = MotionAdapter(block_out_channels=(32,), motion_layers_per_block=1, motion_num_attention_heads=2,
                            motion_norm_num_groups=8, motion_max_seq_length=8)
    frames = 3
    return UNetMotionModel.from_unet2d(unet2d, adapter), (
        torch.randn(1, 4, frames, 4, 4, device=DEVICE), torch.tensor([10], device=DEVICE),
        torch.randn(frames, 3, 16, device=DEVICE))


def _released(name):
    """The tiny config of a released pipeline's denoiser and one call's inputs (SVD: AlphaBlender mixes,
    temporal ResNets; I2VGenXL: its temporal transformers and image conditioning)."""
    def make():
        from fastvid.integrations import released

        unet = released.build_denoiser(name, size="tiny", device=DEVICE)
        return unet, released.denoiser_inputs(name, unet, size="tiny", device=DEVICE)
    return make


@pytest.mark.parametrize("make", [_unet3d, _motion_unet, _released("svd"), _released("i2vgenxl")],
                         ids=["unet3d", "motion", "svd", "i2vgenxl"])
def test_compiled_patched_unet_has_no_graph_break(make):
    """fullgraph=True of a patched diffusers UNet3DConditionModel, UNetMotionModel,
    UNetSpatioTemporalConditionModel and I2VGenXLUNet (eager backend: no codegen) traces in one graph with
    fastvid's ops inside and matches the eager patched model."""
    pytest.importorskip("diffusers")
    torch.manual_seed(0)
    unet, inputs = make()
    unet = unet.to(DEVICE).eval()
    report = fastvid.patch(unet)
    assert report.total > 0
    torch._dynamo.reset()
    compiled = torch.compile(unet, fullgraph=True, backend="eager")
    args, kwargs = ((), inputs) if isinstance(inputs, dict) else (inputs, {})
    with torch.no_grad():
        expected = unet(*args, **kwargs).sample
        out = compiled(*args, **kwargs).sample
    torch.testing.assert_close(out, expected, atol=1e-4, rtol=1e-4)


def test_host_overhead_script_finds_every_ops_launches():
    """benchmarks/host_overhead.py times Triton's two launch paths on the Launch objects a call runs."""
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from benchmarks.host_overhead import launches_of

    with stubbed_launches(), torch.no_grad():
        for name, spec in OPS.items():
            inputs = spec.examples.make(1, 8, device=DEVICE)
            call = functools.partial(spec.function, **inputs, **spec.examples.kwargs, backend="triton")
            first = launches_of(call)
            assert first and launches_of(call) == first, name  # a repeated call runs the same planned launches
    assert "recording" not in _launch.Launch.__call__.__qualname__
