"""Residual add + LayerNorm over the last dim of (B, N, C) tokens, read through strides.

A transformer block's ``h = sublayer_out + h; normed = LayerNorm(h)``: one pass reads both addends once
and writes the new residual stream ``s`` and ``LayerNorm(s)``, instead of an add kernel writing ``s``
and a LayerNorm kernel reading it back. Rows are the B * N tokens; each program holds BLOCK_M whole
rows (BLOCK_C >= C lanes, masked past C) in registers, so the row length C is a runtime value.

Forward: s = x + residual, rounded to the output dtype (the value the residual stream keeps; the norm
is of that value, as an add followed by a LayerNorm computes it); without a residual (HAS_RES False)
s is x, read and not written; mean and rstd in fp32, two passes over the registers (no sum-of-squares
cancellation); saved per row for the backward. With a frame table (HAS_FRAME_ADD: AnimateDiff's
positional embedding over frames, (F, C)), row r of sample b = r // N gets table row b % F added to its
normed value before the one rounding to the output dtype.

Backward, with xh = (s - mean) * rstd, g = dnormed * w:
    ds_total = dsum + rstd * (g - mean_c(g) - xh * mean_c(g * xh))     (the gradient of x and of residual)
    dw = sum_rows dnormed * xh,  db = sum_rows dnormed
Each program walks a fixed range of rows and writes its own dw / db partial row; the launcher sums
the partials in a fixed order (deterministic, no atomics).
"""
import triton
import triton.language as tl


