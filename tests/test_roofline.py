"""``fastvid roofline``, the step model: hand-computed counts of single layers, attribution of ops to the
parts of a network, unpatched and patched rows, the JSON rows and the "predicted, not measured" label."""
import json

import pytest
import torch
from torch import nn

from fastvid import cli, roofline
from fastvid.ops import _launch

BF16 = 2  # bytes per element


def count(module: nn.Module, *inputs):
    return roofline.count_call(lambda: module(*inputs), roles={})


def only_row(rows, op):
    (tally,) = [t for (kind, part, name), t in rows.items() if name == op]
    return tally


def test_linear_and_conv_counts_match_hand_computed():
    with torch.device("meta"):
        linear, conv = nn.Linear(16, 32).to(torch.bfloat16), nn.Conv2d(3, 8, 3, padding=1).to(torch.bfloat16)
    x = torch.empty(4, 16, device="meta", dtype=torch.bfloat16)
    rows = count(linear, x)
    assert set(name for _, _, name in rows) == {"aten.addmm"}  # the weight's transpose is a view: free
    addmm = only_row(rows, "aten.addmm")
    assert addmm.flops == 2 * 4 * 16 * 32
    assert addmm.bytes == BF16 * (4 * 16 + 32 * 16 + 32 + 4 * 32)  # x, weight, bias read; out written
    assert addmm.seconds == max(addmm.flops / roofline.PEAK_FLOPS, addmm.bytes / roofline.PEAK_BYTES)

    img = torch.empty(2, 3, 5, 7, device="meta", dtype=torch.bfloat16)
    conv_row = only_row(count(conv, img), "aten.convolution")
    out_elements = 2 * 8 * 5 * 7
    assert conv_row.flops == 2 * out_elements * 3 * 3 * 3
    assert conv_row.bytes == BF16 * (2 * 3 * 5 * 7 + 8 * 3 * 3 * 3 + 8 + out_elements)


def test_broadcast_input_counts_once_and_views_are_free():
    a = torch.empty(6, 10, device="meta", dtype=torch.bfloat16)
    row = torch.empty(1, 10, device="meta", dtype=torch.bfloat16).expand(6, 10)
    rows = roofline.count_call(lambda: (a.t().contiguous(), a + row), roles={})
    assert only_row(rows, "aten.clone").bytes == BF16 * 2 * 60
    assert only_row(rows, "aten.add").bytes == BF16 * (60 + 10 + 60)
    assert not any(name in ("aten.t", "aten.transpose", "aten.expand") for _, _, name in rows)


def test_fused_attention_is_one_kernel():
    q = torch.empty(2, 3, 50, 16, device="meta", dtype=torch.bfloat16)  # (B, heads, L, d)
    k = torch.empty(2, 3, 20, 16, device="meta", dtype=torch.bfloat16)
    rows = roofline.count_call(lambda: nn.functional.scaled_dot_product_attention(q, k, k), roles={})
    attention = only_row(rows, roofline.ATTENTION_OP)
    assert list(rows) == [("attention kernel: other", "attention kernels", roofline.ATTENTION_OP)]
    assert attention.flops == 2 * 2 * 3 * 50 * 20 * (16 + 16)
    assert attention.bytes == BF16 * (q.numel() + 2 * k.numel() + q.numel())


def test_meta_as_cuda_routes_meta_tensors_like_cuda_only_within():
    t = torch.empty(2, device="meta")
    assert _launch.triton_auto_reason(t) is not None
    with _launch.meta_as_cuda():
        assert _launch.triton_auto_reason(t) is None and _launch.triton_reason(t) is None
    assert _launch.triton_auto_reason(t) is not None


@pytest.fixture(scope="module")
def vdm():
    return roofline.predict_model("vdm", "tiny")


def test_ops_are_attributed_by_module_kind(vdm):
    kinds = vdm.by(0, "unpatched")
    for kind in ("attention kernel: temporal", "attention kernel: spatial", "attention kernel: cross",
                 "spatial ResNet", "spatial transformer excl. attn kernel", "up/down-sampling"):
        assert kinds[kind].seconds > 0, kind
    parts = {key[1] for key in vdm.unpatched}
    assert {"attention kernels", "attention projections", "feed-forwards", "norms", "convs"} <= parts
    # The feed-forward's matmuls and its GELU are the feed-forward's, not "other linears"
    ff = {key[2] for key in vdm.unpatched if key[1] == "feed-forwards"}
    assert {"aten.addmm", "aten.gelu"} <= ff


@pytest.mark.parametrize("model, op, kind", [
    ("vdm", "fastvid.temporal_attention_fwd", "attention kernel: temporal"),
    ("tune_a_video", "fastvid.frame_attention_fwd", "attention kernel: cross-frame"),
])
def test_patched_rows_use_the_fastvid_ops_and_their_registry_costs(model, op, kind, vdm):
    p = vdm if model == "vdm" else roofline.predict_model(model, "tiny")
    before, after = p.by(2, "unpatched"), p.by(2, "patched")
    assert op in after and op not in before
    fused = {key: t for key, t in p.patched.items() if key[2] == op}
    assert [key[0] for key in fused] == [kind]
    # The registry's formula and torch's formulas for the reference's unfused matmuls agree on the FLOPs.
    unfused = p.by(0, "unpatched")[kind]
    assert sum(t.flops for t in fused.values()) == unfused.flops > 0
    assert p.predicted_speedup == pytest.approx(p.total(p.unpatched).seconds / p.total(p.patched).seconds)


