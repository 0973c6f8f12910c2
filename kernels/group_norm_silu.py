"""GroupNorm + SiLU on (B, C, F, P) video feature maps (P = H * W), read through strides.

A "row" is (sample b, group g, frame f); a statistic covers one row (per-frame GroupNorm) or
all frames of (b, g) (GroupNorm on the 5D tensor). Every program works on one row and a
[channels of the group] x [pixels] tile, so at batch 1 there are groups x frames x pixel
blocks programs, not one per (batch, group).

Forward, two launches:
1. statistics: one program per (row, pixel chunk) reduces its slice to a (mean, M2) partial,
   tile by tile, combined with Chan's formula (no sum-of-squares cancellation).
2. apply: one program per (row, pixel block) combines its statistic's partials into mean and
   rstd, then writes silu((x - mean) * rstd * weight[c] + bias[c]). The programs of pixel
   block 0 also store mean and rstd for the backward.

Backward, two launches, with xh = (x - mean) * rstd, z = xh * w + b, dz = dy * silu'(z):
1. reduce: one program per (row, pixel chunk) writes per-channel partial sums of dz * xh and dz
   (the weight and bias gradients, summed over (b, f, chunks) by the launcher).
2. apply: one program per (row, pixel block) combines the partials of its statistic into the
   group means of dz * w and dz * w * xh and writes dx = rstd * (dz * w - mean(dz w) - xh * mean(dz w xh)).
"""
import triton
import triton.language as tl


@triton.jit
def _row(pid, n_inner, frames, groups):
    """Splits a flat program id over (b, g, f, inner), inner fastest."""
    inner = pid % n_inner
    rest = pid // n_inner
    f = rest % frames
    bg = rest // frames
    return inner, f, bg % groups, bg // groups, bg


@triton.jit
def _tile_ptrs(base, b, f, offs_c, offs_p, stride_b, stride_c, stride_f, stride_p):
    return (base + b.to(tl.int64) * stride_b + f.to(tl.int64) * stride_f + offs_c[:, None].to(tl.int64) * stride_c
            + offs_p[None, :].to(tl.int64) * stride_p)


@triton.jit
def _group_channels(g, channels_per_group, BLOCK_C: tl.constexpr):
    local = tl.arange(0, BLOCK_C)
    return g * channels_per_group + local, local, local < channels_per_group


@triton.jit
def _affine(Wt, Bias, offs_c, mask_c, stride_w, stride_bias, HAS_WEIGHT: tl.constexpr, HAS_BIAS: tl.constexpr,
            BLOCK_C: tl.constexpr):
    """Per-channel weight and bias as fp32 [BLOCK_C] vectors (1 and 0 when absent)."""
    w = tl.full([BLOCK_C], 1.0, tl.float32)
    if HAS_WEIGHT:
        w = tl.load(Wt + offs_c * stride_w, mask=mask_c, other=0.0).to(tl.float32)
    bias = tl.zeros([BLOCK_C], tl.float32)
    if HAS_BIAS:
        bias = tl.load(Bias + offs_c * stride_bias, mask=mask_c, other=0.0).to(tl.float32)
    return w, bias


@triton.jit
def _sigmoid(z):
    e = tl.exp(-tl.abs(z))  # never overflows
    return tl.where(z >= 0, 1.0 / (1.0 + e), e / (1.0 + e))


@triton.jit
def _parts(bg, f, frames, n_chunks, PER_FRAME: tl.constexpr):
    """First partial index and number of partials of the statistic of row (bg, f)."""
    if PER_FRAME:
        first = (bg * frames + f) * n_chunks
        count = n_chunks
    else:
        first = bg * frames * n_chunks
        count = frames * n_chunks
    return first, count


