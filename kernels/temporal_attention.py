"""Temporal attention: for every (b, n, head), softmax attention over the F frames.

Each program takes BLOCK_N token positions of one (batch, head) and keeps all their frames in
registers: a [BLOCK_N, BLOCK_F, BLOCK_D] tile of queries. Key/value frames are streamed one at
a time with an online softmax. F is small (8..64), so the work is memory bound and runs on
CUDA cores (broadcast-multiply + reduce), not tensor cores. The frame axis is read through its
stride, so (B, F, N, h, d) tensors, or slices of a fused qkv projection, need no rearrange.
Scores are kept in log2 units (exp2); the saved log-sum-exp is in the same units.
"""
import triton
import triton.language as tl

LOG2E = tl.constexpr(1.4426950408889634)  # a global must be a tl.constexpr instance to compile


@triton.jit
def _frame_ptrs(base, offs_n, offs_d, stride_n, stride_d):
    """Pointers to frame 0 of BLOCK_N positions: [BLOCK_N, BLOCK_D]; add j * stride_f for frame j
    by advancing the pointers (pointer arithmetic never overflows int32)."""
    return base + offs_n[:, None] * stride_n + offs_d.to(tl.int64)[None, :] * stride_d


@triton.jit
def _tile_ptrs(base, offs_n, offs_f, offs_d, stride_n, stride_f, stride_d):
    """Pointers to all frames of BLOCK_N positions: [BLOCK_N, BLOCK_F, BLOCK_D]."""
    return (base + offs_n[:, None, None] * stride_n + offs_f.to(tl.int64)[None, :, None] * stride_f
            + offs_d.to(tl.int64)[None, None, :] * stride_d)


