"""Frame attention: the queries of frame i attend to the keys/values of the frames in row i of a table.

One kernel serves every mode ("self", "first", "sparse_causal", "all", custom tables): the
launcher turns a mode into an int32 (F, K) table, -1 padding short rows. A forward program owns
one query tile of one (b, frame i, head); it walks row i of the table and, for each listed frame,
that frame's M keys in BLOCK_M tiles, reading K/V in place: nothing is repeated or concatenated.
Flash-attention style: tl.dot with fp32 accumulation and an online softmax in log2 units; the
log-sum-exp (log2 units) is saved for the backward.

Backward: a dQ kernel mirrors the forward and also stores delta = rowsum(dO * O); then a dK/dV
kernel whose program owns one key tile of one (b, key frame j, head) loops over the query frames
i, weighting each by counts[i, j] (how often row i lists j; 0 skips the frame). Every dK/dV
element has one owner: no atomics, deterministic, even when all F frames read frame 0.
"""
import triton
import triton.language as tl

from . import interpreting


def _configs(gpu):
    """Autotuned tile sizes; tiles the GPU cannot hold fail to compile and are skipped by the tuner.
    The interpreter gets one config of small tiles, so that the test sizes span ragged tiles."""
    if interpreting():
        return [triton.Config(dict(BLOCK_N=32, BLOCK_M=32), num_warps=4, num_stages=1)]
    return [triton.Config(dict(BLOCK_N=n, BLOCK_M=m), num_warps=w, num_stages=st) for n, m, w, st in gpu]


# (BLOCK_N query rows, BLOCK_M key rows, warps, stages)
_FWD = _configs([(128, 64, 4, 3), (128, 64, 8, 3), (128, 32, 8, 2), (64, 64, 4, 2), (64, 32, 4, 2)])
# (32, 32, 8, 1): the one tile that compiles without spills in both backward kernels at BLOCK_D = 128
# (head_dim 72..128; benchmarks/results/kernel_resources.md).
_BWD = _configs([(64, 64, 4, 2), (64, 128, 8, 2), (32, 64, 4, 2), (32, 32, 4, 1), (32, 32, 8, 1)])
_KEY = ["num_q", "num_k", "head_dim"]


@triton.jit
def _load_tile(base, offs_r, offs_d, stride_r, stride_d, mask_r, mask_d):
    """[rows, BLOCK_D] tile; rows and head dims past the end read as 0."""
    ptrs = base + offs_r.to(tl.int64)[:, None] * stride_r + offs_d.to(tl.int64)[None, :] * stride_d
    return tl.load(ptrs, mask=mask_r[:, None] & mask_d[None, :], other=0.0)


@triton.jit
def _store_tile(base, value, offs_r, offs_d, stride_r, stride_d, mask_r, mask_d):
    ptrs = base + offs_r.to(tl.int64)[:, None] * stride_r + offs_d.to(tl.int64)[None, :] * stride_d
    tl.store(ptrs, value.to(base.dtype.element_ty), mask=mask_r[:, None] & mask_d[None, :])


