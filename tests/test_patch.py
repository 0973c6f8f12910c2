"""fastvid.patch / unpatch: every reference module with a fastvid.nn twin is swapped in place, keeping
its weights; outputs agree with the reference; disabled kinds and modules without a twin are reported."""
import sys
import types

import pytest
import torch
from torch import nn

import fastvid
from fastvid import reference
from fastvid.patching import KINDS, PatchReport, reference_class, twin_table
from fastvid.testing import assert_close_to_gold


def all_reference_modules(dim=16, heads=2, dim_head=8):
    """One of every reference module class (and FrameAttention mode) that the models use."""
    mods = {
        "temporal": reference.TemporalAttention(dim, heads, dim_head),
        "temporal_causal": reference.TemporalAttention(dim, heads, dim_head, rel_pos_bias=False, causal=True),
        "spatial": reference.FrameAttention(dim, heads, dim_head, frames="self"),
        "first": reference.FrameAttention(dim, heads, dim_head, frames="first"),
        "all": reference.FrameAttention(dim, heads, dim_head, frames="all"),
        "sparse_causal": reference.SparseCausalAttention(dim, heads, dim_head),
        "pseudo_conv": reference.PseudoConv3d(dim, dim),
        "add_layer_norm": reference.AddLayerNorm(dim),
        "geglu": reference.GEGLU(dim, dim),
    }
    if hasattr(reference, "TemporalConvBlock"):
        mods["temporal_conv_block"] = reference.TemporalConvBlock(dim, norm_num_groups=4)
    with torch.no_grad():
        for m in mods.values():
            for p in m.parameters():
                p.add_(0.05 * torch.randn_like(p))  # identity inits would hide frame mixing
    return nn.ModuleDict(mods)


def run_all(model, x):
    """x: (B, C, F, H, W); TemporalConvBlock takes diffusers' (B*F, C, H, W) frames and num_frames, GEGLU
    channels-last tokens, AddLayerNorm (B, F*H*W, C) tokens and a residual (its sum and normed tokens stacked)."""
    frames = x.transpose(1, 2).flatten(0, 1)
    tokens = x.flatten(2).transpose(1, 2)
    calls = {"temporal_conv_block": lambda m: m(frames, num_frames=x.shape[2]), "geglu": lambda m: m(x.movedim(1, -1)),
             "add_layer_norm": lambda m: torch.stack(m(tokens, tokens.flip(-1)))}
    return {name: calls.get(name, lambda m: m(x))(m) for name, m in model.items()}


def test_twin_table_maps_reference_classes_to_nn_subclasses():
    table = twin_table()
    assert reference.TemporalAttention in table
    for ref_cls, twin in table.items():
        assert issubclass(twin, ref_cls) and ref_cls.__module__.startswith("fastvid.reference")
        assert twin.patch_kind in KINDS
        # the most derived reference class: no other reference class between twin and ref_cls
        assert not any(c is not ref_cls and issubclass(c, ref_cls) and c.__module__.startswith("fastvid.reference")
                       for c in twin.__mro__)


def test_patch_swaps_every_twinned_module_and_outputs_agree():
    model = all_reference_modules()
    x = torch.randn(2, 16, 5, 3, 4)
    gold = run_all(model.double(), x.double())
    model.float()
    plain = run_all(model, x)
    params = {k: v for k, v in model.state_dict(keep_vars=True).items()}
    table = twin_table()
    report = fastvid.patch(model)
    assert isinstance(report, PatchReport)
    swapped_names = {n for names in report.swapped.values() for n in names}
    skipped = dict(report.skipped)
    for name, module in model.items():
        if name in swapped_names:
            assert table.get(reference_class(type(module))) is type(module)
            assert name in report.swapped[type(module).patch_kind]
        else:
            assert "no fastvid twin" in skipped[name]
            assert type(module) not in table
    assert report.total == len(swapped_names) >= 2  # both temporal attentions at least
    # weights kept: same tensors under the same keys
    after = model.state_dict(keep_vars=True)
    assert list(after) == list(params) and all(after[k] is params[k] for k in params)
    patched = run_all(model, x)
    for name in patched:
        assert_close_to_gold(name, patched[name], plain[name], gold[name], torch.float32)
    assert "swapped" in str(report) and "temporal_attention" in str(report)


