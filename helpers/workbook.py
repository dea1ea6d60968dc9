"""How the workbook runs: the version check every notebook starts with, saving figures, and the commands.

Every notebook starts by checking that the installed packages are recent enough
(:func:`check_versions`). The same module is the workbook's command line, so that a learner
without `make` (Windows) runs exactly what the Makefile runs::

    python -m helpers.workbook run      # every notebook in order, headless (make run)
    python -m helpers.workbook test     # unit tests + every notebook in quick mode (make test)
    python -m helpers.workbook lab      # JupyterLab on notebooks/ (make lab)
    python -m helpers.workbook bench    # the speed benchmark (make bench)
    python -m helpers.workbook strip    # remove outputs before committing (make strip)
"""

from __future__ import annotations

import argparse
import platform
import re
import subprocess
import sys
from importlib import metadata
from pathlib import Path

from helpers.files import atomic_path
from helpers.settings import PROJECT_ROOT, QUICK, environment_with, images_dir, notebooks, quick_mode

# The packages a learner's version check lists, in the order they matter to the lesson.
CHECKED_PACKAGES = (
    "torch", "torchvision", "numpy", "pillow", "matplotlib",
    "requests", "tqdm", "ipywidgets", "jupyterlab",
)
TEST_COMMAND = ("-m", "pytest", "tests", "--nbval-lax", "--nbval-current-env", "--nbval-cell-timeout=900",
                "-p", "no:cacheprovider")


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


figure_stamp = ""  # what produced this notebook's figures, e.g. "synthetic data · random backbone"
NO_MODEL = "no model"


def run_stamp(source: str, weights: str | None = NO_MODEL) -> str:
    """A short label of what a result was computed with: "real data · ImageNet backbone", "synthetic data"...

    source: "real" or "synthetic"; weights: "imagenet", None (random backbone), a path, or NO_MODEL.
    """
    parts = [f"{source} data"]
    if weights != NO_MODEL:
        parts.append("ImageNet backbone" if weights == "imagenet" else "random backbone" if weights is None
                     else f"backbone from {Path(str(weights)).name}")
    if quick_mode():
        parts.append("quick mode")
    return " · ".join(parts)


def announce_run(choice, weights: str | None = NO_MODEL, weights_description: str = "") -> str:
    """Print what this notebook runs on, in one line, and stamp every figure saved from now on with it.

    choice: the DataChoice of helpers.data (source, path, reason); weights: as in run_stamp.
    Returns the stamp, e.g. "synthetic data · random backbone".
    """
    global figure_stamp
    figure_stamp = run_stamp(choice.source, weights)
    print(f"This notebook runs on: {figure_stamp}")
    print(f"  data:    {choice.source}, {choice.path}: {choice.reason}")
    if weights != NO_MODEL:
        print(f"  weights: {weights_description or ('ImageNet' if weights == 'imagenet' else weights or 'random')}")
    if choice.source != "real" or weights is None:
        print("  Results below show how the method works; they say nothing about real concrete or the "
              "capstone's 99.44%, which need the real data and the ImageNet weights.")
    return figure_stamp


def save_figure(fig, name: str, dpi: int = 110) -> Path:
    """Save a matplotlib figure under `images/` (as well as showing it) and return the path.

    The figure carries a small grey footer saying what produced it (announce_run's stamp), since
    saved figures end up on slides.
    """
    if figure_stamp and not getattr(fig, "_workbook_stamped", False):
        below = fig.get_tightbbox(fig.canvas.get_renderer())  # in inches: under everything drawn so far
        fig.text(below.x1 / fig.get_figwidth(), (below.y0 - 0.04) / fig.get_figheight(), figure_stamp,
                 ha="right", va="top", fontsize=7, color="0.4")
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


# ----------------------------------------------------------------------------- the commands
def main(argv: list[str] | None = None) -> int:
    """`python -m helpers.workbook run|test|lab|bench|strip`; returns the exit status."""
    parser = argparse.ArgumentParser(prog="python -m helpers.workbook", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("run", help="execute every notebook in order (headless), figures to images/")
    run.add_argument("notebooks", nargs="*", type=Path, help="default: notebooks/NN_*.ipynb in order")
    commands.add_parser("test", help="unit tests and every notebook in quick mode (nbval); "
                                     "more arguments go to pytest, e.g. -k download")
    commands.add_parser("lab", help="open JupyterLab on notebooks/")
    commands.add_parser("bench", help="measure the fast path against the capstone's training loop")
    commands.add_parser("strip", help="remove outputs from the notebooks before committing")
    args, extra = parser.parse_known_args(argv)
    if extra and args.command != "test":
        parser.error(f"unrecognized arguments: {' '.join(extra)}")

    if args.command == "run":
        from helpers.run_notebooks import run_all
        return run_all(args.notebooks or notebooks())
    if args.command == "strip":
        from helpers.run_notebooks import strip_notebook
        for path in notebooks():
            print(f"{'stripped' if strip_notebook(path) else 'clean   '} {path.relative_to(PROJECT_ROOT)}")
        return 0
    if args.command == "test":
        command = [sys.executable, *TEST_COMMAND, *map(str, notebooks()), *extra]
        return subprocess.call(command, cwd=PROJECT_ROOT, env=environment_with(**{QUICK: "1"}))
    if args.command == "lab":
        return subprocess.call([sys.executable, "-m", "jupyter", "lab", "notebooks"], cwd=PROJECT_ROOT)
    return subprocess.call([sys.executable, str(PROJECT_ROOT / "benchmarks" / "bench_training.py")], cwd=PROJECT_ROOT)


if __name__ == "__main__":
    sys.exit(main())
