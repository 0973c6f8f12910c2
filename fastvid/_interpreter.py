"""Whether Triton kernels run on the CPU through ``TRITON_INTERPRET=1`` (for testing).

The one place fastvid reads that variable; it is read when a kernel is first used, not when fastvid
is imported (``fastvid.ops._launch`` re-exports :func:`interpreting`).
"""
import os


def interpreting() -> bool:
    """True when Triton kernels run on the CPU through ``TRITON_INTERPRET=1``."""
    return os.environ.get("TRITON_INTERPRET", "0") == "1"
