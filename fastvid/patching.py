"""``patch()``: swap the fastvid.reference modules of a model for their fastvid.nn twins, in place.

A twin subclasses its reference class, adds no parameters or buffers and names its
``patch_kind`` (one of :data:`KINDS`). Swapping sets ``module.__class__`` to the twin, so weights,
hooks and devices stay as they are, and ``unpatch()`` sets it back. diffusers models and pipelines
go through ``fastvid.integrations.diffusers``.
"""
from __future__ import annotations

import inspect
import textwrap
from dataclasses import dataclass, field
from typing import Dict, List, Set, Tuple

from torch import nn

from .dispatch import BACKEND_NAMES
from .validation import check_choice, fail

KINDS = ("temporal_attention", "frame_attention", "conv", "feed_forward", "transformer_block")
_ORIGINAL = "_fastvid_original_class"
_SET_BACKEND = "_fastvid_set_backend"


@dataclass(repr=False)
class PatchReport:
    """What ``patch()`` swapped, per kind, what it skipped and why, and which swapped modules run their
    unfused path because their submodules carry hooks or are wrapped (offload, layerwise casting, LoRA,
    quantized layers). A swap is a module whose class became its fastvid twin, or (diffusers) an
    attention processor installed on a module: ``swapped`` lists both, ``processors`` the names of the
    processor installs among them. ``PatchReport.of(model)`` reports the model as it is now."""

    swapped: Dict[str, List[str]] = field(default_factory=lambda: {kind: [] for kind in KINDS})
    skipped: List[Tuple[str, str]] = field(default_factory=list)
    processors: Set[str] = field(default_factory=set)
    unfused: List[Tuple[str, str]] = field(default_factory=list)

    @classmethod
    def of(cls, model) -> "PatchReport":
        """What fastvid runs in ``model`` now (after later changes such as ``set_default_attn_processor``,
        hooks added by offloading or layerwise casting, or ``unpatch``); nothing goes to ``skipped``."""
        report = cls()
        if _is_diffusers(model):
            from .integrations.diffusers import describe_diffusers

            describe_diffusers(model, report)
            return report
        for name, module in model.named_modules():
            if hasattr(module, _ORIGINAL):
                report.add(type(module).patch_kind, name)
        _add_unfused(model, report)
        return report

    def add(self, kind: str, name: str, *, processor: bool = False) -> None:
        self.swapped.setdefault(kind, []).append(name)
        if processor:
            self.processors.add(name)

    def skip(self, name: str, reason: str) -> None:
        self.skipped.append((name, reason))

    def add_unfused(self, name: str, reason: str) -> None:
        self.unfused.append((name, reason))

    @property
    def total(self) -> int:
        return sum(len(names) for names in self.swapped.values())

    @property
    def modules_swapped(self) -> int:
        return self.total - self.processors_installed

    @property
    def processors_installed(self) -> int:
        return sum(name in self.processors for names in self.swapped.values() for name in names)

    def counts(self) -> Dict[str, int]:
        return {kind: len(names) for kind, names in self.swapped.items() if names}

    def __str__(self) -> str:
        lines = [f"PatchReport: {self.modules_swapped} module(s) swapped, {self.processors_installed} attention "
                 f"processor(s) installed, {len(self.skipped)} skipped"]
        for kind, names in self.swapped.items():
            if not names:
                continue
            installed = sum(name in self.processors for name in names)
            lines.append(f"  {kind}: {len(names) - installed} module(s), {installed} processor(s)")
            lines.append(textwrap.fill(", ".join(names), width=100, initial_indent=" " * 4,
                                       subsequent_indent=" " * 4, break_on_hyphens=False))
        if self.skipped:
            lines.append(f"  skipped ({len(self.skipped)}):")
            lines += [f"    {name or '<model>'}: {reason}" for name, reason in self.skipped]
        if self.unfused:
            lines.append(f"  unfused, calling their hooked or wrapped submodules ({len(self.unfused)}):")
            lines += [f"    {name or '<model>'}: {reason}" for name, reason in self.unfused]
        return "\n".join(lines)

    __repr__ = __str__


def reference_class(twin: type) -> type:
    """The reference class a twin stands in for: the first fastvid.reference class in its MRO (mixins
    such as a fused-projection helper may come before it)."""
    return next(c for c in twin.__mro__[1:] if c.__module__.startswith("fastvid.reference"))


def twin_table() -> Dict[type, type]:
    """Exact reference class -> its fastvid.nn twin, read from the classes fastvid.nn exports with a ``patch_kind``."""
    from . import nn as fnn

    table = {}
    for name in dir(fnn):
        cls = getattr(fnn, name)
        if inspect.isclass(cls) and issubclass(cls, nn.Module) and getattr(cls, "patch_kind", None) in KINDS:
            table[reference_class(cls)] = cls
    return table