@triton.jit
def _scores(q, k_j, bias_ptr, j, offs_f, mask_f, stride_bi, stride_bj, qk_scale,
            HAS_BIAS: tl.constexpr, CAUSAL: tl.constexpr):
    """Scores of every query frame against key frame j, in log2 units: [BLOCK_N, BLOCK_F]."""
    s = tl.sum(q * k_j[:, None, :], axis=2) * qk_scale
    if HAS_BIAS:
        b = tl.load(bias_ptr + offs_f * stride_bi + j * stride_bj, mask=mask_f, other=0.0).to(tl.float32)
        s += b[None, :] * LOG2E
    if CAUSAL:
        s = tl.where((offs_f >= j)[None, :], s, float("-inf"))
    return s


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
    HAS_BIAS: tl.constexpr, CAUSAL: tl.constexpr,
    BLOCK_N: tl.constexpr, BLOCK_F: tl.constexpr, BLOCK_D: tl.constexpr,
):
    # One program: BLOCK_N positions of one (b, head); a flat 1D grid never overflows.
    pid = tl.program_id(0)
    n_block = pid % n_blocks
    bh = pid // n_blocks
    b = (bh // num_heads).to(tl.int64)
    h = (bh % num_heads).to(tl.int64)
    offs_n = (n_block * BLOCK_N + tl.arange(0, BLOCK_N)).to(tl.int64)
    offs_f = tl.arange(0, BLOCK_F)
    offs_d = tl.arange(0, BLOCK_D)
    mask_n = offs_n < num_tokens
    mask_f = offs_f < num_frames
    mask_d = offs_d < head_dim
    mask_nd = mask_n[:, None] & mask_d[None, :]
    mask_nfd = mask_n[:, None, None] & mask_f[None, :, None] & mask_d[None, None, :]

    q = tl.load(_tile_ptrs(Q + b * stride_qb + h * stride_qh, offs_n, offs_f, offs_d, stride_qn, stride_qf,
                           stride_qd), mask=mask_nfd, other=0.0).to(tl.float32)
    k_base = K + b * stride_kb + h * stride_kh
    v_base = V + b * stride_vb + h * stride_vh
    bias_ptr = Bias + h * stride_bh
    k_ptrs = _frame_ptrs(k_base, offs_n, offs_d, stride_kn, stride_kd)
    v_ptrs = _frame_ptrs(v_base, offs_n, offs_d, stride_vn, stride_vd)

    m = tl.full([BLOCK_N, BLOCK_F], float("-inf"), tl.float32)
    l = tl.zeros([BLOCK_N, BLOCK_F], tl.float32)
    acc = tl.zeros([BLOCK_N, BLOCK_F, BLOCK_D], tl.float32)
    # Online softmax over key frames j.
    for j in range(0, num_frames):
        k_j = tl.load(k_ptrs, mask=mask_nd, other=0.0).to(tl.float32)
        s = _scores(q, k_j, bias_ptr, j, offs_f, mask_f, stride_bi, stride_bj, qk_scale, HAS_BIAS, CAUSAL)
        m_new = tl.maximum(m, s)
        m_safe = tl.where(m_new == float("-inf"), 0.0, m_new)  # rows masked so far stay at 0
        alpha = tl.exp2(m - m_safe)
        p = tl.exp2(s - m_safe)
        l = l * alpha + p
        v_j = tl.load(v_ptrs, mask=mask_nd, other=0.0).to(tl.float32)
        acc = acc * alpha[:, :, None] + p[:, :, None] * v_j[:, None, :]
        m = m_new
        k_ptrs += stride_kf
        v_ptrs += stride_vf

    out = acc / l[:, :, None]
    tl.store(_tile_ptrs(Out + b * stride_ob + h * stride_oh, offs_n, offs_f, offs_d, stride_on, stride_of,
                        stride_od), out.to(Out.dtype.element_ty), mask=mask_nfd)
    lse_ptrs = Lse + b * stride_lb + h * stride_lh + offs_n[:, None] * stride_ln + offs_f[None, :] * stride_lf
    tl.store(lse_ptrs, m + tl.log2(l), mask=mask_n[:, None] & mask_f[None, :])


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
    HAS_BIAS: tl.constexpr, BIAS_GRAD: tl.constexpr, CAUSAL: tl.constexpr,
    BLOCK_N: tl.constexpr, BLOCK_F: tl.constexpr, BLOCK_D: tl.constexpr,
):
    # One program: a strided chunk of position blocks of one (b, head). Every (position, frame)
    # of dQ/dK/dV belongs to one program (no atomics); the bias gradient is summed per program
    # into DBiasPartial[pid] and reduced in a fixed order by the launcher (deterministic).
    pid = tl.program_id(0)
    chunk = pid % n_chunks
    bh = pid // n_chunks
    b = (bh // num_heads).to(tl.int64)
    h = (bh % num_heads).to(tl.int64)
    offs_f = tl.arange(0, BLOCK_F)
    offs_d = tl.arange(0, BLOCK_D)
    mask_f = offs_f < num_frames
    mask_d = offs_d < head_dim
    q_base = Q + b * stride_qb + h * stride_qh
    k_base = K + b * stride_kb + h * stride_kh
    v_base = V + b * stride_vb + h * stride_vh
    # DQ, DK and DV are allocated alike and share one set of strides (stride_d*).
    dk_base = DK + b * stride_db + h * stride_dh
    dv_base = DV + b * stride_db + h * stride_dh
    bias_ptr = Bias + h * stride_bh
    dbias = tl.zeros([BLOCK_F, BLOCK_F], tl.float32)

    for n_block in range(chunk, n_blocks, n_chunks):
        offs_n = (n_block * BLOCK_N + tl.arange(0, BLOCK_N)).to(tl.int64)
        mask_n = offs_n < num_tokens
        mask_nd = mask_n[:, None] & mask_d[None, :]
        mask_nf = mask_n[:, None] & mask_f[None, :]
        mask_nfd = mask_nf[:, :, None] & mask_d[None, None, :]
        q = tl.load(_tile_ptrs(q_base, offs_n, offs_f, offs_d, stride_qn, stride_qf, stride_qd),
                    mask=mask_nfd, other=0.0).to(tl.float32)
        o = tl.load(_tile_ptrs(Out + b * stride_ob + h * stride_oh, offs_n, offs_f, offs_d, stride_on, stride_of,
                               stride_od), mask=mask_nfd, other=0.0).to(tl.float32)
        do = tl.load(_tile_ptrs(DOut + b * stride_gb + h * stride_gh, offs_n, offs_f, offs_d, stride_gn, stride_gf,
                                stride_gd), mask=mask_nfd, other=0.0).to(tl.float32)
        lse = tl.load(Lse + b * stride_lb + h * stride_lh + offs_n[:, None] * stride_ln + offs_f[None, :] * stride_lf,
                      mask=mask_nf, other=0.0)
        delta = tl.sum(do * o, axis=2)  # rowsum(dO * O): [BLOCK_N, BLOCK_F]
        dq = tl.zeros([BLOCK_N, BLOCK_F, BLOCK_D], tl.float32)
        k_ptrs = _frame_ptrs(k_base, offs_n, offs_d, stride_kn, stride_kd)
        v_ptrs = _frame_ptrs(v_base, offs_n, offs_d, stride_vn, stride_vd)
        dk_ptrs = _frame_ptrs(dk_base, offs_n, offs_d, stride_dn, stride_dd)
        dv_ptrs = _frame_ptrs(dv_base, offs_n, offs_d, stride_dn, stride_dd)
        for j in range(0, num_frames):
            k_j = tl.load(k_ptrs, mask=mask_nd, other=0.0).to(tl.float32)
            v_j = tl.load(v_ptrs, mask=mask_nd, other=0.0).to(tl.float32)
            s = _scores(q, k_j, bias_ptr, j, offs_f, mask_f, stride_bi, stride_bj, qk_scale, HAS_BIAS, CAUSAL)
            p = tl.where(mask_nf, tl.exp2(s - lse), 0.0)
            dv_j = tl.sum(p[:, :, None] * do, axis=1)
            dp = tl.sum(do * v_j[:, None, :], axis=2)
            ds = p * (dp - delta)
            dq += ds[:, :, None] * k_j[:, None, :]
            dk_j = tl.sum(ds[:, :, None] * q, axis=1) * scale
            tl.store(dk_ptrs, dk_j.to(DK.dtype.element_ty), mask=mask_nd)
            tl.store(dv_ptrs, dv_j.to(DV.dtype.element_ty), mask=mask_nd)
            if BIAS_GRAD:
                dbias += tl.where(offs_f[None, :] == j, tl.sum(ds, axis=0)[:, None], 0.0)
            k_ptrs += stride_kf
            v_ptrs += stride_vf
            dk_ptrs += stride_df
            dv_ptrs += stride_df
        tl.store(_tile_ptrs(DQ + b * stride_db + h * stride_dh, offs_n, offs_f, offs_d, stride_dn, stride_df,
                            stride_dd), (dq * scale).to(DQ.dtype.element_ty), mask=mask_nfd)

    if BIAS_GRAD:
        p_ptrs = DBiasPartial + pid.to(tl.int64) * stride_pp + offs_f[:, None] * stride_pi + offs_f[None, :] * stride_pj
        tl.store(p_ptrs, dbias, mask=mask_f[:, None] & mask_f[None, :])
