"""The checks `python -m helpers test` runs before the tests (`python -m helpers lint` runs them alone).

- ``ruff check``: pyflakes and syntax errors (the rule set is in pyproject.toml's [tool.ruff.lint]);
- ``ruff format --check``: the layout ruff gives the code and the notebooks' cells;
- the workflows in ``.github/workflows`` against GitHub's published schema (``check-jsonschema``,
  whose copy of the schema is vendored: it works offline), so a broken workflow fails here, where
  GitHub cannot run it;
- the notebooks stored without outputs, in nbformat's own layout (``python -m helpers strip``).

Each check gives None when the tree passes, or a Problem: the tool's own report and one sentence
saying what to run. ``.pre-commit-config.yaml`` runs the same tools on the files of a commit.
"""

from __future__ import annotations

import importlib.util
import re
import subprocess
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from helpers.settings import PROJECT_ROOT

LINTED = ("helpers", "tests", "benchmarks", "scripts", "notebooks")  # what ruff checks and formats
WORKFLOWS = (".github", "workflows")
WORKFLOW_SCHEMA = "vendor.github-workflows"  # check-jsonschema's copy of GitHub's schema (schemastore.org)
INSTALL = 'python -m pip install -e ".[test]"'
FORMAT = "python -m helpers format"  # ruff format on LINTED, then the notebooks stripped again
# A file `ruff format --check` would change: "path:line:col: unformatted: ..." (concise), "Would reformat: path" (older).
UNFORMATTED = re.compile(r"^(?:(.+?):\d+:\d+: unformatted\b.*|Would reformat: (.+))$", re.M)


@dataclass(frozen=True)
class Problem:
    """What a check found: the check's name, the tool's own report, and the one sentence that says what to run."""

    check: str
    sentence: str
    details: str = ""


def tool_missing(module: str, package: str, check: str) -> Problem | None:
    """A Problem saying how to install `package` when its `module` cannot be imported, else None."""
    if importlib.util.find_spec(module) is not None:
        return None
    return Problem(
        check,
        f"{package} is not installed, so `{check}` cannot run: run `{INSTALL}` "
        f"(or `python -m pip install {package}`) in the project's environment.",
    )


def _run(module: str, args: Sequence[str], root: Path) -> subprocess.CompletedProcess:
    """`python -m module args...` in `root`, this interpreter's copy of the tool, its output captured."""
    return subprocess.run(
        [sys.executable, "-m", module, *args],
        cwd=root,
        capture_output=True,
        text=True,
        encoding="utf-8",
        errors="replace",
    )


def _present(root: Path, paths: Sequence[str]) -> list[str]:
    return [path for path in paths if (root / path).exists()]


def _report(result: subprocess.CompletedProcess) -> str:
    return (result.stdout + result.stderr).strip()


def ruff_check(root: Path = PROJECT_ROOT, paths: Sequence[str] = LINTED) -> Problem | None:
    """`ruff check` on `paths` (relative to `root`, with root's pyproject.toml)."""
    check = "ruff check"
    missing = tool_missing("ruff", "ruff", check)
    if missing or not _present(root, paths):
        return missing
    result = _run("ruff", ["check", "--output-format", "concise", *_present(root, paths)], root)
    if result.returncode == 0:
        return None
    if result.returncode != 1:  # 2: ruff itself failed (a bad configuration, a bad argument)
        return Problem(
            check,
            "ruff check could not run (above): fix what it names in pyproject.toml's [tool.ruff].",
            _report(result),
        )
    folders = " ".join(_present(root, paths))
    return Problem(
        check,
        f"ruff check found mistakes (above): fix them by hand; `python -m ruff check --fix {folders}` "
        "fixes the ones marked [*].",
        _report(result),
    )


