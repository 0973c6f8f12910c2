"""AlphaBlender's mix, out = alpha * x_spatial + (1 - alpha) * x_temporal, in one elementwise pass.

The launcher views the tensors as (D0, D1, D2, D3) with explicit strides (their dims in the output's
memory order, merged where every operand allows, D3 the innermost) and alpha constant along D3 (one
value per (sample, frame) row, or one for all: stride 0). A program covers a [BLOCK_R, BLOCK_K]
tile: BLOCK_R rows (i0, i1, i2) flattened, BLOCK_K elements of D3, on a 1-D grid of (row block,
column block) pairs, column block fastest (one alpha for a whole tensor leaves a single row of any
length). Row coordinates are computed once per row, never per element.

Alpha is read (MIX 0: the per-row tensor is alpha, or diffusers' "fixed" mix factor) or computed from the
one-element mix factor (MIX 1, "learned": sigmoid(mix); MIX 2, "learned_with_images": 1 where the per-row
tensor, the (B, F) image-only indicator, is nonzero, else sigmoid(mix)), rounded as diffusers' AlphaBlender
rounds it: the sigmoid to the mix factor's dtype, alpha to x's dtype, and with SWITCH 1 - alpha to x's
dtype again.

Backward, one pass: dx_spatial = alpha * dout, dx_temporal = (1 - alpha) * dout, and per (row,
column block) the partial sum of dout * (x_spatial - x_temporal) times d alpha / d (the per-row tensor, or
with MIX 1 and 2 the mix factor: sigmoid', 0 on image rows; negated with SWITCH), which the launcher sums
into that tensor's gradient (torch, fixed order).
"""
import triton
import triton.language as tl


