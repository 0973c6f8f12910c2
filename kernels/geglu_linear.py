"""GEGLU's projection with the activation in its epilogue: Y = (X W_h^T + b_h) * gelu(X W_g^T + b_g).

X is (M, K) (any strides), W the projection weight (2 * inner, K) as ``nn.Linear`` stores it: rows
[0, inner) give the hidden half W_h, rows [inner, 2 * inner) the gate half W_g; b the optional bias
(2 * inner,). Y (M, inner). The (M, 2 * inner) projection output is never written.

The structure of the Triton matmul tutorial: every program owns one [BLOCK_M, BLOCK_N] tile of Y,
programs walk the tiles in groups of GROUP_M row blocks (a group's programs share their X rows and
W columns in L2), every stride is an argument, M, N (= inner) and K are runtime values, offsets are
int64. Each program keeps two fp32 accumulators: per K step it loads one X tile and the two W tiles
(hidden rows j and gate rows inner + j of the same columns) and issues two ``tl.dot``. Ragged tails:
rows and columns past M and N are wrapped (their loads read valid memory, their results are masked
at the store), K past its end is masked to zero. The epilogue adds the bias halves, applies GELU to
the gate (exact erf, or the tanh approximation), multiplies, rounds once to Y's dtype.
"""
import triton
import triton.language as tl

from fastvid.kernels.geglu import _gelu_parts
from fastvid.kernels.linear import SMALL_K, gemm_configs

# (BLOCK_M, BLOCK_N, BLOCK_K, GROUP_M, warps, stages). Two [BLOCK_M, BLOCK_N] fp32 accumulators live in
# registers: 128 x 128 takes 8 warps (two warpgroups for wgmma); the shared-memory ring holds one X tile
# and two W tiles per stage (48 KiB at 128 x 128 x 64 in 16 bits).
_TILES = [
    (128, 128, 64, 8, 8, 3),
    (128, 64, 64, 8, 4, 4),
    (64, 128, 64, 8, 4, 4),
    (64, 64, 64, 8, 4, 4),
]


def _prune(configs, named_args, **kwargs):
    """Tiles that fit the problem: a 128-row or 128-column tile only where M or N passes 64, 64 x 64 only
    where one of them does not (a larger tile then covers the output in fewer programs), the 32-wide K tile
    only for K <= SMALL_K."""
    args = {**named_args, **kwargs}
    large = args["M"] > 64 and args["N"] > 64
    keep = [c for c in configs
            if (c.kwargs["BLOCK_K"] == 32) == (args["K"] <= SMALL_K)
            and (c.kwargs["BLOCK_M"] <= 64 or args["M"] > 64)
            and (c.kwargs["BLOCK_N"] <= 64 or args["N"] > 64)
            and not (large and c.kwargs["BLOCK_M"] == c.kwargs["BLOCK_N"] == 64)]
    return keep or configs


# Tuned per bucket of N and K (powers of two); M is free: a new token count reuses the bucket's tiles.
_KEY = ["N_BUCKET", "K_BUCKET"]


@triton.autotune(gemm_configs(_TILES), key=_KEY, prune_configs_by=dict(early_config_prune=_prune))
@triton.jit
def geglu_linear_fwd_kernel(
    X, W, B, Y,
    stride_xm, stride_xk, stride_wn, stride_wk, stride_b, stride_ym, stride_yn,
    M, N, K,
    N_BUCKET, K_BUCKET,  # keys of the autotuner only
    HAS_BIAS: tl.constexpr, APPROX_TANH: tl.constexpr, DOT_PRECISION: tl.constexpr,
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
    cols = (offs_n % N).to(tl.int64)
    offs_k = tl.arange(0, BLOCK_K)

    x_ptrs = X + rows[:, None] * stride_xm + offs_k[None, :] * stride_xk
    wh_ptrs = W + cols[None, :] * stride_wn + offs_k[:, None] * stride_wk  # [BLOCK_K, BLOCK_N]
    wg_ptrs = W + (cols + N)[None, :] * stride_wn + offs_k[:, None] * stride_wk
    x_step = BLOCK_K * stride_xk
    w_step = BLOCK_K * stride_wk

    acc_h = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    acc_g = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    for k in range(0, tl.cdiv(K, BLOCK_K)):
        k_left = K - k * BLOCK_K
        x = tl.load(x_ptrs, mask=offs_k[None, :] < k_left, other=0.0)
        wh = tl.load(wh_ptrs, mask=offs_k[:, None] < k_left, other=0.0)
        wg = tl.load(wg_ptrs, mask=offs_k[:, None] < k_left, other=0.0)
        acc_h = tl.dot(x, wh, acc_h, input_precision=DOT_PRECISION)
        acc_g = tl.dot(x, wg, acc_g, input_precision=DOT_PRECISION)
        x_ptrs += x_step
        wh_ptrs += w_step
        wg_ptrs += w_step

    if HAS_BIAS:
        acc_h += tl.load(B + cols * stride_b).to(tl.float32)[None, :]
        acc_g += tl.load(B + (cols + N) * stride_b).to(tl.float32)[None, :]
    c, _ = _gelu_parts(acc_g, APPROX_TANH)
    out = acc_h * acc_g * c

    y_ptrs = Y + offs_m.to(tl.int64)[:, None] * stride_ym + offs_n.to(tl.int64)[None, :] * stride_yn
    tl.store(y_ptrs, out.to(Y.dtype.element_ty), mask=(offs_m < M)[:, None] & (offs_n < N)[None, :])
