"""GroupNorm, with or without SiLU, on (B, C, F, P) video feature maps (P = H * W), read through
strides, of x or of x + add with add a per-(sample, channel[, frame]) value (a ResNet's time
embedding) never materialised: adding a constant to a channel shifts that channel's mean and
nothing else, so every kernel folds ``add`` into the channel's mean (HAS_ADD).

Every kernel works on [BLOCK_C, BLOCK_P] tiles of one (sample b, frame f): BLOCK_C channels
(a power of two dividing C, so no lane is padded; channel blocks need not follow group
boundaries) by BLOCK_P pixels. Whichever axis has unit stride (pixels for contiguous and
frame-major views, channels for channels_last_3d) is the vectorised one. Statistics are kept
per channel first and combined per group after, so a group of 10, 20 or 40 channels costs no
idle lanes. A statistic covers (group, frame) (per-frame GroupNorm) or (group, all frames)
(GroupNorm on the 5D tensor).

Forward, one launch where the statistics are per frame and one program can hold whole groups of one
frame with enough such programs to fill the GPU (group_norm_silu_group_kernel: two passes over the
group's pixels, the second from cache), else two launches:
1. stats: one program per (b, f, channel block, pixel chunk) accumulates x - shift and its
   square per lane (shift: the channel's first pixel of the chunk, so no sum-of-squares
   cancellation) and reduces once at the end into per-channel (mean, M2) partials.
2. apply: one program per tile combines the partials of the groups its channel block touches
   with Chan's formula (fixed order: every program of a group gets the same numbers)
   and writes act((x - mean) * rstd * weight[c] + bias[c]), act SiLU or the identity (SILU). The
   program holding a group's first channel at pixel block 0 (and frame 0 for statistics over all
   frames) stores that group's mean and rstd, which the backward reads: one writer per statistic.

Backward, with xh = (x - mean) * rstd, z = xh * w + b, dz = dy * act'(z), three launches:
1. reduce: per-channel partial sums of dz * xh and dz per (b, f, channel block, pixel chunk),
   accumulated per lane and reduced once (with HAS_ADD also the per-channel sums of xh, from which
   the launcher forms add's gradient, the sum of dx);
2. coef: the partials summed in a fixed order into the group means of dz * w and dz * w * xh (one
   program per statistic) and the weight and bias gradients (one program per channel block);
3. apply: dx = rstd * (dz * w - mean(dz w) - xh * mean(dz w xh)), one program per tile.
"""
import triton
import triton.language as tl

LOG2E = tl.constexpr(1.4426950408889634)


@triton.jit
def _sigmoid(z):
    # exp2 (MUFU.EX2) and an approximate division (MUFU.RCP); exp2 -> inf gives 0, never NaN.
    return 1.0 / (1.0 + tl.exp2(-z * LOG2E))


@triton.jit
def _tile_coords(pid, n_c_blocks, n_inner, frames, BLOCK_C: tl.constexpr):
    """Splits a flat program id over (b, f, inner, channel block), channel block fastest; returns
    the channel offsets, inner index, f, b and the (b, f, inner) row."""
    c_block = pid % n_c_blocks
    row = pid // n_c_blocks
    inner = row % n_inner
    bf = row // n_inner
    offs_c = c_block * BLOCK_C + tl.arange(0, BLOCK_C)
    return offs_c, inner, bf % frames, bf // frames, row


@triton.jit
def _channel_ptrs(base, b, f, offs_c, stride_b, stride_c, stride_f):
    return base + b.to(tl.int64) * stride_b + f.to(tl.int64) * stride_f + offs_c.to(tl.int64) * stride_c


@triton.jit
def _affine(Wt, Bias, offs_c, stride_w, stride_bias, HAS_WEIGHT: tl.constexpr, HAS_BIAS: tl.constexpr):
    """Per-channel fp32 weight and bias (1 and 0 when absent)."""
    w = tl.full(offs_c.shape, 1.0, tl.float32)
    if HAS_WEIGHT:
        w = tl.load(Wt + offs_c * stride_w).to(tl.float32)
    bias = tl.zeros(offs_c.shape, tl.float32)
    if HAS_BIAS:
        bias = tl.load(Bias + offs_c * stride_bias).to(tl.float32)
    return w, bias


