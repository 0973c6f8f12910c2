"""The collectives of sequence-parallel sampling, on one torch.distributed process group, each
call logged (op, bytes this rank sends) so communication can be accounted by counting.

Shards are contiguous and as even as possible: ``n`` items over ``w`` ranks give the first
``n % w`` ranks one item more. Every rank computes the same split sizes from the same full
shapes, so uneven shards need no extra handshake.
"""
from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple

import torch
import torch.distributed as dist


class FastvidDistributedError(RuntimeError):
    """A parallelized model was called in a way its ranks cannot agree on (named in the message)."""


def shard_sizes(n: int, world: int) -> List[int]:
    base, extra = divmod(n, world)
    return [base + (r < extra) for r in range(world)]


def offsets(sizes: Sequence[int]) -> List[int]:
    out, total = [], 0
    for s in sizes:
        out.append(total)
        total += s
    return out


@dataclass
class CommLog:
    """Bytes each collective sends from this rank (point-to-point payload; an all-reduce counts the
    2 (w-1)/w of its buffer a ring sends), per op name, and how many calls."""

    bytes: Dict[str, int] = field(default_factory=lambda: defaultdict(int))
    calls: Dict[str, int] = field(default_factory=lambda: defaultdict(int))

    def add(self, op: str, nbytes: float) -> None:
        self.bytes[op] += int(nbytes)
        self.calls[op] += 1

    @property
    def total_bytes(self) -> int:
        return sum(self.bytes.values())

    def clear(self) -> None:
        self.bytes.clear()
        self.calls.clear()


class Comm:
    """One process group's rank, size and the collectives the parallel layers use."""

    def __init__(self, group: Optional[dist.ProcessGroup], name: str):
        self.group = group
        self.name = name
        self.rank = dist.get_rank(group)
        self.size = dist.get_world_size(group)
        self.log = CommLog()

    def global_rank(self, group_rank: int) -> int:
        return group_rank if self.group is None else dist.get_global_rank(self.group, group_rank)

    def switch(self, x: torch.Tensor, gather_dim: int, scatter_dim: int, gather_sizes: Sequence[int],
               scatter_sizes: Sequence[int], op: str) -> torch.Tensor:
        """One all-to-all: ``x`` holds shard ``gather_sizes[rank]`` of ``gather_dim`` and all of ``scatter_dim``;
        returns all of ``gather_dim`` and shard ``scatter_sizes[rank]`` of ``scatter_dim``."""
        if self.size == 1:
            return x
        scatter_offsets = offsets(scatter_sizes)
        send = torch.cat([x.narrow(scatter_dim, o, n).reshape(-1) for o, n in zip(scatter_offsets, scatter_sizes)])
        in_splits = [x.numel() // x.shape[scatter_dim] * n for n in scatter_sizes] if x.shape[scatter_dim] else \
            [0] * self.size
        piece_shapes = []
        for g in gather_sizes:
            shape = list(x.shape)
            shape[gather_dim], shape[scatter_dim] = g, scatter_sizes[self.rank]
            piece_shapes.append(shape)
        out_splits = [_numel(s) for s in piece_shapes]
        recv = send.new_empty(sum(out_splits))
        dist.all_to_all_single(recv, send, out_splits, in_splits, group=self.group)
        self.log.add(op, (sum(in_splits) - in_splits[self.rank]) * x.element_size())
        pieces = [p.view(s) for p, s in zip(recv.split(out_splits), piece_shapes)]
        return torch.cat(pieces, dim=gather_dim)

    def gather(self, x: torch.Tensor, dim: int, sizes: Sequence[int], op: str) -> torch.Tensor:
        """All-gather of shards ``sizes`` along ``dim`` (padded to the largest shard on the wire)."""
        if self.size == 1:
            return x
        largest = max(sizes)
        pad = list(x.shape)
        pad[dim] = largest - x.shape[dim]
        padded = torch.cat([x, x.new_zeros(pad)], dim=dim).contiguous()
        parts = [torch.empty_like(padded) for _ in range(self.size)]
        dist.all_gather(parts, padded, group=self.group)
        self.log.add(op, padded.numel() * padded.element_size() * (self.size - 1))
        return torch.cat([p.narrow(dim, 0, n) for p, n in zip(parts, sizes)], dim=dim)

    def broadcast(self, x: Optional[torch.Tensor], shape: Tuple[int, ...], dtype, device, src: int,
                  op: str) -> torch.Tensor:
        """``x`` (on group rank ``src``) to every rank; the others pass None and the shape it has."""
        buf = x.contiguous() if self.rank == src else torch.empty(shape, dtype=dtype, device=device)
        if self.size > 1:
            dist.broadcast(buf, src=self.global_rank(src), group=self.group)
            if self.rank == src:
                self.log.add(op, buf.numel() * buf.element_size() * (self.size - 1))
        return buf

    def shift_right(self, x: torch.Tensor, op: str) -> Optional[torch.Tensor]:
        """Sends ``x`` to the next rank; returns what the previous rank sent (None on rank 0)."""
        if self.size == 1:
            return None
        n = x.numel()
        in_splits = [n if r == self.rank + 1 else 0 for r in range(self.size)]
        out_splits = [n if r == self.rank - 1 else 0 for r in range(self.size)]
        recv = x.new_empty(sum(out_splits))
        send = x.reshape(-1) if self.rank + 1 < self.size else x.new_empty(0)
        dist.all_to_all_single(recv, send.contiguous(), out_splits, in_splits, group=self.group)
        self.log.add(op, sum(in_splits) * x.element_size())
        return recv.view(x.shape) if self.rank else None

    def all_reduce(self, x: torch.Tensor, op: str) -> torch.Tensor:
        if self.size > 1:
            dist.all_reduce(x, group=self.group)
            self.log.add(op, 2 * (self.size - 1) / self.size * x.numel() * x.element_size())
        return x

    def check_same(self, values: Sequence[int], what: str, device) -> None:
        """Raises FastvidDistributedError on every rank unless all ranks pass the same ``values``
        (at most 8 of them, padded, so that mismatched lengths cannot deadlock the gather)."""
        if self.size == 1:
            return
        mine = torch.full((8,), -1, dtype=torch.long)
        mine[:len(values)] = torch.tensor(list(values), dtype=torch.long)
        mine = mine.to(device)
        parts = [torch.empty_like(mine) for _ in range(self.size)]
        dist.all_gather(parts, mine, group=self.group)
        self.log.add("check", mine.numel() * 8 * (self.size - 1))
        if any(not torch.equal(p, mine) for p in parts):
            raise FastvidDistributedError(
                f"fastvid.distributed ({self.name} group): ranks passed different {what}: "
                f"{[[v for v in p.tolist() if v >= 0] for p in parts]}; "
                "every rank must call the model with the same full inputs")


def _numel(shape: Sequence[int]) -> int:
    n = 1
    for s in shape:
        n *= s
    return n
