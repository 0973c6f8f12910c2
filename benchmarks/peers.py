"""Which attention peers are installed, asked per run (never at import)."""
from __future__ import annotations

import importlib
from typing import Optional


def import_reason(module: str) -> Optional[str]:
    """None when ``module`` imports, else why not."""
    try:
        importlib.import_module(module)
    except Exception as exc:  # ImportError, or a broken binary extension
        return f"{module} not available: {type(exc).__name__}: {str(exc).splitlines()[0][:120] if str(exc) else ''}"
    return None


def sdpa_backend_context(name: str):
    """A context manager forcing one SDPA backend ("flash", "efficient", "cudnn", "math")."""
    from torch.nn.attention import SDPBackend, sdpa_kernel

    backends = {
        "flash": SDPBackend.FLASH_ATTENTION,
        "efficient": SDPBackend.EFFICIENT_ATTENTION,
        "cudnn": SDPBackend.CUDNN_ATTENTION,
        "math": SDPBackend.MATH,
    }
    return sdpa_kernel([backends[name]])
