"""A captured denoising step: the denoiser's forward replayed as a CUDA graph.

Where the host, not the GPU, bounds a step (small latents, few frames, many small kernels), a CUDA
graph launches the whole forward at once. ``fastvid.capture_step(pipe)`` wraps the denoiser's forward
in place, so a diffusers pipeline's loop keeps calling ``pipe.unet(...)`` (or ``pipe.transformer``)
unchanged::

    pipe = fastvid.patch(pipe)            # optional: fastvid's kernels inside the step
    step = fastvid.capture_step(pipe)     # pipe.unet.forward is now the captured forward
    frames = pipe(prompt, ...).frames     # the first call per input signature captures, later ones replay
    step.remove()                         # pipe.unet.forward is the original again

Rules of the captured forward:

- Per input signature (every tensor's shape, dtype, device and strides; every other argument's value)
  one graph is captured after ``warmup`` eager calls on a side stream; a new signature (another
  resolution, frame count, batch) captures another, up to ``max_graphs`` kept (the oldest goes first).
  Arguments are flattened with ``torch.utils._pytree`` (tuples, lists, dicts of tensors).
- Tensor arguments are copied into the graph's static input buffers before each replay, so callers
  may pass fresh tensors each step. Non-tensor arguments are part of the signature: pass the timestep
  as a tensor (diffusers' pipelines do), or each timestep value captures a graph.
- Outputs are copied out of the graph's static buffers (``copy_outputs=True``, the default): they stay
  valid after the next call. With ``copy_outputs=False`` the returned tensors ARE the static buffers,
  overwritten by the next replay of the same signature (one copy less per step).
- Inference only: the forward runs under ``torch.no_grad()``. Everything the forward reads besides its
  arguments (weights, buffers, module attributes) is baked into the graph as it was at capture; call
  ``step.reset()`` after changing weights in a way that reallocates them (``load_state_dict`` copies in
  place and needs no reset) or after changing module attributes the forward branches on.
- Off CUDA (a denoiser whose parameters are on the CPU) ``capture_step`` raises ``FastvidInputError``:
  there is nothing to capture; call the model directly.

``torch.compile(denoiser, mode="reduce-overhead", fullgraph=True)`` is the other route: fastvid's ops
are torch.library custom ops with fake implementations, and its dispatch and plan caches step aside
while dynamo traces, so a patched U-Net compiles into one graph.
"""
from __future__ import annotations

import collections
from typing import Any, Callable, Optional

import torch
from torch.utils import _pytree as pytree

from .validation import fail

OP = "capture_step"
DENOISER_ATTRIBUTES = ("unet", "transformer", "prior")


def _denoiser(pipe_or_denoiser) -> torch.nn.Module:
    if isinstance(pipe_or_denoiser, torch.nn.Module):
        return pipe_or_denoiser
    for name in DENOISER_ATTRIBUTES:
        module = getattr(pipe_or_denoiser, name, None)
        if isinstance(module, torch.nn.Module):
            return module
    fail(OP, "pipe_or_denoiser", f"is a {type(pipe_or_denoiser).__name__}",
         "a torch.nn.Module or a pipeline with one of the attributes " + ", ".join(DENOISER_ATTRIBUTES))


def _signature(leaves) -> tuple:
    return tuple((tuple(a.shape), a.stride(), a.dtype, a.device) if isinstance(a, torch.Tensor) else (type(a), a)
                 for a in leaves)


class _Graph:
    """One captured forward: static inputs, the graph, static outputs."""

    def __init__(self, forward: Callable, leaves, spec, warmup: int, pool):
        self.static = [a.clone() if isinstance(a, torch.Tensor) else a for a in leaves]
        args, kwargs = pytree.tree_unflatten(self.static, spec)
        stream = torch.cuda.Stream()
        stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(stream):
            for _ in range(warmup):
                forward(*args, **kwargs)
        torch.cuda.current_stream().wait_stream(stream)
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.graph, pool=pool):
            output = forward(*args, **kwargs)
        self.out_leaves, self.out_spec = pytree.tree_flatten(output)

    def __call__(self, leaves, copy_outputs: bool):
        for static, a in zip(self.static, leaves):
            if isinstance(a, torch.Tensor) and a is not static:
                static.copy_(a)
        self.graph.replay()
        outs = [o.clone() if copy_outputs and isinstance(o, torch.Tensor) else o for o in self.out_leaves]
        return pytree.tree_unflatten(outs, self.out_spec)


