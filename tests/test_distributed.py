"""fastvid.distributed on CPU: gloo process groups of 2 and 4 processes (torch.multiprocessing; each group
meets in a fresh init file under tmp_path, so parallel pytest workers never race for a port).

Each world size is spawned once per module; the workers sample every reference model parallelized and
save what they got. The one-process references are computed here, once. Checks: one guided denoising
step gives the same output as one process (fp32, max error <= 1e-5 of the reference's largest value); the
sampled video too, within 1e-5 or, where the sampler's own float32 rounding is larger (SVD's EDM Euler
steps start at sigma 700 and cancel x against x - D), twice that rounding (the one-process float32 sample
against float64); the same on every rank; and each rank's FLOPs for that step within its frame share of
the one-process FLOPs plus the FLOPs of the modules the report lists as replicated (timestep and
micro-conditioning embeddings, text K/V projections).
"""
from __future__ import annotations

import contextlib
import importlib.util
import math

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

import fastvid.models as M
from fastvid import reference

# Under `pytest -n`, one worker runs this module: each world is spawned once, and no two spawns race for ports.
pytestmark = pytest.mark.xdist_group("distributed")
dist = pytest.importorskip("torch.distributed")
if not dist.is_available():
    pytest.skip("torch.distributed is not available", allow_module_level=True)

from fastvid.distributed import FastvidDistributedError, parallel_state, parallelize, unparallelize  # noqa: E402
from fastvid.distributed.accounting import SEQUENCE_STRATEGIES, step_bytes, step_inputs  # noqa: E402
from fastvid.distributed.launch import spawn  # noqa: E402
from fastvid.nn._hooks import unfused_modules  # noqa: E402

# The systems fastvid.distributed shards: every fastvid.models system.
ALL_MODELS = ("vdm", "make_a_video", "tune_a_video", "text2video_zero", "controlvideo", "dit", "dit_alternating",
              "svd", "video_ldm", "imagen_video", "gen1")
# 4 processes: not Video LDM (its blocks are SVD's), Imagen Video and Gen-1 (pseudo-3D convs and temporal attention,
# as Make-A-Video), to keep the test time small.
FOUR_RANK_MODELS = tuple(m for m in ALL_MODELS if m not in ("video_ldm", "imagen_video", "gen1"))
# (model, strategy, frames) per world size; frames are uneven over the ranks on purpose.
CASES = {
    2: [(m, "dsp", 3) for m in ALL_MODELS]
    + [("vdm", "ulysses", 3), ("controlvideo", "allgather", 3), ("vdm", "cfg", 3), ("svd", "cfg", 3),
       ("svd_patched", "dsp", 3)],
    4: [(m, "dsp", 5) for m in FOUR_RANK_MODELS] + [("make_a_video", "cfg+dsp", 3)],
}
REL_TOL = 1e-5
# diffusers' UNet3DConditionModel and UNetSpatioTemporalConditionModel (SVD) (tiny, random, as in test_diffusers),
# one forward over 5 frames; "_patched" is fastvid.patch first (torch backend): the fused temporal conv layers and
# res blocks run on the pixel shard with their GroupNorm+SiLU statistics all-reduced and their convs fused.
# UNetMotionModel (AnimateDiff) takes a guided batch of 2 with the text states repeated per frame, as its pipelines
# pass them: sharded by frames, and by the batch ("cfg").
DIFFUSERS = importlib.util.find_spec("diffusers") is not None
if DIFFUSERS:
    CASES[2] += [(m, "dsp", 5) for m in ("unet3d", "unet3d_patched", "diffusers_svd", "diffusers_svd_patched",
                                         "motion", "motion_patched")] + [("motion_patched", "cfg", 3)]


def is_diffusers(name):
    return name.startswith(("unet3d", "diffusers_svd", "motion"))


def guided_motion_inputs(frames):
    """Two samples (a guided call) of UNetMotionModel's inputs, the text states one row per sample and frame."""
    from test_diffusers import motion_inputs

    (x1, t, text1), (x2, _, text2) = motion_inputs(frames), motion_inputs(frames)
    return torch.cat([x1, x2]), t, torch.cat([text1, text2])