@triton.jit
def group_norm_stats_kernel(
    X, Mean, M2,
    stride_xb, stride_xc, stride_xf, stride_xp,
    groups, channels_per_group, frames, pixels, n_chunks, chunk_pixels,
    BLOCK_C: tl.constexpr, BLOCK_P: tl.constexpr,
):
    pid = tl.program_id(0)
    chunk, f, g, b, bg = _row(pid, n_chunks, frames, groups)
    offs_c, local, mask_c = _group_channels(g, channels_per_group, BLOCK_C)
    p_start = chunk * chunk_pixels
    p_end = tl.minimum(p_start + chunk_pixels, pixels)
    count = tl.zeros([BLOCK_C], tl.float32).sum(0)
    mean = count
    m2 = count
    for p in range(p_start, p_end, BLOCK_P):
        offs_p = p + tl.arange(0, BLOCK_P)
        mask = mask_c[:, None] & (offs_p < p_end)[None, :]
        x = tl.load(_tile_ptrs(X, b, f, offs_c, offs_p, stride_xb, stride_xc, stride_xf, stride_xp), mask=mask,
                    other=0.0).to(tl.float32)
        n_t = tl.sum(tl.sum(mask.to(tl.float32), axis=1), axis=0)
        mean_t = tl.sum(tl.sum(x, axis=1), axis=0) / n_t
        d = tl.where(mask, x - mean_t, 0.0)
        m2_t = tl.sum(tl.sum(d * d, axis=1), axis=0)
        total = count + n_t
        delta = mean_t - mean
        mean += delta * (n_t / total)
        m2 += m2_t + delta * delta * (count * n_t / total)
        count = total
    tl.store(Mean + pid, mean)
    tl.store(M2 + pid, m2)


@triton.jit
def group_norm_silu_apply_kernel(
    X, Wt, Bias, Y, Mean, M2, Stats,
    stride_xb, stride_xc, stride_xf, stride_xp,
    stride_yb, stride_yc, stride_yf, stride_yp,
    stride_sk, stride_sb, stride_sg, stride_sf, stride_w, stride_bias,
    groups, channels_per_group, frames, pixels, n_chunks, chunk_pixels, n_p_blocks, eps,
    PER_FRAME: tl.constexpr, HAS_WEIGHT: tl.constexpr, HAS_BIAS: tl.constexpr,
    BLOCK_C: tl.constexpr, BLOCK_P: tl.constexpr, BLOCK_PARTS: tl.constexpr,
):
    pid = tl.program_id(0)
    p_block, f, g, b, bg = _row(pid, n_p_blocks, frames, groups)

    # Combine the (count, mean, M2) partials of this row's statistic.
    first, n_parts = _parts(bg, f, frames, n_chunks, PER_FRAME)
    offs_k = tl.arange(0, BLOCK_PARTS)
    mask_k = offs_k < n_parts
    chunk = offs_k % n_chunks
    counts = (tl.minimum(chunk_pixels, pixels - chunk * chunk_pixels) * channels_per_group).to(tl.float32)
    counts = tl.where(mask_k, counts, 0.0)
    means = tl.load(Mean + first + offs_k, mask=mask_k, other=0.0)
    m2s = tl.load(M2 + first + offs_k, mask=mask_k, other=0.0)
    total = tl.sum(counts, axis=0)
    mean = tl.sum(counts * means, axis=0) / total
    dev = means - mean
    var = (tl.sum(m2s, axis=0) + tl.sum(counts * dev * dev, axis=0)) / total
    rstd = 1.0 / tl.sqrt(var + eps)

    if (p_block == 0) & ((f == 0) | PER_FRAME):
        s_ptr = Stats + b.to(tl.int64) * stride_sb + g * stride_sg + f * stride_sf
        tl.store(s_ptr, mean)
        tl.store(s_ptr + stride_sk, rstd)

    offs_c, local, mask_c = _group_channels(g, channels_per_group, BLOCK_C)
    offs_p = p_block * BLOCK_P + tl.arange(0, BLOCK_P)
    mask = mask_c[:, None] & (offs_p < pixels)[None, :]
    w, bias = _affine(Wt, Bias, offs_c, mask_c, stride_w, stride_bias, HAS_WEIGHT, HAS_BIAS, BLOCK_C)
    scale = w * rstd
    shift = bias - mean * scale
    x = tl.load(_tile_ptrs(X, b, f, offs_c, offs_p, stride_xb, stride_xc, stride_xf, stride_xp), mask=mask, other=0.0)
    z = x.to(tl.float32) * scale[:, None] + shift[:, None]
    tl.store(_tile_ptrs(Y, b, f, offs_c, offs_p, stride_yb, stride_yc, stride_yf, stride_yp),
             (z * _sigmoid(z)).to(Y.dtype.element_ty), mask=mask)