class CapturedStep:
    """The handle :func:`capture_step` returns: the wrapped denoiser, its graphs per signature,
    ``remove()`` (undo), ``reset()`` (drop the graphs) and ``captures`` (graphs captured so far)."""

    def __init__(self, module: torch.nn.Module, warmup: int, max_graphs: int, copy_outputs: bool):
        self.module, self.warmup, self.max_graphs, self.copy_outputs = module, warmup, max_graphs, copy_outputs
        self.graphs: "collections.OrderedDict[tuple, _Graph]" = collections.OrderedDict()
        self.captures = 0
        self._had_instance_forward = "forward" in module.__dict__
        self._instance_forward = module.__dict__.get("forward")
        self._forward = module.forward  # what the module ran before: its own or a hook's forward
        self._pool = torch.cuda.graph_pool_handle()
        module.forward = self
        module._fastvid_captured_step = self

    def __call__(self, *args, **kwargs):
        leaves, spec = pytree.tree_flatten((args, kwargs))
        key = (_signature(leaves), spec)
        graph = self.graphs.get(key)
        with torch.no_grad():
            if graph is None:
                if len(self.graphs) >= self.max_graphs:
                    self.graphs.popitem(last=False)
                graph = _Graph(self._forward, leaves, spec, self.warmup, self._pool)
                self.graphs[key] = graph
                self.captures += 1
            else:
                self.graphs.move_to_end(key)
            return graph(leaves, self.copy_outputs)

    def reset(self) -> None:
        """Drops every captured graph: the next call per signature captures again."""
        self.graphs.clear()

    def remove(self) -> None:
        """Puts the denoiser's forward back as it was before :func:`capture_step`."""
        if self.module.__dict__.get("forward") is self:
            if self._had_instance_forward:
                self.module.forward = self._instance_forward
            else:
                del self.module.forward
        self.module.__dict__.pop("_fastvid_captured_step", None)
        self.reset()

    def __enter__(self) -> "CapturedStep":
        return self

    def __exit__(self, *exc) -> None:
        self.remove()


def capture_step(pipe_or_denoiser: Any, *, warmup: int = 2, max_graphs: int = 8,
                 copy_outputs: bool = True) -> CapturedStep:
    """Runs the denoiser of ``pipe_or_denoiser`` (a module, or a pipeline's ``unet`` / ``transformer`` /
    ``prior``) as CUDA graphs from now on, in place; returns the :class:`CapturedStep` handle whose
    ``remove()`` undoes it (also usable as a context manager). See the module docstring for the rules.

    Raises:
        FastvidInputError: the denoiser's parameters are not on a CUDA device, ``warmup`` < 1 or
            ``max_graphs`` < 1, or the denoiser is already captured.
    """
    module = _denoiser(pipe_or_denoiser)
    param: Optional[torch.Tensor] = next(module.parameters(), None)
    device = param.device if param is not None else None
    if device is None or device.type != "cuda" or not torch.cuda.is_available():
        fail(OP, "pipe_or_denoiser", f"has its parameters on {device}",
             "a denoiser on a CUDA device (a CUDA graph replays GPU work; on the CPU call the model directly)")
    if isinstance(warmup, bool) or not isinstance(warmup, int) or warmup < 1:
        fail(OP, "warmup", f"is {warmup!r}", "an integer >= 1 (eager calls before a capture)")
    if isinstance(max_graphs, bool) or not isinstance(max_graphs, int) or max_graphs < 1:
        fail(OP, "max_graphs", f"is {max_graphs!r}", "an integer >= 1")
    if "_fastvid_captured_step" in module.__dict__:
        fail(OP, "pipe_or_denoiser", "is already captured", "a denoiser without capture_step (call .remove() first)")
    return CapturedStep(module, warmup, max_graphs, copy_outputs)
