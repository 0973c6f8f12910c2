"""Temporal attention: for every (b, n, head), softmax attention over the F frames.

Each program takes a [BLOCK_N, BLOCK_F, BLOCK_D] tile (positions x all frames x head_dim) of one
(batch, head) for each of Q, K and V, and runs the F x F attention of every position on tensor
cores as batched (3-D) ``tl.dot``s over the positions: QK^T, an exact softmax over the frames
(all of them are in the tile: no online rescale), PV. F <= 128 and BLOCK_F = next_pow2(F) >= 16.
The frame axis is read through its stride, so (B, F, N, h, d) tensors, or slices of a fused qkv
projection, need no rearrange. Head_dim is the axis loads vectorise along: the launcher proves
that every other stride and head_dim are multiples of VEC elements (16 bytes) and that stride_d
is 1, and the kernel rewrites them as ``x // VEC * VEC`` so the compiler sees the alignment
and issues 128-bit loads. Scores are kept in log2 units (exp2); the saved log-sum-exp too.
The backward of a position too large for that (more than 16 frames, or a wide head over unaligned frames)
runs one position at a time with its key frames in blocks (``temporal_attention_bwd_key_blocks_kernel``).
"""
import triton
import triton.language as tl

LOG2E = tl.constexpr(1.4426950408889634)  # a global must be a tl.constexpr instance to compile


@triton.jit
def _aligned(x, VEC: tl.constexpr):
    """``x``, a multiple of VEC (the launcher checks it), in a form whose divisibility the compiler sees."""
    return x // VEC * VEC


