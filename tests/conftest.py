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
import numpy  # noqa: E402
import triton  # noqa: E402

# Triton's interpreter before 3.9 calls int() on 1-element numpy arrays, which numpy 2.4 rejects
# (tested: Triton 3.6 fails 161 interpreter tests with numpy 2.4, passes with 2.3; 3.9 passes with both).
# pyproject cannot tie numpy's version to Triton's, so the test setup stops with the fix.
INTERPRETER_NUMPY = ((3, 9), (2, 4))


def _major_minor(version: str):
    return tuple(int(part) for part in version.split("+")[0].split(".")[:2])


def pytest_configure(config):
    triton_below, numpy_from = INTERPRETER_NUMPY
    if (os.environ.get("TRITON_INTERPRET") == "1" and _major_minor(triton.__version__) < triton_below
            and _major_minor(numpy.__version__) >= numpy_from):
        raise pytest.UsageError(
            f"Triton {triton.__version__}'s interpreter (TRITON_INTERPRET=1) fails with numpy {numpy.__version__}: "
            f"install numpy<{'.'.join(map(str, numpy_from))} (pip install 'numpy<2.4') or Triton >= "
            f"{'.'.join(map(str, triton_below))}.")

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"

# (dtype, checked here?) — bf16 tl.dot is wrong under the Triton 3.9 interpreter, so bf16 needs a GPU.
KERNEL_DTYPES = [torch.float32, torch.float16] + ([torch.bfloat16] if DEVICE == "cuda" else [])


@pytest.fixture
def device():
    return DEVICE


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.fixture
def one_thread():
    """Small models on a busy shared CPU run far faster on one thread than on several that wait for each other."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
