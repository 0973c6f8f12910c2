"""Communication accounting: the bytes each rank sends in one guided denoising step, per strategy,
counted from the collectives the parallel layers issue (see ``comm.CommLog`` for how each
collective is counted). The processes are spawned here on one machine with gloo; the byte counts
are the same on NCCL, but CPU/gloo times say nothing about GPU speed, so none are reported.

    python benchmarks/bench_distributed.py --nproc 4
    fastvid bench --nproc 4 --models vdm,dit
"""
from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Dict, List, Sequence

import torch

from .. import models as M
from ..validation import fail
from .launch import spawn

SEQUENCE_STRATEGIES = ("dsp", "ulysses", "allgather")
NOTE = ("bytes per denoising step (one guided call, batch 2), counted from the collectives on CPU/gloo; "
        "identical on NCCL; CPU/gloo runs measure no speed")


def _worker(rank: int, world: int, names: Sequence[str], size_name: str, frames: int, strategies: Sequence[str],
            out_dir: str) -> None:
    rows = [row for name in names for row in step_bytes(name, size_name, frames, strategies)]
    Path(out_dir, f"rank{rank}.json").write_text(json.dumps(rows))


def step_inputs(size: M.ModelSize, seed: int = 0):
    """(args, kwargs) of one guided denoising call (batch 2) of a model of ``size``: the noisy latents with
    the model's conditioning channels (an Imagen Video cascade: its base stage), the timestep, the context,
    and SVD's micro-conditioning ids."""
    g = torch.Generator().manual_seed(seed)
    config = size.model
    channels = config.in_channels + getattr(config, "cond_channels", 0)
    x = torch.randn(2, channels, *size.latent_shape[2:], generator=g)
    context = torch.randn(2, size.context_len, config.context_dim, generator=g)
    kwargs = {}
    if isinstance(config, M.svd.SVDConfig):
        kwargs["added_time_ids"] = torch.tensor([[6.0, 127.0, 0.02]] * 2)
    return (x, torch.tensor([500]), context), kwargs


def step_bytes(name: str, size_name: str, frames: int, strategies: Sequence[str]) -> List[Dict]:
    """In a running process group: this rank's bytes and calls per op for one guided step of model ``name``
    under each sequence strategy."""
    from . import parallel_state, parallelize, unparallelize

    size = M.size(name, size_name, frames=frames)
    model = M.build(name, size)
    args, kwargs = step_inputs(size)
    rows = []
    for strategy in strategies:
        parallelize(model, strategy=strategy)
        log = parallel_state(model).sp.log
        with torch.no_grad():
            model(*args, **kwargs)
        rows.append(dict(model=name, strategy=strategy, bytes=dict(log.bytes), calls=dict(log.calls)))
        unparallelize(model)
    return rows


def measure(names: Sequence[str], nproc: int, *, size_name: str = "tiny", frames: int = 8,
            strategies: Sequence[str] = SEQUENCE_STRATEGIES) -> List[Dict]:
    """One row per (model, strategy): bytes sent per step by the busiest rank and by all ranks, per op."""
    if isinstance(nproc, bool) or not isinstance(nproc, int) or nproc < 1:
        fail("fastvid.distributed.accounting", "nproc", f"is {nproc!r}", "a positive number of processes")
    with tempfile.TemporaryDirectory() as out_dir:
        spawn(_worker, nproc, list(names), size_name, frames, list(strategies), out_dir)
        per_rank = [json.loads(Path(out_dir, f"rank{r}.json").read_text()) for r in range(nproc)]
    rows = []
    for i, first in enumerate(per_rank[0]):
        ranks = [rank_rows[i] for rank_rows in per_rank]
        totals = [sum(r["bytes"].values()) for r in ranks]
        ops: Dict[str, int] = {}
        for r in ranks:
            for op, b in r["bytes"].items():
                ops[op] = ops.get(op, 0) + b
        rows.append(dict(model=first["model"], strategy=first["strategy"], nproc=nproc, frames=frames,
                         size=size_name, max_rank_bytes=max(totals), all_ranks_bytes=sum(totals),
                         collectives=sum(sum(r["calls"].values()) for r in ranks) // nproc, by_op=ops))
    return rows


def format_rows(rows: List[Dict]) -> str:
    header = ["model", "strategy", "ranks", "frames", "KiB/step busiest rank", "KiB/step all ranks",
              "collectives/rank", "by op (KiB, all ranks)"]
    body = [[r["model"], r["strategy"], str(r["nproc"]), str(r["frames"]), f"{r['max_rank_bytes'] / 1024:.1f}",
             f"{r['all_ranks_bytes'] / 1024:.1f}", str(r["collectives"]),
             ", ".join(f"{op} {b / 1024:.1f}" for op, b in sorted(r["by_op"].items()))] for r in rows]
    widths = [max(len(row[i]) for row in [header] + body) for i in range(len(header))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(row, widths)) for row in [header] + body]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines + [f"note: {NOTE}"])
