"""Backend dispatch shared by every op.

Each op owns a :class:`Dispatcher` holding its backends in preference order. A backend says
whether it can take a given call (``reason`` returns None) or why not (a sentence). The
backend that ran last is observable through :func:`last_backend`; forcing a backend that
cannot take the input raises :class:`BackendUnsupportedError` with its reason, and "auto"
failing lists every backend's reason; a backend name that is not one raises ``FastvidInputError``.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional

from .validation import fail

BACKEND_NAMES = ("auto", "triton", "torch", "reference")

_last: Dict[str, str] = {}
_registry: Dict[str, "Dispatcher"] = {}


class BackendUnsupportedError(RuntimeError):
    """The requested backend (or, for "auto", every backend) cannot take this input."""


def takes_any_input(*args, **kwargs) -> Optional[str]:
    """The ``reason`` of a backend that can run every valid call (the torch paths)."""
    return None


@dataclass(frozen=True)
class Backend:
    name: str
    run: Callable
    # Returns None when the backend can run the call, else why not.
    reason: Callable[..., Optional[str]] = takes_any_input
    # Extra condition for "auto" (e.g. Triton only on CUDA, never the CPU interpreter).
    auto_reason: Optional[Callable[..., Optional[str]]] = None


@dataclass
class Dispatcher:
    op: str
    backends: List[Backend] = field(default_factory=list)
    # The public function's arguments (all but ``backend``, its defaults applied) -> the backends'
    # positional arguments, validated; lets ``explain`` take what the public function takes.
    arguments: Optional[Callable[..., tuple]] = None

    def __post_init__(self):
        _registry[self.op] = self

    def names(self):
        return ("auto",) + tuple(b.name for b in self.backends)

    def explain(self, *args, **kwargs) -> Dict[str, Optional[str]]:
        """Each backend's reason for refusing this call under "auto" (None: it can run it). Takes the
        public function's arguments, e.g. ``dispatchers()["temporal_attention"].explain(q, k, v)``."""
        if self.arguments is not None:
            args, kwargs = self.arguments(*args, **kwargs), {}
        return {b.name: self._auto_reason(b, *args, **kwargs) for b in self.backends}

    @staticmethod
    def _auto_reason(b: Backend, *args, **kwargs) -> Optional[str]:
        """Why "auto" passes over ``b`` for these (already validated) backend arguments, or None."""
        why = b.reason(*args, **kwargs)
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
                why = b.reason(*args, **kwargs)
                if why is not None:
                    raise BackendUnsupportedError(f"{self.op}: backend '{backend}' cannot run this input: {why}")
                return b
        fail(self.op, "backend", f"is {backend!r}", "one of " + ", ".join(map(repr, self.names())))

    def __call__(self, backend: str, *args, **kwargs):
        chosen = self.select(backend, *args, **kwargs)
        _last[self.op] = chosen.name
        return chosen.run(*args, **kwargs)


def dispatchers() -> Dict[str, "Dispatcher"]:
    """Every op's dispatcher, by op name (the support matrix that tests walk)."""
    return dict(_registry)


def last_backend(op: str) -> Optional[str]:
    """Name of the backend that ran the last call of ``op`` (e.g. "temporal_attention")."""
    return _last.get(op)
