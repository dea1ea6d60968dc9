"""The workbook's one command line: ``python -m helpers COMMAND`` (``make`` runs the same).

A learner without ``make`` (Windows) runs exactly what the Makefile runs::

    python -m helpers run      # every notebook in order, headless (make run)
    python -m helpers test     # the lint step, unit tests + every notebook in quick mode (make test)
    python -m helpers lint     # only the lint step: ruff, the workflows' schema, the notebooks' layout
    python -m helpers format   # ruff format the code and the notebooks, then strip them
    python -m helpers lab      # JupyterLab on notebooks/ (make lab)
    python -m helpers bench    # the speed benchmark (make bench)
    python -m helpers strip    # remove outputs before committing (make strip)
    python -m helpers train    # the capstone's training from a terminal (helpers.tools.train)
    python -m helpers predict  # classify photos with a checkpoint (helpers.tools.predict)
    python -m helpers data     # download, generate or verify a data folder (helpers.tools.data)
    python -m helpers colab    # rewrite the notebooks' Colab cell and README's badges (helpers.tools.colab)
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

from helpers.settings import PROJECT_ROOT, QUICK, environment_with, notebooks
from helpers.tools.guard import command

TEST_COMMAND = (
    "-m",
    "pytest",
    "tests",
    "--nbval-lax",
    "--nbval-current-env",
    "--nbval-cell-timeout=900",
    "-p",
    "no:cacheprovider",
)
# Commands with a parser of their own: everything after the command's name is theirs.
DELEGATED = {
    "train": "the capstone's training from a terminal (--help for its options)",
    "predict": "classify photos with a trained checkpoint (--help for its options)",
    "data": "download, generate or verify a data folder (--help for its commands)",
}


def _delegate(command: str, rest: list[str]) -> int:
    """Run `python -m helpers train|predict|data ...` with that command's own parser."""
    if command == "train":
        from helpers.tools.train import main as command_main
    elif command == "predict":
        from helpers.tools.predict import main as command_main
    else:
        from helpers.tools.data import main as command_main
    return command_main(rest)


@command
def main(argv: list[str] | None = None) -> int:
    """`python -m helpers run|test|lint|format|lab|bench|strip|colab|train|predict|data`; returns the exit status."""
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv and argv[0] in DELEGATED:
        return _delegate(argv[0], argv[1:])
    parser = argparse.ArgumentParser(prog="python -m helpers", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("run", help="execute every notebook in order (headless), figures to images/")
    run.add_argument("notebooks", nargs="*", type=Path, help="default: notebooks/NN_*.ipynb in order")
    commands.add_parser(
        "test",
        help="the lint step, then the unit tests and every notebook in quick mode "
        "(nbval); more arguments go to pytest, e.g. -k download",
    )
    commands.add_parser("lint", help="ruff check, ruff format --check, the workflows' schema, the notebooks' layout")
    commands.add_parser(
        "format", help="ruff format helpers/, tests/, benchmarks/, scripts/ and the notebooks, then strip the notebooks"
    )
    commands.add_parser("lab", help="open JupyterLab on notebooks/")
    commands.add_parser("bench", help="measure the fast path against the capstone's training loop")
    commands.add_parser("strip", help="remove outputs from the notebooks before committing")
    commands.add_parser(
        "colab",
        help="rewrite every notebook's first code cell (Google Colab) and README's "
        "badges from the repository's address in helpers/tools/colab.py",
    )
    for name, text in DELEGATED.items():
        commands.add_parser(name, help=text, add_help=False)
    args, extra = parser.parse_known_args(argv)
    if extra and args.command != "test":
        parser.error(f"unrecognized arguments: {' '.join(extra)}")

    if args.command == "run":
        from helpers.tools.run_notebooks import run_all

        return run_all(args.notebooks or notebooks())
    if args.command == "strip":
        from helpers.tools.notebook_files import strip_notebook

        for path in notebooks():
            print(f"{'stripped' if strip_notebook(path) else 'clean   '} {path.relative_to(PROJECT_ROOT)}")
        return 0
    if args.command == "colab":
        from helpers.tools.colab import main as colab_main

        return colab_main()
    if args.command in ("test", "lint"):
        from helpers.tools.lint import run_checks, summary

        problems = run_checks()
        if args.command == "lint":
            return 1 if problems else 0
        command = [sys.executable, *TEST_COMMAND, *map(str, notebooks()), *extra]
        status = subprocess.call(command, cwd=PROJECT_ROOT, env=environment_with(**{QUICK: "1"}))
        print(summary(problems))  # after pytest's summary, where it is read
        return status or (1 if problems else 0)
    if args.command == "format":
        from helpers.tools.lint import format_tree

        return format_tree()
    if args.command == "lab":
        return subprocess.call([sys.executable, "-m", "jupyter", "lab", "notebooks"], cwd=PROJECT_ROOT)
    return subprocess.call([sys.executable, str(PROJECT_ROOT / "benchmarks" / "bench_training.py")], cwd=PROJECT_ROOT)
