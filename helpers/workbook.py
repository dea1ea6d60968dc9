"""What every notebook does first and last: check the versions, say what it runs on, save its figures."""

from __future__ import annotations

import platform
import sys
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING

from packaging.requirements import Requirement

from helpers.plumbing import atomic_path
from helpers.settings import images_dir, quick_mode

if TYPE_CHECKING:  # the first cell checks the versions before torch is imported
    from helpers.data import DataChoice
    from helpers.model import WeightsChoice

figure_stamp = ""  # what produced this notebook's figures, e.g. "synthetic data · random backbone"


def check_versions() -> dict[str, str]:
    """Print Python's and each required package's version beside what pyproject.toml asks for.

    Raises RuntimeError naming every package that is missing or too old, with the command that fixes it,
    so that a learner finds out in the first cell rather than in the middle of a lesson.
    """
    found, problems = {"python": platform.python_version()}, []
    print(f"{'python':<16} {found['python']:<16} (needs >=3.10)")
    if sys.version_info < (3, 10):
        problems.append(f"Python {found['python']} (needs >=3.10)")
    try:
        requirements = [Requirement(text) for text in metadata.requires("concrete-crack-workbook") or []]
    except metadata.PackageNotFoundError:
        requirements = []
        print("(the workbook is not installed, so its packages are not checked: `pip install -e .` installs it)")
    for requirement in (r for r in requirements if r.marker is None):  # extras ([test]) have a marker
        name, needs = requirement.name, requirement.specifier
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            found[name] = "missing"
        if found[name] == "missing" or not needs.contains(found[name], prereleases=True):
            problems.append(f"{name} {found[name]} (needs {needs})")
        print(f"{name:<16} {found[name]:<16} (needs {needs})")
    if problems:
        raise RuntimeError(
            f"Some packages are missing or too old: {'; '.join(problems)}. Run `make lab` from the project folder "
            "(it installs what is needed), or `pip install -e .` inside your environment."
        )
    return found


def run_stamp(source: str, weights: WeightsChoice | None = None) -> str:
    """A short label of what a result was computed with: "real data · ImageNet backbone", "synthetic data"..."""
    parts = [f"{source} data"]
    if weights is not None:
        parts.append(
            "ImageNet backbone"
            if weights.is_imagenet
            else "random backbone"
            if weights.is_random
            else f"backbone from {Path(str(weights.source)).name}"
        )
    return " · ".join(parts + ["quick mode"] * quick_mode())


def announce_run(choice: DataChoice, weights: WeightsChoice | None = None) -> str:
    """Print what this notebook runs on, and stamp every figure saved from now on with it; the stamp."""
    global figure_stamp
    figure_stamp = run_stamp(choice.source, weights)
    print(f"This notebook runs on: {figure_stamp}\n  data:    {choice.source}, {choice.path}: {choice.reason}")
    if weights is not None:
        print(f"  weights: {weights.description}")
    if choice.source != "real" or (weights is not None and weights.is_random):
        print(
            "  Results below show how the method works; they say nothing about real concrete or the "
            "capstone's 99.44%, which need the real data and the ImageNet weights."
        )
    return figure_stamp


def save_figure(fig, name: str, dpi: int = 110) -> Path:
    """Save a matplotlib figure under images/ with a small grey footer saying what produced it (slides travel)."""
    if figure_stamp and not getattr(fig, "_workbook_stamped", False):
        below = fig.get_tightbbox(fig.canvas.get_renderer())  # in inches: under everything drawn so far
        x, y = below.x1 / fig.get_figwidth(), (below.y0 - 0.04) / fig.get_figheight()
        fig.text(x, y, figure_stamp, ha="right", va="top", fontsize=7, color="0.4")
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
