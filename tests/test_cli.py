"""``fastvid bench``: a tiny run writing its report, and clear errors for bad requests."""
import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from fastvid import cli, models


def run(argv, capsys):
    with pytest.raises(SystemExit) as exc:
        cli.main(argv)
    return exc.value.code, capsys.readouterr()


def test_bench_writes_table_json_markdown_and_png(tmp_path, capsys):
    rc = cli.main(["bench", "--size", "tiny", "--models", "vdm,controlvideo,dit", "--out", str(tmp_path)])
    out = capsys.readouterr().out
    assert rc == 0
    for name in ("vdm", "controlvideo", "dit"):
        assert name in out
    assert "all samples agree" in out and "No speed-up is given" in out
    data = json.loads((tmp_path / "bench.json").read_text())
    assert [r["model"] for r in data["rows"]] == ["vdm", "controlvideo", "dit"]
    for row in data["rows"]:
        assert row["agree"] and row["evals"] > 0 and row["reference_s"] > 0 and row["fastvid_s"] > 0
        assert row["shape"] == list(models.size(row["model"], "tiny").latent_shape)
        assert row["speedup"] is None and len(row["reference_runs_s"]) == 1  # one CPU run is no measurement
    assert data["env"]["device"] == "cpu" and data["settings"]["dtype"] == "float32"
    assert any("not GPU speed" in note or "say nothing about GPU speed" in note for note in data["notes"])
    assert data["rows"][0]["swapped"].get("temporal_attention", 0) > 0
    md = (tmp_path / "bench.md").read_text()
    assert md.count("\n| ") >= 4 and "CPU" in md
    assert (tmp_path / "bench.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_overrides_repeats_and_progress_reach_the_run(tmp_path, capsys):
    rc = cli.main(["bench", "--size", "tiny", "--models", "make_a_video", "--frames", "2", "--steps", "1",
                   "--repeats", "3", "--progress", "--out", str(tmp_path), "--no-plot"])
    io = capsys.readouterr()
    assert rc == 0 and not (tmp_path / "bench.png").exists()
    data = json.loads((tmp_path / "bench.json").read_text())
    row = data["rows"][0]
    assert row["shape"][2] == 2 and row["steps"] == 1 and row["warmup"]
    assert len(row["reference_runs_s"]) == len(row["fastvid_runs_s"]) == 3
    speedup = row["speedup"]
    assert speedup["low"] <= speedup["median"] <= speedup["high"]
    assert any("CPU, not GPU speed" in note for note in data["notes"]) and "CPU, not GPU speed" in io.out
    assert "DDIM" in io.err  # the progress bar


@pytest.fixture
def no_run(monkeypatch):
    """Fails the test if a bad argument lets the benchmark start."""
    from fastvid import bench

    def run_bench(*args, **kwargs):
        raise AssertionError("the benchmark started before every argument was checked")

    monkeypatch.setattr(bench, "run_bench", run_bench)


def bad_argument(argv, capsys, flag):
    """Runs ``fastvid bench`` with ``argv``; checks exit 2 and one error line naming ``flag``; returns it."""
    code, io = run(["bench", *argv], capsys)
    assert code == 2 and io.out == ""
    assert io.err.startswith(f"fastvid bench: error: argument {flag}") and io.err.count("\n") == 1, io.err
    assert io.err.count("error") == 1 and "fastvid bench: fastvid" not in io.err
    return io.err


def test_unknown_model_is_a_clear_error(tmp_path, capsys, no_run):
    err = bad_argument(["--models", "vdm,imagen", "--out", str(tmp_path)], capsys, "--models")
    assert "imagen" in err and "vdm" in err and "dit_alternating" in err
    assert not (tmp_path / "bench.json").exists()


def test_impossible_size_is_a_clear_error(tmp_path, capsys, no_run):
    err = bad_argument(["--size", "tiny", "--height", "7", "--out", str(tmp_path)], capsys, "--height/--width")
    assert "7x" in err and "multiples of 2" in err and "vdm" in err
    err = bad_argument(["--models", "dit", "--width", "5", "--out", str(tmp_path)], capsys, "--height/--width")
    assert "model dit" in err


@pytest.mark.parametrize("flag", ["--frames", "--height", "--width", "--steps", "--batch", "--repeats"])
@pytest.mark.parametrize("value", ["0", "-2"])
def test_non_positive_counts_are_clear_errors(flag, value, tmp_path, capsys, no_run):
    assert f"is {value}; expected a positive integer" in bad_argument([flag, value, "--out", str(tmp_path)], capsys, flag)


@pytest.mark.parametrize("argv, flag, message", [
    (["--frames", "two"], "--frames", "invalid int value: 'two'"),
    (["--seed", "1.5"], "--seed", "invalid int value"),
    (["--dtype", "float8"], "--dtype", "invalid choice: 'float8'"),
    (["--size", "huge"], "--size", "invalid choice: 'huge'"),
    (["--backend", "cuda"], "--backend", "invalid choice: 'cuda'"),
])
def test_malformed_values_are_one_line_errors(argv, flag, message, tmp_path, capsys, no_run):
    assert message in bad_argument([*argv, "--out", str(tmp_path)], capsys, flag)


@pytest.mark.parametrize("device", ["gpu", "mps", "cuda:x"])
def test_unknown_device_is_a_clear_error(device, tmp_path, capsys, no_run):
    err = bad_argument(["--device", device, "--out", str(tmp_path)], capsys, "--device")
    assert repr(device) in err and "'auto', 'cpu' or 'cuda[:N]'" in err


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_cuda_without_cuda_is_a_clear_error(tmp_path, capsys, no_run):
    assert "CUDA is not available" in bad_argument(["--device", "cuda", "--out", str(tmp_path)], capsys, "--device")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU rule")
def test_triton_backend_on_cpu_without_interpreter_is_a_clear_error(tmp_path, capsys, no_run, monkeypatch):
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    err = bad_argument(["--backend", "triton", "--out", str(tmp_path)], capsys, "--backend")
    assert "runs on CUDA" in err and "TRITON_INTERPRET=1" in err


def test_out_naming_a_file_is_a_clear_error(tmp_path, capsys, no_run):
    existing = tmp_path / "bench.json"
    existing.write_text("{}")
    assert "existing file" in bad_argument(["--out", str(existing)], capsys, "--out")
    assert "a file" in bad_argument(["--out", str(existing / "inside")], capsys, "--out")
    assert existing.read_text() == "{}"


@pytest.mark.skipif(not Path("/proc/self").is_dir(), reason="needs Linux's read-only /proc (root may write anywhere else)")
def test_out_in_an_unwritable_folder_is_a_clear_error(capsys, no_run):
    assert "not writable" in bad_argument(["--out", "/proc/fastvid_report"], capsys, "--out")


def test_plot_without_matplotlib_is_a_clear_error(tmp_path, capsys, no_run, monkeypatch):
    find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "matplotlib" else find_spec(name, *a))
    assert "--no-plot" in bad_argument(["--out", str(tmp_path)], capsys, "--no-plot")


