"""Backend dispatch shared by every op.

Each op owns a :class:`Dispatcher` holding its backends in preference order. A backend says
whether it can take a given call (``reason`` returns None) or why not (a sentence). The
backend that ran last is observable through :func:`last_backend`; forcing a backend that
cannot take the input raises :class:`BackendUnsupportedError` with its reason, and "auto"
failing lists every backend's reason; a backend name that is not one raises ``FastvidInputError``.

Each backend declares its limits once (:class:`Limits`: dtypes, largest head_dim, frames, ...), read
from the call's features (the op's ``features``); the op's validation checks only what every
backend needs. :meth:`Dispatcher.call` validates and chooses once per call signature
(:func:`fastvid.ops._launch.signature`) and keeps the chosen backend, with its launch plan bound
(``Backend.prepare``), in a bounded :class:`~fastvid.ops._launch.PlanCache`: a repeated call is a
key lookup, the op's per-call value checks (``value_checks``), output allocation and launch.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Tuple

import torch

from .ops._launch import PlanCache, signature
from .ops._library import Const, _dispatch_modes, _is_compiling, bound
from .validation import FLOAT_DTYPES, fail

BACKEND_NAMES = ("auto", "triton", "torch", "reference")

_last: Dict[str, str] = {}
_registry: Dict[str, "Dispatcher"] = {}


class BackendUnsupportedError(RuntimeError):
    """The requested backend (or, for "auto", every backend) cannot take this input."""


def takes_any_input(*args, **kwargs) -> Optional[str]:
    """The ``reason`` of a backend that can run every valid call (the torch paths)."""
    return None


TORCH_DTYPES = FLOAT_DTYPES + (torch.float64,)


@dataclass(frozen=True)
class Limits:
    """What a backend takes, declared once: its dtypes and the largest value of named features of a
    call (``{"head_dim": (256, "why")}``), as the op's ``features`` reports them."""
    dtypes: Tuple[torch.dtype, ...] = TORCH_DTYPES
    maxima: Dict[str, Tuple[int, str]] = field(default_factory=dict)

    def reason(self, features: Dict[str, object]) -> Optional[str]:
        dtype = features.get("dtype")
        if dtype is not None and dtype not in self.dtypes:
            names = ", ".join(str(d).replace("torch.", "") for d in self.dtypes)
            return f"dtype {str(dtype).replace('torch.', '')} is not supported ({names})"
        for name, (largest, why) in self.maxima.items():
            value = features.get(name)
            if value is not None and value > largest:
                return f"{name} = {value} > {largest}" + (f": {why}" if why else "")
        return None


@dataclass(frozen=True)
class Backend:
    name: str
    run: Callable
    # Returns None when the backend can run the call, else why not (beyond ``limits``).
    reason: Callable[..., Optional[str]] = takes_any_input
    # Extra condition for "auto" (e.g. Triton only on CUDA, never the CPU interpreter).
    auto_reason: Optional[Callable[..., Optional[str]]] = None
    limits: Limits = Limits()
    # Backend arguments -> a callable running calls of that signature (its launch plan bound); None: ``run``.
    prepare: Optional[Callable[..., Callable]] = None


