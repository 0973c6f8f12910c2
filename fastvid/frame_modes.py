"""The frame modes of frame attention, one row each: which frames a frame attends to, and how each layer runs it.

``fastvid.reference.frame_table`` builds the index table from ``rows``, ``fastvid.frame_attention``
validates mode names against :data:`FRAME_MODES` and routes its torch backend by ``sdpa``, and
``fastvid.distributed`` shards a mode by ``distributed``. A new mode is one row here (and a case in
``tests/test_frame_attention.py``); the Triton kernels read any table and need no change.

Imports nothing from fastvid, so every layer (reference, ops, distributed) can read it.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Dict, Tuple

import torch


SDPA_PATHS = ("per_frame", "all_frames", "first_frame", "gather")  # the torch backend's ways to run a mode


@dataclass(frozen=True)
class FrameMode:
    name: str
    rows: Callable[[torch.Tensor], torch.Tensor]  # (F,) frame indices -> (F, K) table, row i = frames frame i reads
    rule: str  # row i in words
    source: str  # the model family the pattern comes from
    dense: bool  # plain dense attention over views (no gather): "auto" leaves it to SDPA's fused kernels
    sdpa: str  # the torch backend's path, one of SDPA_PATHS ("gather" takes any table: copies K/V, masks padding)
    # fastvid.distributed's strategy (distributed.layers.FRAME_STRATEGIES): "local", "broadcast_first",
    # "first_and_previous" or "full"
    distributed: str

    def __post_init__(self):
        if self.sdpa not in SDPA_PATHS:
            raise ValueError(f"FrameMode {self.name!r}: sdpa is {self.sdpa!r}; expected one of {SDPA_PATHS}")

    def table(self, num_frames: int, device=None) -> torch.Tensor:
        """The (F, K) int64 table of key frames per query frame."""
        return self.rows(torch.arange(num_frames, device=device))


FRAME_MODES: Dict[str, FrameMode] = {mode.name: mode for mode in (
    FrameMode("self", lambda idx: idx[:, None], "[i]", "spatial attention of every model", dense=True,
              sdpa="per_frame", distributed="local"),
    FrameMode("first", lambda idx: torch.zeros_like(idx)[:, None], "[0]", "Text2Video-Zero", dense=False,
              sdpa="first_frame", distributed="broadcast_first"),
    FrameMode("sparse_causal", lambda idx: torch.stack([torch.zeros_like(idx), (idx - 1).clamp(min=0)], dim=1),
              "[0, max(i-1, 0)] (frame 0 sees frame 0 twice, the same as once)", "Tune-A-Video", dense=False,
              sdpa="gather", distributed="first_and_previous"),
    FrameMode("all", lambda idx: idx[None, :].expand(idx.numel(), idx.numel()).contiguous(), "[0, ..., F-1]",
              "ControlVideo; full spatio-temporal attention of Sora-style DiTs", dense=True, sdpa="all_frames",
              distributed="full"),
)}

MODES: Tuple[str, ...] = tuple(FRAME_MODES)  # the built-in modes, in table order


def describe() -> str:
    """The modes in words, for error messages: "'self', 'first', 'sparse_causal', 'all'"."""
    return ", ".join(map(repr, FRAME_MODES))
