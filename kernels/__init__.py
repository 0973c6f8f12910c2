"""Triton kernels of fastvid (``@triton.jit`` functions only, no torch modules).

Shipped inside the wheel as ``fastvid.kernels``. Importing this package imports no kernel
module; each launcher in ``fastvid.ops`` imports the one it needs, so that
``TRITON_INTERPRET`` is read when a kernel is first used, not when fastvid is imported.
"""
import os


def interpreting() -> bool:
    """True when Triton kernels run on the CPU through ``TRITON_INTERPRET=1`` (for testing): the
    one place fastvid reads that variable (fastvid.ops._launch re-exports it)."""
    return os.environ.get("TRITON_INTERPRET", "0") == "1"
