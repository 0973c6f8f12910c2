"""Triton kernels of fastvid (``@triton.jit`` functions only, no torch modules).

Shipped inside the wheel as ``fastvid.kernels``. Importing this package imports no kernel
module; each launcher in ``fastvid.ops`` imports the one it needs, so that
``TRITON_INTERPRET`` is read when a kernel is first used, not when fastvid is imported.
"""
