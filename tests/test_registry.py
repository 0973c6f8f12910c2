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
    """The compile-spec builder a row names (in benchmarks/, not shipped, so not imported by fastvid) exists."""
    resources_source = (ROOT / "benchmarks" / "kernel_resources.py").read_text()
    assert f"\ndef {OPS[op].compile_specs}(" in resources_source


@pytest.mark.parametrize("op", sorted(OPS))
def test_examples_call_the_op_and_its_reference_alike(op):
    """The row's example inputs run through the public function and the reference with the same call, and
    its shapes have the rank of the op's main input."""
    examples = OPS[op].examples
    inputs = examples.make(1, 3)
    assert examples.main in inputs and (examples.other is None or examples.other in inputs)
    out = examples.call(OPS[op].function, inputs, backend="torch")
    torch.testing.assert_close(out, examples.call(OPS[op].reference, inputs), atol=1e-5, rtol=1e-5)
    rank = inputs[examples.main].dim()
    assert examples.benchmark_shapes and examples.cpu_shapes
    assert all(len(dims) == rank for dims in (*examples.benchmark_shapes.values(), *examples.cpu_shapes.values()))
    for args in examples.corners():
        assert OPS[op].dispatcher.explain(*args)["reference"] is None, "a corner case is a valid input"