@triton.jit
def _grad_tile(X, DY, b, f, offs_c, offs_p, mask, w, bias, mean, rstd,
               stride_xb, stride_xc, stride_xf, stride_xp, stride_gb, stride_gc, stride_gf, stride_gp):
    """xh and dz = dy * silu'(z) on one tile, in fp32 (0 where masked)."""
    x = tl.load(_tile_ptrs(X, b, f, offs_c, offs_p, stride_xb, stride_xc, stride_xf, stride_xp), mask=mask,
                other=0.0).to(tl.float32)
    dy = tl.load(_tile_ptrs(DY, b, f, offs_c, offs_p, stride_gb, stride_gc, stride_gf, stride_gp), mask=mask,
                 other=0.0).to(tl.float32)
    xh = (x - mean) * rstd
    z = xh * w[:, None] + bias[:, None]
    s = _sigmoid(z)
    return xh, dy * s * (1.0 + z * (1.0 - s))


@triton.jit
def _row_setup(Stats, Wt, Bias, b, g, f, stride_sk, stride_sb, stride_sg, stride_sf, stride_w, stride_bias,
               channels_per_group, HAS_WEIGHT: tl.constexpr, HAS_BIAS: tl.constexpr, BLOCK_C: tl.constexpr):
    """A backward row's saved mean and rstd, its group's channels and their affine parameters."""
    s_ptr = Stats + b.to(tl.int64) * stride_sb + g * stride_sg + f * stride_sf
    offs_c, local, mask_c = _group_channels(g, channels_per_group, BLOCK_C)
    w, bias = _affine(Wt, Bias, offs_c, mask_c, stride_w, stride_bias, HAS_WEIGHT, HAS_BIAS, BLOCK_C)
    return tl.load(s_ptr), tl.load(s_ptr + stride_sk), offs_c, local, mask_c, w, bias


@triton.jit
def group_norm_silu_bwd_reduce_kernel(
    X, DY, Wt, Bias, Stats, DWPart, DBPart,
    stride_xb, stride_xc, stride_xf, stride_xp,
    stride_gb, stride_gc, stride_gf, stride_gp,
    stride_sk, stride_sb, stride_sg, stride_sf, stride_w, stride_bias, stride_part,
    groups, channels_per_group, frames, pixels, n_chunks, chunk_pixels,
    HAS_WEIGHT: tl.constexpr, HAS_BIAS: tl.constexpr, BLOCK_C: tl.constexpr, BLOCK_P: tl.constexpr,
):
    # stride_sf is 0 for per-sample statistics (one entry per (b, g)).
    pid = tl.program_id(0)
    chunk, f, g, b, bg = _row(pid, n_chunks, frames, groups)
    mean, rstd, offs_c, local, mask_c, w, bias = _row_setup(
        Stats, Wt, Bias, b, g, f, stride_sk, stride_sb, stride_sg, stride_sf, stride_w, stride_bias,
        channels_per_group, HAS_WEIGHT, HAS_BIAS, BLOCK_C)
    p_start = chunk * chunk_pixels
    p_end = tl.minimum(p_start + chunk_pixels, pixels)
    sum_dz_xh = tl.zeros([BLOCK_C], tl.float32)
    sum_dz = tl.zeros([BLOCK_C], tl.float32)
    for p in range(p_start, p_end, BLOCK_P):
        offs_p = p + tl.arange(0, BLOCK_P)
        mask = mask_c[:, None] & (offs_p < p_end)[None, :]
        xh, dz = _grad_tile(X, DY, b, f, offs_c, offs_p, mask, w, bias, mean, rstd,
                            stride_xb, stride_xc, stride_xf, stride_xp, stride_gb, stride_gc, stride_gf, stride_gp)
        sum_dz_xh += tl.sum(dz * xh, axis=1)
        sum_dz += tl.sum(dz, axis=1)
    row = pid.to(tl.int64) * stride_part
    tl.store(DWPart + row + local, sum_dz_xh, mask=mask_c)
    tl.store(DBPart + row + local, sum_dz, mask=mask_c)


