"""``fastvid bench --diffusers``: the real diffusers pipelines at tiny sizes on CPU (diffusers and fastvid
variants; the torch.compile variants are left out here: compiling five pipelines on a CPU takes minutes), the
plan and the budget without running anything, the agreement rule, and clear errors for bad requests."""
import json
import re
import sys

import pytest
import torch

pytest.importorskip("diffusers", reason="diffusers is an optional extra: pip install 'fastvid[diffusers]'")

import fastvid  # noqa: E402
from fastvid import bench_pipelines as bp  # noqa: E402
from fastvid import cli  # noqa: E402
from fastvid.bench import CPU_SPEED_LABEL  # noqa: E402
from fastvid.registry import OPS  # noqa: E402
from benchmarks import gpu_kit  # noqa: E402


def rows_of(out):
    return [json.loads(line) for line in (out / "pipelines.jsonl").read_text().splitlines()]


def test_all_tiny_pipelines_run_every_cpu_variant(tmp_path, capsys, one_thread):
    rc = cli.main(["bench", "--diffusers", "all", "--size", "tiny", "--variants", "diffusers,fastvid,fastvid+captured",
                   "--warmup-steps", "0", "--timed-steps", "3", "--out", str(tmp_path)])
    io = capsys.readouterr()
    assert rc == 0, io.out + io.err
    assert "# plan" in io.out and CPU_SPEED_LABEL in io.out
    rows = rows_of(tmp_path)
    assert list(dict.fromkeys(r["pipeline"] for r in rows)) == list(bp.released.RELEASED)
    for r in rows:
        assert r["label"] == CPU_SPEED_LABEL and r["device"] == "cpu"
        assert r["commit"] and r["date"] and r["torch"] == torch.__version__
    steps = {(r["pipeline"], r["variant"]): r for r in rows if r["stage"] == "step"}
    for name, entry in bp.released.RELEASED.items():
        reference, patched = steps[(name, "diffusers")], steps[(name, "fastvid")]
        for r in (reference, patched):
            assert r["status"] == "ok", r
            assert len(r["step_ms"]) == 3 and r["step_ms_min"] <= r["step_ms_median"] <= r["step_ms_max"]
            assert r["agree"] and r["rel_err"] <= bp.TOLERANCE[torch.float32]
        assert reference["rel_err"] == 0 and reference["speedup"] is None
        assert patched["speedup"]["low"] <= patched["speedup"]["median"] <= patched["speedup"]["high"]
        assert sum(patched["swapped"].values()) > 0
        size = entry.tiny
        frames_axis = {"svd": 1, "t2v_zero": 0}.get(name, 2)
        assert reference["latent_shape"][frames_axis] == size.frames
        assert reference["latent_shape"][-2:] == [size.latent_height, size.latent_width]
        decode = [r for r in rows if r["pipeline"] == name and r["stage"] == "vae_decode"]
        assert len(decode) == 1 and decode[0]["decode_ms"] > 0
        captured = steps[(name, "fastvid+captured")]
        if hasattr(fastvid, "capture_step"):
            assert captured["status"] in ("ok", "unavailable")  # a CUDA graph cannot be captured on a CPU
        else:
            assert captured["status"] == "unavailable" and "capture_step" in captured["reason"]
    md = (tmp_path / "pipelines.md").read_text()
    assert md.count("\n| ") >= 3 * len(bp.released.RELEASED) and CPU_SPEED_LABEL in md
    assert (tmp_path / "pipelines.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_captured_variant_calls_fastvid_capture_step(tmp_path, capsys, monkeypatch, one_thread):
    calls = []
    monkeypatch.setattr(fastvid, "capture_step", lambda pipe: calls.append(type(pipe).__name__), raising=False)
    rc = cli.main(["bench", "--diffusers", "t2v_zero", "--size", "tiny", "--variants", "fastvid+captured", "--warmup-steps",
                   "0", "--timed-steps", "1", "--out", str(tmp_path), "--no-plot"])
    capsys.readouterr()
    rows = {r["variant"]: r for r in rows_of(tmp_path) if r["stage"] == "step"}
    assert rc == 0 and calls == ["TextToVideoZeroPipeline"]
    captured = rows["fastvid+captured"]
    assert captured["status"] == "ok" and captured["setup_s"] > 0 and captured["agree"]
    assert sum(captured["swapped"].values()) > 0  # patched, then captured
    assert captured["speedup"] is None  # one timed step is no measurement


def test_fused_qkv_variant_patches_a_fused_unet_and_agrees(tmp_path, capsys, one_thread):
    """The opt-in variant: diffusers' fuse_qkv_projections(), then fastvid.patch, the same samples."""
    rc = cli.main(["bench", "--diffusers", "animatediff", "--size", "tiny", "--variants", bp.FUSED_QKV,
                   "--warmup-steps", "0", "--timed-steps", "1", "--out", str(tmp_path), "--no-plot"])
    capsys.readouterr()
    rows = {r["variant"]: r for r in rows_of(tmp_path) if r["stage"] == "step"}
    fused = rows[bp.FUSED_QKV]
    assert rc == 0 and fused["status"] == "ok" and fused["agree"]
    assert fused["swapped"]["temporal_attention"] > 0  # fastvid's processors on the fused projections


def test_a_lost_cuda_context_stops_the_run_with_its_own_exit_status(tmp_path, capsys, monkeypatch, one_thread):
    """After a failure the device is probed; a lost context (faked here) ends the process: the failing
    pipeline's later variants are recorded as skipped, the pipelines after it get no rows."""
    apply = bp.apply_variant

    def failing(pipe, variant, s):
        if variant == "fastvid":
            raise RuntimeError("CUDA error: an illegal memory access was encountered")
        return apply(pipe, variant, s)

    monkeypatch.setattr(bp, "apply_variant", failing)
    monkeypatch.setattr(bp, "device_lost", lambda device: True)
    rc = cli.main(["bench", "--diffusers", "t2v_zero,modelscope", "--size", "tiny", "--variants", "fastvid,fastvid+captured",
                   "--warmup-steps", "0", "--timed-steps", "1", "--out", str(tmp_path), "--no-plot"])
    io = capsys.readouterr()
    assert rc == bp.EXIT_DEVICE_LOST and "the CUDA context was lost" in io.out
    rows = {(r["pipeline"], r["variant"], r["stage"]): r for r in rows_of(tmp_path)}
    assert rows[("t2v_zero", "diffusers", "step")]["status"] == "ok"
    assert rows[("t2v_zero", "fastvid", "step")]["status"] == "error"
    assert rows[("t2v_zero", "fastvid+captured", "step")]["status"] == "skipped"
    assert not any(name == "modelscope" for name, _, _ in rows)
    assert "t2v_zero" in (tmp_path / "pipelines.md").read_text()


def test_gpu_kit_runs_the_pipelines_left_in_a_new_process(tmp_path, monkeypatch, capsys):
    """A bench process that lost the CUDA context is followed by one running the pipelines without rows, within
    what is left of the call's budget; the table is then redrawn from every row."""
    commands, redrawn = [], []

    def bench(name, cmd, env, log, timeout_s, echo):
        commands.append(cmd)
        names = cmd[cmd.index("--diffusers") + 1].split(",")
        with (tmp_path / "pipelines.jsonl").open("a") as f:
            f.write(json.dumps({"pipeline": names[0]}) + "\n")
        return bp.EXIT_DEVICE_LOST if len(commands) == 1 else 0

    monkeypatch.setattr(gpu_kit, "_streamed", bench)
    monkeypatch.setattr(gpu_kit, "_environment", lambda: {})
    monkeypatch.setattr(gpu_kit, "plot", lambda out, draw: redrawn.append(out))
    assert gpu_kit.run("eager", tmp_path, []) == 0
    first, second = (cmd[cmd.index("--diffusers") + 1] for cmd in commands)
    assert first == gpu_kit.ALL and second == gpu_kit.ALL.split(",", 1)[1]
    budgets = [float(cmd[cmd.index("--budget") + 1]) for cmd in commands]
    assert budgets[1] <= budgets[0] == float(gpu_kit.CALLS["eager"][-1])
    assert redrawn == [tmp_path] and "a new process runs" in capsys.readouterr().out


def test_plan_only_at_the_released_size_runs_nothing(capsys, monkeypatch):
    monkeypatch.setattr(bp, "run", lambda *a, **k: pytest.fail("--plan-only ran the benchmark"))
    assert cli.main(["bench", "--diffusers", "all", "--size", "gpu", "--plan-only"]) == 0
    out = capsys.readouterr().out
    for name in bp.released.RELEASED:
        for variant in bp.DEFAULT_VARIANTS:
            assert any(line.split()[1:3] == [name, variant] for line in out.splitlines() if line.startswith("#   "))
    assert bp.FUSED_QKV not in out  # opt-in only
    assert "size 'released'" in out and "12 torch.compile graphs" in out and "budget none" in out


def test_budget_skips_what_would_not_fit(capsys):
    assert cli.main(["bench", "--diffusers", "all", "--size", "gpu", "--plan-only", "--variants", "diffusers,fastvid",
                     "--budget", "100"]) == 0
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("#   ")]
    skipped = [line for line in lines if "skipped by --budget" in line]
    assert lines[0].split()[1:3] == ["svd", "diffusers"] and "skipped" not in lines[0]
    assert skipped and lines[-1] in skipped


