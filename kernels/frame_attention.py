"""Frame attention: the queries of frame i attend to the keys/values of the frames in row i of a table.

One kernel serves every mode ("self", "first", "sparse_causal", "all", custom tables): the
launcher turns a mode into an int32 (F, K) table, -1 padding short rows. A forward program owns
one query tile of one (b, frame i, head); it walks row i of the table and, for each listed frame,
that frame's M keys in BLOCK_M tiles, reading K/V in place: nothing is repeated or concatenated.
The walk is one flat loop over (table entry, key tile) (a -1 entry gives fully masked tiles), so
that the compiler pipelines K/V loads across frames. Flash-attention style: tl.dot with fp32
accumulation and an online softmax in log2 units; the log-sum-exp (log2 units) is saved for the backward.

Head dim: HEAD_DIM is a constexpr (a feature size). Each row of d values is held as two column tiles,
D_LO (a power of two) and, where HEAD_DIM > D_LO, D_HI more (a power of two >= 16), so that head_dim 40
and 72 pad to 48 and 80 instead of 64 and 128. ALIGN is the number of elements in 16 bytes when the
launcher has checked that every base pointer, every non-unit stride and HEAD_DIM are multiples of it
(1 otherwise): offsets are then rebuilt as ``(x // ALIGN) * ALIGN``, which tells the compiler they are
16-byte aligned, and K/V tiles load with 128-bit (cp.async) copies.

Backward: a dQ kernel mirrors the forward and also stores delta = rowsum(dO * O); then a dK/dV
kernel whose program owns one key tile of one (b, key frame j, head) loops over the query frames
i, weighting each by counts[i, j] (how often row i lists j; 0 skips the frame). Every dK/dV
element has one owner: no atomics, deterministic, even when all F frames read frame 0.
"""
import triton
import triton.language as tl

from fastvid._interpreter import interpreting


def _configs(gpu):
    """Autotuned tile sizes. The interpreter gets one config of small tiles, so that the test sizes
    span ragged tiles."""
    if interpreting():
        return [triton.Config(dict(BLOCK_N=32, BLOCK_M=32), num_warps=4, num_stages=1)]
    return [triton.Config(dict(BLOCK_N=n, BLOCK_M=m), num_warps=w, num_stages=st) for n, m, w, st in gpu]


# (BLOCK_N query rows, BLOCK_M key rows, warps, stages). Checked with ptxas for sm_90a at head_dim 40, 64,
# 72 and 128 (benchmarks/results/kernel_resources.md has the benchmark shapes): none spills, except the tiles
# of the NARROW_ONLY sets above 96 columns (head_dim 97..128), where the autotuner drops them. 128 x 128 halves
# the forward's per-key softmax and wgmma set-up instructions against 128 x 64. dK/dV at 64 x 64 spilled at
# head_dim 72 and 128 and is gone; dK/dV 32 x 32 with 4 warps spills at head_dim 128 under Triton 3.6 (ptxas
# 12.8: 24/12 bytes), so it is narrow-only too.
_FWD_TILES = [(128, 128, 8, 2), (128, 64, 8, 3), (64, 64, 4, 3), (64, 32, 4, 2)]
_FWD_NARROW_ONLY = [(128, 128, 8, 2)]
_DQ_TILES = [(64, 64, 4, 2), (32, 64, 4, 2), (32, 32, 4, 1), (32, 32, 8, 1)]
_DKV_TILES = [(32, 64, 4, 2), (32, 32, 4, 1), (32, 32, 8, 1)]
_DKV_NARROW_ONLY = [(32, 32, 4, 1), (32, 32, 8, 1)]
NARROW_COLUMNS = 96


def _tile(config):
    return config.kwargs["BLOCK_N"], config.kwargs["BLOCK_M"], config.num_warps, config.num_stages


def _spill_free(narrow_only):
    """Autotune pruning: tiles in ``narrow_only`` only where the head dim's columns (D_LO + D_HI) fit them."""
    def prune(configs, named_args, **kwargs):
        args = {**named_args, **kwargs}
        columns = args["D_LO"] + (args["D_HI"] if args["HEAD_DIM"] > args["D_LO"] else 0)
        if columns <= NARROW_COLUMNS:
            return configs
        return [c for c in configs if _tile(c) not in narrow_only] or configs
    return dict(early_config_prune=prune)


