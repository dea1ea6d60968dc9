"""Where the workbook keeps things, and how it runs.

Every notebook starts with the same three questions: where is the project, is this a
quick run (CI, a first look) or a full one, and are the installed packages recent enough?
This module answers them in one place so the notebooks stay short.
"""

from __future__ import annotations

import os
import platform
import re
import sys
from importlib import metadata
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent
IMAGES_DIR = PROJECT_ROOT / "images"
QUICK_ENV = "WORKBOOK_QUICK"
DATA_DIR_ENV = "WORKBOOK_DATA_DIR"

# The packages a learner's version check lists, in the order they matter to the lesson.
CHECKED_PACKAGES = (
    "torch", "torchvision", "numpy", "pillow", "matplotlib",
    "requests", "tqdm", "ipywidgets", "jupyterlab", "nbval", "pytest",
)


def data_dir() -> Path:
    """The folder downloads and generated data land in: `data/`, or `$WORKBOOK_DATA_DIR`."""
    override = os.environ.get(DATA_DIR_ENV, "").strip()
    return Path(override).expanduser().resolve() if override else PROJECT_ROOT / "data"


def quick_mode() -> bool:
    """True when `WORKBOOK_QUICK=1`: tiny synthetic data and the shortest training (CI, a first look)."""
    return os.environ.get(QUICK_ENV, "").strip().lower() in {"1", "true", "yes", "on"}


def _version_tuple(text: str) -> tuple[int, ...]:
    """'2.14.1+cu130' -> (2, 14, 1); good enough to compare against a `>=` floor."""
    return tuple(int(part) for part in re.findall(r"\d+", text.split("+")[0])[:3])


def required_floors() -> dict[str, str]:
    """The `>=` floors that pyproject.toml declares, read from the installed project's metadata."""
    try:
        requirements = metadata.requires("concrete-crack-workbook") or []
    except metadata.PackageNotFoundError:
        return {}
    floors = {}
    for requirement in requirements:
        match = re.match(r"^\s*([A-Za-z0-9_.\-]+)\s*>=\s*([0-9][^,;\s]*)", requirement)
        if match:
            floors[match.group(1).lower()] = match.group(2)
    return floors


def check_versions(packages: tuple[str, ...] = CHECKED_PACKAGES) -> dict[str, str]:
    """Print Python's and each package's version next to the floor the project asks for.

    Raises RuntimeError naming every package that is missing or too old, with the command
    that fixes it, so a learner finds out in the first cell rather than in the middle of a lesson.
    """
    floors = required_floors()
    found: dict[str, str] = {"python": platform.python_version()}
    problems = []
    print(f"{'python':<12} {found['python']:<16} (needs >= 3.10)")
    if sys.version_info < (3, 10):
        problems.append(f"Python {found['python']} (needs >= 3.10)")
    for name in packages:
        floor = floors.get(name, "")
        try:
            version = metadata.version(name)
        except metadata.PackageNotFoundError:
            version = "missing"
            problems.append(f"{name} is not installed")
        else:
            if floor and _version_tuple(version) < _version_tuple(floor):
                problems.append(f"{name} {version} (needs >= {floor})")
        found[name] = version
        print(f"{name:<12} {version:<16} {'(needs >= ' + floor + ')' if floor else ''}")
    if problems:
        raise RuntimeError(
            "Some packages are missing or too old: " + "; ".join(problems)
            + ". Run `make lab` from the project folder (it installs what is needed), "
            "or `pip install -e .` inside your environment."
        )
    return found


def save_figure(fig, name: str, dpi: int = 110) -> Path:
    """Save a matplotlib figure under `images/` (as well as showing it) and return the path."""
    IMAGES_DIR.mkdir(parents=True, exist_ok=True)
    path = IMAGES_DIR / name
    tmp = path.with_name(f".{path.stem}.tmp{path.suffix}")
    fig.savefig(tmp, dpi=dpi, bbox_inches="tight")
    os.replace(tmp, path)
    return path