def test_call_profile_times_only_the_chosen_call():
    """The profiled call's ops are counted (here CPU ops, where a GPU run counts CUDA kernels), the others not."""
    from torch.autograd import DeviceType
    from torch.profiler import ProfilerActivity

    model = torch.nn.Sequential(torch.nn.Linear(8, 8), torch.nn.GELU())
    profile = bp.CallProfile(2, activity=ProfilerActivity.CPU, device_type=DeviceType.CPU)
    model.register_forward_pre_hook(profile.start)
    model.register_forward_hook(profile.stop)
    x = torch.randn(4, 8)
    model(x)
    assert profile.kernels is None and profile.device_ms is None
    model(x)
    assert profile.kernels >= 2 and profile.device_ms > 0
    counted = profile.kernels
    model(x)
    assert profile.kernels == counted


def test_gpu_kit_checks_run_every_op_test_file():
    files = gpu_kit.check_tests()
    assert all((gpu_kit.ROOT / f).is_file() for f in files)
    assert {f"tests/test_{name}.py" for name in OPS} <= set(files)


def test_gpu_kit_stops_a_step_past_its_time(tmp_path, capsys):
    cmd = [sys.executable, "-c", "import time; print('started', flush=True); time.sleep(30)"]
    with (tmp_path / "log").open("w") as log:
        assert gpu_kit._streamed("sleeper", cmd, None, log, 1.0, lambda line: True) == 124
    assert "started" in (tmp_path / "log").read_text()
    assert "sleeper stopped after 1 s" in capsys.readouterr().out