@triton.jit
def _program_tile(pid, n_tiles, num_heads):
    """(tile, batch, head) of program ``pid`` of a flat 1D grid (never overflows the grid limits):
    ``n_tiles`` consecutive programs share one (batch, head)."""
    bh = pid // n_tiles
    return pid % n_tiles, (bh // num_heads).to(tl.int64), (bh % num_heads).to(tl.int64)


@triton.jit
def _tile_ptrs(base, b, h, offs_n, offs_f, offs_d, stride_b, stride_h, stride_n, stride_f, stride_d,
               VEC: tl.constexpr):
    """Pointers to all frames of BLOCK_N positions of (b, h): [BLOCK_N, BLOCK_F, BLOCK_D]."""
    base += b * _aligned(stride_b, VEC) + h * _aligned(stride_h, VEC)
    return (base + offs_n[:, None, None] * _aligned(stride_n, VEC)
            + offs_f.to(tl.int64)[None, :, None] * _aligned(stride_f, VEC)
            + offs_d.to(tl.int64)[None, None, :] * stride_d)


@triton.jit
def _batched_dot(a, b, DOT_PRECISION: tl.constexpr):
    """a @ b for every position of the tile. A batched dot gives each warp whole positions, so a tile of one
    position (BLOCK_N = 1: many frames, wide heads) runs as a 2-D dot whose frames the warps split."""
    if a.shape[0] == 1:
        c = tl.dot(tl.reshape(a, (a.shape[1], a.shape[2])), tl.reshape(b, (b.shape[1], b.shape[2])),
                   input_precision=DOT_PRECISION)
        return tl.reshape(c, (1, a.shape[1], b.shape[2]))
    return tl.dot(a, b, input_precision=DOT_PRECISION)


@triton.jit
def _bias_log2(bias_ptr, offs_f, num_frames, stride_bi, stride_bj,
               HAS_BIAS: tl.constexpr, BLOCK_F: tl.constexpr):
    """The head's [BLOCK_F, BLOCK_F] bias in log2 units (fp32), loaded once per program: a loop that
    reloaded it would issue 16-bit scalar loads (F x F is too small a tile to vectorise)."""
    if HAS_BIAS:
        mask = (offs_f < num_frames)[:, None] & (offs_f < num_frames)[None, :]
        b = tl.load(bias_ptr + offs_f[:, None] * stride_bi + offs_f[None, :] * stride_bj, mask=mask, other=0.0)
        bias = b.to(tl.float32) * LOG2E
    else:
        bias = tl.zeros([BLOCK_F, BLOCK_F], tl.float32)
    return bias


@triton.jit
def _scores(q, k, bias, offs_f, num_frames, qk_scale,
            HAS_BIAS: tl.constexpr, CAUSAL: tl.constexpr, DOT_PRECISION: tl.constexpr):
    """Scores of every query frame i against every key frame j, in log2 units: [BLOCK_N, BLOCK_F, BLOCK_F];
    -inf where j is padding or (causal) j > i. ``bias`` comes from _bias_log2."""
    s = _batched_dot(q, tl.trans(k, 0, 2, 1), DOT_PRECISION) * qk_scale
    keep = (offs_f < num_frames)[None, :]
    if HAS_BIAS:
        s += bias[None, :, :]
    if CAUSAL:
        keep &= offs_f[:, None] >= offs_f[None, :]
    return tl.where(keep[None, :, :], s, float("-inf"))


@triton.jit
def temporal_attention_fwd_kernel(
    Q, K, V, Bias, Out, Lse,
    stride_qb, stride_qf, stride_qn, stride_qh, stride_qd,
    stride_kb, stride_kf, stride_kn, stride_kh, stride_kd,
    stride_vb, stride_vf, stride_vn, stride_vh, stride_vd,
    stride_ob, stride_of, stride_on, stride_oh, stride_od,
    stride_bh, stride_bi, stride_bj,
    stride_lb, stride_lh, stride_lf, stride_ln,
    num_heads, num_frames, num_tokens, head_dim, n_blocks, qk_scale,
    HAS_BIAS: tl.constexpr, CAUSAL: tl.constexpr, DOT_PRECISION: tl.constexpr, VEC: tl.constexpr,
    BLOCK_N: tl.constexpr, BLOCK_F: tl.constexpr, BLOCK_D: tl.constexpr, STORE_LSE: tl.constexpr = True,
):
    # One program: all frames of BLOCK_N positions of one (b, head). Without STORE_LSE (a call that keeps no
    # log-sum-exp for a backward) Lse is never written.
    n_block, b, h = _program_tile(tl.program_id(0), n_blocks, num_heads)
    offs_n = (n_block * BLOCK_N + tl.arange(0, BLOCK_N)).to(tl.int64)
    offs_f = tl.arange(0, BLOCK_F)
    offs_d = tl.arange(0, BLOCK_D)
    mask_nf = (offs_n < num_tokens)[:, None] & (offs_f < num_frames)[None, :]
    mask_nfd = mask_nf[:, :, None] & (offs_d < _aligned(head_dim, VEC))[None, None, :]

    q = tl.load(_tile_ptrs(Q, b, h, offs_n, offs_f, offs_d, stride_qb, stride_qh, stride_qn, stride_qf, stride_qd, VEC),
                mask=mask_nfd, other=0.0)
    k = tl.load(_tile_ptrs(K, b, h, offs_n, offs_f, offs_d, stride_kb, stride_kh, stride_kn, stride_kf, stride_kd, VEC),
                mask=mask_nfd, other=0.0)
    v = tl.load(_tile_ptrs(V, b, h, offs_n, offs_f, offs_d, stride_vb, stride_vh, stride_vn, stride_vf, stride_vd, VEC),
                mask=mask_nfd, other=0.0)
    bias = _bias_log2(Bias + h * stride_bh, offs_f, num_frames, stride_bi, stride_bj, HAS_BIAS, BLOCK_F)
    s = _scores(q, k, bias, offs_f, num_frames, qk_scale, HAS_BIAS, CAUSAL, DOT_PRECISION)
    m = tl.max(s, axis=2)
    p = tl.exp2(s - m[:, :, None])
    l = tl.sum(p, axis=2)
    out = _batched_dot(p.to(v.dtype), v, DOT_PRECISION) / l[:, :, None]
    tl.store(_tile_ptrs(Out, b, h, offs_n, offs_f, offs_d, stride_ob, stride_oh, stride_on, stride_of, stride_od, VEC),
             out.to(Out.dtype.element_ty), mask=mask_nfd)
    if STORE_LSE:
        lse_ptrs = Lse + b * stride_lb + h * stride_lh + offs_n[:, None] * stride_ln + offs_f[None, :] * stride_lf
        tl.store(lse_ptrs, m + tl.log2(l), mask=mask_nf)


@triton.jit
def temporal_attention_bwd_kernel(
    Q, K, V, Bias, Out, DOut, Lse, DQ, DK, DV, DBiasPartial,
    stride_qb, stride_qf, stride_qn, stride_qh, stride_qd,
    stride_kb, stride_kf, stride_kn, stride_kh, stride_kd,
    stride_vb, stride_vf, stride_vn, stride_vh, stride_vd,
    stride_ob, stride_of, stride_on, stride_oh, stride_od,
    stride_gb, stride_gf, stride_gn, stride_gh, stride_gd,
    stride_db, stride_df, stride_dn, stride_dh, stride_dd,
    stride_bh, stride_bi, stride_bj,
    stride_lb, stride_lh, stride_lf, stride_ln,
    stride_pp, stride_pi, stride_pj,
    num_heads, num_frames, num_tokens, head_dim, n_blocks, n_chunks, qk_scale, scale,
    HAS_BIAS: tl.constexpr, BIAS_GRAD: tl.constexpr, CAUSAL: tl.constexpr, DOT_PRECISION: tl.constexpr,
    VEC: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_F: tl.constexpr, BLOCK_D: tl.constexpr,
):
    # One program: a strided chunk of position blocks of one (b, head), each block as in the forward.
    # Every (position, frame) of dQ/dK/dV belongs to one program (no atomics); the bias gradient is
    # summed per program into DBiasPartial[pid] and reduced in a fixed order by the launcher.
    pid = tl.program_id(0)
    chunk, b, h = _program_tile(pid, n_chunks, num_heads)
    offs_f = tl.arange(0, BLOCK_F)
    offs_d = tl.arange(0, BLOCK_D)
    mask_d = offs_d < _aligned(head_dim, VEC)
    bias = _bias_log2(Bias + h * stride_bh, offs_f, num_frames, stride_bi, stride_bj, HAS_BIAS, BLOCK_F)
    dbias = tl.zeros([BLOCK_F, BLOCK_F], tl.float32)

    for n_block in range(chunk, n_blocks, n_chunks):
        offs_n = (n_block * BLOCK_N + tl.arange(0, BLOCK_N)).to(tl.int64)
        mask_nf = (offs_n < num_tokens)[:, None] & (offs_f < num_frames)[None, :]
        mask_nfd = mask_nf[:, :, None] & mask_d[None, None, :]
        # Each tile is loaded where it is first used.
        o = tl.load(_tile_ptrs(Out, b, h, offs_n, offs_f, offs_d, stride_ob, stride_oh, stride_on, stride_of,
                               stride_od, VEC), mask=mask_nfd, other=0.0)
        do = tl.load(_tile_ptrs(DOut, b, h, offs_n, offs_f, offs_d, stride_gb, stride_gh, stride_gn, stride_gf,
                                stride_gd, VEC), mask=mask_nfd, other=0.0)
        delta = tl.sum(do.to(tl.float32) * o.to(tl.float32), axis=2)  # rowsum(dO * O): [BLOCK_N, BLOCK_F]
        # Padding rows get lse = +inf, so p = 0 there whatever their scores.
        lse = tl.load(Lse + b * stride_lb + h * stride_lh + offs_n[:, None] * stride_ln + offs_f[None, :] * stride_lf,
                      mask=mask_nf, other=float("inf"))
        q_ptrs = _tile_ptrs(Q, b, h, offs_n, offs_f, offs_d, stride_qb, stride_qh, stride_qn, stride_qf, stride_qd, VEC)
        k_ptrs = _tile_ptrs(K, b, h, offs_n, offs_f, offs_d, stride_kb, stride_kh, stride_kn, stride_kf, stride_kd, VEC)
        q = tl.load(q_ptrs, mask=mask_nfd, other=0.0)
        k = tl.load(k_ptrs, mask=mask_nfd, other=0.0)
        s = _scores(q, k, bias, offs_f, num_frames, qk_scale, HAS_BIAS, CAUSAL, DOT_PRECISION)
        p = tl.exp2(s - lse[:, :, None])
        # Each gradient is stored as soon as it is made: one fp32 accumulator tile live at a time.
        # DQ, DK and DV are allocated alike and share one set of strides (stride_d*).
        dv = _batched_dot(tl.trans(p.to(do.dtype), 0, 2, 1), do, DOT_PRECISION)
        tl.store(_tile_ptrs(DV, b, h, offs_n, offs_f, offs_d, stride_db, stride_dh, stride_dn, stride_df, stride_dd,
                            VEC), dv.to(DV.dtype.element_ty), mask=mask_nfd)
        v = tl.load(_tile_ptrs(V, b, h, offs_n, offs_f, offs_d, stride_vb, stride_vh, stride_vn, stride_vf,
                               stride_vd, VEC), mask=mask_nfd, other=0.0)
        dp = _batched_dot(do, tl.trans(v, 0, 2, 1), DOT_PRECISION)
        ds = p * (dp - delta[:, :, None])  # gradient of the natural-unit scores
        dq = _batched_dot(ds.to(k.dtype), k, DOT_PRECISION) * scale
        tl.store(_tile_ptrs(DQ, b, h, offs_n, offs_f, offs_d, stride_db, stride_dh, stride_dn, stride_df, stride_dd,
                            VEC), dq.to(DQ.dtype.element_ty), mask=mask_nfd)
        dk = _batched_dot(tl.trans(ds.to(q.dtype), 0, 2, 1), q, DOT_PRECISION) * scale
        tl.store(_tile_ptrs(DK, b, h, offs_n, offs_f, offs_d, stride_db, stride_dh, stride_dn, stride_df, stride_dd,
                            VEC), dk.to(DK.dtype.element_ty), mask=mask_nfd)
        if BIAS_GRAD:
            dbias += tl.sum(ds, axis=0)

    if BIAS_GRAD:
        p_ptrs = DBiasPartial + pid.to(tl.int64) * stride_pp + offs_f[:, None] * stride_pi + offs_f[None, :] * stride_pj
        tl.store(p_ptrs, dbias, mask=(offs_f < num_frames)[:, None] & (offs_f < num_frames)[None, :])


@triton.jit
def _position_ptrs(base, b, h, n, offs_f, offs_d, stride_b, stride_h, stride_n, stride_f, stride_d,
                   VEC: tl.constexpr):
    """Pointers to frames ``offs_f`` of position ``n`` of (b, h): [len(offs_f), BLOCK_D]. _tile_ptrs stays its own
    3-D form: built on this one, the forward compiles to different (more) registers."""
    base += b * _aligned(stride_b, VEC) + h * _aligned(stride_h, VEC) + n * _aligned(stride_n, VEC)
    return base + offs_f.to(tl.int64)[:, None] * _aligned(stride_f, VEC) + offs_d.to(tl.int64)[None, :] * stride_d


@triton.jit
def temporal_attention_bwd_key_blocks_kernel(
    Q, K, V, Bias, Out, DOut, Lse, DQ, DK, DV, DBiasPartial,
    stride_qb, stride_qf, stride_qn, stride_qh, stride_qd,
    stride_kb, stride_kf, stride_kn, stride_kh, stride_kd,
    stride_vb, stride_vf, stride_vn, stride_vh, stride_vd,
    stride_ob, stride_of, stride_on, stride_oh, stride_od,
    stride_gb, stride_gf, stride_gn, stride_gh, stride_gd,
    stride_db, stride_df, stride_dn, stride_dh, stride_dd,
    stride_bh, stride_bi, stride_bj,
    stride_lb, stride_lh, stride_lf, stride_ln,
    stride_pp, stride_pi, stride_pj,
    num_heads, num_frames, num_tokens, head_dim, n_chunks, qk_scale, scale,
    HAS_BIAS: tl.constexpr, BIAS_GRAD: tl.constexpr, CAUSAL: tl.constexpr, DOT_PRECISION: tl.constexpr,
    VEC: tl.constexpr, BLOCK_F: tl.constexpr, BLOCK_J: tl.constexpr, BLOCK_D: tl.constexpr,
):
    # The backward one position at a time, for positions too large to hold whole (many frames, wide heads):
    # a program takes a strided chunk of the positions of one (b, head); per position Q, dO and the dQ
    # accumulator ([BLOCK_F, BLOCK_D]) stay live while the key frames pass in blocks of BLOCK_J: scores,
    # probabilities and their gradient [BLOCK_F, BLOCK_J], the block's dK and dV stored as they are made.
    # The bias gradient is summed per program into its own DBiasPartial[pid], block by block (the program's
    # first position writes, the later ones add what is there), and reduced in a fixed order by the launcher.
    pid = tl.program_id(0)
    chunk, b, h = _program_tile(pid, n_chunks, num_heads)
    offs_f = tl.arange(0, BLOCK_F)
    offs_j = tl.arange(0, BLOCK_J)
    offs_d = tl.arange(0, BLOCK_D)
    mask_f = offs_f < num_frames
    mask_d = offs_d < _aligned(head_dim, VEC)
    mask_fd = mask_f[:, None] & mask_d[None, :]
    partial = DBiasPartial + pid.to(tl.int64) * stride_pp

    for n in range(chunk, num_tokens, n_chunks):
        n64 = tl.cast(n, tl.int64)
        do = tl.load(_position_ptrs(DOut, b, h, n64, offs_f, offs_d, stride_gb, stride_gh, stride_gn, stride_gf,
                                    stride_gd, VEC), mask=mask_fd, other=0.0)
        o = tl.load(_position_ptrs(Out, b, h, n64, offs_f, offs_d, stride_ob, stride_oh, stride_on, stride_of,
                                   stride_od, VEC), mask=mask_fd, other=0.0)
        delta = tl.sum(do.to(tl.float32) * o.to(tl.float32), axis=1)  # rowsum(dO * O): [BLOCK_F]
        q = tl.load(_position_ptrs(Q, b, h, n64, offs_f, offs_d, stride_qb, stride_qh, stride_qn, stride_qf,
                                   stride_qd, VEC), mask=mask_fd, other=0.0)
        # Padding rows get lse = +inf, so p = 0 there whatever their scores.
        lse = tl.load(Lse + b * stride_lb + h * stride_lh + n64 * stride_ln + offs_f * stride_lf, mask=mask_f,
                      other=float("inf"))
        dq = tl.zeros([BLOCK_F, BLOCK_D], tl.float32)
        for j0 in range(0, num_frames, BLOCK_J):
            offs_k = j0 + offs_j
            mask_k = offs_k < num_frames
            mask_kd = mask_k[:, None] & mask_d[None, :]
            k = tl.load(_position_ptrs(K, b, h, n64, offs_k, offs_d, stride_kb, stride_kh, stride_kn, stride_kf,
                                       stride_kd, VEC), mask=mask_kd, other=0.0)
            s = tl.dot(q, tl.trans(k), input_precision=DOT_PRECISION) * qk_scale
            mask_fk = mask_f[:, None] & mask_k[None, :]
            if HAS_BIAS:
                bias = tl.load(Bias + h * stride_bh + offs_f[:, None] * stride_bi + offs_k[None, :] * stride_bj,
                               mask=mask_fk, other=0.0)
                s += bias.to(tl.float32) * LOG2E
            keep = mask_k[None, :]
            if CAUSAL:
                keep &= offs_f[:, None] >= offs_k[None, :]
            p = tl.exp2(tl.where(keep, s, float("-inf")) - lse[:, None])
            dv = tl.dot(tl.trans(p.to(do.dtype)), do, input_precision=DOT_PRECISION)
            # DQ, DK and DV are allocated alike and share one set of strides (stride_d*).
            tl.store(_position_ptrs(DV, b, h, n64, offs_k, offs_d, stride_db, stride_dh, stride_dn, stride_df,
                                    stride_dd, VEC), dv.to(DV.dtype.element_ty), mask=mask_kd)
            v = tl.load(_position_ptrs(V, b, h, n64, offs_k, offs_d, stride_vb, stride_vh, stride_vn, stride_vf,
                                       stride_vd, VEC), mask=mask_kd, other=0.0)
            dp = tl.dot(do, tl.trans(v), input_precision=DOT_PRECISION)
            ds = p * (dp - delta[:, None])  # gradient of the natural-unit scores
            dq += tl.dot(ds.to(k.dtype), k, input_precision=DOT_PRECISION)
            dk = tl.dot(tl.trans(ds.to(q.dtype)), q, input_precision=DOT_PRECISION) * scale
            tl.store(_position_ptrs(DK, b, h, n64, offs_k, offs_d, stride_db, stride_dh, stride_dn, stride_df,
                                    stride_dd, VEC), dk.to(DK.dtype.element_ty), mask=mask_kd)
            if BIAS_GRAD:
                p_ptrs = partial + offs_f[:, None] * stride_pi + offs_k[None, :] * stride_pj
                earlier = tl.where(n == chunk, 0.0, tl.load(p_ptrs, mask=mask_fk, other=0.0))
                tl.store(p_ptrs, ds + earlier, mask=mask_fk)
        tl.store(_position_ptrs(DQ, b, h, n64, offs_f, offs_d, stride_db, stride_dh, stride_dn, stride_df, stride_dd,
                                VEC), (dq * scale).to(DQ.dtype.element_ty), mask=mask_fd)


@triton.jit
def temporal_attention_bias_grad_kernel(Partial, DBias, batch, num_heads, n_chunks, cells, BLOCK: tl.constexpr):
    """DBias[h] (contiguous (heads, F, F), the bias dtype) = the sum over (batch, chunk) of the backward's
    fp32 partials (programs, F, F), program = (b * heads + h) * n_chunks + chunk, in a fixed order."""
    pid = tl.program_id(0)
    n_cell_blocks = tl.cdiv(cells, BLOCK)
    h = pid // n_cell_blocks
    offs = (pid % n_cell_blocks) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < cells
    acc = tl.zeros([BLOCK], tl.float32)
    for b in range(batch):
        for chunk in range(n_chunks):
            row = ((b * num_heads + h) * n_chunks + chunk).to(tl.int64)
            acc += tl.load(Partial + row * cells + offs, mask=mask, other=0.0)
    tl.store(DBias + h.to(tl.int64) * cells + offs, acc.to(DBias.dtype.element_ty), mask=mask)
