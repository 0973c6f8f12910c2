"""benchmarks/run_suite.py on CPU: correctness table, then the op benchmarks, then the summary and
plots, all in one --out folder of at most 8 files; an op that fails correctness is not timed."""
import json
import tarfile

import fastvid
from benchmarks import run_suite

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
