"""GEGLU on a projection's output: y = hidden * gelu(gate), hidden and gate the two halves of the last dim.

The projection output P is read in place as a (rows, 2 * inner) matrix through its strides (a slice of a
wider buffer works; no chunk copy): hidden is columns [0, inner), gate columns [inner, 2 * inner). Every
program takes a [BLOCK_R, BLOCK_N] tile of rows x inner columns and loads the matching tiles of both
halves; with unit column stride and inner a multiple of 16 both loads are 16-byte aligned vectors.
Math in fp32, one rounding to the output dtype.

GELU, exact (``APPROX_TANH`` False, torch's default and diffusers' GEGLU):
    gelu(g) = g * Phi(g),  Phi(g) = (1 + erf(g / sqrt(2))) / 2,  gelu'(g) = Phi(g) + g * phi(g),
    phi(g) = exp(-g^2 / 2) / sqrt(2 pi).
tanh approximation (``APPROX_TANH`` True, torch's approximate="tanh"):
    gelu(g) = g * (1 + tanh(u)) / 2 = g * s,  u = sqrt(2 / pi) * (g + 0.044715 g^3),  s = sigmoid(2u),
    gelu'(g) = s + g * 2 s (1 - s) * u',  u' = sqrt(2 / pi) * (1 + 3 * 0.044715 g^2).

Backward, one pass from dY and the saved P (gelu recomputed, as Liger-Kernel's GEGLU does):
    dhidden = dY * gelu(gate),  dgate = dY * hidden * gelu'(gate),
written side by side into dP (rows, 2 * inner).
"""
import triton
import triton.language as tl

LOG2E = tl.constexpr(1.4426950408889634)
RSQRT2 = tl.constexpr(0.7071067811865476)  # 1 / sqrt(2)
RSQRT_2PI = tl.constexpr(0.3989422804014327)  # 1 / sqrt(2 pi)
SQRT_2_OVER_PI = tl.constexpr(0.7978845608028654)
TANH_CUBIC = tl.constexpr(0.044715)


@triton.jit
def _gelu_parts(g, APPROX_TANH: tl.constexpr):
    """(c, u') with gelu(g) = g * c: c = Phi(g) (exact) or sigmoid(2u) (tanh); and the factor the
    derivative needs, gelu'(g) = c + g * dc."""
    # The tensor comes first in each product: a constexpr on the left would wrap it.
    if APPROX_TANH:
        u = (g + g * g * g * TANH_CUBIC) * SQRT_2_OVER_PI
        c = 1.0 / (1.0 + tl.exp2(u * (-2.0 * LOG2E)))  # exp2 -> inf gives 0, never NaN
        dc = c * (1.0 - c) * (g * g * (3.0 * TANH_CUBIC) + 1.0) * (2.0 * SQRT_2_OVER_PI)
    else:
        c = (tl.math.erf(g * RSQRT2) + 1.0) * 0.5
        dc = tl.exp2(g * g * (-0.5 * LOG2E)) * RSQRT_2PI
    return c, dc


@triton.jit
def _tile(pid, rows, inner, n_col_blocks, BLOCK_R: tl.constexpr, BLOCK_N: tl.constexpr):
    """Row and column offsets (int64) of program ``pid``'s tile, column blocks fastest, and its mask."""
    offs_r = (pid // n_col_blocks) * BLOCK_R + tl.arange(0, BLOCK_R)
    offs_n = (pid % n_col_blocks) * BLOCK_N + tl.arange(0, BLOCK_N)
    mask = (offs_r < rows)[:, None] & (offs_n < inner)[None, :]
    return offs_r.to(tl.int64)[:, None], offs_n.to(tl.int64)[None, :], mask


@triton.jit
def _load_halves(P, r, n, mask, inner, stride_pr, stride_pc):
    """hidden and gate tiles of P (fp32): columns n and inner + n of rows r."""
    row = P + r * stride_pr
    hidden = tl.load(row + n * stride_pc, mask=mask, other=0.0).to(tl.float32)
    gate = tl.load(row + (n + inner) * stride_pc, mask=mask, other=0.0).to(tl.float32)
    return hidden, gate


@triton.jit
def geglu_fwd_kernel(
    P, Y,
    stride_pr, stride_pc, stride_yr, stride_yc,
    rows, inner, n_col_blocks,
    APPROX_TANH: tl.constexpr, BLOCK_R: tl.constexpr, BLOCK_N: tl.constexpr,
):
    r, n, mask = _tile(tl.program_id(0), rows, inner, n_col_blocks, BLOCK_R, BLOCK_N)
    hidden, gate = _load_halves(P, r, n, mask, inner, stride_pr, stride_pc)
    c, _ = _gelu_parts(gate, APPROX_TANH)
    tl.store(Y + r * stride_yr + n * stride_yc, (hidden * gate * c).to(Y.dtype.element_ty), mask=mask)


@triton.jit
def geglu_bwd_kernel(
    DY, P, DP,
    stride_gr, stride_gc, stride_pr, stride_pc, stride_dr, stride_dc,
    rows, inner, n_col_blocks,
    APPROX_TANH: tl.constexpr, BLOCK_R: tl.constexpr, BLOCK_N: tl.constexpr,
):
    r, n, mask = _tile(tl.program_id(0), rows, inner, n_col_blocks, BLOCK_R, BLOCK_N)
    hidden, gate = _load_halves(P, r, n, mask, inner, stride_pr, stride_pc)
    dy = tl.load(DY + r * stride_gr + n * stride_gc, mask=mask, other=0.0).to(tl.float32)
    c, dc = _gelu_parts(gate, APPROX_TANH)
    d_row = DP + r * stride_dr
    tl.store(d_row + n * stride_dc, (dy * gate * c).to(DP.dtype.element_ty), mask=mask)
    tl.store(d_row + (n + inner) * stride_dc, (dy * hidden * (c + gate * dc)).to(DP.dtype.element_ty), mask=mask)
