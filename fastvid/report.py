"""Writes a ``fastvid bench`` result: a terminal table, JSON, Markdown and a PNG plot."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Dict, List

from .bench import CPU_SPEED_LABEL, MIN_REPEATS_FOR_SPEEDUP, BenchResult, BenchRow

COLUMNS = ("model", "latents (B,C,F,H,W)", "evals", "ref ms/step", "fastvid ms/step", "ref total s",
           "fastvid total s", "speed-up (range)", "ref peak MB", "fastvid peak MB", "max abs err", "rel err", "agree",
           "swapped")


def _mb(v) -> str:
    return "n/a" if v is None else f"{v:.0f}"


def speedup_text(row: BenchRow) -> str:
    """"1.23x (1.10-1.35x)": the median ratio and its range over the runs, or "-" when not measured."""
    s = row.speedup
    return "-" if s is None else f"{s['median']:.2f}x ({s['low']:.2f}-{s['high']:.2f}x)"


def notes(result: BenchResult) -> List[str]:
    """What the timings are: on CPU never GPU speed; a speed-up only from warmed-up repeated runs."""
    out = []
    if result.env["device"] != "cuda":
        out.append(CPU_NOTE)
    if any(r.speedup is None for r in result.rows):
        out.append(f"No speed-up is given for single or un-warmed runs: the times are one run each and vary a "
                   f"lot between runs (--repeats {MIN_REPEATS_FOR_SPEEDUP} or more measures one).")
    elif result.env["device"] != "cuda":
        out.append(f"Speed-ups here are {CPU_SPEED_LABEL}: median ratio of {result.settings.get('repeats')} "
                   "warmed-up runs, with the range over those runs.")
    return out


def rows_as_text(result: BenchResult) -> List[List[str]]:
    out = []
    for r in result.rows:
        swapped = ", ".join(f"{k} {v}" for k, v in r.swapped.items()) or "none"
        out.append([r.model, "x".join(map(str, r.shape)), str(r.evals), f"{r.reference_step_ms:.1f}",
                    f"{r.fastvid_step_ms:.1f}", f"{r.reference_s:.2f}", f"{r.fastvid_s:.2f}", speedup_text(r),
                    _mb(r.reference_peak_mb), _mb(r.fastvid_peak_mb), f"{r.max_abs_error:.2e}",
                    f"{r.rel_error:.2e}", "yes" if r.agree else "NO", swapped])
    return out


def header(result: BenchResult) -> str:
    e, s = result.env, result.settings
    return (f"fastvid bench on {e['device']} ({e['device_name']}), {s['dtype']}, size '{s['size']}', "
            f"backend {s['backend']}; torch {e['torch']}, triton {e['triton']}, commit {e['commit']}, {e['date']}")


CPU_NOTE = "Measured on a CPU, where fastvid runs its torch fallbacks: these timings say nothing about GPU speed."


def format_table(result: BenchResult) -> str:
    rows = [list(COLUMNS)] + rows_as_text(result)
    widths = [max(len(r[i]) for r in rows) for i in range(len(COLUMNS))]
    lines = [header(result)]
    for k, row in enumerate(rows):
        lines.append("  ".join(c.rjust(w) if 0 < i < len(row) - 2 else c.ljust(w) for i, (c, w) in enumerate(zip(row, widths))))
        if k == 0:
            lines.append("  ".join("-" * w for w in widths))
    tol = result.settings["tolerance"]
    verdict = "all samples agree" if result.all_agree else "SOME SAMPLES DISAGREE"
    lines.append(f"{verdict} (max |fastvid - reference| <= {tol:g} x max |reference| over the whole sampling run)")
    lines += notes(result)
    return "\n".join(lines)


def to_markdown(result: BenchResult) -> str:
    lines = ["# fastvid bench", "", header(result), "",
             "| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    lines += ["| " + " | ".join(row) + " |" for row in rows_as_text(result)]
    lines += ["", f"Samples agree when max |fastvid - reference| <= {result.settings['tolerance']:g} x max |reference|.",
              "ms/step is the median sampling time divided by the model evaluations (a classifier-free-guidance "
              "batch counts once)."]
    lines += notes(result)
    return "\n".join(lines) + "\n"


def write_plot(result: BenchResult, path: Path) -> None:
    """Time per model evaluation, reference vs fastvid, per model, with the measured speed-up (if any) above."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [r.model for r in result.rows]
    xs = range(len(names))
    fig, ax = plt.subplots(figsize=(max(6.0, 1.2 * len(names) + 2), 4.5))
    ax.bar([x - 0.2 for x in xs], [r.reference_step_ms for r in result.rows], 0.4, label="reference modules")
    ax.bar([x + 0.2 for x in xs], [r.fastvid_step_ms for r in result.rows], 0.4, label="fastvid.patch")
    for x, r in zip(xs, result.rows):
        if r.speedup is not None:
            ax.annotate(speedup_text(r), (x, max(r.reference_step_ms, r.fastvid_step_ms)), ha="center", va="bottom",
                        fontsize=8)
    ax.set_xticks(list(xs), names, rotation=20, ha="right")
    ax.set_ylabel("ms per model evaluation")
    e, s = result.env, result.settings
    what = CPU_SPEED_LABEL if e["device"] != "cuda" else "GPU"
    if any(r.speedup is None for r in result.rows):
        what += "; single runs, no speed-up measured"
    ax.set_title(f"{e['device_name']}, {s['dtype']}, size '{s['size']}' ({what})", fontsize=9)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def write_report(result: BenchResult, out_dir, *, plot: bool = True, stem: str = "bench") -> Dict[str, Path]:
    """Writes ``<stem>.json``, ``<stem>.md`` and (with ``plot``) ``<stem>.png`` into ``out_dir``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"json": out / f"{stem}.json", "markdown": out / f"{stem}.md"}
    paths["json"].write_text(json.dumps({**result.to_dict(), "notes": notes(result)}, indent=2) + "\n")
    paths["markdown"].write_text(to_markdown(result))
    if plot:
        paths["png"] = out / f"{stem}.png"
        write_plot(result, paths["png"])
    return paths