def ruff_format_check(root: Path = PROJECT_ROOT, paths: Sequence[str] = LINTED) -> Problem | None:
    """`ruff format --check` on `paths`: None when ruff would change nothing."""
    check = "ruff format --check"
    missing = tool_missing("ruff", "ruff", check)
    if missing or not _present(root, paths):
        return missing
    result = _run("ruff", ["format", "--check", "--output-format", "concise", *_present(root, paths)], root)
    if result.returncode == 0:
        return None
    if result.returncode != 1:
        return Problem(check, "ruff format could not run (above): fix what it names.", _report(result))
    files = [match.group(1) or match.group(2) for match in UNFORMATTED.finditer(result.stdout)]
    shown = ", ".join(files[:3]) + (f" and {len(files) - 3} more" if len(files) > 3 else "")
    return Problem(check, f"ruff format would reformat {len(files)} file(s) ({shown}): run `{FORMAT}`.")


def workflow_files(root: Path = PROJECT_ROOT) -> list[Path]:
    """The GitHub Actions workflows under root/.github/workflows, sorted."""
    folder = root.joinpath(*WORKFLOWS)
    return sorted([*folder.glob("*.yml"), *folder.glob("*.yaml")])


def workflow_schema_check(root: Path = PROJECT_ROOT, files: Sequence[Path] | None = None) -> Problem | None:
    """The workflows (default: all of root's) against GitHub's published workflow schema."""
    check = "workflow schema"
    files = workflow_files(root) if files is None else list(files)
    missing = tool_missing("check_jsonschema", "check-jsonschema", check)
    if missing or not files:
        return missing
    result = _run("check_jsonschema", ["--builtin-schema", WORKFLOW_SCHEMA, *map(str, files)], root)
    if result.returncode == 0:
        return None
    return Problem(
        check,
        "a workflow does not match GitHub's workflow schema (above), so GitHub would not run it: "
        "fix it, then run `python -m helpers lint`.",
        _report(result),
    )


def notebook_layout_check(root: Path = PROJECT_ROOT) -> Problem | None:
    """The notebooks stored without outputs, in nbformat's own layout (what `python -m helpers strip` writes)."""
    from helpers.tools.notebook_files import unstripped

    dirty = unstripped(sorted((root / "notebooks").glob("[0-9][0-9]_*.ipynb")))
    if not dirty:
        return None
    names = ", ".join(path.name for path in dirty)
    return Problem(
        "notebook layout", f"{names} hold(s) outputs or is not in nbformat's layout: run `python -m helpers strip`."
    )


CHECKS: tuple[tuple[str, Callable[[], Problem | None]], ...] = (
    ("ruff check", ruff_check),
    ("ruff format --check", ruff_format_check),
    ("workflow schema", workflow_schema_check),
    ("notebook layout", notebook_layout_check),
)


def run_checks(checks: Sequence[tuple[str, Callable[[], Problem | None]]] = CHECKS) -> list[Problem]:
    """Run every check, print one line each (the tool's report under a failed one); the problems found."""
    problems = []
    for name, check in checks:
        problem = check()
        print(f"lint  {'ok    ' if problem is None else 'FAILED'}  {name}", flush=True)
        if problem is not None:
            if problem.details:
                print("\n".join("        " + line for line in problem.details.splitlines()))
            print(f"        {problem.sentence}", flush=True)
            problems.append(problem)
    return problems


def summary(problems: Sequence[Problem]) -> str:
    """The lint step's outcome in a few lines: one sentence a problem, for the end of `python -m helpers test`."""
    if not problems:
        return "lint: ruff check, ruff format, the workflow schema and the notebooks' layout are clean."
    return "\n".join(
        ["lint FAILED (see its report above the tests):"]
        + [f"  {problem.check}: {problem.sentence}" for problem in problems]
    )


def format_tree(root: Path = PROJECT_ROOT, paths: Sequence[str] = LINTED) -> int:
    """`ruff format` on `paths`, then the notebooks stripped again (`python -m helpers format`); the exit status.

    ruff writes the notebooks in nbformat's layout already; stripping after it guarantees it.
    """
    from helpers.tools.notebook_files import strip_notebook

    missing = tool_missing("ruff", "ruff", "ruff format")
    if missing:
        print(f"error: {missing.sentence}", file=sys.stderr)
        return 1
    status = subprocess.call([sys.executable, "-m", "ruff", "format", *_present(root, paths)], cwd=root)
    for path in sorted((root / "notebooks").glob("[0-9][0-9]_*.ipynb")):
        if strip_notebook(path):
            print(f"stripped {path.relative_to(root).as_posix()}")
    return status
