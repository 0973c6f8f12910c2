"""fastvid.frame_attention against fastvid.reference.frame_attention (explicitly concatenated K/V)."""
import pytest
import torch

import fastvid
from fastvid import reference
from fastvid.frame_modes import MODES
from fastvid.ops import _launch
from fastvid.ops import frame_attention as ops
from fastvid.testing import assert_twins_agree, check_against_reference, poisoned_outputs
from fastvid.validation import FastvidInputError

from conftest import DEVICE, KERNEL_DTYPES

ODD = (1, 13, 37, 29, 2, 40)  # (B, F, N, M, heads, head_dim)
# "all" reads every frame's keys, so its interpreter time grows with F squared: fewer frames, the same odd sizes.
ODD_ALL = (1, 5, 37, 29, 2, 40)
# Ragged rows (-1 padding), a frame listed twice (attended twice), frames nobody reads (1, 3).
TABLE = [[2, 0, -1], [4, 4, -1], [0, 2, 4], [-1, 5, -1], [5, 5, 5], [0, -1, -1]]


def _inputs(B, F, N, M, H, D, dtype=torch.float32):
    q = torch.randn(B, F, N, H, D, dtype=dtype, device=DEVICE)
    k, v = (torch.randn(B, F, M, H, D, dtype=dtype, device=DEVICE) for _ in range(2))
    return q, k, v


def _fastvid(frames, backend="triton"):
    return lambda q, k, v: fastvid.frame_attention(q, k, v, frames=frames, backend=backend)


def _reference(frames):
    return lambda q, k, v: reference.frame_attention(q, k, v, frames=frames)


@pytest.mark.parametrize("dtype", KERNEL_DTYPES)
@pytest.mark.parametrize("frames", MODES)
def test_triton_modes_match_reference(frames, dtype):
    shape = ODD_ALL if frames == "all" else ODD
    check_against_reference(frames, _fastvid(frames), _reference(frames), _inputs(*shape, dtype), dtype)


@pytest.mark.parametrize("dtype", KERNEL_DTYPES)
def test_triton_custom_table_matches_reference(dtype):
    table = torch.tensor(TABLE, device=DEVICE)
    check_against_reference("table", _fastvid(table), _reference(table), _inputs(2, 6, 19, 23, 3, 24, dtype), dtype)


@pytest.mark.parametrize("shape", [
    (1, 3, 70, 45, 1, 72),  # several ragged query and key tiles, head_dim not a power of two
    (1, 2, 5, 3, 1, 256),  # largest head_dim
    (1, 4, 1, 1, 2, 8),  # one token per frame
])
@pytest.mark.parametrize("frames", ["sparse_causal", "all"])
def test_triton_tile_and_head_dim_edges(shape, frames):
    check_against_reference(f"{frames}{shape}", _fastvid(frames), _reference(frames), _inputs(*shape), torch.float32)


