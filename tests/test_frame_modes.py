"""fastvid.frame_modes is the one table of frame modes: the reference, the op and fastvid.distributed read
it, so a new mode is one row there."""
from pathlib import Path

import pytest
import torch

import fastvid
from fastvid import reference
from fastvid.distributed import FastvidDistributedError, layers
from fastvid.distributed.parallelize import _stage
from fastvid.frame_modes import FRAME_MODES, FrameMode

from conftest import DEVICE


@pytest.mark.parametrize("frames", [1, 5])
@pytest.mark.parametrize("mode", sorted(FRAME_MODES))
def test_every_mode_has_a_row_rule_and_a_strategy(mode, frames):
    row = FRAME_MODES[mode]
    table = reference.frame_table(mode, frames)
    assert torch.equal(table, row.table(frames))
    assert table.shape[0] == frames and table.dtype == torch.int64
    assert int(table.min()) >= 0 and int(table.max()) < frames
    assert row.distributed in layers.FRAME_STRATEGIES


def _previous(strategy):
    """Frame i attends to frame i-1 (frame 0 to itself): not a built-in mode."""
    return FrameMode("previous", lambda idx: (idx - 1).clamp(min=0)[:, None], "[max(i-1, 0)]", "a test",
                     dense=False, sdpa="gather", distributed=strategy)


@pytest.mark.parametrize("backend", ["torch", "reference", "triton"])
def test_a_mode_added_to_the_table_runs_on_every_backend(backend, monkeypatch):
    monkeypatch.setitem(FRAME_MODES, "previous", _previous("broadcast_first"))
    q, k, v = (torch.randn(1, 3, 5, 2, 8, device=DEVICE) for _ in range(3))
    out = fastvid.frame_attention(q, k, v, frames="previous", backend=backend)
    expected = reference.frame_attention(q, k, v, frames=torch.tensor([[0], [0], [1]]))
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=1e-5)


def test_parallelize_shards_a_mode_by_its_strategy_and_refuses_an_unknown_one(monkeypatch):
    state = layers.ParallelState(None, None, "switch", "ulysses")
    module = reference.FrameAttention(16, heads=2, dim_head=8, frames="previous")
    monkeypatch.setitem(FRAME_MODES, "previous", _previous("broadcast_first"))
    mixin, how = _stage(module, state, "block.attn")
    assert mixin is layers.ParallelFrameAttention and "frame 0's K/V broadcast" in how
    monkeypatch.setitem(FRAME_MODES, "previous", _previous("ring"))
    with pytest.raises(FastvidDistributedError, match="block.attn attends frames='previous'.*strategy 'ring'"):
        _stage(module, state, "block.attn")


def test_a_row_with_an_unknown_torch_path_is_refused():
    with pytest.raises(ValueError, match="sdpa is 'dense'"):
        FrameMode("x", lambda idx: idx[:, None], "[i]", "a test", dense=True, sdpa="dense", distributed="local")


def test_the_docs_table_is_the_frame_mode_table():
    """docs/ops.md lists the modes with the table's own values, row for row."""
    rows = ["| mode | row i attends to | from | dense | torch backend (`sdpa`) | multi-GPU (`distributed`) |",
            "|---|---|---|---|---|---|"]
    rows += [f'| `"{m.name}"` | {m.rule} | {m.source} | {"yes" if m.dense else "no"} | `{m.sdpa}` | `{m.distributed}` |'
             for m in FRAME_MODES.values()]
    doc = (Path(__file__).resolve().parent.parent / "docs" / "ops.md").read_text()
    assert "\n".join(rows) + "\n\n" in doc, "docs/ops.md's frame-mode table differs from fastvid/frame_modes.py"
