"""The kernels ship inside the wheel: build it, install it into a fresh virtual environment
and import fastvid.kernels from there (not from this checkout)."""
import os
import subprocess
import sys
import sysconfig
import venv
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_wheel_ships_kernels(tmp_path):
    # Without PYTHONPATH: pip would take a checkout on it for an installed fastvid and skip the install.
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    wheel_dir = tmp_path / "wheel"
    subprocess.run([sys.executable, "-m", "pip", "wheel", str(ROOT), "--no-deps", "--no-build-isolation",
                    "-q", "-w", str(wheel_dir)], check=True, cwd=tmp_path)
    wheel = next(wheel_dir.glob("fastvid-*.whl"))
    names = zipfile.ZipFile(wheel).namelist()
    kernel_files = [n for n in names if n.endswith("/temporal_attention.py") and "/ops/" not in n and "/nn/" not in n]
    assert kernel_files == ["fastvid/kernels/temporal_attention.py"], kernel_files  # once, under fastvid/
    env_dir = tmp_path / "env"
    venv.create(env_dir, with_pip=False)
    python = env_dir / "bin" / "python"
    site = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          check=True, capture_output=True, text=True).stdout.strip()
    subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps", "-q", str(wheel)],
                   check=True, cwd=tmp_path, env=env)
    # torch and triton come from this environment, after the fresh one's own site-packages.
    (Path(site) / "outer.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    code = (
        "import fastvid, fastvid.kernels.frame_attention, fastvid.kernels.temporal_attention as k, fastvid.timing; "
        "print(fastvid.__file__); print(k.__file__); print(fastvid.timing.commit()); print(k.temporal_attention_fwd_kernel)"
    )
    out = subprocess.run([str(python), "-c", code], check=True, capture_output=True, text=True, cwd=tmp_path,
                         env=env).stdout.splitlines()
    assert out[0].startswith(site) and out[1].startswith(site), out
    # The wheel remembers the commit it was built from (reports made with an installed fastvid name it).
    built_from = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True)
    assert out[2] == (built_from.stdout.strip() if built_from.returncode == 0 else "unknown"), out


def test_editable_install_imports_kernels_from_the_checkout(tmp_path):
    """``pip install -e .`` maps fastvid.kernels to the checkout's kernels/ folder (imported from elsewhere)."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env_dir = tmp_path / "env"
    venv.create(env_dir, with_pip=False)
    python = env_dir / "bin" / "python"
    site = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          check=True, capture_output=True, text=True).stdout.strip()
    # setuptools (the build backend), torch and triton come from this environment, less any fastvid installed
    # there (a regular package on sys.path would be found before the editable install's finder).
    outer, visible = Path(sysconfig.get_paths()["purelib"]), tmp_path / "outer"
    visible.mkdir()
    for entry in outer.iterdir():
        if not entry.name.lower().startswith(("fastvid", "__editable__")):
            (visible / entry.name).symlink_to(entry)
    (Path(site) / "outer.pth").write_text(f"{visible}\n")
    subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps", "--no-build-isolation",
                    "-q", "-e", str(ROOT)], check=True, cwd=tmp_path, env=env)
    code = "import fastvid.kernels.temporal_conv as k; print(k.__file__); print(k.temporal_conv_fwd_kernel)"
    out = subprocess.run([str(python), "-c", code], check=True, capture_output=True, text=True, cwd=tmp_path,
                         env=env).stdout.splitlines()
    assert Path(out[0]).resolve() == (ROOT / "kernels" / "temporal_conv.py").resolve(), out
