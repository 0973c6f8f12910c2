"""fastvid.linear (nn.Linear's GEMM reading strided tokens, the residual added in its epilogue, the output in
the residual's memory order) against fastvid.reference.linear, its layouts, dispatch and module twin."""
import copy

import pytest
import torch

import fastvid
from fastvid import reference
from fastvid.ops import _launch
from fastvid.ops.linear import _FwdPlan
from fastvid.testing import assert_close_to_gold, check_against_reference, dense_in_order, poisoned_outputs
from fastvid.validation import FastvidInputError

from conftest import DEVICE, KERNEL_DTYPES


def _nchw_view(batch, tokens, channels, **r):
    """The (B, H*W, C) view of a (B, C, H*W) channel-first tensor: tokens stride 1, channels stride H*W."""
    return torch.randn(batch, channels, tokens, **r).transpose(1, 2)


def _inputs(case, dtype, batch=3, tokens=13, k=24, n=40):
    """x, weight (N, K) scaled like nn.Linear's initialisation, bias (N,) or None, residual or None. M = 39 rows
    (37 in "rows"), K 24 and N 40: ragged in every dim of the interpreter's 16-wide tiles.

    "proj_in": x an NCHW view, no residual (Transformer2DModel's proj_in). "proj_out": the residual an NCHW
    view (the output goes back into that layout). "ff_out": x a slice of a wider last dim, the residual
    contiguous, no bias. "rows": 2-D x (M, K) and residual."""
    r = dict(dtype=dtype, device=DEVICE)
    weight = torch.randn(n, k, **r) * k ** -0.5
    bias = torch.randn(n, **r)
    if case == "proj_in":
        return [_nchw_view(batch, tokens, k, **r), weight, bias, None]
    if case == "proj_out":
        return [torch.randn(batch, tokens, k, **r), weight, bias, _nchw_view(batch, tokens, n, **r)]
    if case == "ff_out":
        return [torch.randn(batch, tokens, k + 5, **r)[..., 2:2 + k], weight, None, torch.randn(batch, tokens, n, **r)]
    return [torch.randn(37, k, **r), weight, bias, torch.randn(37, n, **r)]


def _fastvid(backend="triton"):
    return lambda x, w, b, res: fastvid.linear(x, w, b, residual=res, backend=backend)


def _reference(x, w, b, res):
    return reference.linear(x, w, b, residual=res)


@pytest.mark.parametrize("dtype", KERNEL_DTYPES)
@pytest.mark.parametrize("case", ["proj_in", "proj_out", "ff_out", "rows"])
def test_triton_matches_reference(dtype, case):
    """Outputs poisoned; output and the gradients of x, weight, bias and residual against float64."""
    check_against_reference(f"linear {case}", _fastvid(), _reference, _inputs(case, dtype), dtype)


def test_long_k_and_several_row_tiles_per_batch():
    """K 70: five K tiles, the last one 6 wide; N 17 (one ragged column tile); 21 tokens: two row tiles per batch
    entry, the second ragged (no tile straddles two); residual an NCHW view."""
    inputs = _inputs("proj_out", torch.float16, batch=2, tokens=21, k=70, n=17)
    check_against_reference("linear K 70", _fastvid(), _reference, inputs, torch.float16)


@pytest.mark.parametrize("backend", ["triton", "torch", "reference"])
def test_output_takes_the_residuals_strides_and_views_back_into_nchw(backend):
    """The (B, H*W, C) view of an NCHW residual: the output has its strides, so ``.transpose(1, 2)`` of it is
    an NCHW-ordered (B, C, H*W) tensor; without a residual the output is contiguous."""
    x, w, b, res = _inputs("proj_out", torch.float32, batch=2, tokens=6, k=8, n=5)
    with poisoned_outputs():
        out = fastvid.linear(x, w, b, residual=res, backend=backend)
        plain = fastvid.linear(x, w, b, backend=backend)
    assert out.stride() == res.stride() and out.transpose(1, 2).is_contiguous()
    assert plain.is_contiguous()
    torch.testing.assert_close(out, _reference(x, w, b, res))
    torch.testing.assert_close(plain, _reference(x, w, b, None))


def _unsplittable(shape, dtype=torch.float32):
    """A 4-D (A, B, C, last) tensor whose leading dims no (batch, row) split merges: stored (C, A, B, last)
    with A and C swapped, so neither (A | B, C) nor (A, B | C) is one stride each."""
    a, b, c, last = shape
    return torch.randn(b, a, c, last, dtype=dtype, device=DEVICE).permute(1, 0, 2, 3)


@pytest.mark.parametrize("which", ["x", "residual", "both"])
def test_layouts_no_split_addresses_are_copied_and_the_output_keeps_the_residuals_order(which):
    """x or the residual laid out so that no (batch, row) split reads it in place: the plan copies x, or
    writes a contiguous output and copies it into the residual's order; values and layout as documented."""
    shape = (2, 3, 4)
    x = _unsplittable((*shape, 6)) if which != "residual" else torch.randn(*shape, 6, device=DEVICE)
    res = _unsplittable((*shape, 5)) if which != "x" else torch.randn(*shape, 5, device=DEVICE)
    w, b = torch.randn(5, 6, device=DEVICE), torch.randn(5, device=DEVICE)
    plan = _FwdPlan(x, w, b, res)
    assert (plan.copy_x, plan.copy_out) == (which != "residual", which != "x")
    with poisoned_outputs():
        out = fastvid.linear(x, w, b, residual=res, backend="triton")
    assert out.stride() == res.stride()
    torch.testing.assert_close(out, _reference(x, w, b, res))