def diffusers_case(name, frames):
    """(model, inputs) of a diffusers case, the same in every process."""
    import fastvid
    from test_diffusers import _motion, svd, svd_inputs, unet3d, unet3d_inputs

    build, inputs = {"diffusers_svd": (svd, svd_inputs), "unet3d": (unet3d, unet3d_inputs),
                     "motion": (_motion, guided_motion_inputs)}[name.removesuffix("_patched")]
    torch.manual_seed(0)
    model = build().eval()
    if name.endswith("_patched"):
        fastvid.patch(model, backend="torch")
    torch.manual_seed(1)
    return model, inputs(frames)


def diffusers_forward(model, inputs):
    with torch.no_grad():
        return model(*inputs).sample


@contextlib.contextmanager
def counting_temporal_convs():
    """Counts the fused temporal convs (``fastvid.temporal_conv`` called by the patched modules) while open:
    yields a one-element list holding the count."""
    import fastvid.nn.temporal_conv as module

    count, original = [0], module.temporal_conv

    def counted(*args, **kwargs):
        count[0] += 1
        return original(*args, **kwargs)

    module.temporal_conv = counted
    try:
        yield count
    finally:
        module.temporal_conv = original


def fused_conv_count(model):
    """Temporal convs the fused modules of a patched diffusers model run per call (each conv once)."""
    return sum(isinstance(m.get_submodule(n), torch.nn.Conv3d) for m in model.modules()
               if type(m).__name__.startswith("Fastvid") and hasattr(m, "fused_submodules")
               for n in m.fused_submodules())


def reference_model(name, size):
    """The fastvid model of a case; "svd_patched" is SVD through fastvid.patch (torch backend: fused convs kept)."""
    model = M.build(name.removesuffix("_patched"), size)
    if name.endswith("_patched"):
        import fastvid

        fastvid.patch(model, backend="torch")
    return model


def tiny(name, frames):
    """The tiny preset with ``frames`` frames and as few steps as the sampler takes (Text2Video-Zero: 2)."""
    return M.size(name.removesuffix("_patched"), "tiny", frames=frames, steps=2 if name == "text2video_zero" else 1)


def count_flops(model, inputs):
    """(FLOP counter, output) of one call; ``inputs``: (args, kwargs)."""
    args, kwargs = inputs
    with FlopCounterMode(display=False) as counter:
        with torch.no_grad():
            out = model(*args, **kwargs)
    return counter, getattr(out, "sample", out)


def flop_bound(single, replicated, root, share):
    """One-process FLOPs times this rank's share, plus the replicated modules' FLOPs."""
    counts = single.get_flop_counts()
    extra = sum(sum(counts.get(f"{root}.{n}", {}).values()) for n in replicated)
    return single.get_total_flops() * share + extra


