"""fastvid.distributed on CPU: gloo process groups of 2 and 4 processes (torch.multiprocessing, 127.0.0.1).

Each world size is spawned once per module; the workers sample every reference model parallelized and
save what they got. The one-process references are computed here, once. Checks: the same video as
one process (fp32, max error <= 1e-5 of the reference's largest value), the same on every rank, and each
rank's FLOPs for one guided denoising step within its frame share of the one-process FLOPs plus the
FLOPs of the modules the report lists as replicated (timestep embedding, text K/V projections).
"""
from __future__ import annotations

import importlib.util
import math

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

import fastvid.models as M

# Under `pytest -n`, one worker runs this module: each world is spawned once, and no two spawns race for ports.
pytestmark = pytest.mark.xdist_group("distributed")
dist = pytest.importorskip("torch.distributed")
if not dist.is_available():
    pytest.skip("torch.distributed is not available", allow_module_level=True)

from fastvid.distributed import FastvidDistributedError, parallel_state, parallelize, unparallelize  # noqa: E402
from fastvid.distributed.accounting import SEQUENCE_STRATEGIES, step_bytes  # noqa: E402
from fastvid.distributed.launch import spawn  # noqa: E402

# The systems fastvid.distributed shards (issue 14); the later cascade / SVD-style systems are not covered yet.
ALL_MODELS = ("vdm", "make_a_video", "tune_a_video", "text2video_zero", "controlvideo", "dit", "dit_alternating")
# (model, strategy, frames) per world size; frames are uneven over the ranks on purpose.
CASES = {
    2: [(m, "dsp", 3) for m in ALL_MODELS]
    + [("vdm", "ulysses", 3), ("controlvideo", "allgather", 3), ("vdm", "cfg", 3)],
    4: [(m, "dsp", 5) for m in ALL_MODELS] + [("make_a_video", "cfg+dsp", 3)],
}
REL_TOL = 1e-5
# diffusers' UNet3DConditionModel (tiny, random, as in test_diffusers), one forward over 5 frames; "patched" is
# fastvid.patch(conv=False) first. SVD's UNetSpatioTemporalConditionModel must be refused by name.
DIFFUSERS = importlib.util.find_spec("diffusers") is not None
if DIFFUSERS:
    CASES[2] += [("unet3d", "dsp", 5), ("unet3d_patched", "dsp", 5)]


def diffusers_case(name, frames):
    """(model, inputs) of a diffusers case, the same in every process."""
    import fastvid
    from test_diffusers import unet3d, unet3d_inputs

    torch.manual_seed(0)
    model = unet3d().eval()
    if name == "unet3d_patched":
        fastvid.patch(model, conv=False, backend="torch")
    torch.manual_seed(1)
    return model, unet3d_inputs(frames)


def diffusers_forward(model, inputs):
    with torch.no_grad():
        return model(*inputs).sample


def tiny(name, frames):
    """The tiny preset with ``frames`` frames and as few steps as the sampler takes (Text2Video-Zero: 2)."""
    return M.size(name, "tiny", frames=frames, steps=2 if name == "text2video_zero" else 1)


def step_inputs(size):
    g = torch.Generator().manual_seed(1)
    x = torch.randn(2, *size.latent_shape[1:], generator=g)
    context = torch.randn(2, size.context_len, size.model.context_dim, generator=g)
    return x, torch.tensor([500]), context


def count_flops(model, inputs):
    with FlopCounterMode(display=False) as counter:
        with torch.no_grad():
            model(*inputs)
    return counter


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
    x, t, context = step_inputs(size)
    try:
        model(x[:, :, : 2 + rank], t, context)
    except FastvidDistributedError as e:
        return str(e)
    return None