@pytest.mark.parametrize("backend", ["torch", "reference"])
@pytest.mark.parametrize("frames", list(MODES) + ["table"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_torch_backends_match_reference(backend, frames, dtype):
    frames = torch.tensor(TABLE, device=DEVICE) if frames == "table" else frames
    check_against_reference(backend, _fastvid(frames, backend), _reference(frames), _inputs(2, 6, 7, 5, 2, 8, dtype),
                            dtype)


def test_fused_qkv_slices_are_read_in_place():
    B, F, N, H, D = 1, 5, 13, 2, 24
    q, k, v = torch.randn(B, F, N, 3, H, D, device=DEVICE).unbind(dim=3)
    assert not q.is_contiguous()
    check_against_reference("fused qkv", _fastvid("sparse_causal"), _reference("sparse_causal"), [q, k, v],
                            torch.float32)


def test_permuted_and_sliced_inputs():
    # q with frames innermost, k/v with the token axis reversed by a strided slice of a larger buffer.
    B, F, N, M, H, D = 1, 5, 11, 9, 2, 16
    q = torch.randn(B, N, H, D, F, device=DEVICE).permute(0, 4, 1, 2, 3)
    k, v = (torch.randn(B, F, 2 * M, H, 2 * D, device=DEVICE)[:, :, ::2, :, :D] for _ in range(2))
    table = torch.tensor([[0, 4], [1, -1], [0, 1], [2, 3], [4, 4]], device=DEVICE)
    check_against_reference("strided", _fastvid(table), _reference(table), [q, k, v], torch.float32)


def test_first_frame_gradients_collect_in_frame_zero():
    q, k, v = _inputs(1, 6, 9, 7, 2, 16)
    k.requires_grad_()
    with poisoned_outputs():
        fastvid.frame_attention(q, k, v, frames="first", backend="triton").sum().backward()
    assert torch.count_nonzero(k.grad[:, 1:]) == 0
    assert torch.count_nonzero(k.grad[:, 0]) > 0


def test_backward_is_deterministic():
    q, k, v = _inputs(1, 5, 21, 17, 2, 16)
    grads = []
    for _ in range(2):
        leaves = [t.clone().requires_grad_() for t in (q, k, v)]
        fastvid.frame_attention(*leaves, frames="all", backend="triton").square().sum().backward()
        grads.append([t.grad for t in leaves])
    for a, b in zip(*grads):
        assert torch.equal(a, b)


@pytest.mark.parametrize("backend", ["triton", "torch"])
def test_empty_inputs(backend):
    q, k, v = _inputs(0, 3, 5, 4, 2, 8)
    assert fastvid.frame_attention(q, k, v, frames="all", backend=backend).shape == q.shape
    q, k, v = (t.requires_grad_() for t in _inputs(1, 3, 0, 4, 2, 8))  # no queries: dK = dV = 0
    out = fastvid.frame_attention(q, k, v, frames="first", backend=backend)
    out.sum().backward()
    assert out.shape == q.shape and torch.count_nonzero(k.grad) == 0


def test_nan_propagates_like_torch():
    q, k, v = _inputs(1, 4, 6, 5, 1, 8)
    k[0, 0, 2, 0, 3] = float("nan")
    with poisoned_outputs():
        out = fastvid.frame_attention(q, k, v, frames="sparse_causal", backend="triton")
    expected = reference.frame_attention(q, k, v, frames="sparse_causal")
    assert torch.equal(torch.isnan(out), torch.isnan(expected))
    assert torch.isnan(out).sum() > 0


def test_offsets_beyond_int32_use_int64():
    """Frame 2 starts 2**31 + 32 elements into its buffer (a strided view whose untouched memory is never
    paged in); frame 2's queries read frame 1's keys and frame 1's key gradient collects frame 2's."""
    stride_f = 2**30 + 16
    shape, strides = (1, 3, 4, 1, 16), (0, stride_f, 16, 16, 1)

    def far_view():
        view = torch.empty(2 * stride_f + 4 * 16, dtype=torch.float16, device=DEVICE).as_strided(shape, strides)
        return view.copy_(torch.randn(shape, dtype=torch.float16))

    check_against_reference("int64 offsets", _fastvid("sparse_causal"), _reference("sparse_causal"),
                            [far_view(), far_view(), far_view()], torch.float16)


def test_auto_uses_torch_on_cpu_and_reports_it():
    q, k, v = _inputs(1, 4, 6, 5, 2, 16)
    fastvid.frame_attention(q, k, v, frames="first")
    assert fastvid.last_backend("frame_attention") == ("triton" if DEVICE == "cuda" else "torch")


def test_auto_sends_dense_modes_and_unaligned_first_to_sdpa(monkeypatch):
    # Judge the dense-mode rule alone, as on a CUDA machine.
    monkeypatch.setattr(_launch, "triton_auto_reason", lambda *tensors: None)
    q, k, v = _inputs(1, 4, 6, 5, 2, 8, torch.float16)
    for frames in ("self", "all"):
        assert "SDPA" in ops.DISPATCH.explain(q, k, v, frames, 0.5)["triton"]
    assert "head_dim 8" in ops.DISPATCH.explain(q, k, v, "first", 0.5)["triton"]  # measured slower than SDPA
    for frames in ("sparse_causal", torch.tensor(TABLE[:4]).clamp(max=3)):
        assert ops.DISPATCH.explain(q, k, v, frames, 0.5)["triton"] is None
    q, k, v = _inputs(1, 4, 6, 5, 2, 16, torch.float16)  # 16-aligned head_dim: "first" stays on Triton
    assert ops.DISPATCH.explain(q, k, v, "first", 0.5)["triton"] is None
    q, k, v = _inputs(1, 4, 6, 5, 2, 12, torch.float16)  # head_dim % 8 != 0: SDPA would fall back to math
    assert ops.DISPATCH.explain(q, k, v, "all", 0.5)["triton"] is None


def test_forced_triton_without_interpreter_names_the_reason(monkeypatch):
    if DEVICE == "cuda":
        pytest.skip("CUDA tensors always take Triton")
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    with pytest.raises(fastvid.BackendUnsupportedError, match="Triton needs CUDA"):
        fastvid.frame_attention(*_inputs(1, 4, 6, 5, 2, 8), frames="first", backend="triton")


def test_float64_refused_by_triton_with_reason():
    q, k, v = _inputs(1, 4, 6, 5, 2, 8, torch.float64)
    with pytest.raises(fastvid.BackendUnsupportedError, match="float64"):
        fastvid.frame_attention(q, k, v, backend="triton")


def _set(t, index, value):
    t = t.clone()
    t[index] = value
    return t


# case: (how the valid call {q, k, v, frames, ...} is spoilt, the message expected)
BAD_INPUTS = {
    "table_high": (lambda a: dict(a, frames=_set(a["frames"], (2, 1), 4)),
                   r"argument 'frames' holds 4 at \[2, 1\]; expected indices in \[0, 3\]"),
    "table_low": (lambda a: dict(a, frames=_set(a["frames"], (0, 0), -2)), r"argument 'frames' holds -2 at \[0, 0\]"),
    "table_rank": (lambda a: dict(a, frames=a["frames"][:, 0]), r"argument 'frames' has rank 1"),
    "table_rows": (lambda a: dict(a, frames=a["frames"][:3]),
                   r"argument 'frames' has shape \(3, 2\); expected shape \(4, K\)"),
    "table_width": (lambda a: dict(a, frames=a["frames"][:, :0]), r"argument 'frames' has shape \(4, 0\)"),
    "table_dtype": (lambda a: dict(a, frames=a["frames"].float()),
                    r"argument 'frames' has dtype float32; expected one of int64, int32"),
    "table_empty_row": (lambda a: dict(a, frames=_set(a["frames"], 1, -1)), r"argument 'frames' row 1 lists no index"),
    "table_type": (lambda a: dict(a, frames=a["frames"].tolist()), r"argument 'frames' is a list"),
    "mode": (lambda a: dict(a, frames="causal"),
             r"argument 'frames' is 'causal'; expected one of 'self', 'first', 'sparse_causal', 'all'"),
    "frame_mismatch": (lambda a: dict(a, k=a["k"][:, :3]),
                       r"argument 'k' has shape \(1, 3, 5, 2, 8\); expected shape \(1, 4, \*, 2, 8\)"),
    "v_shape": (lambda a: dict(a, v=a["v"][:, :, :4]), r"argument 'v' has shape"),
    "no_keys": (lambda a: dict(a, k=a["k"][:, :, :0], v=a["v"][:, :, :0]), r"argument 'k' has shape .*M = 0 keys"),
    "rank": (lambda a: dict(a, q=a["q"][0]), r"argument 'q' has rank 4"),
    "dtype": (lambda a: dict(a, q=a["q"].long()), r"argument 'q' has dtype int64"),
    "mixed_dtype": (lambda a: dict(a, k=a["k"].half()), r"argument 'k' has dtype"),
    "device": (lambda a: dict(a, k=a["k"].to("meta")), r"argument 'k' is on meta"),
    "scale": (lambda a: dict(a, scale=0.0), r"argument 'scale'"),
    "backend": (lambda a: dict(a, backend="flash"), r"argument 'backend' is 'flash'"),
}


@pytest.mark.parametrize("case", sorted(BAD_INPUTS))
def test_bad_input_names_the_argument(case):
    q, k, v = _inputs(1, 4, 6, 5, 2, 8)
    spoil, match = BAD_INPUTS[case]
    args = spoil(dict(q=q, k=k, v=v, frames=torch.tensor([[0, 1], [1, -1], [2, 3], [3, 0]])))
    with pytest.raises((FastvidInputError, fastvid.BackendUnsupportedError), match=match):
        fastvid.frame_attention(args.pop("q"), args.pop("k"), args.pop("v"), **args)


@pytest.mark.parametrize("backend", ["triton", "torch"])
@pytest.mark.parametrize("frames", ["first", "all", "table"])
def test_module_matches_reference_twin(frames, backend):
    frames = torch.tensor(TABLE[:5]).clamp(max=4) if frames == "table" else frames
    ref_mod = reference.FrameAttention(dim=32, heads=2, dim_head=16, frames=frames).to(DEVICE)
    fast_mod = fastvid.nn.FrameAttention(dim=32, heads=2, dim_head=16, frames=frames).to(DEVICE)
    fast_mod.load_state_dict(ref_mod.state_dict())
    assert list(fast_mod.state_dict()) == list(ref_mod.state_dict())
    fast_mod.backend = backend
    assert_twins_agree(ref_mod, fast_mod, torch.randn(2, 5, 7, 32, device=DEVICE))


def test_sparse_causal_module_trains_query_only():
    ref_mod = reference.SparseCausalAttention(dim=16, heads=2, dim_head=8, train_query_only=True).to(DEVICE)
    fast_mod = fastvid.nn.SparseCausalAttention(dim=16, heads=2, dim_head=8, train_query_only=True).to(DEVICE)
    fast_mod.load_state_dict(ref_mod.state_dict())
    assert [n for n, p in fast_mod.named_parameters() if p.requires_grad] == ["to_q.weight"]
    fast_mod.backend = "triton"
    assert_twins_agree(ref_mod, fast_mod, torch.randn(1, 16, 6, 3, 4, device=DEVICE))  # (B, C, F, H, W)


@pytest.mark.parametrize("twin, make", [
    (fastvid.nn.FrameAttention, lambda: reference.FrameAttention(8, 2, 4, frames="sparse_causal")),
    (fastvid.nn.SparseCausalAttention, lambda: reference.SparseCausalAttention(8, 2, 4)),
    (fastvid.nn.TemporalAttention, lambda: reference.TemporalAttention(8, 2, 4)),
])
def test_class_swap_patching(twin, make):
    # patch() swaps module.__class__ = twin, so twins must add no parameters or buffers.
    module = make().to(DEVICE)
    x = torch.randn(1, 4, 5, 8, device=DEVICE)
    expected = module(x)
    keys = list(module.state_dict())
    module.__class__ = twin
    assert twin.patch_kind == ("temporal_attention" if twin is fastvid.nn.TemporalAttention else "frame_attention")
    assert list(module.state_dict()) == keys
    module.backend = "torch"
    torch.testing.assert_close(module(x), expected, atol=2e-5, rtol=1e-4)


@pytest.mark.gpu
@pytest.mark.parametrize("frames", ["first", "sparse_causal"])
def test_kv_memory_does_not_grow_with_frames(frames):
    """Forward + backward allocate out, lse and the gradients only: no repeated or concatenated K/V."""
    if DEVICE != "cuda":
        pytest.skip("peak memory is measured on CUDA")
    for num_frames in (4, 16):
        q, k, v = (t.requires_grad_() for t in _inputs(1, num_frames, 256, 256, 4, 64, torch.float16))
        fastvid.frame_attention(q, k, v, frames=frames, backend="triton").sum().backward()  # autotunes first
        q.grad = k.grad = v.grad = None
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        fastvid.frame_attention(q, k, v, frames=frames, backend="triton").backward(torch.ones_like(q))
        torch.cuda.synchronize()
        rows = q.shape[0] * q.shape[1] * q.shape[2] * q.shape[3]  # lse and delta: fp32 per query row
        allowed = 5 * q.numel() * q.element_size() + 2 * rows * 4 + 2**20  # out, dout, dq, dk, dv
        assert torch.cuda.max_memory_allocated() - base <= allowed


def test_head_tiles_and_alignment_facts():
    """Head dims split into a power-of-two tile and a narrow one; 128-bit loads only where the launcher can prove
    16-byte alignment of every base and stride (else the kernel gets no alignment facts)."""
    assert [ops._head_tiles(d) for d in (8, 24, 40, 64, 72, 96, 128)] == [
        (16, 16), (32, 16), (32, 16), (64, 16), (64, 16), (64, 32), (128, 16)]
    x = torch.randn(1, 2, 5, 3, 40)
    assert ops._alignment(40, x, x[:, :, 1:]) == 4
    assert ops._alignment(40, torch.randn(x.numel() + 1)[1:].view(x.shape)) == 1  # base 4 bytes off
    assert ops._alignment(40, x.transpose(-1, -2).contiguous().transpose(-1, -2)) == 1  # head dim not unit-stride
    assert ops._alignment(36, torch.randn(1, 2, 5, 3, 36, dtype=torch.float16)) == 1  # 36 not a multiple of 8
