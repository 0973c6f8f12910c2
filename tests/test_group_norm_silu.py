"""fastvid.group_norm_silu against fastvid.reference.group_norm_silu (GroupNorm then SiLU)."""
import pytest
import torch

import fastvid
from fastvid import reference
from fastvid.ops.group_norm_silu import _fwd_op
from fastvid.testing import check_against_reference, counting_launches, dense_in_order
from fastvid.validation import FastvidInputError

from conftest import DEVICE, KERNEL_DTYPES

LAYOUTS = ["contiguous", "channels_last_3d", "frame_major"]


def _clear_plans():
    from fastvid.ops import group_norm_silu as op

    for cache in (op._fwd_op.plans, op._fwd_op.runners, op.DISPATCH.calls):
        cache.plans.clear()


@pytest.fixture(params=["one launch", "two launches"])
def forward_path(request, monkeypatch):
    """The forward's two paths for per-frame statistics: one launch (whole groups per program; on CPU taken
    wherever eligible) or forced to two (statistics partials, then apply); plans made under the other are
    dropped first."""
    from fastvid.ops import group_norm_silu as op

    monkeypatch.setattr(op, "GROUP_PROGRAMS_PER_SM", 0 if request.param == "one launch" else 10 ** 9)
    _clear_plans()
    yield request.param
    _clear_plans()


def _video(shape, dtype, layout="contiguous", offset=0.0):
    b, c, f, h, w = shape
    if layout == "frame_major":
        x = torch.randn(b, f, c, h, w, dtype=dtype, device=DEVICE).permute(0, 2, 1, 3, 4)
    else:
        x = torch.randn(shape, dtype=dtype, device=DEVICE)
        if layout == "channels_last_3d":
            x = x.to(memory_format=torch.channels_last_3d)
    return x * 2 + offset if offset else x


def _affine(channels, dtype):
    return (torch.randn(channels, dtype=dtype, device=DEVICE), torch.randn(channels, dtype=dtype, device=DEVICE))


def _fastvid(groups, per_frame, backend="triton", eps=1e-5, silu=True):
    return lambda x, w=None, b=None: fastvid.group_norm_silu(x, groups, w, b, eps, per_frame=per_frame, silu=silu,
                                                             backend=backend)


def _reference(groups, per_frame, eps=1e-5, silu=True):
    return lambda x, w=None, b=None: reference.group_norm_silu(x, groups, w, b, eps, per_frame=per_frame, silu=silu)


@pytest.mark.parametrize("dtype", KERNEL_DTYPES)
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("per_frame", [False, True])
def test_triton_matches_reference(dtype, layout, per_frame, forward_path):
    x = _video((2, 20, 7, 5, 9), dtype, layout, offset=1.5)
    w, b = _affine(20, dtype)
    check_against_reference(f"group_norm_silu {layout}", _fastvid(4, per_frame), _reference(4, per_frame), [x, w, b],
                            dtype)


@pytest.mark.parametrize("per_frame", [False, True])
def test_statistics_split_into_chunks_stay_accurate(per_frame, forward_path):
    # One (sample, group) with 289 pixels: two launches split it into pixel chunks combined with Chan's
    # formula, one launch passes over it in tiles; a large mean checks there is no sum-of-squares cancellation.
    x = torch.randn(1, 20, 2, 17, 17, device=DEVICE) * 0.01 + 300.0
    w, b = _affine(20, torch.float32)
    check_against_reference("chunked", _fastvid(1, per_frame, eps=1e-6), _reference(1, per_frame, eps=1e-6),
                            [x, w, b], torch.float32)


@pytest.mark.parametrize("dtype", KERNEL_DTYPES)
def test_channels_last_statistics_over_frames_widen_the_apply_tile(dtype, monkeypatch):
    """Channels innermost with statistics over all frames: where an apply program combines its groups' partials in
    more than one step, its tile spans APPLY_WIDEN times the statistics pass's pixels (odd 17 x 19 frames: the
    wide tile's mask), forward and backward, with a time embedding."""
    from fastvid.ops import group_norm_silu as op

    monkeypatch.setattr(op, "COMBINE_TILE", 64)  # 2 partial rows per step: 9 frames take 5
    _clear_plans()
    x = _video((1, 32, 9, 17, 19), dtype, "channels_last_3d", offset=1.5)
    w, b = _affine(32, dtype)
    add = torch.randn(1, 32, dtype=dtype, device=DEVICE)
    stats_launch, apply = op._FwdPlan(x, w, b, 4, 1e-5, False, add[:, :, None]).launches  # the op sees (B, C, 1)
    assert apply.kwargs["BLOCK_P"] == op.APPLY_WIDEN * stats_launch.kwargs["BLOCK_P"]
    check_against_reference("widened apply", lambda x, w, b, a: fastvid.group_norm_silu(x, 4, w, b, add=a,
                                                                                      backend="triton"),
                            lambda x, w, b, a: reference.group_norm_silu(x, 4, w, b, add=a), [x, w, b, add], dtype)
    _clear_plans()