@triton.jit
def _channel_params(Wt, Bias, Stats, Add, b, f, offs_c, channels_per_group, stride_w, stride_bias,
                    stride_sk, stride_sb, stride_sg, stride_sf, stride_ab, stride_ac, stride_af,
                    HAS_WEIGHT: tl.constexpr, HAS_BIAS: tl.constexpr, HAS_ADD: tl.constexpr):
    """Per-channel fp32 weight, bias (1 and 0 when absent), the mean and rstd of each channel's group
    and the group index; with HAS_ADD the mean is the one x itself sees: mean(x + add) - add."""
    g = offs_c // channels_per_group
    s_ptrs = Stats + b.to(tl.int64) * stride_sb + g * stride_sg + f * stride_sf
    mean = tl.load(s_ptrs)
    if HAS_ADD:
        mean -= tl.load(_channel_ptrs(Add, b, f, offs_c, stride_ab, stride_ac, stride_af)).to(tl.float32)
    rstd = tl.load(s_ptrs + stride_sk)
    w, bias = _affine(Wt, Bias, offs_c, stride_w, stride_bias, HAS_WEIGHT, HAS_BIAS)
    return w, bias, mean, rstd, g


@triton.jit
def _channel_moments(c_ptrs, mask_c, p_start, p_end, stride_xp, MASK_C: tl.constexpr, BLOCK_C: tl.constexpr,
                     BLOCK_P: tl.constexpr):
    """(mean, M2, count) of each channel's pixels [p_start, p_end) (``c_ptrs``: the channels' pixel-0 pointers),
    fp32: x - shift and its square accumulated per lane and reduced once, shift the channel's first pixel (no
    sum-of-squares cancellation). With MASK_C, channel lanes off ``mask_c`` read nothing (mean and M2 0)."""
    start = c_ptrs + tl.cast(p_start, tl.int64) * stride_xp
    if MASK_C:
        shift = tl.load(start, mask=mask_c, other=0.0)
    else:
        shift = tl.load(start)
    offs_p = p_start + tl.arange(0, BLOCK_P)
    ptrs = c_ptrs[:, None] + offs_p[None, :].to(tl.int64) * stride_xp
    acc = tl.zeros([BLOCK_C, BLOCK_P], tl.float32)
    acc_sq = tl.zeros([BLOCK_C, BLOCK_P], tl.float32)
    for _ in range(p_start, p_end, BLOCK_P):
        # Lanes past the range (and masked channels) read the shift itself: they add zero.
        mask = (offs_p < p_end)[None, :]
        if MASK_C:
            mask = mask & mask_c[:, None]
        x = tl.load(ptrs, mask=mask, other=shift[:, None])
        d = x.to(tl.float32) - shift.to(tl.float32)[:, None]
        acc += d
        acc_sq += d * d
        ptrs += BLOCK_P * stride_xp
        offs_p += BLOCK_P
    count = tl.cast(p_end - p_start, tl.float32)
    total = tl.sum(acc, axis=1)
    m2 = tl.maximum(tl.sum(acc_sq, axis=1) - total * (total / count), 0.0)
    return shift.to(tl.float32) + total / count, m2, count


@triton.jit
def group_norm_stats_kernel(
    X, Add, Partial,
    stride_xb, stride_xc, stride_xf, stride_xp, stride_ab, stride_ac, stride_af,
    channels, frames, pixels, n_c_blocks, n_chunks, chunk_pixels,
    HAS_ADD: tl.constexpr, BLOCK_C: tl.constexpr, BLOCK_P: tl.constexpr,
):
    pid = tl.program_id(0)
    offs_c, chunk, f, b, row = _tile_coords(pid, n_c_blocks, n_chunks, frames, BLOCK_C)
    p_start = chunk * chunk_pixels
    p_end = tl.minimum(p_start + chunk_pixels, pixels)
    c_ptrs = _channel_ptrs(X, b, f, offs_c, stride_xb, stride_xc, stride_xf)
    mean, m2, _ = _channel_moments(c_ptrs, None, p_start, p_end, stride_xp, False, BLOCK_C, BLOCK_P)
    if HAS_ADD:
        mean += tl.load(_channel_ptrs(Add, b, f, offs_c, stride_ab, stride_ac, stride_af)).to(tl.float32)
    out = row.to(tl.int64) * (2 * channels) + offs_c  # a row: C means, then C M2s
    tl.store(Partial + out, mean)
    tl.store(Partial + out + channels, m2)


