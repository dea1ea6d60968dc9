"""The workbook's one command line, `python -m helpers COMMAND`: what `make COMMAND` runs, for machines without make.

`run`, `data` and `predict` live in helpers.commands, imported only when called (torch takes seconds).
The lint step runs well-kept tools from the project's environment (offline), with the options
.pre-commit-config.yaml gives them: ruff, nbstripout and check-jsonschema.
"""

import argparse
import importlib.util  # importlib.import_module too
import subprocess
import sys
from pathlib import Path

from helpers.settings import PROJECT_ROOT, QUICK, command, environment_with, notebooks

NOTEBOOKS = "notebooks/[0-9][0-9]_*.ipynb"
STRIP = ["nbstripout", "--keep-id"]  # the cells keep their ids: stripping a clean notebook changes no byte
# What `lint` runs, each with what to do when it fails.
LINT = {
    ("ruff", "check"): "fix what ruff names (`python -m ruff check --fix` fixes those marked [*])",
    ("ruff", "format", "--check"): "run `python -m helpers format`",
    (*STRIP, "--verify"): "run `python -m helpers strip`",
    ("check_jsonschema", "--builtin-schema", "vendor.github-workflows"): "fix the workflow, or GitHub will not run it",
}
TEST = "-m pytest tests --nbval-lax --nbval-current-env --nbval-cell-timeout=900 -p no:cacheprovider".split()
OWN_PARSER = {"predict": "classify photos with a saved checkpoint", "data": "get or check a data folder"}


def tool(args: tuple[str, ...] | list[str], root: Path = PROJECT_ROOT) -> int:
    """`python -m TOOL ARGS` in `root` on the files it is for, with one sentence if TOOL is not installed."""
    files = {"nbstripout": NOTEBOOKS, "check_jsonschema": ".github/workflows/*.yml"}.get(args[0])
    if importlib.util.find_spec(args[0]) is None:
        print(f'{args[0]} is not installed: run `python -m pip install -e ".[test]"`.', file=sys.stderr)
        return 1
    paths = [str(path.relative_to(root)) for path in sorted(root.glob(files))] if files else []
    return subprocess.call([sys.executable, "-m", *args, *paths], cwd=root)


def lint(root: Path = PROJECT_ROOT) -> list[str]:
    """Run every lint tool; one sentence per failure, saying what to do (printed, and returned)."""
    failures = [f"lint: `{' '.join(args)}` failed (above): {fix}." for args, fix in LINT.items() if tool(args, root)]
    print("\n".join(failures) or "lint: clean.", flush=True)
    return failures


def format_tree(root: Path = PROJECT_ROOT) -> int:
    """`ruff format` on the tree, then the notebooks stripped; the exit status."""
    return tool(["ruff", "format"], root) or tool(STRIP, root)


@command
def main(argv: list[str] | None = None) -> int:
    """`python -m helpers COMMAND`; returns the exit status."""
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv and argv[0] in OWN_PARSER:
        return getattr(importlib.import_module("helpers.commands"), f"{argv[0]}_main")(argv[1:])
    parser = argparse.ArgumentParser(prog="python -m helpers", description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("run", help="execute every notebook in order (headless), figures to images/")
    run.add_argument("notebooks", nargs="*", type=Path, help=f"default: {NOTEBOOKS} in order")
    commands.add_parser(
        "test", help="the lint step, then the tests and every notebook in quick mode; more arguments go to pytest"
    )
    commands.add_parser("lint", help="ruff check, ruff format --check, nbstripout --verify, the workflows' schema")
    commands.add_parser("format", help="ruff format the code and the notebooks, then strip the notebooks")
    commands.add_parser("strip", help="remove the notebooks' outputs before committing")
    commands.add_parser("lab", help="open JupyterLab on notebooks/")
    commands.add_parser("bench", help="measure the fast path against the capstone's training loop")
    for name, text in OWN_PARSER.items():
        commands.add_parser(name, help=f"{text} (--help for its options)", add_help=False)
    args, extra = parser.parse_known_args(argv)
    if extra and args.command != "test":
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    if args.command == "run":
        return importlib.import_module("helpers.commands").run_all(args.notebooks or notebooks())
    if args.command == "lint":
        return 1 if lint() else 0
    if args.command == "test":
        failures = lint()
        quick = environment_with(**{QUICK: "1"})
        status = subprocess.call([sys.executable, *TEST, *map(str, notebooks()), *extra], cwd=PROJECT_ROOT, env=quick)
        print("\n".join(failures) or "lint: clean.")  # again, under pytest's summary
        return status or (1 if failures else 0)
    if args.command == "format":
        return format_tree()
    if args.command == "strip":
        return tool(STRIP)
    if args.command == "lab":
        return subprocess.call([sys.executable, "-m", "jupyter", "lab", "notebooks"], cwd=PROJECT_ROOT)
    return subprocess.call([sys.executable, str(PROJECT_ROOT / "benchmarks" / "bench_training.py")], cwd=PROJECT_ROOT)


if __name__ == "__main__":
    sys.exit(main())
