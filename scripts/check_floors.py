"""Run the unit tests against the lowest versions pyproject.toml allows, so its floors are tested.

Reads the ``>=`` floors of [project] dependencies from pyproject.toml, pins the runtime libraries
in PINNED to exactly their floor (the rest may float), installs the project into a fresh venv
with those constraints, prints the versions it got, and runs the unit tests in quick mode (no
notebooks, no browser). The exit code is pytest's.

    python3 scripts/check_floors.py                      # build/floors-venv, from scratch
    python3 scripts/check_floors.py --keep               # reuse the venv: tests only
    python3 scripts/check_floors.py --pin torch==2.8 --pin torchvision==0.23   # try other floors

Needs Python 3.11+ (tomllib). Old torch releases come from PyPI as CUDA builds: the first
install downloads several GB. A venv reused with --keep keeps the versions it was built with.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import time
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # the floors are read by the workbook's own function, before any venv exists
from helpers.plumbing.requirements import declared_floors  # noqa: E402
from scripts.check_space import venv_python  # noqa: E402  (the one that make's disk check uses)

PINNED = ("torch", "torchvision", "torchao", "numpy", "pillow", "matplotlib", "ipywidgets", "requests", "tqdm")
PYTEST = ["-m", "pytest", "tests", "-m", "not browser", "-p", "no:cacheprovider", "-q"]


def floors(pyproject: Path = ROOT / "pyproject.toml") -> dict[str, str]:
    """{name: floor} for every `name>=floor` in [project] dependencies (names in canonical form)."""
    return declared_floors(tomllib.loads(pyproject.read_text(encoding="utf-8"))["project"]["dependencies"])


def constraints(pins: list[str]) -> list[str]:
    """`name==floor` for each PINNED package, with --pin name==version overriding the floor."""
    versions = {name: version for name, version in floors().items() if name in PINNED}
    for pin in pins:
        name, _, version = pin.partition("==")
        if not version:
            sys.exit(f"--pin wants name==version, not {pin!r}")
        versions[name.strip().lower()] = version.strip()
    missing = set(PINNED) - set(versions)
    if missing:
        sys.exit(f"pyproject.toml gives no >= floor for {', '.join(sorted(missing))}")
    return [f"{name}=={version}" for name, version in versions.items()]


def run(command: list[str], **kwargs) -> subprocess.CompletedProcess:
    print("+", " ".join(command), flush=True)
    return subprocess.run(command, cwd=ROOT, **kwargs)


def install(venv: Path, pins: list[str], keep: bool) -> Path:
    """Create `venv` (unless `keep` and it exists), install the project with its [test] extra; its python."""
    python = venv_python(venv)
    if keep and python.exists():
        return python
    shutil.rmtree(venv, ignore_errors=True)
    run([sys.executable, "-m", "venv", str(venv)], check=True)
    constraints_file = venv / "floors-constraints.txt"
    constraints_file.write_text("\n".join(constraints(pins)) + "\n", encoding="utf-8")
    print(constraints_file.read_text(encoding="utf-8"), end="")
    run([str(python), "-m", "pip", "install", "--quiet", "--upgrade", "pip"], check=True)
    run([str(python), "-m", "pip", "install", "--quiet", "-e", ".[test]", "-c", str(constraints_file)], check=True)
    return python


def print_versions(python: Path) -> None:
    names = ", ".join(repr(name) for name in (*PINNED, "pytest"))
    code = (
        "import importlib.metadata as m, sys; print('python', sys.version.split()[0]); "
        f"[print(n, m.version(n)) for n in ({names})]"
    )
    run([str(python), "-c", code], check=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--venv", type=Path, default=ROOT / "build" / "floors-venv", help="default: build/floors-venv")
    parser.add_argument("--keep", action="store_true", help="reuse an existing venv instead of rebuilding it")
    parser.add_argument("--only-install", action="store_true", help="install and print versions, run no tests")
    parser.add_argument(
        "--pin",
        action="append",
        default=[],
        metavar="NAME==VERSION",
        help="pin a package to VERSION instead of its floor (repeatable)",
    )
    args = parser.parse_args()

    start = time.monotonic()
    python = install(args.venv.resolve(), args.pin, args.keep)
    print_versions(python)
    if args.only_install:
        return 0
    print("+", python, *PYTEST, flush=True)
    last = "no output"
    with subprocess.Popen(
        [str(python), *PYTEST],
        cwd=ROOT,
        env={**os.environ, "WORKBOOK_QUICK": "1"},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    ) as pytest:
        for line in pytest.stdout:  # streamed, and the last line (pytest's summary) kept
            print(line, end="", flush=True)
            last = line.strip() or last
    print(f"floors check ({time.monotonic() - start:.0f} s in all): {last}")
    return pytest.returncode


if __name__ == "__main__":
    sys.exit(main())