def test_list_and_python_m(capsys):
    assert cli.main(["bench", "--list"]) == 0
    listed = capsys.readouterr().out
    assert all(name in listed for name in models.MODELS)
    proc = subprocess.run([sys.executable, "-m", "fastvid", "bench", "--list"], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0 and "text2video_zero" in proc.stdout


def test_import_fastvid_reaches_models_without_importing_diffusers():
    code = ("import sys, fastvid; assert 'fastvid.models' not in sys.modules; "
            "assert 'vdm' in fastvid.models.MODELS and 'models' in fastvid.__all__; "
            "assert 'diffusers' not in sys.modules; print('ok')")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0 and proc.stdout.strip() == "ok", proc.stderr


def test_sampler_benchmark_script_records_a_breakdown(tmp_path, capsys):
    script = Path(__file__).resolve().parent.parent / "benchmarks" / "bench_samplers.py"
    spec = importlib.util.spec_from_file_location("bench_samplers", script)
    bench_samplers = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench_samplers)
    assert bench_samplers.main(["--models", "tune_a_video", "--size", "tiny", "--out", str(tmp_path)]) == 0
    rows = [json.loads(line) for line in (tmp_path / "samplers.jsonl").read_text().splitlines()]
    assert len(rows) == 1 and rows[0]["model"] == "tune_a_video" and rows[0]["device"] == "cpu"
    for variant in ("reference", "fastvid"):
        split = rows[0]["breakdown"][variant]
        assert split["attention_ms"] > 0 and split["convolution_ms"] > 0 and split["total_ms"] > 0
        parts = split["attention_ms"] + split["convolution_ms"] + split["other_ms"]
        assert abs(parts - split["total_ms"]) <= 1e-6 * split["total_ms"] or split["other_ms"] == 0
    assert (tmp_path / "samplers_cpu.md").exists() and "attention" in capsys.readouterr().out


def test_no_command_lists_the_commands(capsys):
    code, io = run([], capsys)
    assert code == 2 and io.out == "" and io.err.count("\n") == 1
    assert io.err.startswith("fastvid: error: expected a command: bench (")
    for name in cli._subcommands(cli._parser()).choices:
        assert f"{name} (" in io.err


def test_version_names_the_release_and_commit(capsys):
    from fastvid import __version__
    from fastvid.timing import commit

    code, io = run(["--version"], capsys)
    assert code == 0 and io.out.strip() == f"fastvid {__version__} (commit {commit()})"


@pytest.mark.parametrize("argv, word", [(["--model", "vdm"], "--model"), (["--repeat", "3"], "--repeat"),
                                        (["--no-such-flag"], "--no-such-flag")])
def test_abbreviated_or_unknown_flags_are_refused_by_the_command(argv, word, capsys, no_run):
    code, io = run(["bench", *argv, "--list"], capsys)
    assert code == 2 and io.out == "" and io.err.count("\n") == 1
    assert io.err.startswith(f"fastvid bench: error: unrecognized arguments: {word}"), io.err