@triton.jit
def _row_offsets(rows, n_tokens, stride_b, stride_n):
    """int64 offsets of the rows of a (B, N, C) tensor, row r = b * N + n."""
    rows64 = rows.to(tl.int64)
    return (rows64 // n_tokens) * stride_b + (rows64 % n_tokens) * stride_n


@triton.jit
def _affine(Wt, Bias, offs_c, mask_c, stride_w, stride_bias, HAS_WEIGHT: tl.constexpr, HAS_BIAS: tl.constexpr):
    w = tl.full(offs_c.shape, 1.0, tl.float32)
    if HAS_WEIGHT:
        w = tl.load(Wt + offs_c * stride_w, mask=mask_c, other=0.0).to(tl.float32)
    b = tl.zeros(offs_c.shape, tl.float32)
    if HAS_BIAS:
        b = tl.load(Bias + offs_c * stride_bias, mask=mask_c, other=0.0).to(tl.float32)
    return w, b


@triton.jit
def add_layer_norm_fwd_kernel(
    X, R, Wt, Bias, FrameAdd, S, Y, Stats,
    stride_xb, stride_xn, stride_xc,
    stride_rb, stride_rn, stride_rc,
    stride_w, stride_bias, stride_ff, stride_fc,
    n_rows, n_tokens, width, frames, eps,
    HAS_RES: tl.constexpr, HAS_WEIGHT: tl.constexpr, HAS_BIAS: tl.constexpr, HAS_FRAME_ADD: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_C: tl.constexpr,
):
    # S, Y: dense (n_rows, width); Stats: (2, n_rows) fp32 mean and rstd; FrameAdd: (frames, width).
    pid = tl.program_id(0)
    rows = pid * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_c = tl.arange(0, BLOCK_C)
    mask_c = offs_c < width
    mask_m = rows < n_rows
    mask = mask_m[:, None] & mask_c[None, :]
    cols = offs_c.to(tl.int64)[None, :]
    x = tl.load(X + _row_offsets(rows, n_tokens, stride_xb, stride_xn)[:, None] + cols * stride_xc, mask=mask,
                other=0.0)
    out = rows.to(tl.int64)[:, None] * width + cols
    if HAS_RES:
        r = tl.load(R + _row_offsets(rows, n_tokens, stride_rb, stride_rn)[:, None] + cols * stride_rc, mask=mask,
                    other=0.0)
        s = (x.to(tl.float32) + r.to(tl.float32)).to(S.dtype.element_ty)
        tl.store(S + out, s, mask=mask)
        s32 = s.to(tl.float32)
    else:
        s32 = x.to(tl.float32)
    mean = tl.sum(s32, axis=1) / width
    d = tl.where(mask, s32 - mean[:, None], 0.0)
    rstd = 1.0 / tl.sqrt(tl.sum(d * d, axis=1) / width + eps)
    w, b = _affine(Wt, Bias, offs_c, mask_c, stride_w, stride_bias, HAS_WEIGHT, HAS_BIAS)
    y = d * rstd[:, None] * w[None, :] + b[None, :]
    if HAS_FRAME_ADD:
        frame = (rows // n_tokens) % frames
        y += tl.load(FrameAdd + frame[:, None] * stride_ff + offs_c[None, :] * stride_fc, mask=mask,
                     other=0.0).to(tl.float32)
    tl.store(Y + out, y.to(Y.dtype.element_ty), mask=mask)
    tl.store(Stats + rows, mean, mask=mask_m)
    tl.store(Stats + n_rows + rows, rstd, mask=mask_m)


@triton.jit
def add_layer_norm_bwd_kernel(
    DS, DY, S, Wt, Stats, DX, DWPart, DBPart,
    stride_dsb, stride_dsn, stride_dsc,
    stride_dyb, stride_dyn, stride_dyc,
    stride_w,
    n_rows, n_tokens, width, rows_per_program,
    HAS_DSUM: tl.constexpr, HAS_WEIGHT: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_C: tl.constexpr,
):
    # S, DX: dense (n_rows, width); DWPart, DBPart: (programs, width) fp32, one row per program.
    pid = tl.program_id(0)
    offs_c = tl.arange(0, BLOCK_C)
    mask_c = offs_c < width
    cols = offs_c.to(tl.int64)[None, :]
    w, _ = _affine(Wt, Wt, offs_c, mask_c, stride_w, stride_w, HAS_WEIGHT, False)
    dw = tl.zeros([BLOCK_C], tl.float32)
    db = tl.zeros([BLOCK_C], tl.float32)
    first = pid * rows_per_program
    last = tl.minimum(first + rows_per_program, n_rows)
    for start in range(first, last, BLOCK_M):
        rows = start + tl.arange(0, BLOCK_M)
        mask_m = rows < last
        mask = mask_m[:, None] & mask_c[None, :]
        out = rows.to(tl.int64)[:, None] * width + cols
        mean = tl.load(Stats + rows, mask=mask_m, other=0.0)
        rstd = tl.load(Stats + n_rows + rows, mask=mask_m, other=0.0)
        s = tl.load(S + out, mask=mask, other=0.0).to(tl.float32)
        xh = tl.where(mask, (s - mean[:, None]) * rstd[:, None], 0.0)
        dy = tl.load(DY + _row_offsets(rows, n_tokens, stride_dyb, stride_dyn)[:, None] + cols * stride_dyc,
                     mask=mask, other=0.0).to(tl.float32)
        g = dy * w[None, :]
        c_g = tl.sum(g, axis=1) / width
        c_gx = tl.sum(g * xh, axis=1) / width
        dx = rstd[:, None] * (g - c_g[:, None] - xh * c_gx[:, None])
        if HAS_DSUM:
            dx += tl.load(DS + _row_offsets(rows, n_tokens, stride_dsb, stride_dsn)[:, None] + cols * stride_dsc,
                          mask=mask, other=0.0).to(tl.float32)
        tl.store(DX + out, dx.to(DX.dtype.element_ty), mask=mask)
        dw += tl.sum(dy * xh, axis=0)
        db += tl.sum(dy, axis=0)
    part = pid.to(tl.int64) * width + offs_c
    tl.store(DWPart + part, dw, mask=mask_c)
    tl.store(DBPart + part, db, mask=mask_c)
