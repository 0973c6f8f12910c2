"""nn.Linear's GEMM with strided (batch, row) addressing and the residual add in its epilogue:
Y = X W^T + b + R.

X is (M, K) rows of any layout that one (batch, row) split addresses: row r is (r // M_PER_BATCH,
r % M_PER_BATCH), at ``batch * stride_xb + row * stride_xm``. A contiguous (..., K) tensor is one batch; the
(B, H*W, C) transposed view of an NCHW tensor is B batches whose rows have stride 1 and channels stride H*W,
read in place. Y and R (M, N) are addressed the same way with their own strides, so the output can be
written straight into a channel-first layout. W is (N, K) as ``nn.Linear`` stores it, b the optional bias (N,).

The structure of the Triton matmul tutorial: every program owns one [BLOCK_M, BLOCK_N] tile of Y, programs
walk the tiles in groups of GROUP_M row blocks (a group's programs share their X rows and W columns in L2),
every stride is an argument, M, N, K and M_PER_BATCH are runtime values, offsets are int64. A row tile lies
within one batch (a batch's last tile is ragged), so its rows are consecutive and a stride-1 row axis (the
transposed views) is read and written in vectors. Ragged tails: rows past the batch's end and K past its end
are masked (to zero), W's columns past N are wrapped (its loads read valid memory), the epilogue's loads and
the store are masked. The epilogue adds the bias and the residual to the fp32
accumulator and rounds once to Y's dtype.
"""
import triton
import triton.language as tl

from fastvid._interpreter import interpreting

# (BLOCK_M, BLOCK_N, BLOCK_K, GROUP_M, warps, stages). One [BLOCK_M, BLOCK_N] fp32 accumulator in registers:
# 128 x 256 and 128 x 128 take 8 warps (two warpgroups for wgmma), and 128 x 256 has no room left for a residual
# tile beside it (it spills); the shared-memory ring holds one X and one W tile per stage (48 KiB at
# 128 x 256 x 64 in 16 bits).
_TILES = [
    (128, 256, 64, 8, 8, 3),
    (128, 128, 64, 8, 8, 3),
    (128, 64, 64, 8, 4, 4),
    (64, 64, 64, 8, 4, 4),
]
SMALL_K = 64  # K at most this: BLOCK_K 64 tiles waste the rest; the 32-wide K tile is kept


def gemm_configs(tiles):
    """Autotuned configs of a GEMM kernel's ``tiles`` plus the 32-wide K tile for K <= SMALL_K; the interpreter
    gets one small config so that the test sizes span ragged tiles."""
    if interpreting():
        return [triton.Config(dict(BLOCK_M=16, BLOCK_N=16, BLOCK_K=16, GROUP_M=2), num_warps=4, num_stages=1)]
    return [triton.Config(dict(BLOCK_M=m, BLOCK_N=n, BLOCK_K=k, GROUP_M=g), num_warps=w, num_stages=s)
            for m, n, k, g, w, s in tiles + [(64, 64, 32, 8, 4, 4)]]


def _prune(configs, named_args, **kwargs):
    """Tiles that fit the problem: a 128-row tile only where a batch's rows pass 64 (a row tile never spans two
    batches: at 8x8 tokens a 128-row tile would idle half its rows), a 128-column tile only where N passes 64,
    a 256-column tile only without a residual, 64 x 64 only where the rows or N do not pass 64 (a larger tile
    then covers the output in fewer programs), the 32-wide K tile only for K <= SMALL_K; of the rest, the column
    tiles that divide N where there are any (no idle columns in the last tile: N = 320 takes 64-wide tiles)."""
    args = {**named_args, **kwargs}
    many_rows = args["ROWS_BUCKET"] > 64
    large = many_rows and args["N"] > 64
    keep = [c for c in configs
            if (c.kwargs["BLOCK_K"] == 32) == (args["K"] <= SMALL_K)
            and (c.kwargs["BLOCK_M"] <= 64 or many_rows)
            and (c.kwargs["BLOCK_N"] <= 64 or args["N"] > 64)
            and (c.kwargs["BLOCK_N"] <= 128 or not args["HAS_RESIDUAL"])
            and not (large and c.kwargs["BLOCK_M"] == c.kwargs["BLOCK_N"] == 64)]
    dividing = [c for c in keep if args["N"] % c.kwargs["BLOCK_N"] == 0]
    return dividing or keep or configs