@pytest.mark.parametrize("backend", ["triton", "torch"])
def test_a_residual_with_gaps_gives_an_output_dense_in_its_order(backend):
    """Every other token of a wider NCHW tensor: not dense, so the output is dense in its dim order."""
    x, w, b, _ = _inputs("proj_out", torch.float32, batch=2, tokens=6, k=8, n=5)
    res = _nchw_view(2, 12, 5, device=DEVICE)[:, ::2]
    with poisoned_outputs():
        out = fastvid.linear(x, w, b, residual=res, backend=backend)
    assert dense_in_order(out, (0, 2, 1))
    torch.testing.assert_close(out, _reference(x, w, b, res))


@pytest.mark.parametrize("case, match", [
    ("rank", r"argument 'x' has rank 0"),
    ("k", r"argument 'weight' has shape \(3, 7\); expected K = 8 columns"),
    ("dtype", r"argument 'weight' has dtype torch.float16; expected the dtype of 'x'"),
    ("bias", r"argument 'bias' has shape \(2,\); expected \(3,\)"),
    ("residual shape", r"argument 'residual' has shape \(2, 4, 2\); expected \(2, 4, 3\)"),
    ("residual dtype", r"argument 'residual' has dtype torch.float64; expected the dtype of 'x'"),
    ("residual device", r"argument 'residual' is on meta"),
    ("residual type", r"argument 'residual' is a list"),
])
def test_bad_input_names_the_argument(case, match):
    x, w, b, res = _inputs("proj_out", torch.float32, 2, 4, 8, 3)
    if case == "rank":
        x = x[0, 0, 0]
    elif case == "k":
        w = w[:, :7]
    elif case == "dtype":
        w = w.half()
    elif case == "bias":
        b = b[:2]
    elif case == "residual shape":
        res = res[..., :2]
    elif case == "residual dtype":
        res = res.double()
    elif case == "residual device":
        res = res.to("meta")
    else:
        res = res.tolist()
    for backend in ("auto", "triton", "torch", "reference"):
        with pytest.raises(FastvidInputError, match=match):
            fastvid.linear(x, w, b, residual=res, backend=backend)


def _twins(bias=True, backend="triton"):
    ref = reference.Linear(12, 7, bias=bias).to(DEVICE)
    fast = fastvid.nn.Linear(12, 7, bias=bias).to(DEVICE)
    fast.load_state_dict(ref.state_dict())
    assert list(fast.state_dict()) == list(torch.nn.Linear(12, 7, bias=bias).state_dict())
    fast.backend = backend
    return ref, fast


@pytest.mark.parametrize("bias", [True, False])
def test_module_twin_with_a_residual_matches_the_reference_module(bias):
    ref, fast = _twins(bias)
    x, res = torch.randn(2, 5, 12, device=DEVICE), _nchw_view(2, 5, 7, device=DEVICE)
    leaves = [[t.clone().requires_grad_() for t in (x, res)] for _ in range(2)]
    outs = [module(*inputs) for module, inputs in zip((ref, fast), leaves)]
    assert outs[1].stride() == res.stride() and fastvid.last_backend("linear") == "triton"
    torch.testing.assert_close(outs[1], outs[0])
    for out in outs:
        out.square().sum().backward()
    for a, b in zip(leaves[1], leaves[0]):
        torch.testing.assert_close(a.grad, b.grad)
    for p_fast, p_ref in zip(fast.parameters(), ref.parameters()):
        torch.testing.assert_close(p_fast.grad, p_ref.grad)


def test_module_twin_under_autocast_keeps_autocasts_type_promotion():
    """x, weight and bias cast as F.linear's autocast rule casts them; a bfloat16 residual joins the GEMM,
    a float32 one is added after it in float32 (what ``linear(x) + residual`` gives under autocast)."""
    ref, fast = _twins(backend="auto")  # bfloat16: Triton on a GPU, the torch path on CPU
    gold_module = copy.deepcopy(ref).double()
    x = torch.randn(2, 5, 12, device=DEVICE)
    for res_dtype in (torch.bfloat16, torch.float32):
        res = torch.randn(2, 5, 7, device=DEVICE, dtype=res_dtype)
        with torch.autocast(DEVICE, dtype=torch.bfloat16):
            got, in_dtype = fast(x, res), ref(x, res)
        assert got.dtype == in_dtype.dtype == res_dtype
        assert_close_to_gold("Linear under autocast", got, in_dtype, gold_module(x.double(), res.double()),
                             torch.bfloat16)


def test_tile_pruning_follows_the_rows_of_one_batch():
    """A row tile never spans two batches, so the tiles are pruned on a batch's rows (ROWS_BUCKET), not on M: at
    8x8 tokens per frame (64 rows a batch) no 128-row tile is kept, however many frames; with a residual no
    256-column tile."""
    import triton

    from fastvid.kernels import linear as kernels

    configs = [triton.Config(dict(BLOCK_M=m, BLOCK_N=n, BLOCK_K=k, GROUP_M=g), num_warps=w, num_stages=s)
               for m, n, k, g, w, s in kernels._TILES]

    def kept(rows, residual=True, n=320, k=320):
        args = dict(M=rows * 512, N=n, K=k, ROWS_BUCKET=min(_launch.next_pow2(rows), 128), HAS_RESIDUAL=residual)
        return {(c.kwargs["BLOCK_M"], c.kwargs["BLOCK_N"]) for c in kernels._prune(configs, args)}

    assert kept(64) == {(64, 64)}
    assert all(m == 128 for m, _ in kept(4096)) and not any(n == 256 for _, n in kept(4096, n=1024))
    assert (128, 256) in kept(4096, residual=False, n=1024)