def _is_reference(module: nn.Module) -> bool:
    return type(module).__module__.startswith("fastvid.reference")


def _add_unfused(model: nn.Module, report: PatchReport) -> None:
    from .nn._hooks import unfused_modules

    for name, why in unfused_modules(model):
        report.add_unfused(name, why)


def _is_diffusers(model) -> bool:
    return type(model).__module__.startswith("diffusers") or (not isinstance(model, nn.Module) and hasattr(model, "unet"))


def patch(model, *, temporal_attention: bool = True, frame_attention: bool = True, conv: bool = True,
          feed_forward: bool = True, transformer_block: bool = True, backend: str = "auto") -> PatchReport:
    """Swaps every fastvid.reference module of ``model`` for its fastvid.nn twin, in place.

    Each enabled kind ("temporal_attention", "frame_attention", "conv", "feed_forward": GEGLU's fused
    activation, "transformer_block": residual add + LayerNorm fused, and diffusers' SDPA attention without
    its no-op divide) is swapped; modules of a disabled kind, or with no twin, are reported as skipped with
    the reason. ``backend`` ("auto",
    "triton", "torch", "reference") is stored on each swapped module. A diffusers model or
    pipeline is patched through ``fastvid.integrations.diffusers``. Returns a :class:`PatchReport`.
    Raises FastvidInputError, naming the layers fastvid patches, for a model that has none of them.
    """
    check_choice("patch", "backend", backend, BACKEND_NAMES)
    enabled = {"temporal_attention": temporal_attention, "frame_attention": frame_attention, "conv": conv,
               "feed_forward": feed_forward, "transformer_block": transformer_block}
    report = PatchReport()
    if _is_diffusers(model):
        from .integrations.diffusers import patch_diffusers

        patch_diffusers(model, report, temporal_attention=temporal_attention, frame_attention=frame_attention,
                        conv=conv, feed_forward=feed_forward, transformer_block=transformer_block,
                        backend=backend)
        return report
    if not isinstance(model, nn.Module):
        fail("patch", "model", f"is a {type(model).__name__}", "a torch.nn.Module or a diffusers model or pipeline")
    table = twin_table()
    twins = set(table.values())
    if not any(type(m) in table or type(m) in twins or hasattr(m, _ORIGINAL) for m in model.modules()):
        known = ", ".join(sorted(f"reference.{cls.__name__}" for cls in table))
        fail("patch", "model", f"is a {type(model).__name__} with none of the layers fastvid patches ({known}, "
             "and the temporal layers of diffusers video models)",
             "a model built from fastvid.reference modules, or a diffusers video model or pipeline")
    owners: List[str] = []  # modules with a twin own their children (e.g. a RelativePositionBias)
    for name, module in model.named_modules():
        if any(name.startswith(owner + ".") for owner in owners):
            continue
        cls = type(module)
        if cls in twins or hasattr(module, _ORIGINAL):
            owners.append(name)
            report.skip(name, f"already a fastvid module ({cls.__name__})")
            continue
        if not _is_reference(module):
            continue
        twin = table.get(cls)
        if twin is None:
            if not any(_is_reference(child) for child in module.modules() if child is not module):
                report.skip(name, f"no fastvid twin for reference.{cls.__name__}")
            continue
        owners.append(name)
        if not enabled[twin.patch_kind]:
            report.skip(name, f"{twin.patch_kind} disabled")
            continue
        setattr(module, _ORIGINAL, cls)
        setattr(module, _SET_BACKEND, "backend" not in module.__dict__)
        module.__class__ = twin
        module.backend = backend
        report.add(twin.patch_kind, name)
    _add_unfused(model, report)
    return report


def unpatch(model) -> int:
    """Restores what ``patch()`` swapped: reference classes, and for a diffusers model or pipeline its
    classes, attention processors and methods. Returns how many swaps it restored (the ``total`` of
    the :class:`PatchReport` that ``patch()`` returned, when nothing changed since)."""
    if _is_diffusers(model):
        from .integrations.diffusers import unpatch_diffusers

        return unpatch_diffusers(model)
    if not isinstance(model, nn.Module):
        fail("unpatch", "model", f"is a {type(model).__name__}", "a torch.nn.Module or a diffusers model or pipeline")
    restored = 0
    for module in model.modules():
        original = module.__dict__.pop(_ORIGINAL, None)
        if original is None:
            continue
        if module.__dict__.pop(_SET_BACKEND, False):
            module.__dict__.pop("backend", None)
        module.__class__ = original
        restored += 1
    return restored