@dataclass
class Dispatcher:
    op: str
    backends: List[Backend] = field(default_factory=list)
    # The public function's arguments (all but ``backend``, its defaults applied) -> the backends'
    # positional arguments, validated; lets ``explain`` take what the public function takes.
    arguments: Optional[Callable[..., tuple]] = None
    # Backend arguments -> the call's features that ``Limits`` read (dtype, head_dim, frames ...).
    features: Callable[..., Dict[str, object]] = lambda *args, **kwargs: {}
    # Checks of argument values (not signatures) that run on every call, cached or not.
    value_checks: Optional[Callable[..., None]] = None

    def __post_init__(self):
        _registry[self.op] = self
        self.calls = PlanCache()

    def names(self):
        return ("auto",) + tuple(b.name for b in self.backends)

    def explain(self, *args, **kwargs) -> Dict[str, Optional[str]]:
        """Each backend's reason for refusing this call under "auto" (None: it can run it). Takes the
        public function's arguments, e.g. ``dispatchers()["temporal_attention"].explain(q, k, v)``."""
        if self.arguments is not None:
            args, kwargs = self.arguments(*args, **kwargs), {}
        return {b.name: self._auto_reason(b, *args, **kwargs) for b in self.backends}

    def why_not(self, b: Backend, *args, **kwargs) -> Optional[str]:
        """Why ``b`` cannot run these (already validated) backend arguments (its ``Limits``, then its own
        ``reason``), or None."""
        return b.limits.reason(self.features(*args, **kwargs)) or b.reason(*args, **kwargs)

    def _auto_reason(self, b: Backend, *args, **kwargs) -> Optional[str]:
        """Why "auto" passes over ``b`` for these (already validated) backend arguments, or None."""
        why = self.why_not(b, *args, **kwargs)
        if why is None and b.auto_reason is not None:
            why = b.auto_reason(*args, **kwargs)
        return why

    def select(self, backend: str, *args, **kwargs) -> Backend:
        """The backend that runs these validated backend arguments (the first that takes them under "auto")."""
        if backend == "auto":
            reasons = {}
            for b in self.backends:
                reasons[b.name] = self._auto_reason(b, *args, **kwargs)
                if reasons[b.name] is None:
                    return b
            listed = "; ".join(f"{k}: {v}" for k, v in reasons.items())
            raise BackendUnsupportedError(f"{self.op}: no backend can run this input ({listed})")
        for b in self.backends:
            if b.name == backend:
                why = self.why_not(b, *args, **kwargs)
                if why is not None:
                    raise BackendUnsupportedError(f"{self.op}: backend '{backend}' cannot run this input: {why}")
                return b
        fail(self.op, "backend", f"is {backend!r}", "one of " + ", ".join(map(repr, self.names())))

    def __call__(self, backend: str, *args, **kwargs):
        chosen = self.select(backend, *args, **kwargs)
        _last[self.op] = chosen.name
        return chosen.run(*args, **kwargs)

    def call(self, backend: str, *args):
        """The public function's call (``args``: its arguments in ``arguments``' order, defaults applied):
        validated, dispatched and planned once per call signature, then looked up. Inside torch.compile,
        under a dispatch mode, or for a tensor subclass every call takes the full path."""
        if _is_compiling() or _dispatch_modes():
            return self(backend, *self.arguments(*args))
        key = signature(args, backend)
        try:
            entry = self.calls.plans.get(key)
        except TypeError:  # an unhashable argument: prepared on every call
            entry = None
        if entry is None:
            if key is None:  # a tensor subclass
                return self(backend, *self.arguments(*args))
            entry = self.calls.lookup(key, self._prepare, backend, args)
        if self.value_checks is not None:
            self.value_checks(*args)
        name, run = entry
        _last[self.op] = name
        return run(*args)

    def _prepare(self, backend: str, args: tuple):
        """(backend name, runner): ``runner(*args)`` runs a call of this signature. Tensors come from the
        call's arguments; every other backend argument is a function of the signature, kept as a constant
        (:func:`~fastvid.ops._library.bound` merges that mapping with the backend's prepared call)."""
        bargs = self.arguments(*args)
        chosen = self.select(backend, *bargs)
        runner = chosen.prepare(*bargs) if chosen.prepare is not None else chosen.run
        picks = []
        for i, b in enumerate(bargs):
            if i < len(args) and b is args[i]:
                picks.append(i)
            elif isinstance(b, torch.Tensor):
                index = next((i for i, a in enumerate(args) if a is b), None)
                if index is None:  # a tensor made from the arguments (a copy): no fixed recipe, run in full
                    return chosen.name, lambda *a: self(backend, *self.arguments(*a))
                picks.append(index)
            else:
                picks.append(Const(b))
        return chosen.name, bound(runner, len(args), picks)


def dispatchers() -> Dict[str, "Dispatcher"]:
    """Every op's dispatcher, by op name (the support matrix that tests walk)."""
    return dict(_registry)


def last_backend(op: str) -> Optional[str]:
    """Name of the backend that ran the last call of ``op`` (e.g. "temporal_attention")."""
    return _last.get(op)
