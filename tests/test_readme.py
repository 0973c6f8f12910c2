"""The README's measured GPU results are the committed rows, rendered by benchmarks/readme_results.py."""
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks import readme_results  # noqa: E402


def test_readme_results_block_is_the_rendered_rows():
    rows = readme_results.gpu_rows()
    assert rows, "no committed GPU rows under benchmarks/results/"
    text = (ROOT / "README.md").read_text()
    assert readme_results.current_block(text) == readme_results.block(rows), (
        "README.md's measured results differ from benchmarks/results/: run python benchmarks/readme_results.py")


def test_the_block_names_every_run_and_its_gpu():
    rows = readme_results.gpu_rows()
    rendered = readme_results.render(rows)
    for r in rows:
        assert f"{r['gpu']}, {r['date'][:10]}" in rendered and r["commit"] in rendered
        assert f"| {r['op']} |" in rendered
