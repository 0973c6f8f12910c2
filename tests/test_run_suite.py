"""benchmarks/run_suite.py on CPU: correctness table, then the op benchmarks, then the summary and
plots, all in one --out folder of at most 8 files; an op that fails correctness is not timed; a run
killed midway keeps what it wrote; --budget skips and reports; the --quick plan fits 4 minutes."""
import json
import os
import re
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import fastvid
from benchmarks import run_suite

ROOT = Path(__file__).resolve().parent.parent

ARGS = ["--device", "cpu", "--ops", "temporal_conv,group_norm_silu", "--modes", "fwd", "--no-compile"]


def test_cpu_suite_writes_correctness_results_summary_and_plots(tmp_path):
    assert run_suite.main([*ARGS, "--out", str(tmp_path)]) == 0
    files = sorted(p.name for p in tmp_path.iterdir())
    assert files == ["SUMMARY.md", "correctness.md", "group_norm_silu.jsonl", "plots.tar", "suite.log",
                     "temporal_conv.jsonl"]
    table = (tmp_path / "correctness.md").read_text()
    assert "not a speed measurement" in table
    results = [line for line in table.splitlines() if line.startswith("| temporal_conv") or
               line.startswith("| group_norm_silu")]
    assert len(results) == 3 * 2 * 2 and all(line.endswith("| pass |") for line in results)  # cases x dtypes x backends
    for op in ("temporal_conv", "group_norm_silu"):
        rows = [json.loads(line) for line in (tmp_path / f"{op}.jsonl").read_text().splitlines()]
        assert rows and {r["device"] for r in rows} == {"cpu"} and {r["mode"] for r in rows} == {"fwd"}
        assert any(r["provider"] == "fastvid" and r["status"] == "ok" for r in rows)
    with tarfile.open(tmp_path / "plots.tar") as tar:
        assert tar.getnames() and all(name.endswith(".png") for name in tar.getnames())
    summary = (tmp_path / "SUMMARY.md").read_text()
    assert "not a speed measurement" in summary.splitlines()[0] and "group_norm_silu" in summary


def test_an_op_that_fails_correctness_is_reported_and_not_timed(tmp_path, monkeypatch):
    good = fastvid.group_norm_silu
    monkeypatch.setattr(fastvid, "group_norm_silu", lambda *args, **kwargs: good(*args, **kwargs) * 1.01)
    assert run_suite.main([*ARGS, "--out", str(tmp_path)]) == 1
    table = (tmp_path / "correctness.md").read_text()
    assert all("**FAIL**" in line for line in table.splitlines() if line.startswith("| group_norm_silu"))
    assert all(line.endswith("| pass |") for line in table.splitlines() if line.startswith("| temporal_conv"))
    assert (tmp_path / "temporal_conv.jsonl").exists() and not (tmp_path / "group_norm_silu.jsonl").exists()


def _env():
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env["PYTHONPATH"] = str(ROOT)
    return env


def test_quick_suite_killed_midway_leaves_what_it_measured(tmp_path):
    """The first op's rows, the correctness table of every op checked, the summary and plots survive a
    kill during the second op; nothing is half-written."""
    cmd = [sys.executable, str(ROOT / "benchmarks" / "run_suite.py"), "--quick", "--device", "cpu", "--no-compile",
           "--ops", "temporal_conv,group_norm_silu", "--out", str(tmp_path)]
    proc = subprocess.Popen(cmd, env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 600
    while not (tmp_path / "SUMMARY.md").exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    still_running = proc.poll() is None
    proc.kill()
    proc.wait()
    assert still_running, "the suite ended before the first op's summary was seen"
    files = sorted(p.name for p in tmp_path.iterdir())
    assert len(files) <= 8 and not any(name.endswith(".tmp") for name in files), files
    table = (tmp_path / "correctness.md").read_text()
    for op in ("temporal_conv", "group_norm_silu"):
        assert [line for line in table.splitlines() if line.startswith(f"| {op} ")], op
    rows = [json.loads(line) for line in (tmp_path / "temporal_conv.jsonl").read_text().splitlines()]
    assert {r["mode"] for r in rows} == {"fwd", "fwd+bwd"} and any(r["provider"] == "fastvid" for r in rows)
    summary = (tmp_path / "SUMMARY.md").read_text()
    assert "temporal_conv" in summary and "group_norm_silu" not in summary
    with tarfile.open(tmp_path / "plots.tar") as tar:
        assert sorted(tar.getnames()) == ["temporal_conv_cpu_float32_fwd.png", "temporal_conv_cpu_float32_fwd_bwd.png"]
    log = (tmp_path / "suite.log").read_text()
    assert "# plan" in log and "## temporal_conv tiny:" in log and "# suite done" not in log


def test_budget_skips_cases_and_says_which(tmp_path):
    args = ["--quick", "--device", "cpu", "--no-compile", "--ops", "temporal_conv", "--skip-correctness",
            "--budget", "0.001", "--out", str(tmp_path)]
    assert run_suite.main(args) == 0
    assert not (tmp_path / "temporal_conv.jsonl").exists()
    summary = (tmp_path / "SUMMARY.md").read_text()
    assert "## Skipped (budget)" in summary and "- temporal_conv tiny (estimated" in summary
    assert "# budget: skipped temporal_conv tiny" in (tmp_path / "suite.log").read_text()


def test_quick_plan_fits_four_minutes_on_an_h100():
    """The budget arithmetic printed for --quick on CUDA (computed without a GPU: kernel_resources
    captures the launch configs to compile) stays within 4 minutes, and within the quick budget."""
    result = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "run_suite.py"), "--quick", "--device", "cuda",
                             "--plan-only"], env=_env(), capture_output=True, text=True, check=True)
    line = next(line for line in result.stdout.splitlines() if line.startswith("# plan"))
    total = float(re.search(r"total (\d+) s", line).group(1))
    assert total <= min(240, run_suite.QUICK_BUDGET_S), line
    for op in run_suite.OPS:
        assert f"{op} " in line and f"#   {op} " in result.stdout  # every op is checked and timed
