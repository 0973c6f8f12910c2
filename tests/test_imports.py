"""A checkout's root on sys.path (``python -m pytest``, ``python -c``, a notebook started in the repo)
shadows no installed package: the top-level ``kernels/`` folder ships as ``fastvid.kernels`` and has no
``__init__.py``, so Python ranks it below any installed ``kernels`` (Hugging Face's kernel hub package,
which transformers imports)."""
import importlib.metadata
import json
import subprocess
import sys
from pathlib import Path

import pytest

from fastvid import registry

ROOT = Path(__file__).resolve().parent.parent

_FROM_ROOT = """
import importlib, json, sys
assert sys.path[0] in ("", {root!r}), sys.path[:2]
found = {{}}
try:
    import kernels
    found["kernels"] = getattr(kernels, "__file__", None)
except ImportError:
    found["kernels"] = "not importable"
from transformers import CLIPTextModel
from diffusers import UNet3DConditionModel
found["fastvid.kernels"] = [importlib.import_module(name).__file__ for name in {modules!r}]
print(json.dumps(found))
"""


def test_repo_root_on_sys_path_shadows_no_installed_kernels_package():
    pytest.importorskip("transformers")
    pytest.importorskip("diffusers")
    modules = [row.kernel_module for row in registry.OPS.values()]
    code = _FROM_ROOT.format(root=str(ROOT), modules=modules)
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    found = json.loads(proc.stdout.splitlines()[-1])
    try:
        importlib.metadata.distribution("kernels")
        installed = True
    except importlib.metadata.PackageNotFoundError:
        installed = False
    if installed:  # Hugging Face's package, not this checkout's folder
        assert found["kernels"] is not None and not found["kernels"].startswith(str(ROOT)), found
    else:  # the folder is at most a namespace portion (no __init__.py, no __file__)
        assert found["kernels"] in (None, "not importable"), found
    assert len(found["fastvid.kernels"]) == len(modules) >= 4
    assert all(Path(f).parent == ROOT / "fastvid" / "kernels" for f in found["fastvid.kernels"]), found


def _root_import_names():
    """Names the checkout's root makes importable as regular packages or modules."""
    names = {p.stem for p in ROOT.glob("*.py")}
    names |= {p.name for p in ROOT.iterdir() if p.is_dir() and (p / "__init__.py").exists()}
    return names


def test_no_top_level_name_of_the_repo_shadows_an_installed_distribution():
    assert not (ROOT / "kernels" / "__init__.py").exists(), "kernels/ must stay a namespace portion"
    installed = importlib.metadata.packages_distributions()
    clashes = {name: installed[name] for name in _root_import_names() - {"fastvid"} if name in installed}
    assert not clashes, f"top-level names of the checkout shadow installed distributions: {json.dumps(clashes)}"
