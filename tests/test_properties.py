"""Property-based checks: hypothesis draws shapes, strides, dtypes and flags and compares every
backend with the reference. Failing cases that hypothesis shrinks are kept below as explicit
regression examples (@example)."""
import pytest
import torch
from hypothesis import HealthCheck, assume, example, given, settings
from hypothesis import strategies as st

import fastvid
from fastvid import reference
from fastvid.frame_modes import MODES
from fastvid.testing import check_against_reference

from conftest import DEVICE

SETTINGS = settings(max_examples=12, deadline=None, derandomize=True,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


def _strided(shape, dtype, layout_perm):
    """A tensor of ``shape`` whose memory order is ``layout_perm`` (a permutation of the dims)."""
    stored = [shape[i] for i in layout_perm]
    t = torch.randn(stored, dtype=dtype, device=DEVICE)
    inverse = [layout_perm.index(i) for i in range(len(shape))]
    return t.permute(inverse)


@SETTINGS
@given(
    batch=st.integers(1, 2), frames=st.integers(1, 17), tokens=st.integers(1, 20), heads=st.integers(1, 3),
    head_dim=st.sampled_from([8, 12, 16, 24, 40]), dtype=st.sampled_from([torch.float32, torch.float16]),
    causal=st.booleans(), with_bias=st.booleans(), perm=st.permutations(range(5)),
    backend=st.sampled_from(["triton", "torch"]),
)
@example(batch=1, frames=1, tokens=1, heads=1, head_dim=8, dtype=torch.float32, causal=True, with_bias=True,
         perm=[0, 1, 2, 3, 4], backend="triton")  # a single frame: softmax over one key
def test_temporal_attention_property(batch, frames, tokens, heads, head_dim, dtype, causal, with_bias, perm,
                                     backend):
    shape = (batch, frames, tokens, heads, head_dim)
    q, k, v = (_strided(shape, dtype, list(perm)) for _ in range(3))
    bias = torch.randn(heads, frames, frames, dtype=dtype, device=DEVICE) if with_bias else None
    fn = lambda q, k, v, b: fastvid.temporal_attention(q, k, v, bias=b, causal=causal, backend=backend)  # noqa: E731
    ref = lambda q, k, v, b: reference.temporal_attention(q, k, v, bias=b, causal=causal)  # noqa: E731
    check_against_reference("property", fn, ref, [q, k, v, bias], dtype)


@SETTINGS
@given(
    batch=st.integers(1, 2), frames=st.integers(1, 9), tokens=st.integers(1, 20), keys=st.integers(1, 20),
    heads=st.integers(1, 2), head_dim=st.sampled_from([8, 12, 16, 40]),
    dtype=st.sampled_from([torch.float32, torch.float16]),
    mode=st.sampled_from(list(MODES) + ["table"]), perm=st.permutations(range(5)),
    backend=st.sampled_from(["triton", "torch"]), data=st.data(),
)
def test_frame_attention_property(batch, frames, tokens, keys, heads, head_dim, dtype, mode, perm, backend, data):
    q = _strided((batch, frames, tokens, heads, head_dim), dtype, list(perm))
    k, v = (_strided((batch, frames, keys, heads, head_dim), dtype, list(perm)) for _ in range(2))
    table = mode
    if mode == "table":
        width = data.draw(st.integers(1, 3))
        rows = data.draw(st.lists(st.lists(st.integers(-1, frames - 1), min_size=width, max_size=width),
                                  min_size=frames, max_size=frames))
        table = torch.tensor([row if max(row) >= 0 else [i] + row[1:] for i, row in enumerate(rows)], device=DEVICE)
    fn = lambda q, k, v: fastvid.frame_attention(q, k, v, frames=table, backend=backend)  # noqa: E731
    ref = lambda q, k, v: reference.frame_attention(q, k, v, frames=table)  # noqa: E731
    check_against_reference("property", fn, ref, [q, k, v], dtype)


@SETTINGS
@given(
    batch=st.integers(1, 2), c_in=st.integers(1, 24), c_out=st.integers(1, 24), frames=st.integers(1, 9),
    height=st.integers(1, 4), width=st.integers(1, 6), taps=st.sampled_from([1, 2, 3, 5]), pad_choice=st.integers(0, 4),
    dtype=st.sampled_from([torch.float32, torch.float16]), with_bias=st.booleans(), with_residual=st.booleans(),
    perm=st.permutations(range(5)), backend=st.sampled_from(["triton", "torch"]),
)
@example(batch=1, c_in=1, c_out=1, frames=1, height=1, width=1, taps=3, pad_choice=1, dtype=torch.float32,
         with_bias=True, with_residual=True, perm=[0, 1, 2, 3, 4], backend="triton")  # one frame, one pixel
def test_temporal_conv_property(batch, c_in, c_out, frames, height, width, taps, pad_choice, dtype, with_bias,
                                with_residual, perm, backend):
    padding = "same" if taps % 2 and pad_choice == 0 else min(pad_choice, taps - 1)
    pad = (taps - 1) // 2 if padding == "same" else padding
    frames_out = frames + 2 * pad - taps + 1
    assume(frames_out >= 1)
    x = _strided((batch, c_in, frames, height, width), dtype, list(perm))
    weight = torch.randn(c_out, c_in, taps, dtype=dtype, device=DEVICE) / (c_in * taps) ** 0.5
    bias = torch.randn(c_out, dtype=dtype, device=DEVICE) if with_bias else None
    res = _strided((batch, c_out, frames_out, height, width), dtype, list(perm)) if with_residual else None
    fn = lambda x, w, b, r: fastvid.temporal_conv(x, w, b, residual=r, padding=padding, backend=backend)  # noqa: E731
    ref = lambda x, w, b, r: reference.temporal_conv(x, w, b, residual=r, padding=pad)  # noqa: E731
    check_against_reference("property", fn, ref, [x, weight, bias, res], dtype)


@SETTINGS
@given(
    batch=st.integers(1, 2), groups=st.integers(1, 4), per_group=st.integers(1, 6), frames=st.integers(1, 6),
    height=st.integers(1, 5), width=st.integers(1, 6), dtype=st.sampled_from([torch.float32, torch.float16]),
    per_frame=st.booleans(), affine=st.booleans(), perm=st.permutations(range(5)),
    backend=st.sampled_from(["triton", "torch"]), silu=st.booleans(),
)
def test_group_norm_silu_property(batch, groups, per_group, frames, height, width, dtype, per_frame, affine, perm,
                                  backend, silu):
    channels = groups * per_group
    assume(per_group * height * width * (1 if per_frame else frames) > 1)  # a variance over one value is 0
    x = _strided((batch, channels, frames, height, width), dtype, list(perm))
    w, b = ((torch.randn(channels, dtype=dtype, device=DEVICE) if affine else None) for _ in range(2))
    fn = lambda x, w=None, b=None: fastvid.group_norm_silu(  # noqa: E731
        x, groups, w, b, per_frame=per_frame, silu=silu, backend=backend)
    ref = lambda x, w=None, b=None: reference.group_norm_silu(  # noqa: E731
        x, groups, w, b, per_frame=per_frame, silu=silu)
    check_against_reference("property", fn, ref, [x, w, b] if affine else [x], dtype)


@pytest.mark.filterwarnings("ignore::RuntimeWarning")  # numpy under the interpreter: exp2 overflows to inf (then 0)
@SETTINGS
@given(
    rows=st.integers(1, 9), tokens=st.integers(1, 7), inner=st.integers(1, 40), pad=st.integers(0, 3),
    dtype=st.sampled_from([torch.float32, torch.float16]), approximate=st.sampled_from(["none", "tanh"]),
    perm=st.permutations(range(3)), backend=st.sampled_from(["triton", "torch"]),
)
def test_geglu_property(rows, tokens, inner, pad, dtype, approximate, perm, backend):
    # Any memory order, the last dim a slice of a wider one (pad columns on each side).
    wide = _strided((rows, tokens, 2 * inner + 2 * pad), dtype, list(perm)) * 3
    proj_out = wide[..., pad:pad + 2 * inner]
    fn = lambda p: fastvid.geglu(p, approximate=approximate, backend=backend)  # noqa: E731
    check_against_reference("property", fn, lambda p: reference.geglu(p, approximate=approximate), [proj_out], dtype)


@SETTINGS
@given(
    lead=st.tuples(st.integers(1, 3), st.integers(1, 4), st.integers(1, 5)), k=st.integers(1, 20),
    n=st.integers(1, 20), dtype=st.sampled_from([torch.float32, torch.float16]), with_bias=st.booleans(),
    with_residual=st.booleans(), x_perm=st.permutations(range(4)), r_perm=st.permutations(range(4)),
    backend=st.sampled_from(["triton", "torch"]),
)
def test_linear_property(lead, k, n, dtype, with_bias, with_residual, x_perm, r_perm, backend):
    # x and the residual in any memory order (read in place where a (batch, row) split serves, else copied); the
    # output in the residual's order (torch.empty_like's rule), contiguous without one (size-1 dims' strides are free).
    x = _strided((*lead, k), dtype, list(x_perm))
    w = torch.randn(n, k, dtype=dtype, device=DEVICE) * k ** -0.5
    b = torch.randn(n, dtype=dtype, device=DEVICE) if with_bias else None
    r = _strided((*lead, n), dtype, list(r_perm)) if with_residual else None
    out = fastvid.linear(x, w, b, residual=r, backend=backend)
    expected = (torch.empty_like(r) if with_residual else out.contiguous()).stride()
    assert all(s == e for size, s, e in zip(out.shape, out.stride(), expected) if size > 1), (out.stride(), expected)
    fn = lambda x, w, b, r: fastvid.linear(x, w, b, residual=r, backend=backend)  # noqa: E731
    check_against_reference("property", fn, lambda x, w, b, r: reference.linear(x, w, b, residual=r), [x, w, b, r],
                            dtype)