@triton.jit
def _group_stats(Partial, b, fs, offs_g, mask_g, channels, channels_per_group, frames, pixels, n_chunks,
                 chunk_pixels, eps, PER_FRAME: tl.constexpr, BLOCK_R: tl.constexpr, BLOCK_J: tl.constexpr):
    """Mean and rstd of the statistics (b, g, fs) for the groups ``offs_g`` (lanes off ``mask_g`` are
    garbage) from the stats kernel's partials: rows (b, f, chunk) of the statistic's frames (consecutive),
    columns g * channels_per_group + j (the means; the M2s ``channels`` further). A [BLOCK_G, BLOCK_R * BLOCK_J]
    tile holds BLOCK_R rows of each group's channels; each lane merges its rows in order with Chan's formula (count, mean, M2), then a
    group's lanes are combined in two passes (its mean, then the lanes' M2 plus count times the squared
    deviation from it). Fixed order throughout."""
    n_rows = n_chunks * (1 if PER_FRAME else frames)
    lanes = tl.arange(0, BLOCK_R * BLOCK_J)[None, :]
    rows, offs_j = lanes // BLOCK_J, lanes % BLOCK_J
    cols = offs_g[:, None] * channels_per_group + offs_j
    offsets = ((b * frames + fs) * n_chunks + rows).to(tl.int64) * (2 * channels) + cols
    mean_ptrs = Partial + offsets
    m2_ptrs = mean_ptrs + channels
    mask_lanes = mask_g[:, None] & (offs_j < channels_per_group)
    count = tl.full(offsets.shape, 0.0, tl.float32)
    mean = tl.full(offsets.shape, 0.0, tl.float32)
    m2 = tl.full(offsets.shape, 0.0, tl.float32)
    for _ in range(0, n_rows, BLOCK_R):
        mask = (rows < n_rows) & mask_lanes
        # the partial's pixel count (a chunk at the end of a frame holds fewer pixels; 0 off the mask)
        n = tl.where(mask, tl.minimum(chunk_pixels, pixels - rows % n_chunks * chunk_pixels), 0).to(tl.float32)
        delta = tl.load(mean_ptrs, mask=mask, other=0.0) - mean
        count += n
        frac = n / tl.maximum(count, 1.0)
        mean += delta * frac
        m2 += tl.load(m2_ptrs, mask=mask, other=0.0) + delta * delta * (count - n) * frac
        rows += BLOCK_R
        mean_ptrs += BLOCK_R * 2 * channels
        m2_ptrs += BLOCK_R * 2 * channels
    total = (n_rows // n_chunks * pixels * channels_per_group).to(tl.float32)
    group_mean = tl.sum(count * mean, axis=1) / total
    dev = mean - group_mean[:, None]
    return group_mean, 1.0 / tl.sqrt(tl.sum(m2 + count * dev * dev, axis=1) / total + eps)


@triton.jit
def group_norm_silu_apply_kernel(
    X, Wt, Bias, Add, Partial, Y, Stats,
    stride_xb, stride_xc, stride_xf, stride_xp,
    stride_yb, stride_yc, stride_yf, stride_yp,
    stride_sk, stride_sb, stride_sg, stride_sf, stride_w, stride_bias, stride_ab, stride_ac, stride_af,
    channels, channels_per_group, frames, pixels, n_c_blocks, n_p_blocks, n_chunks, chunk_pixels, eps,
    HAS_WEIGHT: tl.constexpr, HAS_BIAS: tl.constexpr, HAS_ADD: tl.constexpr, PER_FRAME: tl.constexpr,
    SILU: tl.constexpr, STORE_STATS: tl.constexpr, BLOCK_C: tl.constexpr, BLOCK_P: tl.constexpr, BLOCK_R: tl.constexpr,
    BLOCK_G: tl.constexpr, BLOCK_J: tl.constexpr,
):
    # BLOCK_G: at least the groups any channel block touches (a block may start and end inside a group).
    pid = tl.program_id(0)
    offs_c, p_block, f, b, _ = _tile_coords(pid, n_c_blocks, n_p_blocks, frames, BLOCK_C)
    c_start = pid % n_c_blocks * BLOCK_C
    offs_g = c_start // channels_per_group + tl.arange(0, BLOCK_G)
    mask_g = offs_g <= (c_start + BLOCK_C - 1) // channels_per_group
    fs = f if PER_FRAME else 0
    g_mean, g_rstd = _group_stats(Partial, b, fs, offs_g, mask_g, channels, channels_per_group, frames, pixels,
                                  n_chunks, chunk_pixels, eps, PER_FRAME, BLOCK_R, BLOCK_J)
    if STORE_STATS:  # kept for the backward; each group's statistic by the block holding its first channel
        if (p_block == 0) & (f == fs):
            writer = mask_g & (offs_g * channels_per_group >= c_start)
            s_ptrs = Stats + b.to(tl.int64) * stride_sb + offs_g * stride_sg + fs * stride_sf
            tl.store(s_ptrs, g_mean, mask=writer)
            tl.store(s_ptrs + stride_sk, g_rstd, mask=writer)
    in_block = offs_c // channels_per_group - c_start // channels_per_group  # each channel's lane of offs_g
    mean = tl.gather(g_mean, in_block, 0)
    if HAS_ADD:  # the mean x itself sees: mean(x + add) - add
        mean -= tl.load(_channel_ptrs(Add, b, f, offs_c, stride_ab, stride_ac, stride_af)).to(tl.float32)
    w, bias = _affine(Wt, Bias, offs_c, stride_w, stride_bias, HAS_WEIGHT, HAS_BIAS)
    scale = w * tl.gather(g_rstd, in_block, 0)
    shift = bias - mean * scale
    offs_p = (p_block * BLOCK_P + tl.arange(0, BLOCK_P))[None, :]
    mask = offs_p < pixels
    offs_p = offs_p.to(tl.int64)
    x = tl.load(_channel_ptrs(X, b, f, offs_c, stride_xb, stride_xc, stride_xf)[:, None] + offs_p * stride_xp,
                mask=mask, other=0.0)
    z = x.to(tl.float32) * scale[:, None] + shift[:, None]
    if SILU:
        z = z * _sigmoid(z)
    tl.store(_channel_ptrs(Y, b, f, offs_c, stride_yb, stride_yc, stride_yf)[:, None] + offs_p * stride_yp,
             z.to(Y.dtype.element_ty), mask=mask)


@triton.jit
def group_norm_silu_group_kernel(
    X, Wt, Bias, Add, Y, Stats,
    stride_xb, stride_xc, stride_xf, stride_xp,
    stride_yb, stride_yc, stride_yf, stride_yp,
    stride_sk, stride_sb, stride_sg, stride_sf, stride_w, stride_bias, stride_ab, stride_ac, stride_af,
    channels_per_group, num_groups, frames, pixels, n_g_blocks, eps,
    HAS_WEIGHT: tl.constexpr, HAS_BIAS: tl.constexpr, HAS_ADD: tl.constexpr, SILU: tl.constexpr,
    STORE_STATS: tl.constexpr, GROUPS: tl.constexpr, GROUPS_POW2: tl.constexpr, BLOCK_C: tl.constexpr,
    BLOCK_P: tl.constexpr,
):
    # One launch for per-frame statistics of many small groups: one program holds GROUPS whole groups of one
    # (b, f) (GROUPS * channels_per_group <= BLOCK_C channel lanes) and passes over their pixels twice:
    # per-channel statistics (shifted by the channel's first pixel), combined per group (every channel counts
    # the same pixels), then the normalised output. The second pass reads what the first just read.
    pid = tl.program_id(0)
    g_block = pid % n_g_blocks
    bf = pid // n_g_blocks
    f = bf % frames
    b = bf // frames
    g0 = g_block * GROUPS
    lanes = tl.arange(0, BLOCK_C)
    lane_g = lanes // channels_per_group
    mask_c = (lane_g < GROUPS) & (g0 + lane_g < num_groups)
    offs_c = g0 * channels_per_group + lanes
    x_ptrs = _channel_ptrs(X, b, f, offs_c, stride_xb, stride_xc, stride_xf)
    ch_mean, ch_m2, count = _channel_moments(x_ptrs, mask_c, 0, pixels, stride_xp, True, BLOCK_C, BLOCK_P)
    if HAS_ADD:  # statistics of x + add: a channel's mean moves by its add, its M2 does not
        add = tl.load(_channel_ptrs(Add, b, f, offs_c, stride_ab, stride_ac, stride_af), mask=mask_c, other=0.0)
        ch_mean += add.to(tl.float32)
    # Per group (equal counts per channel): the mean of its channel means; M2 = sum of the channels' M2 plus
    # count times their squared deviations from that mean.
    groups = tl.arange(0, GROUPS_POW2)
    member = (lane_g[None, :] == groups[:, None]) & mask_c[None, :]
    g_mean = tl.sum(tl.where(member, ch_mean[None, :], 0.0), axis=1) / channels_per_group
    mean = tl.sum(tl.where(member, g_mean[:, None], 0.0), axis=0)
    dev = ch_mean - mean
    g_m2 = tl.sum(tl.where(member, (ch_m2 + count * dev * dev)[None, :], 0.0), axis=1)
    g_rstd = 1.0 / tl.sqrt(g_m2 / (count * channels_per_group) + eps)
    rstd = tl.sum(tl.where(member, g_rstd[:, None], 0.0), axis=0)
    if STORE_STATS:  # kept for the backward: one writer per statistic
        writer = (groups < GROUPS) & (g0 + groups < num_groups)
        s_ptrs = Stats + b.to(tl.int64) * stride_sb + (g0 + groups) * stride_sg + f * stride_sf
        tl.store(s_ptrs, g_mean, mask=writer)
        tl.store(s_ptrs + stride_sk, g_rstd, mask=writer)
    if HAS_ADD:  # the mean x itself sees: mean(x + add) - add
        mean -= add.to(tl.float32)
    w, bias = _affine(Wt, Bias, offs_c, stride_w, stride_bias, HAS_WEIGHT, HAS_BIAS)
    scale = w * rstd
    offset = bias - mean * scale
    y_ptrs = _channel_ptrs(Y, b, f, offs_c, stride_yb, stride_yc, stride_yf)
    for p0 in range(0, pixels, BLOCK_P):
        offs_p = (p0 + tl.arange(0, BLOCK_P))[None, :]
        mask = mask_c[:, None] & (offs_p < pixels)
        offs_p = offs_p.to(tl.int64)
        x = tl.load(x_ptrs[:, None] + offs_p * stride_xp, mask=mask, other=0.0)
        z = x.to(tl.float32) * scale[:, None] + offset[:, None]
        if SILU:
            z = z * _sigmoid(z)
        tl.store(y_ptrs[:, None] + offs_p * stride_yp, z.to(Y.dtype.element_ty), mask=mask)


@triton.jit
def _grad_tile(x_ptrs, dy_ptrs, mask, w, bias, mean, rstd, SILU: tl.constexpr):
    """xh and dz = dy * act'(z) on one tile, in fp32 (dz is 0 where masked); without SILU dz = dy."""
    x = tl.load(x_ptrs, mask=mask, other=0.0).to(tl.float32)
    dz = tl.load(dy_ptrs, mask=mask, other=0.0).to(tl.float32)
    xh = (x - mean[:, None]) * rstd[:, None]
    if SILU:
        z = xh * w[:, None] + bias[:, None]
        s = _sigmoid(z)
        dz = dz * s * (1.0 + z * (1.0 - s))
    return xh, dz


@triton.jit
def group_norm_silu_bwd_reduce_kernel(
    X, DY, Wt, Bias, Add, Stats, DWPart, DBPart, XhPart,
    stride_xb, stride_xc, stride_xf, stride_xp,
    stride_gb, stride_gc, stride_gf, stride_gp,
    stride_sk, stride_sb, stride_sg, stride_sf, stride_w, stride_bias, stride_ab, stride_ac, stride_af,
    channels, channels_per_group, frames, pixels, n_c_blocks, n_chunks, chunk_pixels,
    HAS_WEIGHT: tl.constexpr, HAS_BIAS: tl.constexpr, HAS_ADD: tl.constexpr, SILU: tl.constexpr,
    BLOCK_C: tl.constexpr, BLOCK_P: tl.constexpr,
):
    pid = tl.program_id(0)
    offs_c, chunk, f, b, row = _tile_coords(pid, n_c_blocks, n_chunks, frames, BLOCK_C)
    w, bias, mean, rstd, _ = _channel_params(Wt, Bias, Stats, Add, b, f, offs_c, channels_per_group, stride_w,
                                             stride_bias, stride_sk, stride_sb, stride_sg, stride_sf, stride_ab,
                                             stride_ac, stride_af, HAS_WEIGHT, HAS_BIAS, HAS_ADD)
    p_start = chunk * chunk_pixels
    p_end = tl.minimum(p_start + chunk_pixels, pixels)
    offs_p = p_start + tl.arange(0, BLOCK_P)
    x_ptrs = (_channel_ptrs(X, b, f, offs_c, stride_xb, stride_xc, stride_xf)[:, None]
              + offs_p[None, :].to(tl.int64) * stride_xp)
    dy_ptrs = (_channel_ptrs(DY, b, f, offs_c, stride_gb, stride_gc, stride_gf)[:, None]
               + offs_p[None, :].to(tl.int64) * stride_gp)
    acc_dz_xh = tl.zeros([BLOCK_C, BLOCK_P], tl.float32)
    acc_dz = tl.zeros([BLOCK_C, BLOCK_P], tl.float32)
    acc_xh = tl.zeros([BLOCK_C, BLOCK_P], tl.float32)
    for _ in range(p_start, p_end, BLOCK_P):
        mask = (offs_p < p_end)[None, :]
        xh, dz = _grad_tile(x_ptrs, dy_ptrs, mask, w, bias, mean, rstd, SILU)
        acc_dz_xh += dz * xh
        acc_dz += dz
        if HAS_ADD:
            acc_xh += tl.where(mask, xh, 0.0)
        x_ptrs += BLOCK_P * stride_xp
        dy_ptrs += BLOCK_P * stride_gp
        offs_p += BLOCK_P
    out = row.to(tl.int64) * channels + offs_c
    tl.store(DWPart + out, tl.sum(acc_dz_xh, axis=1))
    tl.store(DBPart + out, tl.sum(acc_dz, axis=1))
    if HAS_ADD:
        tl.store(XhPart + out, tl.sum(acc_xh, axis=1))


@triton.jit
def group_norm_silu_bwd_apply_kernel(
    X, DY, Wt, Bias, Add, Stats, Coef, DX,
    stride_xb, stride_xc, stride_xf, stride_xp,
    stride_gb, stride_gc, stride_gf, stride_gp,
    stride_db, stride_dc, stride_df, stride_dp,
    stride_sk, stride_sb, stride_sg, stride_sf, stride_w, stride_bias, stride_ab, stride_ac, stride_af,
    channels_per_group, frames, pixels, n_c_blocks, n_p_blocks,
    HAS_WEIGHT: tl.constexpr, HAS_BIAS: tl.constexpr, HAS_ADD: tl.constexpr, SILU: tl.constexpr,
    BLOCK_C: tl.constexpr, BLOCK_P: tl.constexpr,
):
    # Coef has Stats' layout: the group means of dz * w and of dz * w * xh.
    pid = tl.program_id(0)
    offs_c, p_block, f, b, _ = _tile_coords(pid, n_c_blocks, n_p_blocks, frames, BLOCK_C)
    w, bias, mean, rstd, g = _channel_params(Wt, Bias, Stats, Add, b, f, offs_c, channels_per_group, stride_w,
                                             stride_bias, stride_sk, stride_sb, stride_sg, stride_sf, stride_ab,
                                             stride_ac, stride_af, HAS_WEIGHT, HAS_BIAS, HAS_ADD)
    c_ptrs = Coef + b.to(tl.int64) * stride_sb + g * stride_sg + f * stride_sf
    mean_dxh = tl.load(c_ptrs)
    mean_dxh_xh = tl.load(c_ptrs + stride_sk)
    offs_p = (p_block * BLOCK_P + tl.arange(0, BLOCK_P))[None, :]
    mask = offs_p < pixels
    offs_p = offs_p.to(tl.int64)
    xh, dz = _grad_tile(_channel_ptrs(X, b, f, offs_c, stride_xb, stride_xc, stride_xf)[:, None] + offs_p * stride_xp,
                        _channel_ptrs(DY, b, f, offs_c, stride_gb, stride_gc, stride_gf)[:, None] + offs_p * stride_gp,
                        mask, w, bias, mean, rstd, SILU)
    dx = rstd[:, None] * (dz * w[:, None] - mean_dxh[:, None] - xh * mean_dxh_xh[:, None])
    tl.store(_channel_ptrs(DX, b, f, offs_c, stride_db, stride_dc, stride_df)[:, None] + offs_p * stride_dp,
             dx.to(DX.dtype.element_ty), mask=mask)


@triton.jit
def _sum_partial_rows(DWPart, DBPart, offsets, mask, n_rows, channels, BLOCK: tl.constexpr):
    """Both partials' columns at ``offsets`` summed over ``n_rows`` consecutive rows, in row order."""
    dw_ptrs, db_ptrs = DWPart + offsets, DBPart + offsets
    acc_dw = tl.zeros([BLOCK], tl.float32)
    acc_db = tl.zeros([BLOCK], tl.float32)
    for _row in range(n_rows):
        acc_dw += tl.load(dw_ptrs, mask=mask, other=0.0)
        acc_db += tl.load(db_ptrs, mask=mask, other=0.0)
        dw_ptrs += channels
        db_ptrs += channels
    return acc_dw, acc_db


@triton.jit
def _stat_coef(DWPart, DBPart, Wt, Coef, stat, stride_w, stride_ck, stride_cb, stride_cg, stride_cf, channels,
               channels_per_group, num_groups, stat_frames, rows_per_stat, count,
               HAS_WEIGHT: tl.constexpr, BLOCK_J: tl.constexpr):
    """Coef[:, b, g, sf] of statistic ``stat`` = (b, g, sf): the means of dz * w and dz * w * xh."""
    sf = stat % stat_frames
    bg = stat // stat_frames
    g = bg % num_groups
    b = bg // num_groups
    offs_j = tl.arange(0, BLOCK_J)
    mask = offs_j < channels_per_group
    offs_c = g * channels_per_group + offs_j
    w = tl.full([BLOCK_J], 1.0, tl.float32)
    if HAS_WEIGHT:
        w = tl.load(Wt + offs_c * stride_w, mask=mask, other=0.0).to(tl.float32)
    # A statistic's rows are consecutive: (b, its frame or all frames, every chunk).
    offsets = (b * stat_frames + sf).to(tl.int64) * rows_per_stat * channels + offs_c
    acc_dw, acc_db = _sum_partial_rows(DWPart, DBPart, offsets, mask, rows_per_stat, channels, BLOCK_J)
    c_ptrs = Coef + b.to(tl.int64) * stride_cb + g * stride_cg + sf * stride_cf
    tl.store(c_ptrs, tl.sum(acc_db * w, axis=0) / count)
    tl.store(c_ptrs + stride_ck, tl.sum(acc_dw * w, axis=0) / count)


@triton.jit
def _channel_grads(DWPart, DBPart, DW, DB, block, channels, total_rows,
                   HAS_WEIGHT: tl.constexpr, HAS_BIAS: tl.constexpr, BLOCK_C: tl.constexpr):
    """The weight and bias gradients of channel block ``block``: the partials summed over every row."""
    offs_c = block * BLOCK_C + tl.arange(0, BLOCK_C)
    mask = offs_c < channels
    acc_dw, acc_db = _sum_partial_rows(DWPart, DBPart, offs_c, mask, total_rows, channels, BLOCK_C)
    if HAS_WEIGHT:
        tl.store(DW + offs_c, acc_dw.to(DW.dtype.element_ty), mask=mask)
    if HAS_BIAS:
        tl.store(DB + offs_c, acc_db.to(DB.dtype.element_ty), mask=mask)


@triton.jit
def group_norm_silu_bwd_coef_kernel(
    DWPart, DBPart, Wt, Coef, DW, DB,
    stride_w, stride_ck, stride_cb, stride_cg, stride_cf,
    channels, channels_per_group, num_groups, stat_frames, rows_per_stat, total_rows, count, n_stats,
    HAS_WEIGHT: tl.constexpr, HAS_BIAS: tl.constexpr, BLOCK_J: tl.constexpr, BLOCK_C: tl.constexpr,
):
    """From the reduce kernel's per-channel partials (rows (b, f, chunk), C columns, contiguous fp32):
    programs [0, n_stats), one per statistic (b, g, frame or 0), write Coef[0] = mean(dz * w) and
    Coef[1] = mean(dz * w * xh) over the statistic's rows and group channels; the others, one per
    BLOCK_C channels, write the weight and bias gradients (the partials summed over every row, in the
    weight dtype). Fixed summation order: deterministic."""
    pid = tl.program_id(0)
    if pid < n_stats:
        _stat_coef(DWPart, DBPart, Wt, Coef, pid, stride_w, stride_ck, stride_cb, stride_cg, stride_cf, channels,
                   channels_per_group, num_groups, stat_frames, rows_per_stat, count, HAS_WEIGHT, BLOCK_J)
    else:
        _channel_grads(DWPart, DBPart, DW, DB, pid - n_stats, channels, total_rows, HAS_WEIGHT, HAS_BIAS, BLOCK_C)