def test_one_launch_takes_whole_groups_of_one_frame_where_they_fill_the_gpu(monkeypatch):
    """Groups per program fill 7/8 of their lanes (3 groups of 10 channels in 32); one launch only for
    per-frame statistics (or single frames), groups of at most GROUP_MAX_ELEMENTS, and enough programs."""
    from fastvid.ops import group_norm_silu as op

    assert [op._groups_per_program(c) for c in (1, 3, 4, 5, 10, 20, 40, 128)] == [1, 5, 1, 3, 3, 3, 3, 1]
    monkeypatch.setattr(op, "GROUP_PROGRAMS_PER_SM", 4)  # 4 programs off the GPU
    video = torch.empty(1, 40, 2, 8, 8, device="meta")  # 4 groups of 10 channels: 2 programs per frame
    assert op._one_launch(video, 4, per_frame=True)
    assert not op._one_launch(video[:, :, :1], 4, per_frame=True)  # 2 programs
    assert op._one_launch(video[:, :, :1], 4, per_frame=False) is False  # still 2 programs
    assert not op._one_launch(video, 4, per_frame=False)  # statistics over both frames
    assert not op._one_launch(torch.empty(1, 40, 2, 64, 64, device="meta"), 4, per_frame=True)  # 40960 per group
    images = torch.empty(4, 40, 1, 8, 8, device="meta")  # (N, C, H, W) frames as one-frame videos
    assert op._one_launch(images, 4, per_frame=False)


@pytest.mark.parametrize("dtype", KERNEL_DTYPES)
def test_without_affine(dtype):
    x = _video((1, 12, 3, 4, 5), dtype, "channels_last_3d")
    check_against_reference("no affine", _fastvid(3, False), _reference(3, False), [x], dtype)


def test_strided_pixels_and_affine():
    # W sliced with a step (H and W no longer merge); weight and bias strided.
    x = torch.randn(2, 8, 3, 4, 10, device=DEVICE)[..., ::2]
    w, b = (torch.randn(16, device=DEVICE)[::2] for _ in range(2))
    check_against_reference("strided", _fastvid(2, True), _reference(2, True), [x, w, b], torch.float32)


@pytest.mark.parametrize("per_frame", [False, True])
def test_width_outer_to_height_layout(per_frame):
    # (B, C, F, W, H) storage: y and dx are allocated with H and W adjacent (one pixel axis).
    x = torch.randn(2, 8, 3, 5, 4, device=DEVICE).transpose(-1, -2)
    w, b = _affine(8, torch.float32)
    check_against_reference("w-major", _fastvid(2, per_frame), _reference(2, per_frame), [x, w, b], torch.float32)


@pytest.mark.parametrize("layout", ["contiguous", "frame_major"])
@pytest.mark.parametrize("per_frame", [False, True])
@pytest.mark.parametrize("silu", [True, False])
def test_torch_backends_match_reference(layout, per_frame, silu):
    x = _video((2, 8, 3, 4, 5), torch.float32, layout)
    w, b = _affine(8, torch.float32)
    for backend in ("torch", "reference"):
        check_against_reference(backend, _fastvid(2, per_frame, backend, silu=silu),
                                _reference(2, per_frame, silu=silu), [x, w, b], torch.float32)


@pytest.mark.parametrize("layout", LAYOUTS)
def test_output_keeps_the_memory_order_of_x(layout):
    x = _video((1, 4, 3, 2, 5), torch.float32, layout)
    out = fastvid.group_norm_silu(x, 2, backend="triton")
    assert out.permute(*sorted(range(5), key=lambda d: -x.stride(d))).is_contiguous()


@pytest.mark.parametrize("layout, per_frame", [("channels_last_3d", False), ("frame_major", True)])
def test_custom_op_passes_opcheck(layout, per_frame):
    """Schema, fake tensor (strides included), autograd registration and AOT dispatch (torch.compile)."""
    from fastvid.ops.group_norm_silu import group_norm_silu_fwd

    x = _video((1, 6, 5, 3, 4), torch.float32, layout).requires_grad_()
    w, b = (t.requires_grad_() for t in _affine(6, torch.float32))
    torch.library.opcheck(group_norm_silu_fwd, (x, w, b, 3, 1e-5, per_frame))


