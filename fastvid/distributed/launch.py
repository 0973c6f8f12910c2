"""Starting processes without torchrun, for tests and ``fastvid bench --nproc``: torch.multiprocessing
spawns ``nproc`` workers on this machine, each joins a gloo (CPU) or NCCL (GPU) group on a free
port of 127.0.0.1, with a timeout on every collective. On real GPUs, launch with torchrun instead."""
from __future__ import annotations

import datetime
import os
import socket
from typing import Callable, Optional

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

DEFAULT_TIMEOUT_S = 60.0


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def init_group(rank: int, world: int, port: int, backend: str = "gloo", timeout_s: float = DEFAULT_TIMEOUT_S,
               init_file: Optional[str] = None) -> None:
    """Joins the group through 127.0.0.1:``port``, or through ``init_file`` (a fresh path) when given."""
    timeout = datetime.timedelta(seconds=timeout_s)
    if init_file is not None:
        dist.init_process_group(backend, init_method=f"file://{init_file}", rank=rank, world_size=world,
                                timeout=timeout)
        return
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group(backend, rank=rank, world_size=world, timeout=timeout)


def _worker(rank: int, fn: Callable, world: int, port: int, backend: str, timeout_s: float, init_file: Optional[str],
            args: tuple) -> None:
    torch.set_num_threads(1)
    init_group(rank, world, port, backend, timeout_s, init_file)
    try:
        fn(rank, world, *args)
    finally:
        dist.destroy_process_group()


def spawn(fn: Callable, nproc: int, *args, backend: str = "gloo", timeout_s: float = DEFAULT_TIMEOUT_S,
          init_file: Optional[str] = None) -> None:
    """Runs ``fn(rank, world, *args)`` in ``nproc`` processes of one process group; ``fn`` must be a
    module-level function. The group meets on a free port of 127.0.0.1, or in ``init_file`` (a path that
    does not exist yet: no port to race for when several test workers spawn at once). Raises if any worker fails."""
    mp.spawn(_worker, args=(fn, nproc, free_port(), backend, timeout_s, init_file, args), nprocs=nproc, join=True)
