"""Property-based checks: hypothesis draws shapes, strides, dtypes and flags and compares every
backend with the reference. Failing cases that hypothesis shrinks are kept below as explicit
regression examples (@example)."""
import pytest
import torch
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

import fastvid
from fastvid import reference
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
    mode=st.sampled_from(["self", "first", "sparse_causal", "all", "table"]), perm=st.permutations(range(5)),
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
