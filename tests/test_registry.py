"""fastvid.registry lists every op with all of its pieces: a piece forgotten when an op is added
fails here instead of going unnoticed."""
import inspect
from pathlib import Path

import pytest
import torch

import fastvid
from fastvid import reference
from fastvid.dispatch import dispatchers
from fastvid.registry import OPS

ROOT = Path(__file__).resolve().parent.parent


def test_registry_lists_every_dispatcher():
    assert set(OPS) == set(dispatchers())


@pytest.mark.parametrize("op", sorted(OPS))
def test_op_has_every_piece(op):
    spec = OPS[op]
    assert spec.module.__name__ == f"fastvid.ops.{op}"
    assert getattr(fastvid, op) is spec.function and op in fastvid.__all__
    assert spec.dispatcher is dispatchers()[op]
    assert spec.reference is getattr(reference, op) and spec.reference.__module__.startswith("fastvid.reference")
    for name in spec.library_ops:
        assert hasattr(torch.ops.fastvid, name), f"torch.ops.fastvid.{name} is not registered"
    assert spec.twins and all(issubclass(twin, torch.nn.Module) and twin.__module__.startswith("fastvid.nn")
                              for twin in spec.twins)
    assert all(any(base.__module__.startswith("fastvid.reference") for base in inspect.getmro(twin))
               for twin in spec.twins), "every module twin is a drop-in for a fastvid.reference module"
    assert (ROOT / "tests" / f"test_{op}.py").is_file()
    assert (ROOT / "kernels" / f"{op}.py").is_file()
    assert spec.kernels().__name__ == spec.kernel_module


@pytest.mark.parametrize("op", sorted(OPS))
def test_benchmark_names_resolve(op):
    """The names a row gives for the benchmarks (not shipped, so not imported by fastvid) exist."""
    shapes_source = (ROOT / "benchmarks" / "shapes.py").read_text()
    resources_source = (ROOT / "benchmarks" / "kernel_resources.py").read_text()
    assert f"\n{OPS[op].benchmark_shapes} = " in shapes_source
    assert f"\ndef {OPS[op].compile_specs}(" in resources_source
