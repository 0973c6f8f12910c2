"""Temporal convolution: a Conv1d over the frame axis at every pixel, on the video layout.

    out[b, co, f, p] = bias[co] + sum_{ci, t} W[co, ci, t] * x[b, ci, f + t - pad, p] (+ res[b, co, f, p])

An implicit GEMM: one program computes a [BLOCK_CO, BLOCK_P] tile of output frame f of one
sample, reducing over (ci, t) with ``tl.dot`` (the k taps are folded into the reduction; taps
whose input frame falls outside the clip are skipped, which is the zero padding). Tensors are
seen as (B, C, F, P) with P = H * W and one stride per axis, so contiguous (B, C, F, H, W),
channels_last_3d and frame-major views all run in place; the axis with stride 1 (pixels or
channels) gives vectorised, pipelined loads. The reduction loops step their pointers by one tile
(wrapping to the next tap / frame) rather than rebuilding addresses from the loop index, and EVEN (every
tile full, set by the launcher) drops the bounds masks. The input gradient is the same kernel
on dY with the transposed, flipped weight; the weight (and bias) gradient kernel reduces
dY x^T over (b, f, p) into per-program partials summed by the launcher (deterministic).
"""
import triton
import triton.language as tl


@triton.jit
def _steps(stride_inner, stride_outer, BLOCK: tl.constexpr, n_blocks):
    """Pointer increments of a loop over (outer index, inner block): one inner block, and the wrap from
    the last inner block of one outer index to the first of the next (int64: frame strides may pass 2**31)."""
    step = tl.cast(stride_inner, tl.int64) * BLOCK
    return step, tl.cast(stride_outer, tl.int64) - (n_blocks - 1) * step