def test_cli_diffusers_tiny_writes_labelled_json(tmp_path, capsys):
    path = tmp_path / "roofline.json"
    assert cli.main(["roofline", "--diffusers", "svd", "--size", "tiny", "--ops", "5", "--json", str(path)]) == 0
    out = capsys.readouterr().out
    assert roofline.LABEL in out and "(predicted)" in out and "predicted_speedup" in out
    (row,) = json.loads(path.read_text())
    assert row["model"] == "svd" and row["predicted"] is True and row["label"] == roofline.LABEL
    for field in ("unpatched_gb", "unpatched_tflop", "unpatched_ms", "patched_gb", "patched_tflop", "patched_ms"):
        assert row[field] > 0, field
    assert row["predicted_speedup"] == pytest.approx(row["unpatched_ms"] / row["patched_ms"])
    ops = {r["name"]: r for r in row["ops"]}
    # device ops per call: the sum of every op row's calls; fewer once patched (fused adds, norms, copies)
    for variant in ("unpatched", "patched"):
        assert row[f"{variant}_ops"] == sum(r[variant]["calls"] for r in row["ops"]) > 0
    assert row["patched_ops"] < row["unpatched_ops"]
    assert f"{row['unpatched_ops']} unpatched, {row['patched_ops']} patched" in out
    assert ops["fastvid.temporal_conv_fwd"]["unpatched"]["calls"] == 0 < ops["fastvid.temporal_conv_fwd"]["patched"]["calls"]
    # The temporal ResNet convs: the registry's formula for fastvid's conv equals torch's for the Conv3d it replaces.
    convs = {(r["kind"], r["op"]): r for r in row["rows"] if r["part"] == "convs"}
    assert (convs[("temporal ResNet", "aten.convolution")]["unpatched"]["tflop"]
            == pytest.approx(convs[("temporal ResNet", "fastvid.temporal_conv_fwd")]["patched"]["tflop"]))
    assert sum(k["unpatched"]["share"] for k in row["kinds"]) == pytest.approx(1.0)


@pytest.mark.parametrize("name", ["animatediff", "modelscope", "svd", "i2vgenxl"])
def test_patched_video_transformers_copy_no_tokens(name):
    """Patched, the transformers of the video U-Nets move no tokens through copies (diffusers permute-copies
    around proj_in / proj_out and rearranges frames around temporal layers), and their feed-forwards' last add
    runs in the GEMM (no aten.add left in the feed-forward part)."""
    pytest.importorskip("diffusers")
    p = roofline.predict_diffusers(name, size="tiny")

    def transformer_copies(rows):
        return {key: t.bytes for key, t in rows.items()
                if "transformer" in key[0] and key[2] in ("aten.clone", "aten.copy_") and t.bytes}

    assert transformer_copies(p.unpatched)
    assert transformer_copies(p.patched) == {}
    assert any(op == "fastvid.linear_fwd" and part == "feed-forwards" for _, part, op in p.patched)
    assert not any(op == "aten.add" and part == "feed-forwards" for _, part, op in p.patched)


def test_fused_qkv_projections_cut_the_patched_calls_projection_ops():
    """--fuse-qkv: diffusers' fuse_qkv_projections() before both columns; patched, the self-attentions' three
    projection GEMMs become one (and the cross-attentions' two), and fastvid's processors keep them fused."""
    pytest.importorskip("diffusers")
    plain, fused = (roofline.predict_diffusers("animatediff", size="tiny", fuse_qkv=f) for f in (False, True))
    total = roofline.Prediction.total

    def projection_gemms(p):
        return sum(t.calls for (_, part, op), t in p.patched.items() if part == "attention projections"
                   and op in ("aten.mm", "aten.addmm"))

    assert projection_gemms(fused) < projection_gemms(plain)
    assert total(fused.patched).calls < total(plain.patched).calls
    assert total(fused.patched).flops == pytest.approx(total(plain.patched).flops)
    assert "QKV projections fused" in fused.shape and "fused" not in plain.shape


def test_fused_qkv_projections_leave_text2video_zero_on_its_cross_frame_processors():
    """Text2Video-Zero's pipeline installs its cross-frame processors on every call, over diffusers' fused
    one: --fuse-qkv then counts the same projection GEMMs as without it, and fastvid still swaps them."""
    pytest.importorskip("diffusers")
    plain, fused = (roofline.predict_diffusers("t2v_zero", size="tiny", fuse_qkv=f) for f in (False, True))
    total = roofline.Prediction.total
    assert total(fused.unpatched).calls == total(plain.unpatched).calls
    assert total(fused.patched).calls == total(plain.patched).calls
    assert fused.patch_summary == plain.patch_summary != "nothing swapped"
    assert "fused but unused" in fused.shape


@pytest.mark.parametrize("argv, flag", [
    (["roofline"], "--diffusers/--models"),
    (["roofline", "--diffusers", "sora"], "--diffusers"),
    (["roofline", "--models", "vdm", "--ops", "0"], "--ops"),
])
def test_cli_rejects_bad_arguments(argv, flag, capsys):
    with pytest.raises(SystemExit) as exc:
        cli.main(argv)
    assert exc.value.code == cli.EXIT_BAD_INPUT
    assert f"argument {flag}" in capsys.readouterr().err