def group_for(strategy, world):
    if not strategy.startswith("cfg+"):
        return None
    from torch.distributed.device_mesh import init_device_mesh

    return init_device_mesh("cpu", (2, world // 2), mesh_dim_names=("cfg", "sequence"))


def mismatched_call(rank):
    """Rank 1 passes one frame more than rank 0: every rank must raise, none may hang."""
    size = M.size("vdm", "tiny", frames=3)
    model = M.build("vdm", size)
    parallelize(model)
    (x, t, context), _ = step_inputs(size)
    try:
        model(x[:, :, : 2 + rank], t, context)
    except FastvidDistributedError as e:
        return str(e)
    return None


def worker(rank, world, cases, out_dir):
    results = []
    for name, strategy, frames in cases:
        if is_diffusers(name):
            model, inputs = diffusers_case(name, frames)
            report = parallelize(model, strategy=strategy)
            with counting_temporal_convs() as fused_convs:
                flops, video = count_flops(model, (inputs, {}))
            results.append(dict(video=video, flops=flops.get_total_flops(), replicated=report.replicated,
                                calls=dict(parallel_state(model).calls), fused_convs=fused_convs[0],
                                unfused=dict(unfused_modules(model))))
            continue
        size = tiny(name, frames)
        model = reference_model(name, size)
        report = parallelize(model, group_for(strategy, world), strategy=strategy)
        video = M.sample(name.removesuffix("_patched"), model, size, seed=0)
        flops, step = count_flops(model, step_inputs(size))
        st = parallel_state(model)
        results.append(dict(video=video, step=step, flops=flops.get_total_flops(), replicated=report.replicated,
                            calls=dict(st.calls)))
        assert unparallelize(model) == report.total
    if world == 2:
        results.append(dict(step_bytes=step_bytes("vdm", "tiny", 4, SEQUENCE_STRATEGIES),
                            mismatch=mismatched_call(rank)))
    if world == 2:
        unsupported = {"temporal_conv_block": torch.nn.Sequential(reference.TemporalConvBlock(8, norm_num_groups=4))}
        if DIFFUSERS:
            from test_diffusers import unet2d

            unsupported["unet2d"] = unet2d()
        results.append(dict(refused={name: refusal(model) for name, model in unsupported.items()}))
    torch.save(results, f"{out_dir}/rank{rank}.pt")


def refusal(model):
    """(parallelize's error message or None, whether every module kept its class)."""
    classes = [type(m) for m in model.modules()]
    try:
        parallelize(model)
    except FastvidDistributedError as e:
        return str(e), classes == [type(m) for m in model.modules()]
    return None, False


def run_world(world, tmp_path_factory):
    out_dir = tmp_path_factory.mktemp(f"world{world}")
    spawn(worker, world, CASES[world], str(out_dir), init_file=str(out_dir / "init"))
    return [torch.load(out_dir / f"rank{r}.pt") for r in range(world)]


@pytest.fixture(scope="module", params=[2, 4])
def world_results(request, tmp_path_factory):
    world = request.param
    return world, run_world(world, tmp_path_factory)


def max_rel_err(got, gold):
    return (got - gold).abs().max().item() / gold.abs().max().item()


def sample_tolerance(name, model, size, gold):
    """REL_TOL, or twice the sampler's own float32 rounding (float32 against float64) where that is larger."""
    exact = M.sample(name.removesuffix("_patched"), model.double(), size, seed=0, dtype=torch.float64)
    model.float()
    return max(REL_TOL, 2 * max_rel_err(gold.double(), exact))


def test_parallel_sampling_matches_one_process(world_results):
    world, per_rank = world_results
    for i, (name, strategy, frames) in enumerate(CASES[world]):
        case = f"{name} {strategy} world {world} frames {frames}"
        sequence = world if strategy in ("dsp", "ulysses", "allgather") else world // 2 if "+" in strategy else 1
        share = math.ceil(frames / sequence) / frames if sequence > 1 else 1.0
        if strategy.startswith("cfg"):
            share /= 2
        if is_diffusers(name):
            model, inputs = diffusers_case(name, frames)
            single, gold = count_flops(model, (inputs, {}))
            convs = fused_conv_count(model)
            assert (convs > 0) == (name.endswith("_patched") and not name.startswith("motion"))
            for rank, r in enumerate(per_rank):
                err = max_rel_err(r[i]["video"], gold)
                assert err <= REL_TOL, f"{case} rank {rank}: max rel err {err:.3g}"
                assert r[i]["calls"]["batch_split" if strategy == "cfg" else "frames_sharded"] == 1
                # patched: every temporal conv ran fused on the pixel shard; the only layers a fused module calls
                # instead of reading are the temporal transformers' frame-spanning GroupNorms, sharded
                assert r[i]["fused_convs"] == convs, case
                assert all(why.startswith("norm is a ParallelGroupNorm") for why in r[i]["unfused"].values()), \
                    (case, r[i]["unfused"])
                bound = flop_bound(single, r[i]["replicated"], type(model).__name__, share)
                assert r[i]["flops"] <= bound, f"{case} rank {rank}: {r[i]['flops']} FLOPs > {bound:.0f}"
            continue
        size = tiny(name, frames)
        model = reference_model(name, size)
        gold = M.sample(name.removesuffix("_patched"), model, size, seed=0)
        single, gold_step = count_flops(model, step_inputs(size))
        tolerance = None
        for rank, results in enumerate(per_rank):
            r = results[i]
            err = max_rel_err(r["step"], gold_step)
            assert err <= REL_TOL, f"{case} rank {rank}: one step, max rel err {err:.3g}"
            err = max_rel_err(r["video"], gold)
            if err > REL_TOL and tolerance is None:
                tolerance = sample_tolerance(name, model, size, gold)
            assert err <= (tolerance or REL_TOL), f"{case} rank {rank}: sample, max rel err {err:.3g}"
            assert torch.equal(r["video"], per_rank[0][i]["video"]), f"{case}: rank {rank} differs from rank 0"
            bound = flop_bound(single, r["replicated"], type(model).__name__, share)
            assert r["flops"] <= bound, f"{case} rank {rank}: {r['flops']} FLOPs > {bound:.0f}"
            assert r["calls"]["frames_sharded"] + r["calls"]["batch_split"] > 0, f"{case}: no call was sharded"


def test_unsupported_modules_are_refused_by_name(world_results):
    """fastvid's TemporalConvBlock (in no model) mixes frames without a sharded form; a diffusers model other than
    the video denoisers fastvid.distributed knows (here an image UNet, as Text2Video-Zero runs) may mix frames
    in layers it cannot see. Both are refused, the model left unchanged."""
    world, per_rank = world_results
    if world != 2:
        pytest.skip("checked in the 2-process group")
    for results in per_rank:
        refused = next(r for r in results if "refused" in r)["refused"]
        message, unchanged = refused["temporal_conv_block"]
        assert message is not None and "mixes frames" in message and "TemporalConvBlock" in message and unchanged
        if DIFFUSERS:
            message, unchanged = refused["unet2d"]
            assert message is not None and "UNet2DConditionModel" in message and "UNetMotionModel" in message
            assert unchanged


def test_per_frame_rows_are_narrowed_to_a_ranks_frames():
    """UNetMotionModel's per-frame conditioning (sample-major rows: text states, SparseControlNet residuals in a
    tuple, a dict) is narrowed to frames 1..2 of each of 2 samples; per-sample tensors and scalars pass as they
    are."""
    from fastvid.distributed.layers import _narrow_frames

    batch, frames = 2, 4
    rows = torch.arange(batch * frames).float()[:, None].expand(-1, 3)  # row b * frames + f holds that number
    per_sample, scalar = torch.randn(batch, 3), torch.tensor(7)
    args, kwargs = _narrow_frames(((rows, per_sample), dict(down_block_additional_residuals=(rows, rows), t=scalar,
                                                             mid=[rows])), batch, frames, 1, 2)
    expected = torch.tensor([1.0, 2.0, 5.0, 6.0])[:, None].expand(-1, 3)
    assert torch.equal(args[0], expected) and args[1] is per_sample
    assert isinstance(kwargs["down_block_additional_residuals"], tuple)
    assert all(torch.equal(r, expected) for r in kwargs["down_block_additional_residuals"] + tuple(kwargs["mid"]))
    assert kwargs["t"] is scalar


def test_parallelize_needs_an_initialised_group():
    if dist.is_initialized():
        pytest.skip("a default process group exists in this process")
    with pytest.raises(FastvidDistributedError, match="init_process_group"):
        parallelize(M.build("vdm", "tiny"))


def test_mismatched_inputs_raise_on_every_rank(world_results):
    world, per_rank = world_results
    if world != 2:
        pytest.skip("checked in the 2-process group")
    for results in per_rank:
        message = next(r for r in results if "mismatch" in r)["mismatch"]
        assert message is not None and "different input shapes" in message


def test_dsp_moves_fewer_bytes_than_ulysses_and_allgather(world_results):
    """Counted, not timed: one guided VDM step over 4 frames; DSP switches activations (dim C) where Ulysses
    moves q, k, v and the output and the all-gather moves all of K and V."""
    world, per_rank = world_results
    if world != 2:
        pytest.skip("checked in the 2-process group")
    for results in per_rank:
        rows = {r["strategy"]: r for r in next(r for r in results if "step_bytes" in r)["step_bytes"]}
        shared = ("check", "group_norm", "output_gather")
        attention = {s: sum(b for op, b in rows[s]["bytes"].items() if op not in shared) for s in SEQUENCE_STRATEGIES}
        assert 0 < attention["dsp"] < attention["ulysses"] and attention["dsp"] < attention["allgather"], attention
        assert rows["dsp"]["bytes"]["group_norm"] == rows["allgather"]["bytes"]["group_norm"] > 0
