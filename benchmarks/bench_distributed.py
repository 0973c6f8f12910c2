"""Communication of sequence-parallel sampling: bytes sent per denoising step, DSP vs Ulysses-only vs
K/V all-gather, counted from the collectives of ``nproc`` gloo processes on this machine.

    python benchmarks/bench_distributed.py --nproc 4 --models vdm,make_a_video,dit_alternating,svd

Rows are appended to benchmarks/results/distributed.jsonl. The numbers are bytes, not times: CPU/gloo
runs say nothing about GPU speed (see docs/distributed.md for the projected step time model).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from fastvid.distributed.accounting import SEQUENCE_STRATEGIES, format_rows, measure  # noqa: E402
from fastvid.models import MODELS  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results" / "distributed.jsonl"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nproc", type=int, default=2)
    parser.add_argument("--models", default="vdm,make_a_video,controlvideo,dit,dit_alternating,svd")
    parser.add_argument("--size", default="tiny")
    parser.add_argument("--frames", type=int, default=8)
    parser.add_argument("--strategies", default=",".join(SEQUENCE_STRATEGIES))
    args = parser.parse_args(argv)
    names = list(MODELS) if args.models == "all" else args.models.split(",")
    rows = measure(names, args.nproc, size_name=args.size, frames=args.frames, strategies=args.strategies.split(","))
    print(format_rows(rows))
    RESULTS.parent.mkdir(exist_ok=True)
    with RESULTS.open("a") as f:
        for row in rows:
            f.write(json.dumps(dict(row, device="cpu/gloo")) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