@triton.jit
def _program_rows(num_rows, num_heads, num_frames, head_dim, BLOCK_R: tl.constexpr, BLOCK_D: tl.constexpr):
    """This program's (b, frame, head) and its tile of BLOCK_R rows (offsets, masks), from a flat
    program id in which the tile index varies fastest (one 1D grid never overflows)."""
    pid = tl.program_id(0)
    n_tiles = tl.cdiv(num_rows, BLOCK_R)
    rest = pid // n_tiles
    h = (rest % num_heads).to(tl.int64)
    rest = rest // num_heads
    f = (rest % num_frames).to(tl.int64)
    b = (rest // num_frames).to(tl.int64)
    offs_r = (pid % n_tiles) * BLOCK_R + tl.arange(0, BLOCK_R)
    offs_d = tl.arange(0, BLOCK_D)
    return b, f, h, offs_r, offs_r < num_rows, offs_d, offs_d < head_dim


@triton.jit
def _kv_tile(k_frame, v_frame, start, offs_m, offs_d, mask_d, num_k, stride_km, stride_kd, stride_vm, stride_vd):
    """Key and value rows [start, start + BLOCK_M) of one frame, and their mask."""
    offs = start + offs_m
    mask_m = offs < num_k
    k = _load_tile(k_frame, offs, offs_d, stride_km, stride_kd, mask_m, mask_d)
    v = _load_tile(v_frame, offs, offs_d, stride_vm, stride_vd, mask_m, mask_d)
    return k, v, mask_m


@triton.autotune(_FWD, key=_KEY)
@triton.jit
def frame_attention_fwd_kernel(
    Q, K, V, Table, Out, Lse,
    stride_qb, stride_qf, stride_qn, stride_qh, stride_qd,
    stride_kb, stride_kf, stride_km, stride_kh, stride_kd,
    stride_vb, stride_vf, stride_vm, stride_vh, stride_vd,
    stride_ob, stride_of, stride_on, stride_oh, stride_od,
    stride_ti, stride_tk,
    stride_lb, stride_lf, stride_lh, stride_ln,
    num_heads, num_frames, num_q, num_k, head_dim, table_width, qk_scale,
    BLOCK_N: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_D: tl.constexpr, DOT_PRECISION: tl.constexpr,
):
    b, f, h, offs_n, mask_n, offs_d, mask_d = _program_rows(num_q, num_heads, num_frames, head_dim, BLOCK_N, BLOCK_D)
    offs_m = tl.arange(0, BLOCK_M)
    q = _load_tile(Q + b * stride_qb + f * stride_qf + h * stride_qh, offs_n, offs_d, stride_qn, stride_qd,
                   mask_n, mask_d)
    k_head = K + b * stride_kb + h * stride_kh
    v_head = V + b * stride_vb + h * stride_vh
    row = Table + f * stride_ti

    m_i = tl.full([BLOCK_N], float("-inf"), tl.float32)
    l_i = tl.zeros([BLOCK_N], tl.float32)
    acc = tl.zeros([BLOCK_N, BLOCK_D], tl.float32)
    for e in range(0, table_width):
        j = tl.load(row + e * stride_tk)
        if j >= 0:
            k_frame = k_head + j.to(tl.int64) * stride_kf
            v_frame = v_head + j.to(tl.int64) * stride_vf
            for start in range(0, num_k, BLOCK_M):
                k, v, mask_m = _kv_tile(k_frame, v_frame, start, offs_m, offs_d, mask_d, num_k, stride_km, stride_kd,
                                        stride_vm, stride_vd)
                s = tl.dot(q, tl.trans(k), input_precision=DOT_PRECISION) * qk_scale
                s = tl.where(mask_m[None, :], s, float("-inf"))
                m_new = tl.maximum(m_i, tl.max(s, 1))
                alpha = tl.exp2(m_i - m_new)
                p = tl.exp2(s - m_new[:, None])
                l_i = l_i * alpha + tl.sum(p, 1)
                acc = acc * alpha[:, None] + tl.dot(p.to(v.dtype), v, input_precision=DOT_PRECISION)
                m_i = m_new

    _store_tile(Out + b * stride_ob + f * stride_of + h * stride_oh, acc / l_i[:, None], offs_n, offs_d,
                stride_on, stride_od, mask_n, mask_d)
    lse_ptrs = Lse + b * stride_lb + f * stride_lf + h * stride_lh + offs_n * stride_ln
    tl.store(lse_ptrs, m_i + tl.log2(l_i), mask=mask_n)


@triton.autotune(_BWD, key=_KEY)
@triton.jit
def frame_attention_bwd_dq_kernel(
    Q, K, V, Table, Out, DOut, Lse, Delta, DQ,
    stride_qb, stride_qf, stride_qn, stride_qh, stride_qd,
    stride_kb, stride_kf, stride_km, stride_kh, stride_kd,
    stride_vb, stride_vf, stride_vm, stride_vh, stride_vd,
    stride_ob, stride_of, stride_on, stride_oh, stride_od,
    stride_gb, stride_gf, stride_gn, stride_gh, stride_gd,
    stride_xb, stride_xf, stride_xn, stride_xh, stride_xd,
    stride_ti, stride_tk,
    stride_lb, stride_lf, stride_lh, stride_ln,
    num_heads, num_frames, num_q, num_k, head_dim, table_width, qk_scale, scale,
    BLOCK_N: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_D: tl.constexpr, DOT_PRECISION: tl.constexpr,
):
    # DQ has strides stride_x*; Lse and Delta share one layout (B, F, heads, N).
    b, f, h, offs_n, mask_n, offs_d, mask_d = _program_rows(num_q, num_heads, num_frames, head_dim, BLOCK_N, BLOCK_D)
    offs_m = tl.arange(0, BLOCK_M)
    q = _load_tile(Q + b * stride_qb + f * stride_qf + h * stride_qh, offs_n, offs_d, stride_qn, stride_qd,
                   mask_n, mask_d)
    do = _load_tile(DOut + b * stride_gb + f * stride_gf + h * stride_gh, offs_n, offs_d, stride_gn, stride_gd,
                    mask_n, mask_d)
    o = _load_tile(Out + b * stride_ob + f * stride_of + h * stride_oh, offs_n, offs_d, stride_on, stride_od,
                   mask_n, mask_d)
    row_offs = b * stride_lb + f * stride_lf + h * stride_lh + offs_n * stride_ln
    lse = tl.load(Lse + row_offs, mask=mask_n, other=float("inf"))
    delta = tl.sum(do.to(tl.float32) * o.to(tl.float32), 1)
    tl.store(Delta + row_offs, delta, mask=mask_n)
    k_head = K + b * stride_kb + h * stride_kh
    v_head = V + b * stride_vb + h * stride_vh
    row = Table + f * stride_ti

    dq = tl.zeros([BLOCK_N, BLOCK_D], tl.float32)
    for e in range(0, table_width):
        j = tl.load(row + e * stride_tk)
        if j >= 0:
            k_frame = k_head + j.to(tl.int64) * stride_kf
            v_frame = v_head + j.to(tl.int64) * stride_vf
            for start in range(0, num_k, BLOCK_M):
                k, v, mask_m = _kv_tile(k_frame, v_frame, start, offs_m, offs_d, mask_d, num_k, stride_km, stride_kd,
                                        stride_vm, stride_vd)
                s = tl.dot(q, tl.trans(k), input_precision=DOT_PRECISION) * qk_scale
                p = tl.where(mask_m[None, :], tl.exp2(s - lse[:, None]), 0.0)
                dp = tl.dot(do, tl.trans(v), input_precision=DOT_PRECISION)
                ds = p * (dp - delta[:, None])
                dq += tl.dot(ds.to(k.dtype), k, input_precision=DOT_PRECISION)

    _store_tile(DQ + b * stride_xb + f * stride_xf + h * stride_xh, dq * scale, offs_n, offs_d, stride_xn,
                stride_xd, mask_n, mask_d)


@triton.autotune(_BWD, key=_KEY)
@triton.jit
def frame_attention_bwd_dkv_kernel(
    Q, K, V, Counts, DOut, Lse, Delta, DK, DV,
    stride_qb, stride_qf, stride_qn, stride_qh, stride_qd,
    stride_kb, stride_kf, stride_km, stride_kh, stride_kd,
    stride_vb, stride_vf, stride_vm, stride_vh, stride_vd,
    stride_gb, stride_gf, stride_gn, stride_gh, stride_gd,
    stride_xb, stride_xf, stride_xm, stride_xh, stride_xd,
    stride_ci, stride_cj,
    stride_lb, stride_lf, stride_lh, stride_ln,
    num_heads, num_frames, num_q, num_k, head_dim, qk_scale, scale,
    BLOCK_N: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_D: tl.constexpr, DOT_PRECISION: tl.constexpr,
):
    # DK and DV are allocated alike (strides stride_x*). Program: key tile of (b, key frame j, head).
    b, j, h, offs_m, mask_m, offs_d, mask_d = _program_rows(num_k, num_heads, num_frames, head_dim, BLOCK_M, BLOCK_D)
    offs_n = tl.arange(0, BLOCK_N)
    k, v, _ = _kv_tile(K + b * stride_kb + j * stride_kf + h * stride_kh, V + b * stride_vb + j * stride_vf
                       + h * stride_vh, 0, offs_m, offs_d, mask_d, num_k, stride_km, stride_kd, stride_vm, stride_vd)
    # Frame 0 of query frame i; advanced by one frame per iteration (64-bit pointer arithmetic).
    q_frame = Q + b * stride_qb + h * stride_qh
    do_frame = DOut + b * stride_gb + h * stride_gh
    row_frame = b * stride_lb + h * stride_lh
    count_ptr = Counts + j * stride_cj

    dk = tl.zeros([BLOCK_M, BLOCK_D], tl.float32)
    dv = tl.zeros([BLOCK_M, BLOCK_D], tl.float32)
    for i in range(0, num_frames):
        count = tl.load(count_ptr)
        if count > 0:
            weight = count.to(tl.float32)
            for start in range(0, num_q, BLOCK_N):
                offs = start + offs_n
                mask_n = offs < num_q
                q = _load_tile(q_frame, offs, offs_d, stride_qn, stride_qd, mask_n, mask_d)
                do = _load_tile(do_frame, offs, offs_d, stride_gn, stride_gd, mask_n, mask_d)
                row_offs = row_frame + offs * stride_ln
                lse = tl.load(Lse + row_offs, mask=mask_n, other=float("inf"))
                delta = tl.load(Delta + row_offs, mask=mask_n, other=0.0)
                s_t = tl.dot(k, tl.trans(q), input_precision=DOT_PRECISION) * qk_scale
                p_t = tl.exp2(s_t - lse[None, :]) * weight
                dv += tl.dot(p_t.to(do.dtype), do, input_precision=DOT_PRECISION)
                dp_t = tl.dot(v, tl.trans(do), input_precision=DOT_PRECISION)
                ds_t = p_t * (dp_t - delta[None, :])
                dk += tl.dot(ds_t.to(q.dtype), q, input_precision=DOT_PRECISION)
        q_frame += stride_qf
        do_frame += stride_gf
        row_frame += stride_lf
        count_ptr += stride_ci

    x_base = b * stride_xb + j * stride_xf + h * stride_xh
    _store_tile(DK + x_base, dk * scale, offs_m, offs_d, stride_xm, stride_xd, mask_m, mask_d)
    _store_tile(DV + x_base, dv, offs_m, offs_d, stride_xm, stride_xd, mask_m, mask_d)
