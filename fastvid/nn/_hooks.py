"""Whether a fused module may read a submodule's weights directly or must call the submodule.

Users wrap submodules: accelerate offload hooks, diffusers' layerwise casting and group offloading,
PEFT/LoRA layers replacing a Conv3d or Linear, quantized linears. A fused path that reads
``conv.weight`` would skip all of them, so each fused module asks :func:`unfused_reason` first and,
when it names a reason, runs its unfused path, which calls the submodules.
"""
from __future__ import annotations

from typing import Callable, Iterable, Optional, Tuple

import torch
from torch import nn

from ..ops import _launch

PLAIN_LAYERS = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.GroupNorm, nn.LayerNorm)
FP8 = tuple(getattr(torch, name) for name in ("float8_e4m3fn", "float8_e5m2", "float8_e4m3fnuz", "float8_e5m2fnuz")
            if hasattr(torch, name))


def _layer_reason(module: nn.Module, cls: Optional[type] = None) -> Optional[str]:
    """Runs on every forward of a fused module: instance attributes and the parameter dict are read directly
    (``hasattr`` on a Module that lacks the name raises inside ``Module.__getattr__``; ``named_parameters``
    walks the module tree; ``.data`` makes a tensor). ``cls``: the class to judge the layer by (default its
    own)."""
    if (type(module) if cls is None else cls) not in PLAIN_LAYERS:
        return f"is a {type(module).__name__}, not a plain torch layer (a LoRA, quantized or custom layer)"
    attributes = module.__dict__  # accelerate and diffusers set their hooks as instance attributes
    if "_hf_hook" in attributes:
        return "has an accelerate hook (offload or device placement)"
    if "_diffusers_hook" in attributes:
        return "has diffusers hooks (layerwise casting, group offloading or caching)"
    if "forward" in attributes:
        return "has its forward replaced on the instance"
    if module._forward_pre_hooks or module._forward_hooks:
        return "has forward hooks"
    for name, p in module._parameters.items():
        if p is None:
            continue
        if p.is_meta and not _launch.on_gpu(p):
            return f"has its {name} on the meta device (offloaded)"
        if type(p) is not nn.Parameter and type(p.data) is not torch.Tensor:  # a Parameter holds a plain tensor
            return f"stores its {name} as a {type(p.data).__name__} (a quantized or wrapped tensor)"
        if not p.is_floating_point() or p.dtype in FP8:
            return f"stores its {name} in {p.dtype}"
    return None


def _submodule(owner: nn.Module, name: str) -> nn.Module:
    """``owner.get_submodule(name)`` through the ``_modules`` dicts (get_submodule checks every step; this
    runs on every forward), which raises as it does where a step is missing."""
    module = owner
    for part in name.split("."):
        module = module._modules.get(part)
        if module is None:
            return owner.get_submodule(name)
    return module


def unfused_reason(owner: nn.Module, names: Iterable[str],
                   judge: Optional[Callable[[nn.Module], type]] = None) -> Optional[str]:
    """Why ``owner`` must call the named submodules (dotted names) instead of reading their weights, or None.
    ``judge(module)``: the class each is judged by (default its own; fastvid.distributed judges the layers it
    swapped by their original class where the owner runs their sharded form itself)."""
    for name in names:
        module = _submodule(owner, name)
        why = _layer_reason(module, None if judge is None else judge(module))
        if why is not None:
            return f"{name} {why}"
    return None


def unfused_modules(model: nn.Module) -> Iterable[Tuple[str, str]]:
    """(name, reason) of every fused fastvid module in ``model`` that would run its unfused path now."""
    for name, module in model.named_modules():
        reason = getattr(module, "unfused_reason", None)
        why = reason() if callable(reason) else None
        if why is not None:
            yield name, why