def test_disabled_kinds_are_skipped_with_reason():
    model = all_reference_modules()
    report = fastvid.patch(model, temporal_attention=False, frame_attention=False, conv=False, feed_forward=False,
                           transformer_block=False)
    assert report.total == 0
    kinds = {twin.patch_kind for twin in twin_table().values()}
    reasons = [r for _, r in report.skipped]
    for kind in kinds:
        assert f"{kind} disabled" in reasons
    assert all(type(m).__module__.startswith("fastvid.reference") for m in model.values())


def test_unpatch_restores_classes_and_backend():
    model = all_reference_modules()
    classes = {n: type(m) for n, m in model.items()}
    report = fastvid.patch(model, backend="torch")
    for names in report.swapped.values():
        for n in names:
            assert model[n].backend == "torch"
    again = fastvid.patch(model)
    assert again.total == 0 and any("already a fastvid module" in r for _, r in again.skipped)
    assert fastvid.unpatch(model) == report.total
    assert {n: type(m) for n, m in model.items()} == classes
    assert not any("backend" in m.__dict__ for m in model.values())


def test_patch_rejects_bad_arguments():
    with pytest.raises(fastvid.FastvidInputError, match="backend"):
        fastvid.patch(nn.Linear(2, 2), backend="cuda")
    with pytest.raises(fastvid.FastvidInputError, match="model"):
        fastvid.patch([nn.Linear(2, 2)])


@pytest.mark.parametrize("model", [nn.Sequential(nn.Linear(2, 2)), nn.Conv3d(2, 2, 1)])
def test_a_model_without_patchable_layers_is_refused(model):
    """One rule for fastvid's models and diffusers': no layer fastvid patches is an error naming them."""
    with pytest.raises(fastvid.FastvidInputError, match=r"argument 'model' .* none of the layers fastvid patches "
                                                        r"\(.*reference\.TemporalAttention"):
        fastvid.patch(model)
    with pytest.raises(fastvid.FastvidInputError, match="argument 'model'"):
        fastvid.unpatch([model])


def test_patch_report_api():
    r = PatchReport()
    r.add("conv", "a.b")
    r.add("conv", "a.c")
    r.skip("x", "why")
    r.add("temporal_attention", "unet.attn1", processor=True)
    assert r.total == 3 and r.counts() == {"conv": 2, "temporal_attention": 1} and r.skipped == [("x", "why")]
    assert r.modules_swapped == 2 and r.processors_installed == 1
    text = str(r)
    assert repr(r) == text and len(text.splitlines()) >= 5
    assert text.splitlines()[0] == ("PatchReport: 2 module(s) swapped, 1 attention processor(s) installed, "
                                    "1 skipped")
    assert "conv: 2 module(s), 0 processor(s)" in text and "temporal_attention: 0 module(s), 1 processor(s)" in text
    assert "a.b, a.c" in text and "x: why" in text


def test_diffusers_objects_go_through_the_integration(monkeypatch):
    calls = []
    fake = types.ModuleType("fastvid.integrations.diffusers")
    fake.patch_diffusers = lambda model, report, **kw: (calls.append(("patch", kw)), report.add("frame_attention", "unet.x"))
    fake.unpatch_diffusers = lambda model: calls.append(("unpatch", None)) or 1
    monkeypatch.setitem(sys.modules, "fastvid.integrations", types.ModuleType("fastvid.integrations"))
    monkeypatch.setitem(sys.modules, "fastvid.integrations.diffusers", fake)
    pipeline = types.SimpleNamespace(unet=nn.Linear(2, 2))
    report = fastvid.patch(pipeline, conv=False, backend="torch")
    assert report.swapped["frame_attention"] == ["unet.x"]
    assert calls[0] == ("patch", dict(temporal_attention=True, frame_attention=True, conv=False, feed_forward=True,
                                      transformer_block=True, backend="torch"))
    assert fastvid.unpatch(pipeline) == 1
    assert calls[1][0] == "unpatch"


class RoundedLinear(nn.Linear):
    """A quantized-like linear: its own class and forward (weights rounded to bf16)."""

    def forward(self, x):
        return nn.functional.linear(x, self.weight.bfloat16().to(self.weight.dtype), self.bias)