@triton.jit
def group_norm_silu_bwd_apply_kernel(
    X, DY, Wt, Bias, Stats, DWPart, DBPart, DX,
    stride_xb, stride_xc, stride_xf, stride_xp,
    stride_gb, stride_gc, stride_gf, stride_gp,
    stride_db, stride_dc, stride_df, stride_dp,
    stride_sk, stride_sb, stride_sg, stride_sf, stride_w, stride_bias, stride_part,
    groups, channels_per_group, frames, pixels, n_chunks, n_p_blocks,
    PER_FRAME: tl.constexpr, HAS_WEIGHT: tl.constexpr, HAS_BIAS: tl.constexpr,
    BLOCK_C: tl.constexpr, BLOCK_P: tl.constexpr, BLOCK_PARTS: tl.constexpr,
):
    pid = tl.program_id(0)
    p_block, f, g, b, bg = _row(pid, n_p_blocks, frames, groups)
    mean, rstd, offs_c, local, mask_c, w, bias = _row_setup(
        Stats, Wt, Bias, b, g, f, stride_sk, stride_sb, stride_sg, stride_sf, stride_w, stride_bias,
        channels_per_group, HAS_WEIGHT, HAS_BIAS, BLOCK_C)

    # Group means of dxh = dz * w and dxh * xh over the statistic, from the per-channel partials.
    first, n_parts = _parts(bg, f, frames, n_chunks, PER_FRAME)
    offs_k = tl.arange(0, BLOCK_PARTS)
    part_ptrs = (first + offs_k)[:, None].to(tl.int64) * stride_part + local[None, :]
    part_mask = (offs_k < n_parts)[:, None] & mask_c[None, :]
    sum_dz_xh = tl.sum(tl.load(DWPart + part_ptrs, mask=part_mask, other=0.0), axis=0)
    sum_dz = tl.sum(tl.load(DBPart + part_ptrs, mask=part_mask, other=0.0), axis=0)
    count = tl.full([], 1.0, tl.float32) * channels_per_group * pixels * (n_parts // n_chunks)
    mean_dxh = tl.sum(w * sum_dz, axis=0) / count
    mean_dxh_xh = tl.sum(w * sum_dz_xh, axis=0) / count

    offs_p = p_block * BLOCK_P + tl.arange(0, BLOCK_P)
    mask = mask_c[:, None] & (offs_p < pixels)[None, :]
    xh, dz = _grad_tile(X, DY, b, f, offs_c, offs_p, mask, w, bias, mean, rstd,
                        stride_xb, stride_xc, stride_xf, stride_xp, stride_gb, stride_gc, stride_gf, stride_gp)
    dx = rstd * (dz * w[:, None] - mean_dxh - xh * mean_dxh_xh)
    tl.store(_tile_ptrs(DX, b, f, offs_c, offs_p, stride_db, stride_dc, stride_df, stride_dp),
             dx.to(DX.dtype.element_ty), mask=mask)