@pytest.mark.parametrize("call", sorted(gpu_kit.CALLS))
def test_gpu_kit_calls_fit_their_budgets(call, capsys):
    """Each planned GPU call runs everything it names within its budget (eager: all five pipelines, <= 6 minutes)."""
    assert cli.main(["bench", *gpu_kit.CALLS[call], "--size", "gpu", "--plan-only"]) == 0
    out = capsys.readouterr().out
    assert "skipped by --budget" not in out
    total, budget = (float(x) for x in re.search(r"# total (\d+) s .* budget (\d+) s", out).groups())
    assert total <= budget <= (360 if call == "eager" else 600)


def test_disagreeing_latents_get_no_speedup():
    reference = torch.randn(2, 4, 3, 8, 8)
    assert bp.compare(reference.clone(), reference, torch.bfloat16)["agree"]
    worse = bp.compare(reference * 1.5, reference, torch.bfloat16)
    assert not worse["agree"] and worse["rel_err"] == pytest.approx(0.5, rel=1e-6)
    assert not bp.compare(reference * float("nan"), reference, torch.float32)["agree"]
    ref_row = dict(variant="diffusers", status="ok", agree=True, **bp.summarise_steps([0.2, 0.2, 0.2]))
    row = dict(ref_row, variant="fastvid", **worse)
    assert bp.speedup(row, ref_row) is None
    assert bp.speedup(dict(row, agree=True), ref_row)["median"] == pytest.approx(1.0)


@pytest.mark.parametrize("argv, flag", [
    (["--diffusers", "sora"], "--diffusers"),
    (["--diffusers", "svd", "--variants", "tensorrt"], "--variants"),
    (["--diffusers", "svd", "--timed-steps", "0"], "--timed-steps"),
    (["--diffusers", "svd", "--budget", "-5"], "--budget"),
])
def test_bad_requests_are_one_line_errors(argv, flag, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(bp, "run", lambda *a, **k: pytest.fail("a bad argument let the benchmark start"))
    with pytest.raises(SystemExit) as exc:
        cli.main(["bench", *argv, "--out", str(tmp_path)])
    err = capsys.readouterr().err
    assert exc.value.code == cli.EXIT_BAD_INPUT and f"argument {flag}" in err and len(err.strip().splitlines()) == 1
