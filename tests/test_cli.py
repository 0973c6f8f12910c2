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
    assert "all samples agree" in out and "speed-up" in out
    data = json.loads((tmp_path / "bench.json").read_text())
    assert [r["model"] for r in data["rows"]] == ["vdm", "controlvideo", "dit"]
    for row in data["rows"]:
        assert row["agree"] and row["evals"] > 0 and row["reference_s"] > 0 and row["fastvid_s"] > 0
        assert row["shape"] == list(models.size(row["model"], "tiny").latent_shape)
    assert data["env"]["device"] == "cpu" and data["settings"]["dtype"] == "float32"
    assert data["rows"][0]["swapped"].get("temporal_attention", 0) > 0
    md = (tmp_path / "bench.md").read_text()
    assert md.count("\n| ") >= 4 and "CPU" in md
    assert (tmp_path / "bench.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_overrides_reach_the_run(tmp_path, capsys):
    rc = cli.main(["bench", "--size", "tiny", "--models", "make_a_video", "--frames", "2", "--steps", "1",
                   "--out", str(tmp_path), "--no-plot"])
    assert rc == 0 and not (tmp_path / "bench.png").exists()
    row = json.loads((tmp_path / "bench.json").read_text())["rows"][0]
    assert row["shape"][2] == 2 and row["steps"] == 1


def test_unknown_model_is_a_clear_error(tmp_path, capsys):
    code, io = run(["bench", "--models", "vdm,imagen", "--out", str(tmp_path)], capsys)
    assert code == 2 and "'model'" in io.err and "imagen" in io.err and "vdm" in io.err
    assert not (tmp_path / "bench.json").exists()


def test_impossible_size_is_a_clear_error(tmp_path, capsys):
    code, io = run(["bench", "--size", "tiny", "--height", "7", "--out", str(tmp_path)], capsys)
    assert code == 2 and "height/width" in io.err and "multiples of 2" in io.err
    code, io = run(["bench", "--size", "tiny", "--frames", "0", "--out", str(tmp_path)], capsys)
    assert code == 2 and "frames" in io.err


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_cuda_without_cuda_is_a_clear_error(tmp_path, capsys):
    code, io = run(["bench", "--device", "cuda", "--out", str(tmp_path)], capsys)
    assert code == 2 and "CUDA is not available" in io.err


def test_list_and_python_m(capsys):
    assert cli.main(["bench", "--list"]) == 0
    listed = capsys.readouterr().out
    assert all(name in listed for name in models.MODELS)
    proc = subprocess.run([sys.executable, "-m", "fastvid", "bench", "--list"], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0 and "text2video_zero" in proc.stdout


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
