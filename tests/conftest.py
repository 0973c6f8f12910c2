"""Without a GPU, Triton kernels run on CPU tensors through the interpreter.

TRITON_INTERPRET is read when a kernel is defined, so it is set here before fastvid (and
with it any kernel module) is imported.
"""
import os

import pytest
import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

# Imported now, under the setting above: triton first imported inside a test that sets
# TRITON_INTERPRET=0 keeps compiled helpers, which later interpreted kernels cannot call.
import triton  # noqa: E402,F401

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"

# (dtype, checked here?) — bf16 tl.dot is wrong under the Triton 3.9 interpreter, so bf16 needs a GPU.
KERNEL_DTYPES = [torch.float32, torch.float16] + ([torch.bfloat16] if DEVICE == "cuda" else [])


@pytest.fixture
def device():
    return DEVICE


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