@pytest.mark.skipif(DEVICE == "cuda", reason="the kernels run for real on this machine")
def test_kernels_compile_for_hopper():
    """Without a GPU: the five kernels compile for sm_90 (bf16, pixels or channels at unit stride, with add;
    with SiLU and without, the forward's one-launch kernel and its apply per frame and over all frames, keeping
    their statistics or not)."""
    from aot_compile import run_in_subprocess

    dt, f32 = "bf16", "fp32"
    tile = dict(BLOCK_C=8, BLOCK_P=512, HAS_ADD=True)
    kernels = [("group_norm_stats_kernel", dict(X=dt, Add=dt, Partial=f32), tile)]
    for flag in (False, True):
        affine = dict(HAS_WEIGHT=True, HAS_BIAS=True, SILU=flag, **tile)
        kernels += [("group_norm_silu_group_kernel", dict(X=dt, Wt=dt, Bias=dt, Add=dt, Y=dt, Stats=f32),
                     dict(affine, STORE_STATS=flag, GROUPS=3, GROUPS_POW2=4, BLOCK_C=32, BLOCK_P=128)),
                    ("group_norm_silu_apply_kernel",
                     dict(X=dt, Wt=dt, Bias=dt, Add=dt, Partial=f32, Y=dt, Stats=f32),
                     dict(affine, PER_FRAME=flag, STORE_STATS=flag, BLOCK_R=8, BLOCK_G=2, BLOCK_J=16)),
                    ("group_norm_silu_bwd_reduce_kernel",
                     dict(X=dt, DY=dt, Wt=dt, Bias=dt, Add=dt, Stats=f32, DWPart=f32, DBPart=f32, XhPart=f32), affine),
                    ("group_norm_silu_bwd_apply_kernel",
                     dict(X=dt, DY=dt, Wt=dt, Bias=dt, Add=dt, Stats=f32, Coef=f32, DX=dt), affine)]
    specs = [dict(kernel=name, pointers=pointers, constexprs=constexprs, floats=["eps"], unit_axis=unit)
             for name, pointers, constexprs in kernels for unit in ("p", "c")]
    assert len(run_in_subprocess("fastvid.kernels.group_norm_silu", specs)) == len(specs)


def test_auto_uses_torch_on_cpu_and_reports_it():
    fastvid.group_norm_silu(_video((1, 4, 3, 2, 5), torch.float32), 2)
    assert fastvid.last_backend("group_norm_silu") == ("triton" if DEVICE == "cuda" else "torch")


def test_triton_refusals_give_reasons():
    with pytest.raises(fastvid.BackendUnsupportedError, match="float64"):
        fastvid.group_norm_silu(_video((1, 4, 3, 2, 5), torch.float64), 2, backend="triton")
    with pytest.raises(fastvid.BackendUnsupportedError, match="channels per group"):
        fastvid.group_norm_silu(_video((1, 1024, 1, 1, 2), torch.float32), 1, backend="triton")


@pytest.mark.parametrize("case, match", [
    ("rank", r"argument 'x' has rank 3"),
    ("groups", r"argument 'num_groups' is 3"),
    ("dtype", r"argument 'x' has dtype int64"),
    ("weight_shape", r"argument 'weight' has shape"),
    ("mixed_dtype", r"argument 'bias' has dtype"),
    ("eps", r"argument 'eps'"),
    ("per_frame", r"argument 'per_frame'"),
    ("silu", r"argument 'silu' is 1; expected a bool"),
    ("backend", r"argument 'backend' is 'apex'"),
])
def test_bad_input_names_the_argument(case, match):
    x = _video((1, 4, 3, 2, 5), torch.float32)
    w, b = _affine(4, torch.float32)
    groups, kwargs = 2, {}
    if case == "rank":  # rank 4 is a batch of images
        x = x[0, 0]
    elif case == "groups":
        groups = 3
    elif case == "dtype":
        x = x.long()
    elif case == "weight_shape":
        w = w[:3]
    elif case == "mixed_dtype":
        b = b.half()
    elif case == "eps":
        kwargs["eps"] = -1.0
    elif case == "per_frame":
        kwargs["per_frame"] = "yes"
    elif case == "silu":
        kwargs["silu"] = 1
    elif case == "backend":
        kwargs["backend"] = "apex"
    with pytest.raises((FastvidInputError, fastvid.BackendUnsupportedError), match=match):
        fastvid.group_norm_silu(x, groups, w, b, **kwargs)


