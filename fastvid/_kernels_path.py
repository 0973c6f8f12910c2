"""Makes ``fastvid.kernels`` importable from a source checkout.

An installed wheel (or an editable install) maps the repository's top-level ``kernels/``
folder to ``fastvid.kernels``. When fastvid is used straight from a checkout through
PYTHONPATH, nothing maps it, so this registers ``<repo>/kernels`` under that name.
"""
import importlib.util
import sys
from pathlib import Path


def register_checkout_kernels() -> None:
    if "fastvid.kernels" in sys.modules or importlib.util.find_spec("fastvid.kernels") is not None:
        return
    folder = Path(__file__).resolve().parent.parent / "kernels"
    init = folder / "__init__.py"
    if not init.is_file():
        raise ImportError(f"fastvid.kernels not found: neither installed nor at {folder}")
    spec = importlib.util.spec_from_file_location(
        "fastvid.kernels", init, submodule_search_locations=[str(folder)]
    )
    module = importlib.util.module_from_spec(spec)
    sys.modules["fastvid.kernels"] = module
    spec.loader.exec_module(module)