def test_hooked_or_wrapped_submodules_are_called_and_reported():
    model = all_reference_modules()
    calls = []
    model["temporal"].to_k.register_forward_hook(lambda m, args, out: out * 1.5)
    spatial_q = model["spatial"].to_q
    model["spatial"].to_q = RoundedLinear(spatial_q.in_features, spatial_q.out_features, bias=False)
    model["spatial"].to_q.weight = spatial_q.weight
    model["temporal_conv_block"].conv2[-1].register_forward_pre_hook(lambda m, args: (args[0] * 0.5,))
    model["pseudo_conv"].temporal_conv.register_forward_hook(lambda m, args, out: calls.append(m) or None)
    x = torch.randn(2, 16, 5, 3, 4)
    names = ("temporal", "spatial", "temporal_conv_block")
    gold = run_all(model.double(), x.double())
    model.float()
    plain = run_all(model, x)
    report = fastvid.patch(model, backend="torch")
    assert sorted(name for name, _ in report.unfused) == sorted(names + ("pseudo_conv",))
    assert "RoundedLinear" in dict(report.unfused)["spatial"]
    patched = run_all(model, x)
    for name in names + ("pseudo_conv",):
        assert_close_to_gold(name, patched[name], plain[name], gold[name], torch.float32)
    assert calls  # the pseudo-3D conv's temporal conv ran as a module, so its hook fired
    assert PatchReport.of(model).unfused == report.unfused


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_autocast_dtypes_match_the_reference_modules(dtype):
    model = all_reference_modules()
    x = torch.randn(2, 16, 5, 3, 4)
    gold = run_all(model.double(), x.double())
    model.float()
    with torch.autocast("cpu", dtype=dtype):
        plain = run_all(model, x)
        fastvid.patch(model, backend="torch")
        patched = run_all(model, x)
    for name in patched:
        assert patched[name].dtype == plain[name].dtype, name
        assert_close_to_gold(name, patched[name].float(), plain[name].float(), gold[name], dtype)


class _WrappedTensor(torch.Tensor):
    """A tensor subclass, as quantized weights (torchao) or sharded ones (DTensor) are."""


def _with(module, edit):
    edit(module)
    return module


@pytest.mark.parametrize("make, expected", [
    (lambda: nn.Linear(4, 4), None),
    (lambda: nn.Conv3d(4, 4, (3, 1, 1)), None),
    (lambda: RoundedLinear(4, 4), "not a plain torch layer"),
    (lambda: _with(nn.Linear(4, 4), lambda m: setattr(m, "_hf_hook", object())), "accelerate hook"),
    (lambda: _with(nn.Linear(4, 4), lambda m: setattr(m, "_diffusers_hook", object())), "diffusers hooks"),
    (lambda: _with(nn.Linear(4, 4), lambda m: setattr(m, "forward", m.forward)), "forward replaced"),
    (lambda: _with(nn.Linear(4, 4), lambda m: m.register_forward_pre_hook(lambda *a: None)), "forward hooks"),
    (lambda: nn.Linear(4, 4, device="meta"), "weight on the meta device"),
    (lambda: _with(nn.Linear(4, 4), lambda m: setattr(m, "weight", nn.Parameter(
        torch.Tensor._make_subclass(_WrappedTensor, torch.randn(4, 4))))), "as a _WrappedTensor"),
    (lambda: _with(nn.Linear(4, 4), lambda m: setattr(m, "bias", nn.Parameter(
        torch.zeros(4, dtype=torch.int8), requires_grad=False))), "bias in torch.int8"),
    (lambda: nn.Linear(4, 4).to(torch.float8_e4m3fn), "weight in torch.float8_e4m3fn"),
])
def test_layer_reasons_name_what_a_fused_path_would_skip(make, expected):
    """The per-forward check of a fused module's submodules: plain layers pass; each wrapper, hook or storage
    a fused path would bypass is named."""
    from fastvid.nn._hooks import unfused_reason

    owner = nn.Module()
    owner.inner = nn.Sequential(make())
    why = unfused_reason(owner, ["inner.0"])
    assert why is None if expected is None else expected in why, why
