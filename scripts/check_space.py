"""Before `make` installs the environment: is there room for PyTorch? One sentence if not, exit 1.

    python3 scripts/check_space.py .venv

Runs with the system's Python, before the venv exists (standard library only). Nothing to check
when the venv already imports torch (a second `make`, or the CPU-only build installed first, as
the README shows). Otherwise the free space where the venv goes must hold the install: measured
in December 2026, 6.0 GB with PyTorch's CUDA build, which pip takes on Linux x86-64, and 1.5 GB
with the CPU-only build (README, Quick start); elsewhere PyPI's torch has no CUDA libraries.
"""

from __future__ import annotations

import os
import platform
import shutil
import subprocess
import sys
from pathlib import Path

GB = 1e9
NEEDED_CUDA_BUILD = 6.5 * GB  # 6.0 GB measured, and some room for pip's temporary files
NEEDED_ELSEWHERE = 2.0 * GB  # 1.5 GB measured with the CPU-only build


def venv_python(venv: Path, windows: bool = os.name == "nt") -> Path:
    """The interpreter of the venv at `venv`: bin/python, or Scripts\\python.exe on Windows."""
    return venv / "Scripts" / "python.exe" if windows else venv / "bin" / "python"


def has_torch(venv: Path) -> bool:
    """True when the venv exists and its Python imports torch (then pip installs little more)."""
    python = venv_python(venv)
    if not python.exists():
        return False
    found = subprocess.run(
        [str(python), "-c", "import importlib.util, sys; sys.exit(not importlib.util.find_spec('torch'))"]
    )
    return found.returncode == 0


def needed_bytes(system: str | None = None, machine: str | None = None) -> float:
    """Bytes the install needs: PyTorch's CUDA build on Linux x86-64, less elsewhere."""
    system, machine = system or platform.system(), (machine or platform.machine()).lower()
    return NEEDED_CUDA_BUILD if system == "Linux" and machine in ("x86_64", "amd64") else NEEDED_ELSEWHERE


def problem(venv: Path, free: float | None = None, needed: float | None = None) -> str | None:
    """None when there is room (or torch is installed already), else one sentence that says what to do."""
    if has_torch(venv):
        return None
    folder = venv.resolve().parent
    while not folder.exists() and folder != folder.parent:  # the venv's folder may not exist yet
        folder = folder.parent
    free = shutil.disk_usage(folder).free if free is None else free
    needed = needed_bytes() if needed is None else needed
    if free >= needed:
        return None
    return (
        f"Installing the workbook's environment into {venv} needs about {needed / GB:.1f} GB of disk "
        f"(PyTorch is most of it), and {folder} has {free / GB:.1f} GB free: free some space, or install "
        "PyTorch's CPU-only build into the venv first, about 1.5 GB (README, Quick start, 'A Linux laptop "
        "without an NVIDIA GPU')."
    )


def main(argv: list[str]) -> int:
    message = problem(Path(argv[1] if len(argv) > 1 else ".venv"))
    if message:
        print(message, file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
