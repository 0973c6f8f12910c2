"""Temporal convolution: a Conv1d over the frame axis at every pixel, on the video layout.

    out[b, co, f, p] = bias[co] + sum_{ci, t} W[co, ci, t] * x[b, ci, f + t - pad, p] (+ res[b, co, f, p])

An implicit GEMM: one program computes a [BLOCK_CO, BLOCK_P] tile of output frame f of one
sample, reducing over (ci, t) with ``tl.dot`` (the k taps are folded into the reduction; taps
whose input frame falls outside the clip are skipped, which is the zero padding). Tensors are
seen as (B, C, F, P) with P = H * W and one stride per axis, so contiguous (B, C, F, H, W),
channels_last_3d and frame-major views all run in place; the axis with stride 1 (pixels or
channels) gives vectorised, pipelined loads. The input gradient is the same kernel
on dY with the transposed, flipped weight; the weight (and bias) gradient kernel reduces
dY x^T over (b, f, p) into per-program partials summed by the launcher (deterministic).
"""
import triton
import triton.language as tl


@triton.jit
def temporal_conv_fwd_kernel(
    X, Wt, Bias, Res, Out,
    stride_xb, stride_xc, stride_xf, stride_xp,
    stride_wo, stride_wi, stride_wt, stride_bias,
    stride_rb, stride_rc, stride_rf, stride_rp,
    stride_ob, stride_oc, stride_of, stride_op,
    c_in, c_out, frames_in, frames_out, pixels, taps, pad, n_co_blocks,
    HAS_BIAS: tl.constexpr, HAS_RES: tl.constexpr, PRECISION: tl.constexpr,
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
    mask_co = offs_co < c_out
    mask_p = offs_p < pixels

    acc = tl.zeros([BLOCK_CO, BLOCK_P], dtype=tl.float32)
    # One reduction loop over (tap, input-channel block), taps folded in: only taps whose input
    # frame f + t - pad lies in [0, frames_in); the others read zero padding and are skipped.
    n_ci_blocks = tl.cdiv(c_in, BLOCK_CI)
    t_lo = tl.maximum(pad - f, 0)
    t_hi = tl.minimum(frames_in + pad - f, taps)
    x_base = X + b * stride_xb + offs_p[None, :].to(tl.int64) * stride_xp
    w_base = Wt + offs_co[:, None] * stride_wo
    for kk in range(t_lo * n_ci_blocks, t_hi * n_ci_blocks):
        t = kk // n_ci_blocks
        ci = (kk % n_ci_blocks) * BLOCK_CI + offs_ci
        mask_ci = ci < c_in
        f_in = (f + t - pad).to(tl.int64)
        w = tl.load(w_base + ci[None, :] * stride_wi + t * stride_wt, mask=mask_co[:, None] & mask_ci[None, :],
                    other=0.0)
        x = tl.load(x_base + f_in * stride_xf + ci[:, None].to(tl.int64) * stride_xc,
                    mask=mask_ci[:, None] & mask_p[None, :], other=0.0)
        acc += tl.dot(w, x, input_precision=PRECISION)

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
    HAS_BIAS: tl.constexpr, PRECISION: tl.constexpr,
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
    mask_co = offs_co < c_out
    mask_ci = offs_ci < c_in
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
    x_b = X + offs_ci[:, None].to(tl.int64) * stride_xc
    y_b = DY + offs_co[:, None].to(tl.int64) * stride_yc
    n_p_blocks = tl.cdiv(pixels, BLOCK_P)
    for _b in range(0, batch):
        # One loop over (frame, pixel block) of this sample.
        for kk in range(f_lo * n_p_blocks, f_hi * n_p_blocks):
            f = (kk // n_p_blocks).to(tl.int64)  # f * stride_f may pass 2**31 (frame-major views)
            offs_p = (kk % n_p_blocks) * BLOCK_P + offs_pb
            mask_p = offs_p < pixels
            f_in = f + t - pad
            f_rows = offs_ci * 0 + f_in  # a vector: scalar masks lose their dtype in the interpreter
            x_rows = mask_ci & (f_rows >= 0) & (f_rows < frames_in)
            dy = tl.load(y_b + f * stride_yf + offs_p[None, :].to(tl.int64) * stride_yp,
                         mask=mask_co[:, None] & mask_p[None, :], other=0.0)
            x = tl.load(x_b + f_in * stride_xf + offs_p[None, :].to(tl.int64) * stride_xp,
                        mask=x_rows[:, None] & mask_p[None, :], other=0.0)
            acc += tl.dot(dy, tl.trans(x), input_precision=PRECISION)
            if bias_prog:
                db += tl.sum(dy.to(tl.float32), axis=1)
        x_b += stride_xb
        y_b += stride_yb

    split64 = split.to(tl.int64)
    p_ptrs = (DWPart + split64 * stride_ps + offs_co[:, None] * stride_po + offs_ci[None, :] * stride_pi
              + t * stride_pt)
    tl.store(p_ptrs, acc, mask=mask_co[:, None] & mask_ci[None, :])
    if bias_prog:
        tl.store(DBPart + split64 * stride_qs + offs_co * stride_qo, db, mask=mask_co)