_FWD, _DQ, _DKV = _configs(_FWD_TILES), _configs(_DQ_TILES), _configs(_DKV_TILES)
# The launcher skips the key mask when M is a multiple of this (BLOCK_M values are powers of two).
LARGEST_BLOCK_M = max(config.kwargs["BLOCK_M"] for config in _FWD + _DQ)
# The table width separates "first" (1), "sparse_causal" (2) and "all" (F): each gets its own tuning.
_KEY = ["num_q", "num_k", "table_width", "HEAD_DIM", "ALIGN"]


@triton.jit
def _aligned(offset, ALIGN: tl.constexpr):
    """``offset`` (a multiple of ALIGN, checked by the launcher), with that fact visible to the compiler."""
    if ALIGN > 1:
        offset = (offset // ALIGN) * ALIGN
    return offset


@triton.jit
def _cols(base, offs_r, stride_r, stride_d, mask_r, COL0: tl.constexpr, WIDTH: tl.constexpr,
          HEAD_DIM: tl.constexpr, ALIGN: tl.constexpr):
    """Pointers and mask of the [rows, WIDTH] tile of columns COL0..; columns past HEAD_DIM are masked.
    ALIGN > 1 implies stride_d == 1, which the JIT specialises to a constant."""
    offs_d = COL0 + tl.arange(0, WIDTH)
    ptrs = base + offs_r.to(tl.int64)[:, None] * _aligned(stride_r, ALIGN) + offs_d.to(tl.int64)[None, :] * stride_d
    return ptrs, mask_r[:, None] & (offs_d < HEAD_DIM)[None, :]


@triton.jit
def _load_cols(base, offs_r, stride_r, stride_d, mask_r, COL0: tl.constexpr, WIDTH: tl.constexpr,
               HEAD_DIM: tl.constexpr, ALIGN: tl.constexpr):
    """[rows, WIDTH] tile of columns COL0..; rows and columns past the end read as 0."""
    ptrs, mask = _cols(base, offs_r, stride_r, stride_d, mask_r, COL0, WIDTH, HEAD_DIM, ALIGN)
    return tl.load(ptrs, mask=mask, other=0.0)


@triton.jit
def _store_cols(base, value, offs_r, stride_r, stride_d, mask_r, COL0: tl.constexpr, WIDTH: tl.constexpr,
                HEAD_DIM: tl.constexpr, ALIGN: tl.constexpr):
    ptrs, mask = _cols(base, offs_r, stride_r, stride_d, mask_r, COL0, WIDTH, HEAD_DIM, ALIGN)
    tl.store(ptrs, value.to(base.dtype.element_ty), mask=mask)


@triton.jit
def _load_rows(base, offs_r, stride_r, stride_d, mask_r, HEAD_DIM: tl.constexpr, D_LO: tl.constexpr,
               D_HI: tl.constexpr, ALIGN: tl.constexpr):
    """Rows of one (b, frame, head) as its two column tiles; the high tile is zeros (and unused) when
    HEAD_DIM <= D_LO."""
    lo = _load_cols(base, offs_r, stride_r, stride_d, mask_r, 0, D_LO, HEAD_DIM, ALIGN)
    if HEAD_DIM > D_LO:
        hi = _load_cols(base, offs_r, stride_r, stride_d, mask_r, D_LO, D_HI, HEAD_DIM, ALIGN)
    else:
        hi = tl.zeros([offs_r.shape[0], D_HI], base.dtype.element_ty)
    return lo, hi


@triton.jit
def _store_rows(base, lo, hi, offs_r, stride_r, stride_d, mask_r, HEAD_DIM: tl.constexpr, D_LO: tl.constexpr,
                D_HI: tl.constexpr, ALIGN: tl.constexpr):
    _store_cols(base, lo, offs_r, stride_r, stride_d, mask_r, 0, D_LO, HEAD_DIM, ALIGN)
    if HEAD_DIM > D_LO:
        _store_cols(base, hi, offs_r, stride_r, stride_d, mask_r, D_LO, D_HI, HEAD_DIM, ALIGN)


@triton.jit
def _dot_nt(a_lo, a_hi, b_lo, b_hi, HAS_HI: tl.constexpr, DOT_PRECISION: tl.constexpr):
    """a @ b^T over the head dim, both given as (lo, hi) column tiles."""
    out = tl.dot(a_lo, tl.trans(b_lo), input_precision=DOT_PRECISION)
    if HAS_HI:
        out = tl.dot(a_hi, tl.trans(b_hi), out, input_precision=DOT_PRECISION)
    return out


@triton.jit
def _program_rows(num_rows, num_heads, num_frames, BLOCK_R: tl.constexpr):
    """This program's (b, frame, head) and its tile of BLOCK_R rows (offsets, mask), from a flat
    program id in which the tile index varies fastest (one 1D grid never overflows)."""
    pid = tl.program_id(0)
    n_tiles = tl.cdiv(num_rows, BLOCK_R)
    rest = pid // n_tiles
    h = (rest % num_heads).to(tl.int64)
    rest = rest // num_heads
    f = (rest % num_frames).to(tl.int64)
    b = (rest // num_frames).to(tl.int64)
    offs_r = (pid % n_tiles) * BLOCK_R + tl.arange(0, BLOCK_R)
    return b, f, h, offs_r, offs_r < num_rows


@triton.jit
def _head_base(ptr, b, f, h, stride_b, stride_f, stride_h, ALIGN: tl.constexpr):
    return ptr + _aligned(b * stride_b + f * stride_f + h * stride_h, ALIGN)


@triton.jit
def _table_kv_tile(K, V, Table, b, f, h, entry, start, offs_m, num_k, stride_ti, stride_tk, stride_kb, stride_kf,
                   stride_km, stride_kh, stride_kd, stride_vb, stride_vf, stride_vm, stride_vh, stride_vd,
                   HEAD_DIM: tl.constexpr, D_LO: tl.constexpr, D_HI: tl.constexpr, ALIGN: tl.constexpr):
    """For query frame f (batch b, head h): key rows [start, start + BLOCK_M) of frame j = Table[f, entry] (the
    walk shared by the forward and dQ kernels). Returns K and V as (lo, hi) column tiles, the key
    mask (all False for a -1 entry, whose loads then read nothing) and ``skip``, 0 or (for a -1 entry) -inf,
    to add to the row maximum of the scores. The per-row offsets do not depend on the step, so the compiler
    keeps them out of the loop."""
    j = tl.load(Table + f * stride_ti + entry * stride_tk)
    mask_m = start + offs_m < tl.where(j >= 0, num_k, 0)
    skip = tl.where(j >= 0, 0.0, float("-inf"))
    frame = tl.maximum(j, 0).to(tl.int64)
    first = start.to(tl.int64)
    k_tile = (_head_base(K, b, 0, h, stride_kb, 0, stride_kh, ALIGN) + frame * _aligned(stride_kf, ALIGN)
              + first * _aligned(stride_km, ALIGN))
    v_tile = (_head_base(V, b, 0, h, stride_vb, 0, stride_vh, ALIGN) + frame * _aligned(stride_vf, ALIGN)
              + first * _aligned(stride_vm, ALIGN))
    k_lo, k_hi = _load_rows(k_tile, offs_m, stride_km, stride_kd, mask_m, HEAD_DIM, D_LO, D_HI, ALIGN)
    v_lo, v_hi = _load_rows(v_tile, offs_m, stride_vm, stride_vd, mask_m, HEAD_DIM, D_LO, D_HI, ALIGN)
    return k_lo, k_hi, v_lo, v_hi, mask_m, skip


@triton.jit
def _next_tile(entry, start, num_k, BLOCK_M: tl.constexpr):
    """The walk's next (table entry, first key row): the key tiles of one frame, then the next entry."""
    start += BLOCK_M
    wrap = start >= num_k
    return entry + wrap.to(tl.int32), tl.where(wrap, 0, start)


@triton.autotune(_FWD, key=_KEY, prune_configs_by=_spill_free(_FWD_NARROW_ONLY))
@triton.jit
def frame_attention_fwd_kernel(
    Q, K, V, Table, Out, Lse,
    stride_qb, stride_qf, stride_qn, stride_qh, stride_qd,
    stride_kb, stride_kf, stride_km, stride_kh, stride_kd,
    stride_vb, stride_vf, stride_vm, stride_vh, stride_vd,
    stride_ob, stride_of, stride_on, stride_oh, stride_od,
    stride_ti, stride_tk,
    stride_lb, stride_lf, stride_lh, stride_ln,
    num_heads, num_frames, num_q, num_k, table_width, qk_scale,
    BLOCK_N: tl.constexpr, BLOCK_M: tl.constexpr, HEAD_DIM: tl.constexpr, D_LO: tl.constexpr, D_HI: tl.constexpr,
    EVEN_M: tl.constexpr, ALIGN: tl.constexpr, DOT_PRECISION: tl.constexpr,
):
    # qk_scale > 0, in log2 units.
    HAS_HI: tl.constexpr = HEAD_DIM > D_LO
    b, f, h, offs_n, mask_n = _program_rows(num_q, num_heads, num_frames, BLOCK_N)
    offs_m = tl.arange(0, BLOCK_M)
    q_lo, q_hi = _load_rows(_head_base(Q, b, f, h, stride_qb, stride_qf, stride_qh, ALIGN), offs_n, stride_qn,
                            stride_qd, mask_n, HEAD_DIM, D_LO, D_HI, ALIGN)

    # A finite start: a fully masked tile (a -1 entry) leaves m_i unchanged instead of giving inf - inf.
    m_i = tl.full([BLOCK_N], -1.0e30, tl.float32)
    l_i = tl.zeros([BLOCK_N], tl.float32)
    acc_lo = tl.zeros([BLOCK_N, D_LO], tl.float32)
    acc_hi = tl.zeros([BLOCK_N, D_HI], tl.float32)
    entry, start = tl.zeros([], tl.int32), tl.zeros([], tl.int32)  # the walk: table entry, first key row
    for _ in range(0, table_width * tl.cdiv(num_k, BLOCK_M)):
        k_lo, k_hi, v_lo, v_hi, mask_m, skip = _table_kv_tile(
            K, V, Table, b, f, h, entry, start, offs_m, num_k, stride_ti, stride_tk, stride_kb, stride_kf, stride_km,
            stride_kh, stride_kd, stride_vb, stride_vf, stride_vm, stride_vh, stride_vd, HEAD_DIM, D_LO, D_HI, ALIGN)
        s = _dot_nt(q_lo, q_hi, k_lo, k_hi, HAS_HI, DOT_PRECISION)
        if not EVEN_M:
            s = tl.where(mask_m[None, :], s, float("-inf"))
        m_new = tl.maximum(m_i, tl.max(s, 1) * qk_scale + skip)
        alpha = tl.exp2(m_i - m_new)
        p = tl.exp2(s * qk_scale - (m_new - skip)[:, None])
        l_i = l_i * alpha + tl.sum(p, 1)
        acc_lo = tl.dot(p.to(v_lo.dtype), v_lo, acc_lo * alpha[:, None], input_precision=DOT_PRECISION)
        if HAS_HI:
            acc_hi = tl.dot(p.to(v_hi.dtype), v_hi, acc_hi * alpha[:, None], input_precision=DOT_PRECISION)
        m_i = m_new
        entry, start = _next_tile(entry, start, num_k, BLOCK_M)

    _store_rows(_head_base(Out, b, f, h, stride_ob, stride_of, stride_oh, ALIGN), acc_lo / l_i[:, None],
                acc_hi / l_i[:, None], offs_n, stride_on, stride_od, mask_n, HEAD_DIM, D_LO, D_HI, ALIGN)
    lse_ptrs = Lse + b * stride_lb + f * stride_lf + h * stride_lh + offs_n * stride_ln
    tl.store(lse_ptrs, m_i + tl.log2(l_i), mask=mask_n)


@triton.autotune(_DQ, key=_KEY)
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
    num_heads, num_frames, num_q, num_k, table_width, qk_scale, scale,
    BLOCK_N: tl.constexpr, BLOCK_M: tl.constexpr, HEAD_DIM: tl.constexpr, D_LO: tl.constexpr, D_HI: tl.constexpr,
    EVEN_M: tl.constexpr, ALIGN: tl.constexpr, DOT_PRECISION: tl.constexpr,
):
    # DQ has strides stride_x*; Lse and Delta share one layout (B, F, heads, N).
    HAS_HI: tl.constexpr = HEAD_DIM > D_LO
    b, f, h, offs_n, mask_n = _program_rows(num_q, num_heads, num_frames, BLOCK_N)
    offs_m = tl.arange(0, BLOCK_M)
    q_lo, q_hi = _load_rows(_head_base(Q, b, f, h, stride_qb, stride_qf, stride_qh, ALIGN), offs_n, stride_qn,
                            stride_qd, mask_n, HEAD_DIM, D_LO, D_HI, ALIGN)
    do_lo, do_hi = _load_rows(_head_base(DOut, b, f, h, stride_gb, stride_gf, stride_gh, ALIGN), offs_n, stride_gn,
                              stride_gd, mask_n, HEAD_DIM, D_LO, D_HI, ALIGN)
    o_lo, o_hi = _load_rows(_head_base(Out, b, f, h, stride_ob, stride_of, stride_oh, ALIGN), offs_n, stride_on,
                            stride_od, mask_n, HEAD_DIM, D_LO, D_HI, ALIGN)
    row_offs = b * stride_lb + f * stride_lf + h * stride_lh + offs_n * stride_ln
    lse = tl.load(Lse + row_offs, mask=mask_n, other=float("inf"))
    dq_lo = tl.zeros([BLOCK_N, D_LO], tl.float32)
    dq_hi = tl.zeros([BLOCK_N, D_HI], tl.float32)
    delta = tl.sum(do_lo.to(tl.float32) * o_lo.to(tl.float32), 1)
    if HAS_HI:
        delta += tl.sum(do_hi.to(tl.float32) * o_hi.to(tl.float32), 1)
    tl.store(Delta + row_offs, delta, mask=mask_n)

    entry, start = tl.zeros([], tl.int32), tl.zeros([], tl.int32)  # the walk: table entry, first key row
    for _ in range(0, table_width * tl.cdiv(num_k, BLOCK_M)):
        k_lo, k_hi, v_lo, v_hi, mask_m, skip = _table_kv_tile(
            K, V, Table, b, f, h, entry, start, offs_m, num_k, stride_ti, stride_tk, stride_kb, stride_kf, stride_km,
            stride_kh, stride_kd, stride_vb, stride_vf, stride_vm, stride_vh, stride_vd, HEAD_DIM, D_LO, D_HI, ALIGN)
        p = tl.exp2(_dot_nt(q_lo, q_hi, k_lo, k_hi, HAS_HI, DOT_PRECISION) * qk_scale - (lse - skip)[:, None])
        if not EVEN_M:
            p = tl.where(mask_m[None, :], p, 0.0)
        dp = _dot_nt(do_lo, do_hi, v_lo, v_hi, HAS_HI, DOT_PRECISION)
        ds = (p * (dp - delta[:, None])).to(k_lo.dtype)
        dq_lo = tl.dot(ds, k_lo, dq_lo, input_precision=DOT_PRECISION)
        if HAS_HI:
            dq_hi = tl.dot(ds, k_hi, dq_hi, input_precision=DOT_PRECISION)
        entry, start = _next_tile(entry, start, num_k, BLOCK_M)

    _store_rows(_head_base(DQ, b, f, h, stride_xb, stride_xf, stride_xh, ALIGN), dq_lo * scale, dq_hi * scale, offs_n,
                stride_xn, stride_xd, mask_n, HEAD_DIM, D_LO, D_HI, ALIGN)


@triton.autotune(_DKV, key=_KEY, prune_configs_by=_spill_free(_DKV_NARROW_ONLY))
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
    num_heads, num_frames, num_q, num_k, table_width, qk_scale, scale,
    BLOCK_N: tl.constexpr, BLOCK_M: tl.constexpr, HEAD_DIM: tl.constexpr, D_LO: tl.constexpr, D_HI: tl.constexpr,
    ALIGN: tl.constexpr, DOT_PRECISION: tl.constexpr,
):
    # DK and DV are allocated alike (strides stride_x*). Program: key tile of (b, key frame j, head).
    # table_width only keys the autotuner.
    HAS_HI: tl.constexpr = HEAD_DIM > D_LO
    b, j, h, offs_m, mask_m = _program_rows(num_k, num_heads, num_frames, BLOCK_M)
    offs_n = tl.arange(0, BLOCK_N)
    k_lo, k_hi = _load_rows(_head_base(K, b, j, h, stride_kb, stride_kf, stride_kh, ALIGN), offs_m, stride_km,
                            stride_kd, mask_m, HEAD_DIM, D_LO, D_HI, ALIGN)
    v_lo, v_hi = _load_rows(_head_base(V, b, j, h, stride_vb, stride_vf, stride_vh, ALIGN), offs_m, stride_vm,
                            stride_vd, mask_m, HEAD_DIM, D_LO, D_HI, ALIGN)
    # Frame 0 of query frame i; advanced by one frame per iteration (64-bit pointer arithmetic).
    q_frame = _head_base(Q, b, 0, h, stride_qb, 0, stride_qh, ALIGN)
    do_frame = _head_base(DOut, b, 0, h, stride_gb, 0, stride_gh, ALIGN)
    row_frame = b * stride_lb + h * stride_lh
    count_ptr = Counts + j * stride_cj

    dk_lo = tl.zeros([BLOCK_M, D_LO], tl.float32)
    dk_hi = tl.zeros([BLOCK_M, D_HI], tl.float32)
    dv_lo = tl.zeros([BLOCK_M, D_LO], tl.float32)
    dv_hi = tl.zeros([BLOCK_M, D_HI], tl.float32)
    for i in range(0, num_frames):
        count = tl.load(count_ptr)
        if count > 0:
            weight = count.to(tl.float32)
            for start in range(0, num_q, BLOCK_N):
                offs = start + offs_n
                mask_n = offs < num_q
                q_lo, q_hi = _load_rows(q_frame, offs, stride_qn, stride_qd, mask_n, HEAD_DIM, D_LO, D_HI, ALIGN)
                do_lo, do_hi = _load_rows(do_frame, offs, stride_gn, stride_gd, mask_n, HEAD_DIM, D_LO, D_HI, ALIGN)
                row_offs = row_frame + offs * stride_ln
                lse = tl.load(Lse + row_offs, mask=mask_n, other=float("inf"))
                delta = tl.load(Delta + row_offs, mask=mask_n, other=0.0)
                s_t = _dot_nt(k_lo, k_hi, q_lo, q_hi, HAS_HI, DOT_PRECISION)
                p_t = tl.exp2(s_t * qk_scale - lse[None, :]) * weight
                dv_lo = tl.dot(p_t.to(do_lo.dtype), do_lo, dv_lo, input_precision=DOT_PRECISION)
                if HAS_HI:
                    dv_hi = tl.dot(p_t.to(do_hi.dtype), do_hi, dv_hi, input_precision=DOT_PRECISION)
                dp_t = _dot_nt(v_lo, v_hi, do_lo, do_hi, HAS_HI, DOT_PRECISION)
                ds_t = (p_t * (dp_t - delta[None, :])).to(q_lo.dtype)
                dk_lo = tl.dot(ds_t, q_lo, dk_lo, input_precision=DOT_PRECISION)
                if HAS_HI:
                    dk_hi = tl.dot(ds_t, q_hi, dk_hi, input_precision=DOT_PRECISION)
        q_frame += _aligned(stride_qf, ALIGN)
        do_frame += _aligned(stride_gf, ALIGN)
        row_frame += stride_lf
        count_ptr += stride_ci

    dk_base = _head_base(DK, b, j, h, stride_xb, stride_xf, stride_xh, ALIGN)
    _store_rows(dk_base, dk_lo * scale, dk_hi * scale, offs_m, stride_xm, stride_xd, mask_m, HEAD_DIM, D_LO, D_HI,
                ALIGN)
    dv_base = _head_base(DV, b, j, h, stride_xb, stride_xf, stride_xh, ALIGN)
    _store_rows(dv_base, dv_lo, dv_hi, offs_m, stride_xm, stride_xd, mask_m, HEAD_DIM, D_LO, D_HI, ALIGN)
