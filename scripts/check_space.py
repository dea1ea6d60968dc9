"""Before `make` installs the environment: is there room for PyTorch? One sentence if not, exit 1.

    python3 scripts/check_space.py .venv

Runs with the system's Python, before the venv exists. Nothing to check when the venv already imports
torch. Measured in December 2026: 6.0 GB with PyTorch's CUDA build, which pip takes on Linux x86-64,
1.5 GB with the CPU-only build; elsewhere PyPI's torch has no CUDA libraries.
"""

from __future__ import annotations

import platform
import shutil
import subprocess
import sys
from pathlib import Path

GB = 1e9


def needed_bytes(system: str, machine: str) -> float:
    """Bytes the install needs, with some room for pip's temporary files: PyTorch's CUDA build on Linux x86-64."""
    return 6.5 * GB if system == "Linux" and machine.lower() in ("x86_64", "amd64") else 2.0 * GB


def problem(venv: Path, free: float | None = None, needed: float | None = None) -> str | None:
    """None when there is room (or the venv imports torch already), else one sentence that says what to do."""
    python = venv / "bin" / "python"  # make's venvs: not Windows
    has_torch = "import importlib.util, sys; sys.exit(importlib.util.find_spec('torch') is None)"
    if python.exists() and subprocess.run([str(python), "-c", has_torch]).returncode == 0:
        return None
    folder = venv.resolve().parent
    while not folder.exists():  # the venv's folder may not exist yet
        folder = folder.parent
    free = shutil.disk_usage(folder).free if free is None else free
    needed = needed_bytes(platform.system(), platform.machine()) if needed is None else needed
    if free >= needed:
        return None
    return (
        f"Installing the workbook's environment into {venv} needs about {needed / GB:.1f} GB of disk "
        f"(PyTorch is most of it), and {folder} has {free / GB:.1f} GB free: free some space, or install "
        "PyTorch's CPU-only build into the venv first, about 1.5 GB (README, Quick start)."
    )


if __name__ == "__main__":
    message = problem(Path(sys.argv[1] if len(sys.argv) > 1 else ".venv"))
    if message:
        sys.exit(message)  # the sentence on stderr, exit status 1
