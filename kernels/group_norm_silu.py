"""GroupNorm + SiLU on (B, C, F, P) video feature maps (P = H * W), read through strides.

Two launches:
1. statistics: one program per (sample, group, frame, pixel chunk) reduces its
   [channels of the group] x [pixels of the chunk] slice to a (mean, M2) partial, tile by tile,
   combined with Chan's formula (no sum-of-squares cancellation). At batch 1 there are
   groups x frames x chunks programs, not one per (batch, group).
2. apply: one program per (sample, group, frame, pixel block) combines the partials of its
   statistic (its frame's, or all frames' for per-sample GroupNorm) into mean and rstd, then
   writes silu((x - mean) * rstd * weight[c] + bias[c]). The programs of pixel block 0 also
   store mean and rstd for the backward.
"""
import triton
import triton.language as tl


@triton.jit
def _group_rows(g, channels_per_group, BLOCK_C: tl.constexpr):
    offs = tl.arange(0, BLOCK_C)
    return g * channels_per_group + offs, offs < channels_per_group


@triton.jit
def group_norm_stats_kernel(
    X, Mean, M2,
    stride_xb, stride_xc, stride_xf, stride_xp,
    groups, channels_per_group, frames, pixels, n_chunks, chunk_pixels,
    BLOCK_C: tl.constexpr, BLOCK_P: tl.constexpr,
):
    # Flat grid over (b, g, f, chunk), chunk fastest; partials are stored at index pid.
    pid = tl.program_id(0)
    chunk = pid % n_chunks
    rest = pid // n_chunks
    f = rest % frames
    bg = rest // frames
    g = bg % groups
    b = bg // groups
    offs_c, mask_c = _group_rows(g, channels_per_group, BLOCK_C)
    base = (X + b.to(tl.int64) * stride_xb + f.to(tl.int64) * stride_xf
            + offs_c[:, None].to(tl.int64) * stride_xc)
    p_start = chunk * chunk_pixels
    p_end = tl.minimum(p_start + chunk_pixels, pixels)
    count = tl.zeros([BLOCK_C], tl.float32).sum(0)
    mean = count
    m2 = count
    for p in range(p_start, p_end, BLOCK_P):
        offs_p = p + tl.arange(0, BLOCK_P)
        mask = mask_c[:, None] & (offs_p < p_end)[None, :]
        x = tl.load(base + offs_p[None, :].to(tl.int64) * stride_xp, mask=mask, other=0.0).to(tl.float32)
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
    p_block = pid % n_p_blocks
    rest = pid // n_p_blocks
    f = rest % frames
    bg = rest // frames
    g = bg % groups
    b = bg // groups

    # Combine the partials of this statistic: one frame's chunks, or every frame's.
    offs_k = tl.arange(0, BLOCK_PARTS)
    if PER_FRAME:
        first = (bg * frames + f) * n_chunks
        n_parts = n_chunks
    else:
        first = bg * frames * n_chunks
        n_parts = frames * n_chunks
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

    b64 = b.to(tl.int64)
    f64 = f.to(tl.int64)
    if (p_block == 0) & (PER_FRAME | (f == 0)):
        s_ptr = Stats + b64 * stride_sb + g * stride_sg + f64 * stride_sf
        tl.store(s_ptr, mean)
        tl.store(s_ptr + stride_sk, rstd)

    offs_c, mask_c = _group_rows(g, channels_per_group, BLOCK_C)
    offs_p = p_block * BLOCK_P + tl.arange(0, BLOCK_P)
    mask = mask_c[:, None] & (offs_p < pixels)[None, :]
    scale = tl.zeros([BLOCK_C], tl.float32) + rstd
    if HAS_WEIGHT:
        scale *= tl.load(Wt + offs_c * stride_w, mask=mask_c, other=0.0).to(tl.float32)
    shift = -mean * scale
    if HAS_BIAS:
        shift += tl.load(Bias + offs_c * stride_bias, mask=mask_c, other=0.0).to(tl.float32)
    c64 = offs_c[:, None].to(tl.int64)
    p64 = offs_p[None, :].to(tl.int64)
    x = tl.load(X + b64 * stride_xb + f64 * stride_xf + c64 * stride_xc + p64 * stride_xp, mask=mask, other=0.0)
    z = x.to(tl.float32) * scale[:, None] + shift[:, None]
    y = z / (1.0 + tl.exp(-z))
    tl.store(Y + b64 * stride_yb + f64 * stride_yf + c64 * stride_yc + p64 * stride_yp, y.to(Y.dtype.element_ty),
             mask=mask)