@triton.jit
def _coords(n_rows, d1, d2, n_k_blocks, BLOCK_R: tl.constexpr, BLOCK_K: tl.constexpr):
    """This program's rows, their (i0, i1, i2), its column block and columns."""
    pid = tl.program_id(0)
    pid_k = pid % n_k_blocks
    rows = (pid // n_k_blocks) * BLOCK_R + tl.arange(0, BLOCK_R)
    i2 = rows % d2
    rest = rows // d2
    return rows, rest // d1, rest % d1, i2, pid_k, pid_k * BLOCK_K + tl.arange(0, BLOCK_K)


@triton.jit
def _row_offsets(i0, i1, i2, s0, s1, s2):
    return i0.to(tl.int64) * s0 + i1.to(tl.int64) * s1 + i2.to(tl.int64) * s2


@triton.jit
def _tile(base, i0, i1, i2, cols, s0, s1, s2, s3):
    return base + _row_offsets(i0, i1, i2, s0, s1, s2)[:, None] + cols[None, :].to(tl.int64) * s3


@triton.jit
def _alpha(Alpha, Mix, rows, offsets, n_rows, X_DTYPE: tl.constexpr, BLOCK_R: tl.constexpr, MIX: tl.constexpr,
           SWITCH: tl.constexpr):
    """The rows' alpha (fp32 holding a value of x's dtype) and d alpha / d (alpha's gradient's tensor), [BLOCK_R]."""
    row_ok = rows < n_rows
    slope = tl.full((BLOCK_R,), 1.0, tl.float32)
    if MIX == 0:
        alpha = tl.load(Alpha + offsets, mask=row_ok, other=0.0).to(tl.float32)
    else:
        s = tl.sigmoid(tl.load(Mix).to(tl.float32)).to(Mix.dtype.element_ty).to(tl.float32)
        alpha = tl.full((BLOCK_R,), 1.0, tl.float32) * s
        slope = slope * (s * (1.0 - s))
        if MIX == 2:
            image = tl.load(Alpha + offsets, mask=row_ok, other=0) != 0
            alpha = tl.where(image, 1.0, alpha)
            slope = tl.where(image, 0.0, slope)
    alpha = alpha.to(X_DTYPE).to(tl.float32)
    if SWITCH:
        alpha = (1.0 - alpha).to(X_DTYPE).to(tl.float32)
        slope = -slope
    return alpha, slope


@triton.jit
def _inputs(XS, XT, Alpha, Mix, rows, i0, i1, i2, cols, n_rows, d3,
            stride_s0, stride_s1, stride_s2, stride_s3, stride_t0, stride_t1, stride_t2, stride_t3,
            stride_a0, stride_a1, stride_a2, BLOCK_R: tl.constexpr, MIX: tl.constexpr, SWITCH: tl.constexpr):
    """The tile's mask, its rows' alpha and slope ([BLOCK_R, 1], [BLOCK_R]) and x_spatial, x_temporal, all fp32."""
    mask = (rows < n_rows)[:, None] & (cols < d3)[None, :]
    alpha, slope = _alpha(Alpha, Mix, rows, _row_offsets(i0, i1, i2, stride_a0, stride_a1, stride_a2), n_rows,
                          XS.dtype.element_ty, BLOCK_R, MIX, SWITCH)
    xs = tl.load(_tile(XS, i0, i1, i2, cols, stride_s0, stride_s1, stride_s2, stride_s3), mask=mask, other=0.0)
    xt = tl.load(_tile(XT, i0, i1, i2, cols, stride_t0, stride_t1, stride_t2, stride_t3), mask=mask, other=0.0)
    return mask, alpha[:, None], slope, xs.to(tl.float32), xt.to(tl.float32)


@triton.jit
def alpha_blend_fwd_kernel(
    XS, XT, Alpha, Mix, Out,
    stride_s0, stride_s1, stride_s2, stride_s3,
    stride_t0, stride_t1, stride_t2, stride_t3,
    stride_o0, stride_o1, stride_o2, stride_o3,
    stride_a0, stride_a1, stride_a2,
    n_rows, d1, d2, d3, n_k_blocks,
    BLOCK_R: tl.constexpr, BLOCK_K: tl.constexpr, MIX: tl.constexpr, SWITCH: tl.constexpr,
):
    rows, i0, i1, i2, _, cols = _coords(n_rows, d1, d2, n_k_blocks, BLOCK_R, BLOCK_K)
    mask, alpha, _, xs, xt = _inputs(XS, XT, Alpha, Mix, rows, i0, i1, i2, cols, n_rows, d3,
                                     stride_s0, stride_s1, stride_s2, stride_s3, stride_t0, stride_t1, stride_t2,
                                     stride_t3, stride_a0, stride_a1, stride_a2, BLOCK_R, MIX, SWITCH)
    out = alpha * xs + (1.0 - alpha) * xt
    tl.store(_tile(Out, i0, i1, i2, cols, stride_o0, stride_o1, stride_o2, stride_o3),
             out.to(Out.dtype.element_ty), mask=mask)


@triton.jit
def alpha_blend_bwd_kernel(
    DOut, XS, XT, Alpha, Mix, DXS, DXT, Part,
    stride_g0, stride_g1, stride_g2, stride_g3,
    stride_s0, stride_s1, stride_s2, stride_s3,
    stride_t0, stride_t1, stride_t2, stride_t3,
    stride_o0, stride_o1, stride_o2, stride_o3,
    stride_a0, stride_a1, stride_a2,
    n_rows, d1, d2, d3, n_k_blocks,
    BLOCK_R: tl.constexpr, BLOCK_K: tl.constexpr, MIX: tl.constexpr, SWITCH: tl.constexpr,
):
    # DXS and DXT share one layout (stride_o*). Part: (n_rows, n_k_blocks) fp32.
    rows, i0, i1, i2, pid_k, cols = _coords(n_rows, d1, d2, n_k_blocks, BLOCK_R, BLOCK_K)
    mask, alpha, slope, xs, xt = _inputs(XS, XT, Alpha, Mix, rows, i0, i1, i2, cols, n_rows, d3,
                                         stride_s0, stride_s1, stride_s2, stride_s3, stride_t0, stride_t1,
                                         stride_t2, stride_t3, stride_a0, stride_a1, stride_a2, BLOCK_R, MIX, SWITCH)
    g = tl.load(_tile(DOut, i0, i1, i2, cols, stride_g0, stride_g1, stride_g2, stride_g3), mask=mask,
                other=0.0).to(tl.float32)
    out_tile = _tile(DXS, i0, i1, i2, cols, stride_o0, stride_o1, stride_o2, stride_o3)
    tl.store(out_tile, (alpha * g).to(DXS.dtype.element_ty), mask=mask)
    out_tile = _tile(DXT, i0, i1, i2, cols, stride_o0, stride_o1, stride_o2, stride_o3)
    tl.store(out_tile, ((1.0 - alpha) * g).to(DXT.dtype.element_ty), mask=mask)
    partial = tl.sum(g * (xs - xt), axis=1) * slope
    tl.store(Part + rows.to(tl.int64) * n_k_blocks + pid_k, partial, mask=rows < n_rows)
