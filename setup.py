"""setuptools hook (the project is configured in pyproject.toml): a built fastvid records the commit
it was built from in ``fastvid/BUILD_COMMIT``, so an installed fastvid's reports still name it."""
import subprocess
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py


def _commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, timeout=10,
                              cwd=Path(__file__).resolve().parent, check=True).stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


class BuildPyWithCommit(build_py):
    def run(self):
        super().run()
        if not self.editable_mode:  # an editable install runs from the checkout, whose git fastvid reads
            (Path(self.build_lib) / "fastvid" / "BUILD_COMMIT").write_text(_commit() + "\n")


setup(cmdclass={"build_py": BuildPyWithCommit})
