"""The README's measured GPU results are the committed rows, rendered by benchmarks/readme_results.py."""
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks import readme_results  # noqa: E402


def test_readme_results_block_is_the_rendered_rows():
    rows = readme_results.gpu_rows()
    assert rows, "no committed GPU rows under benchmarks/results/"
    text = (ROOT / "README.md").read_text()
    assert readme_results.current_block(text) == readme_results.block(rows, readme_results.pipeline_rows()), (
        "README.md's measured results differ from benchmarks/results/: run python benchmarks/readme_results.py")


def test_the_block_names_every_run_and_its_gpu():
    rows = readme_results.gpu_rows()
    rendered = readme_results.render(rows)
    for r in rows:
        assert f"{r['gpu']}, {r['date'][:10]}" in rendered and r["commit"] in rendered
        assert f"| {r['op']} |" in rendered


def test_pipeline_rows_get_their_own_table(tmp_path):
    """A committed pipelines.jsonl beside op rows: the op table ignores it, the pipelines table shows each
    variant's median step with its speed-up where it agrees."""
    env = dict(device="cuda", gpu="NVIDIA H100", date="2026-12-08T10:00:00Z", torch="2.11.0", triton="3.6.0",
               commit="abc1234", dtype="bfloat16")
    op = dict(env, op="temporal_conv", provider="fastvid", shape={"model": "c320"}, mode="fwd", status="ok", ms=0.1)
    step = dict(env, pipeline="svd", stage="step", frames=25, height=576, width=1024, status="ok")
    rows = [dict(step, variant="diffusers", step_ms_median=300.0, agree=True, speedup=None),
            dict(step, variant="fastvid", step_ms_median=200.0, agree=True, speedup={"median": 1.5}),
            dict(step, variant="fastvid+captured", step_ms_median=250.0, agree=False, speedup=None),
            dict(step, variant="compile", status="error"),
            dict(env, pipeline="svd", stage="vae_decode", variant="diffusers", status="ok", decode_ms=9.0)]
    folder = tmp_path / "h100-2026-12-08"
    folder.mkdir()
    (folder / "temporal_conv.jsonl").write_text(json.dumps(op) + "\n")
    (folder / "pipelines.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert readme_results.gpu_rows(tmp_path) == [op]
    pipelines = readme_results.pipeline_rows(tmp_path)
    assert len(pipelines) == 4  # the decode row is no step
    rendered = readme_results.block([op], pipelines)
    assert "| svd | 25 x 576x1024 | bfloat16 | 300.0 | 200.0 (1.50x) | 250.0 (disagrees) | error |" in rendered
    assert "- NVIDIA H100, 2026-12-08, torch 2.11.0, Triton 3.6.0, commit abc1234" in rendered