def worker(rank, world, cases, out_dir):
    results = []
    for name, strategy, frames in cases:
        if name.startswith("unet3d"):
            model, inputs = diffusers_case(name, frames)
            parallelize(model, strategy=strategy)
            results.append(dict(video=diffusers_forward(model, inputs), calls=dict(parallel_state(model).calls)))
            continue
        size = tiny(name, frames)
        model = M.build(name, size)
        report = parallelize(model, group_for(strategy, world), strategy=strategy)
        video = M.sample(name, model, size, seed=0)
        flops = count_flops(model, step_inputs(size)).get_total_flops()
        st = parallel_state(model)
        results.append(dict(video=video, flops=flops, replicated=report.replicated, calls=dict(st.calls)))
        assert unparallelize(model) == report.total
    if world == 2:
        results.append(dict(step_bytes=step_bytes("vdm", "tiny", 4, SEQUENCE_STRATEGIES),
                            mismatch=mismatched_call(rank)))
    if DIFFUSERS and world == 2:
        from test_diffusers import svd

        model = svd()
        classes = [type(m) for m in model.modules()]
        try:
            parallelize(model)
        except FastvidDistributedError as e:
            results.append(dict(svd_refused=str(e), svd_unchanged=classes == [type(m) for m in model.modules()]))
    torch.save(results, f"{out_dir}/rank{rank}.pt")


def run_world(world, tmp_path_factory):
    out_dir = tmp_path_factory.mktemp(f"world{world}")
    spawn(worker, world, CASES[world], str(out_dir))
    return [torch.load(out_dir / f"rank{r}.pt") for r in range(world)]


@pytest.fixture(scope="module", params=[2, 4])
def world_results(request, tmp_path_factory):
    world = request.param
    return world, run_world(world, tmp_path_factory)


def test_parallel_sampling_matches_one_process(world_results):
    world, per_rank = world_results
    for i, (name, strategy, frames) in enumerate(CASES[world]):
        if name.startswith("unet3d"):
            gold = diffusers_forward(*diffusers_case(name, frames))
            for rank, results in enumerate(per_rank):
                err = (results[i]["video"] - gold).abs().max().item() / gold.abs().max().item()
                assert err <= REL_TOL, f"{name} world {world} rank {rank}: max rel err {err:.3g}"
                assert results[i]["calls"]["frames_sharded"] == 1
            continue
        size = tiny(name, frames)
        model = M.build(name, size)
        gold = M.sample(name, model, size, seed=0)
        single = count_flops(model, step_inputs(size))
        case = f"{name} {strategy} world {world} frames {frames}"
        for rank, results in enumerate(per_rank):
            r = results[i]
            err = (r["video"] - gold).abs().max().item() / gold.abs().max().item()
            assert err <= REL_TOL, f"{case} rank {rank}: max rel err {err:.3g}"
            assert torch.equal(r["video"], per_rank[0][i]["video"]), f"{case}: rank {rank} differs from rank 0"
            sequence = world if strategy in ("dsp", "ulysses", "allgather") else world // 2 if "+" in strategy else 1
            share = math.ceil(frames / sequence) / frames if sequence > 1 else 1.0
            if strategy.startswith("cfg"):
                share /= 2
            counts = single.get_flop_counts()
            root = type(model).__name__
            replicated = sum(sum(counts.get(f"{root}.{n}", {}).values()) for n in r["replicated"])
            bound = single.get_total_flops() * share + replicated
            assert r["flops"] <= bound, f"{case} rank {rank}: {r['flops']} FLOPs > {bound:.0f}"
            assert r["calls"]["frames_sharded"] + r["calls"]["batch_split"] > 0, f"{case}: no call was sharded"


def test_unsupported_models_are_refused_by_name(world_results):
    world, per_rank = world_results
    if not DIFFUSERS or world != 2:
        pytest.skip("diffusers is not installed" if not DIFFUSERS else "checked in the 2-process group")
    for results in per_rank:
        svd = next(r for r in results if "svd_refused" in r)
        assert "mixes frames" in svd["svd_refused"] and svd["svd_unchanged"]


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
