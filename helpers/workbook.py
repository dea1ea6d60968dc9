"""What every notebook does first and last: check the versions, say what it runs on, save figures.

Every notebook starts by checking that the installed packages are recent enough
(:func:`check_versions`) and saying what it runs on (:func:`announce_run`); its figures are saved
with a footer that repeats it (:func:`save_figure`). The commands behind ``make`` live in
:mod:`helpers.tools.cli`.
"""

from __future__ import annotations

import platform
import sys
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING

from helpers.plumbing.files import atomic_path
from helpers.plumbing.requirements import declared_floors, is_below
from helpers.settings import images_dir, quick_mode

if TYPE_CHECKING:  # the first cell checks the versions before torch is imported
    from helpers.model import WeightsChoice

# The packages a learner's version check lists, in the order they matter to the lesson.
CHECKED_PACKAGES = (
    "torch",
    "torchvision",
    "numpy",
    "pillow",
    "matplotlib",
    "requests",
    "tqdm",
    "ipywidgets",
    "jupyterlab",
)


def required_floors() -> dict[str, str]:
    """The `>=` floors that pyproject.toml declares, read from the installed project's metadata."""
    try:
        requirements = metadata.requires("concrete-crack-workbook") or []
    except metadata.PackageNotFoundError:
        return {}
    return declared_floors(requirements)


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
            if floor and is_below(version, floor):
                problems.append(f"{name} {version} (needs >= {floor})")
        found[name] = version
        print(f"{name:<12} {version:<16} {'(needs >= ' + floor + ')' if floor else ''}")
    if problems:
        raise RuntimeError(
            "Some packages are missing or too old: "
            + "; ".join(problems)
            + ". Run `make lab` from the project folder (it installs what is needed), "
            "or `pip install -e .` inside your environment."
        )
    return found


figure_stamp = ""  # what produced this notebook's figures, e.g. "synthetic data · random backbone"


def run_stamp(source: str, weights: WeightsChoice | None = None) -> str:
    """A short label of what a result was computed with: "real data · ImageNet backbone", "synthetic data"...

    source: "real" or "synthetic"; weights: the backbone's WeightsChoice, or None where no model is involved.
    """
    parts = [f"{source} data"]
    if weights is not None:
        parts.append(
            "ImageNet backbone"
            if weights.is_imagenet
            else "random backbone"
            if weights.is_random
            else f"backbone from {Path(str(weights.source)).name}"
        )
    if quick_mode():
        parts.append("quick mode")
    return " · ".join(parts)


def announce_run(choice, weights: WeightsChoice | None = None) -> str:
    """Print what this notebook runs on, in one line, and stamp every figure saved from now on with it.

    choice: the DataChoice of helpers.data (source, path, reason); weights: the backbone's
    WeightsChoice (helpers.model.resolve_weights, or a Checkpoint's .weights), None without a model.
    Returns the stamp, e.g. "synthetic data · random backbone".
    """
    global figure_stamp
    figure_stamp = run_stamp(choice.source, weights)
    print(f"This notebook runs on: {figure_stamp}")
    print(f"  data:    {choice.source}, {choice.path}: {choice.reason}")
    if weights is not None:
        print(f"  weights: {weights.description}")
    if choice.source != "real" or (weights is not None and weights.is_random):
        print(
            "  Results below show how the method works; they say nothing about real concrete or the "
            "capstone's 99.44%, which need the real data and the ImageNet weights."
        )
    return figure_stamp


def save_figure(fig, name: str, dpi: int = 110) -> Path:
    """Save a matplotlib figure under `images/` (as well as showing it) and return the path.

    The figure carries a small grey footer saying what produced it (announce_run's stamp), since
    saved figures end up on slides.
    """
    if figure_stamp and not getattr(fig, "_workbook_stamped", False):
        below = fig.get_tightbbox(fig.canvas.get_renderer())  # in inches: under everything drawn so far
        fig.text(
            below.x1 / fig.get_figwidth(),
            (below.y0 - 0.04) / fig.get_figheight(),
            figure_stamp,
            ha="right",
            va="top",
            fontsize=7,
            color="0.4",
        )
        fig._workbook_stamped = True  # saving twice stamps once
    path = images_dir() / name
    with atomic_path(path) as temp:
        fig.savefig(temp, dpi=dpi, bbox_inches="tight")
    return path


def has_widget_frontend() -> bool:
    """True inside a Jupyter kernel where ipywidgets imports; False in plain Python (a terminal, a script)."""
    try:
        from IPython import get_ipython
        import ipywidgets  # noqa: F401
    except ImportError:
        return False
    shell = get_ipython()
    return shell is not None and hasattr(shell, "kernel")