@pytest.mark.parametrize("dtype", KERNEL_DTYPES)
@pytest.mark.parametrize("case", ["images", "per_sample_add", "per_frame_add"])
def test_add_before_the_statistics_matches_reference(dtype, case, forward_path):
    """silu(GroupNorm(x + add)) with add never materialised: (N, C, H, W) frames of a video U-Net's ResNet
    (add (N, C)), per-sample (B, C) and per-frame (B, C, F) adds on video x; gradients reach add."""
    if case == "images":  # (N, C, H, W) frames, non-contiguous (channels outermost in memory)
        x = torch.randn(20, 3, 5, 7, dtype=dtype, device=DEVICE).transpose(0, 1) * 2 + 1.5
        add, per_frame = torch.randn(20, 3, dtype=dtype, device=DEVICE).t(), False
    else:
        x = _video((2, 20, 3, 5, 7), dtype, "frame_major", offset=1.5)
        per_frame = case == "per_frame_add"
        add = torch.randn(2, 20, *((3,) if per_frame else ()), dtype=dtype, device=DEVICE)
    w, b = _affine(20, dtype)
    check_against_reference(
        f"add {case}",
        lambda x, w, b, a: fastvid.group_norm_silu(x, 4, w, b, per_frame=per_frame, add=a, backend="triton"),
        lambda x, w, b, a: reference.group_norm_silu(x, 4, w, b, per_frame=per_frame, add=a), [x, w, b, add], dtype)
    if case == "images":  # without a gradient the kernels read the (N, C, H, W) images themselves
        for images in (x, x.transpose(2, 3)):  # pixels in place, and H, W that do not merge
            with torch.no_grad():
                check_against_reference(
                    "images, no gradient",
                    lambda x, w, b, a: fastvid.group_norm_silu(x, 4, w, b, add=a, backend="triton"),
                    lambda x, w, b, a: reference.group_norm_silu(x, 4, w, b, add=a), [images, w, b, add], dtype,
                    grad=False)


@pytest.mark.parametrize("dtype, per_frame", [pytest.param(dtype, False, id=str(dtype)[6:]) for dtype in KERNEL_DTYPES]
                         + [pytest.param(torch.float32, True, id="float32-per_frame")])
def test_without_silu_matches_torch_group_norm_on_frame_major_frames(dtype, per_frame, forward_path):
    """silu=False is GroupNorm(x + add) alone: a temporal transformer's input norm on the (B, C, F, H, W)
    frame-major view of (B*F, C, H, W) frames, read in place, y in x's memory order; gradients reach x,
    weight, bias and add. Channel blocks of 4 straddle the groups of 5 channels."""
    B, F, C, H, W = 2, 3, 20, 5, 7
    x = (torch.randn(B * F, C, H, W, dtype=dtype, device=DEVICE) * 2 + 1.5).view(B, F, C, H, W).transpose(1, 2)
    w, b = _affine(C, dtype)
    add = torch.randn(B, C, *((F,) if per_frame else ()), dtype=dtype, device=DEVICE)

    def torch_group_norm(x, w, b, a):
        h = x + a.view(B, C, -1, 1, 1)
        if not per_frame:
            return torch.nn.functional.group_norm(h, 4, w, b, 1e-5)
        frames = torch.nn.functional.group_norm(h.transpose(1, 2).flatten(0, 1), 4, w, b, 1e-5)
        return frames.unflatten(0, (B, F)).transpose(1, 2)

    check_against_reference(
        f"silu=False per_frame={per_frame}",
        lambda x, w, b, a: fastvid.group_norm_silu(x, 4, w, b, per_frame=per_frame, add=a, silu=False,
                                                   backend="triton"),
        torch_group_norm, [x, w, b, add], dtype)
    out = fastvid.group_norm_silu(x, 4, w, b, per_frame=per_frame, add=add, silu=False, backend="triton")
    assert dense_in_order(out, (0, 2, 1, 3, 4))
    with counting_launches(launch=False) as counter:  # the forward's one or two launches; no copy of the view
        _fwd_op.planned(x, w, b, 4, 1e-5, per_frame, add.view(B, C, -1), False)
    launches = 1 if per_frame and forward_path == "one launch" else 2
    assert sum(counter.triton.values()) == launches and not counter.torch


@pytest.mark.parametrize("case, match", [
    ("add_shape", r"argument 'add' has shape \(2, 4, 2\)"),
    ("add_dtype", r"argument 'add' has dtype"),
])
def test_bad_add_names_the_argument(case, match):
    x, add = _video((2, 4, 3, 2, 5), torch.float32), torch.randn(2, 4, 2, device=DEVICE)
    if case == "add_dtype":
        add = add[:, :, 0].half()
    with pytest.raises(FastvidInputError, match=match):
        fastvid.group_norm_silu(x, 2, add=add)
