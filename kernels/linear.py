"""nn.Linear's GEMM with strided (batch, row) addressing and the residual add in its epilogue:
Y = X W^T + b + R.

X is (M, K) rows of any layout that one (batch, row) split addresses: row r is (r // M_PER_BATCH,
r % M_PER_BATCH), at ``batch * stride_xb + row * stride_xm``. A contiguous (..., K) tensor is one batch; the
(B, H*W, C) transposed view of an NCHW tensor is B batches whose rows have stride 1 and channels stride H*W,
read in place. Y and R (M, N) are addressed the same way with their own strides, so the output can be
written straight into a channel-first layout. W is (N, K) as ``nn.Linear`` stores it, b the optional bias (N,).

The structure of the Triton matmul tutorial: every program owns one [BLOCK_M, BLOCK_N] tile of Y, programs
walk the tiles in groups of GROUP_M row blocks (a group's programs share their X rows and W columns in L2),
every stride is an argument, M, N, K and M_PER_BATCH are runtime values, offsets are int64. Ragged tails:
rows and columns past M and N are wrapped (their loads read valid memory, their results are masked at the
store), K past its end is masked to zero. The epilogue adds the bias and the residual to the fp32
accumulator and rounds once to Y's dtype.
"""
import triton
import triton.language as tl

from fastvid._interpreter import interpreting

# (BLOCK_M, BLOCK_N, BLOCK_K, GROUP_M, warps, stages). One [BLOCK_M, BLOCK_N] fp32 accumulator in registers:
# 128 x 256 takes 8 warps (two warpgroups for wgmma); the shared-memory ring holds one X and one W tile per
# stage (48 KiB at 128 x 256 x 64 in 16 bits).
_TILES = [
    (128, 256, 64, 8, 8, 3),
    (128, 128, 64, 8, 4, 4),
    (128, 64, 64, 8, 4, 4),
    (64, 128, 64, 8, 4, 4),
    (64, 64, 64, 8, 4, 4),
]
SMALL_K = 64  # K at most this: BLOCK_K 64 tiles waste the rest; the 32-wide K tile is kept


def _configs():
    """Autotuned tiles; the interpreter gets one small config so that the test sizes span ragged tiles."""
    if interpreting():
        return [triton.Config(dict(BLOCK_M=16, BLOCK_N=16, BLOCK_K=16, GROUP_M=2), num_warps=4, num_stages=1)]
    tiles = _TILES + [(64, 64, 32, 8, 4, 4)]
    return [triton.Config(dict(BLOCK_M=m, BLOCK_N=n, BLOCK_K=k, GROUP_M=g), num_warps=w, num_stages=s)
            for m, n, k, g, w, s in tiles]


def _prune(configs, named_args, **kwargs):
    """Tiles that fit the problem: a 128-row or 128-column tile only where M or N passes 64, a 256-column tile
    only where N passes 128, 64 x 64 only where M or N does not pass 64 (a larger tile then covers the output
    in fewer programs), the 32-wide K tile only for K <= SMALL_K."""
    args = {**named_args, **kwargs}
    large = args["M"] > 64 and args["N"] > 64
    keep = [c for c in configs
            if (c.kwargs["BLOCK_K"] == 32) == (args["K"] <= SMALL_K)
            and (c.kwargs["BLOCK_M"] <= 64 or args["M"] > 64)
            and (c.kwargs["BLOCK_N"] <= 64 or args["N"] > 64)
            and (c.kwargs["BLOCK_N"] <= 128 or args["N"] > 128)
            and not (large and c.kwargs["BLOCK_M"] == c.kwargs["BLOCK_N"] == 64)]
    return keep or configs


# Tuned per bucket of N and K (powers of two); M is free: a new token count reuses the bucket's tiles.
_KEY = ["N_BUCKET", "K_BUCKET"]


@triton.autotune(_configs(), key=_KEY, prune_configs_by=dict(early_config_prune=_prune))
@triton.jit
def linear_fwd_kernel(
    X, W, B, R, Y,
    stride_xb, stride_xm, stride_xk, stride_wn, stride_wk, stride_b,
    stride_rb, stride_rm, stride_rn, stride_yb, stride_ym, stride_yn,
    M, N, K, M_PER_BATCH,
    N_BUCKET, K_BUCKET,  # keys of the autotuner only
    HAS_BIAS: tl.constexpr, HAS_RESIDUAL: tl.constexpr, DOT_PRECISION: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, GROUP_M: tl.constexpr,
):
    # Grouped order: GROUP_M row blocks are visited column block by column block.
    pid = tl.program_id(0)
    num_pid_m = tl.cdiv(M, BLOCK_M)
    num_pid_n = tl.cdiv(N, BLOCK_N)
    in_group = GROUP_M * num_pid_n
    first_m = (pid // in_group) * GROUP_M
    group_m = min(num_pid_m - first_m, GROUP_M)
    pid_m = first_m + ((pid % in_group) % group_m)
    pid_n = (pid % in_group) // group_m

    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    rows = (offs_m % M).to(tl.int64)  # wrapped: loads stay in bounds, the store masks them
    batch = rows // M_PER_BATCH
    row = rows % M_PER_BATCH
    cols = (offs_n % N).to(tl.int64)
    offs_k = tl.arange(0, BLOCK_K)

    x_ptrs = X + (batch * stride_xb + row * stride_xm)[:, None] + offs_k[None, :] * stride_xk
    w_ptrs = W + cols[None, :] * stride_wn + offs_k[:, None] * stride_wk  # [BLOCK_K, BLOCK_N]
    x_step = BLOCK_K * stride_xk
    w_step = BLOCK_K * stride_wk

    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    for k in range(0, tl.cdiv(K, BLOCK_K)):
        k_left = K - k * BLOCK_K
        x = tl.load(x_ptrs, mask=offs_k[None, :] < k_left, other=0.0)
        w = tl.load(w_ptrs, mask=offs_k[:, None] < k_left, other=0.0)
        acc = tl.dot(x, w, acc, input_precision=DOT_PRECISION)
        x_ptrs += x_step
        w_ptrs += w_step

    if HAS_BIAS:
        acc += tl.load(B + cols * stride_b).to(tl.float32)[None, :]
    if HAS_RESIDUAL:
        r_ptrs = R + (batch * stride_rb + row * stride_rm)[:, None] + cols[None, :] * stride_rn
        acc += tl.load(r_ptrs).to(tl.float32)

    y_ptrs = Y + (batch * stride_yb + row * stride_ym)[:, None] + cols[None, :] * stride_yn
    tl.store(y_ptrs, acc.to(Y.dtype.element_ty), mask=(offs_m < M)[:, None] & (offs_n < N)[None, :])