# Tuned per bucket of N and K (powers of two), of a batch's rows (up to 128) and with or without a residual (its
# tiles differ); M is free: a new token count reuses the bucket's tiles.
_KEY = ["N_BUCKET", "K_BUCKET", "ROWS_BUCKET", "HAS_RESIDUAL"]


@triton.autotune(gemm_configs(_TILES), key=_KEY, prune_configs_by=dict(early_config_prune=_prune))
@triton.jit
def linear_fwd_kernel(
    X, W, B, R, Y,
    stride_xb, stride_xm, stride_xk, stride_wn, stride_wk, stride_b,
    stride_rb, stride_rm, stride_rn, stride_yb, stride_ym, stride_yn,
    M, N, K, M_PER_BATCH,
    N_BUCKET, K_BUCKET, ROWS_BUCKET,  # keys of the autotuner only
    HAS_BIAS: tl.constexpr, HAS_RESIDUAL: tl.constexpr, DOT_PRECISION: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, GROUP_M: tl.constexpr,
):
    # Row tiles never straddle two batches: tile t covers rows [(t % tiles) * BLOCK_M, ...) of batch t // tiles,
    # so a tile's rows are consecutive (vector loads and stores along a stride-1 row axis).
    tiles_per_batch = tl.cdiv(M_PER_BATCH, BLOCK_M)
    num_pid_m = (M // M_PER_BATCH) * tiles_per_batch
    num_pid_n = tl.cdiv(N, BLOCK_N)
    # Grouped order: GROUP_M row tiles are visited column tile by column tile.
    pid = tl.program_id(0)
    in_group = GROUP_M * num_pid_n
    first_m = (pid // in_group) * GROUP_M
    group_m = min(num_pid_m - first_m, GROUP_M)
    pid_m = first_m + ((pid % in_group) % group_m)
    pid_n = (pid % in_group) // group_m
    batch = (pid_m // tiles_per_batch).to(tl.int64)

    offs_m = (pid_m % tiles_per_batch) * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    in_m = offs_m < M_PER_BATCH
    in_n = offs_n < N
    rows = offs_m.to(tl.int64)
    cols = offs_n.to(tl.int64)
    offs_k = tl.arange(0, BLOCK_K)

    x_ptrs = X + batch * stride_xb + rows[:, None] * stride_xm + offs_k[None, :] * stride_xk
    # W's columns wrapped past N (its loads stay in bounds, the store masks them): K is its contiguous axis.
    w_ptrs = W + (offs_n % N).to(tl.int64)[None, :] * stride_wn + offs_k[:, None] * stride_wk  # [BLOCK_K, BLOCK_N]
    x_step = BLOCK_K * stride_xk
    w_step = BLOCK_K * stride_wk

    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    for k in range(0, tl.cdiv(K, BLOCK_K)):
        k_left = K - k * BLOCK_K
        x = tl.load(x_ptrs, mask=in_m[:, None] & (offs_k[None, :] < k_left), other=0.0)
        w = tl.load(w_ptrs, mask=offs_k[:, None] < k_left, other=0.0)
        acc = tl.dot(x, w, acc, input_precision=DOT_PRECISION)
        x_ptrs += x_step
        w_ptrs += w_step

    mask = in_m[:, None] & in_n[None, :]
    if HAS_BIAS:
        acc += tl.load(B + cols * stride_b, mask=in_n, other=0.0).to(tl.float32)[None, :]
    if HAS_RESIDUAL:
        r_ptrs = R + batch * stride_rb + rows[:, None] * stride_rm + cols[None, :] * stride_rn
        acc += tl.load(r_ptrs, mask=mask, other=0.0).to(tl.float32)

    y_ptrs = Y + batch * stride_yb + rows[:, None] * stride_ym + cols[None, :] * stride_yn
    tl.store(y_ptrs, acc.to(Y.dtype.element_ty), mask=mask)
