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
def test_triton_matches_reference(dtype, layout, per_frame):
    x = _video((2, 20, 7, 5, 9), dtype, layout, offset=1.5)
    w, b = _affine(20, dtype)
    check_against_reference(f"group_norm_silu {layout}", _fastvid(4, per_frame), _reference(4, per_frame), [x, w, b],
                            dtype)


@pytest.mark.parametrize("per_frame", [False, True])
def test_statistics_split_into_chunks_stay_accurate(per_frame):
    # One (sample, group) with 289 pixels: the statistics pass splits it into pixel chunks
    # combined with Chan's formula; a large mean checks there is no sum-of-squares cancellation.
    x = torch.randn(1, 20, 2, 17, 17, device=DEVICE) * 0.01 + 300.0
    w, b = _affine(20, torch.float32)
    check_against_reference("chunked", _fastvid(1, per_frame, eps=1e-6), _reference(1, per_frame, eps=1e-6),
                            [x, w, b], torch.float32)


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
    """Without a GPU: the four kernels compile for sm_90 (bf16, pixels or channels at unit stride, with add;
    with SiLU and without, the forward's apply per frame and over all frames, keeping its statistics or not)."""
    from aot_compile import run_in_subprocess

    dt, f32 = "bf16", "fp32"
    tile = dict(BLOCK_C=8, BLOCK_P=512, HAS_ADD=True)
    kernels = [("group_norm_stats_kernel", dict(X=dt, Add=dt, Partial=f32), tile)]
    for flag in (False, True):
        affine = dict(HAS_WEIGHT=True, HAS_BIAS=True, SILU=flag, **tile)
        kernels += [("group_norm_silu_apply_kernel",
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
def test_add_before_the_statistics_matches_reference(dtype, case):
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


@pytest.mark.parametrize("dtype, per_frame", [pytest.param(dtype, False, id=str(dtype)[6:]) for dtype in KERNEL_DTYPES]
                         + [pytest.param(torch.float32, True, id="float32-per_frame")])
def test_without_silu_matches_torch_group_norm_on_frame_major_frames(dtype, per_frame):
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
    with counting_launches(launch=False) as counter:  # the forward's two launches; no copy of the view
        _fwd_op.planned(x, w, b, 4, 1e-5, per_frame, add.view(B, C, -1), False)
    assert sum(counter.triton.values()) == 2 and not counter.torch


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