@triton.jit
def temporal_conv_fwd_kernel(
    X, Wt, Bias, Res, Out,
    stride_xb, stride_xc, stride_xf, stride_xp,
    stride_wo, stride_wi, stride_wt, stride_bias,
    stride_rb, stride_rc, stride_rf, stride_rp,
    stride_ob, stride_oc, stride_of, stride_op,
    c_in, c_out, frames_in, frames_out, pixels, taps, pad, n_co_blocks,
    HAS_BIAS: tl.constexpr, HAS_RES: tl.constexpr, PRECISION: tl.constexpr, EVEN: tl.constexpr,
    BLOCK_CO: tl.constexpr, BLOCK_P: tl.constexpr, BLOCK_CI: tl.constexpr,
):
    # Grid: (co blocks fastest, then pixel blocks; b * frames_out + f). Neighbouring programs
    # share the same input pixels, which stay in L2 across the output-channel blocks.
    pid = tl.program_id(0)
    bf = tl.program_id(1)
    co_block = pid % n_co_blocks
    p_block = pid // n_co_blocks
    b = (bf // frames_out).to(tl.int64)
    f = bf % frames_out
    offs_co = co_block * BLOCK_CO + tl.arange(0, BLOCK_CO)
    offs_p = p_block * BLOCK_P + tl.arange(0, BLOCK_P)
    offs_ci = tl.arange(0, BLOCK_CI)
    mask_co = (offs_co < c_out) | EVEN
    mask_p = (offs_p < pixels) | EVEN

    acc = tl.zeros([BLOCK_CO, BLOCK_P], dtype=tl.float32)
    # One reduction loop over (tap, input-channel block), taps folded in: only taps whose input
    # frame f + t - pad lies in [0, frames_in); the others read zero padding and are skipped.
    n_ci_blocks = tl.cdiv(c_in, BLOCK_CI)
    t_lo = tl.maximum(pad - f, 0)
    t_hi = tl.minimum(frames_in + pad - f, taps)
    f_in = (f + t_lo - pad).to(tl.int64)
    x_ptrs = (X + b * stride_xb + f_in * stride_xf + offs_ci[:, None].to(tl.int64) * stride_xc
              + offs_p[None, :].to(tl.int64) * stride_xp)
    w_ptrs = Wt + offs_co[:, None] * stride_wo + offs_ci[None, :] * stride_wi + t_lo * stride_wt
    x_step, x_wrap = _steps(stride_xc, stride_xf, BLOCK_CI, n_ci_blocks)
    w_step, w_wrap = _steps(stride_wi, stride_wt, BLOCK_CI, n_ci_blocks)
    ci_block = 0
    for _kk in range(t_lo * n_ci_blocks, t_hi * n_ci_blocks):
        mask_ci = (offs_ci < c_in - ci_block * BLOCK_CI) | EVEN
        w = tl.load(w_ptrs, mask=mask_co[:, None] & mask_ci[None, :], other=0.0)
        x = tl.load(x_ptrs, mask=mask_ci[:, None] & mask_p[None, :], other=0.0)
        acc += tl.dot(w, x, input_precision=PRECISION)
        ci_block += 1
        wrap = ci_block == n_ci_blocks
        ci_block = tl.where(wrap, 0, ci_block)
        x_ptrs += tl.where(wrap, x_wrap, x_step)
        w_ptrs += tl.where(wrap, w_wrap, w_step)

    if HAS_BIAS:
        acc += tl.load(Bias + offs_co * stride_bias, mask=mask_co, other=0.0).to(tl.float32)[:, None]
    mask = mask_co[:, None] & mask_p[None, :]
    f64 = f.to(tl.int64)
    if HAS_RES:
        r_ptrs = (Res + b * stride_rb + f64 * stride_rf + offs_co[:, None].to(tl.int64) * stride_rc
                  + offs_p[None, :].to(tl.int64) * stride_rp)
        acc += tl.load(r_ptrs, mask=mask, other=0.0).to(tl.float32)
    o_ptrs = (Out + b * stride_ob + f64 * stride_of + offs_co[:, None].to(tl.int64) * stride_oc
              + offs_p[None, :].to(tl.int64) * stride_op)
    tl.store(o_ptrs, acc.to(Out.dtype.element_ty), mask=mask)


@triton.jit
def temporal_conv_dw_kernel(
    X, DY, DWPart, DBPart,
    stride_xb, stride_xc, stride_xf, stride_xp,
    stride_yb, stride_yc, stride_yf, stride_yp,
    stride_ps, stride_po, stride_pi, stride_pt,
    stride_qs, stride_qo,
    batch, c_in, c_out, frames_in, frames_out, pixels, pad, n_co_blocks, frames_per_split,
    HAS_BIAS: tl.constexpr, PRECISION: tl.constexpr, EVEN: tl.constexpr,
    BLOCK_CO: tl.constexpr, BLOCK_CI: tl.constexpr, BLOCK_P: tl.constexpr,
):
    # Grid: (co block fastest, then ci block; tap t; frame split). A program sums
    # dY[b, co, f, p] * x[b, ci, f + t - pad, p] over every sample, the output frames of its
    # split and every pixel, and writes one partial [BLOCK_CO, BLOCK_CI] tile for tap t.
    pid = tl.program_id(0)
    t = tl.program_id(1)
    split = tl.program_id(2)
    co_block = pid % n_co_blocks
    ci_block = pid // n_co_blocks
    offs_co = co_block * BLOCK_CO + tl.arange(0, BLOCK_CO)
    offs_ci = ci_block * BLOCK_CI + tl.arange(0, BLOCK_CI)
    offs_pb = tl.arange(0, BLOCK_P)
    mask_co = (offs_co < c_out) | EVEN
    mask_ci = (offs_ci < c_in) | EVEN
    # Frames of this tap whose input frame is inside the clip, within this split.
    f_start = split * frames_per_split
    f_lo = tl.maximum(f_start, pad - t)
    f_hi = tl.minimum(tl.minimum(f_start + frames_per_split, frames_out), frames_in + pad - t)
    # The bias gradient (all frames) is summed by the programs of tap 0 and ci block 0, which
    # walk the whole split; their x loads are masked where the input frame is padding.
    bias_prog = (t == 0) & (ci_block == 0) & HAS_BIAS
    f_lo = tl.where(bias_prog, f_start, f_lo)
    f_hi = tl.where(bias_prog, tl.minimum(f_start + frames_per_split, frames_out), f_hi)

    acc = tl.zeros([BLOCK_CO, BLOCK_CI], dtype=tl.float32)
    db = tl.zeros([BLOCK_CO], dtype=tl.float32)
    # Pointers of this tap's first frame (f_lo) and first pixel block, sample 0; one loop over
    # (frame, pixel block) per sample steps them (the pixel blocks, then the next frame).
    f_lo64 = f_lo.to(tl.int64)
    x_b = (X + offs_ci[:, None].to(tl.int64) * stride_xc + offs_pb[None, :].to(tl.int64) * stride_xp
           + (f_lo64 + t - pad) * stride_xf)
    y_b = (DY + offs_co[:, None].to(tl.int64) * stride_yc + offs_pb[None, :].to(tl.int64) * stride_yp
           + f_lo64 * stride_yf)
    n_p_blocks = tl.cdiv(pixels, BLOCK_P)
    x_step, x_wrap = _steps(stride_xp, stride_xf, BLOCK_P, n_p_blocks)
    y_step, y_wrap = _steps(stride_yp, stride_yf, BLOCK_P, n_p_blocks)
    for _b in range(0, batch):
        x_ptrs, y_ptrs = x_b, y_b
        f_in = f_lo + t - pad
        p_block = 0
        for _kk in range(f_lo * n_p_blocks, f_hi * n_p_blocks):
            p_left = pixels - p_block * BLOCK_P
            # x of a padding frame (bias programs only) is zero: no pixel of it is in range.
            x_left = tl.where((f_in >= 0) & (f_in < frames_in), p_left, 0)
            mask_p = (offs_pb < p_left) | EVEN
            dy = tl.load(y_ptrs, mask=mask_co[:, None] & mask_p[None, :], other=0.0)
            x = tl.load(x_ptrs, mask=mask_ci[:, None] & (offs_pb < x_left)[None, :], other=0.0)
            acc += tl.dot(dy, tl.trans(x), input_precision=PRECISION)
            if bias_prog:
                db += tl.sum(dy.to(tl.float32), axis=1)
            p_block += 1
            wrap = p_block == n_p_blocks
            p_block = tl.where(wrap, 0, p_block)
            f_in += tl.where(wrap, 1, 0)
            x_ptrs += tl.where(wrap, x_wrap, x_step)
            y_ptrs += tl.where(wrap, y_wrap, y_step)
        x_b += stride_xb
        y_b += stride_yb

    split64 = split.to(tl.int64)
    p_ptrs = (DWPart + split64 * stride_ps + offs_co[:, None] * stride_po + offs_ci[None, :] * stride_pi
              + t * stride_pt)
    tl.store(p_ptrs, acc, mask=mask_co[:, None] & mask_ci[None, :])
    if bias_prog:
        tl.store(DBPart + split64 * stride_qs + offs_co * stride_qo, db, mask=mask_co)


@triton.jit
def _sum_splits(Part, Out, cells, block, n_split, BLOCK: tl.constexpr):
    """Out[block's cells] = the sum over splits of Part (n_split, cells), in split order, cast to Out's dtype."""
    offs = block * BLOCK + tl.arange(0, BLOCK)
    mask = offs < cells
    acc = tl.zeros([BLOCK], tl.float32)
    ptrs = Part + offs
    for _split in range(n_split):
        acc += tl.load(ptrs, mask=mask, other=0.0)
        ptrs += cells
    tl.store(Out + offs, acc.to(Out.dtype.element_ty), mask=mask)


@triton.jit
def temporal_conv_grad_sum_kernel(DWPart, DBPart, DW, DB, n_split, dw_cells, db_cells,
                                  WEIGHT_GRAD: tl.constexpr, BLOCK: tl.constexpr):
    """dW (C_out, C_in, k) and dbias (C_out,), contiguous, in the weight dtype: the dW kernel's fp32
    partials (n_split, C_out, C_in, k) and (n_split, C_out), contiguous, summed over the splits in order
    (deterministic). Programs [0, cdiv(dw_cells, BLOCK)) take dW (with WEIGHT_GRAD), the rest dbias."""
    pid = tl.program_id(0)
    n_dw = tl.cdiv(dw_cells, BLOCK) if WEIGHT_GRAD else 0
    if pid < n_dw:
        _sum_splits(DWPart, DW, dw_cells, pid, n_split, BLOCK)
    else:
        _sum_splits(DBPart, DB, db_cells, pid - n_dw, n_split, BLOCK)
