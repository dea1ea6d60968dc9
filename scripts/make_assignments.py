"""Turn the workbook's exercises into nbgrader assignments, in one command (TEACHING.md, "Grading with nbgrader").

    python scripts/make_assignments.py COURSE_DIR [--force]

For each notebook with exercises (02-06) it writes nbgrader's source version, COURSE_DIR/source/<notebook>/:
each exercise's `# your code here` cell becomes an answer cell that holds the reference solution from solutions/,
the check below it becomes a test cell worth one point (`assert check_...(...)`), and the exercises' introduction
says how they are graded. Then `nbgrader generate_assignment` writes the student version to COURSE_DIR/release/.
COURSE_DIR gets an nbgrader_config.py when it has none. A source notebook that differs from what this would write
(a teacher's edit) is kept, unless --force.
"""

from __future__ import annotations

import argparse
import ast
import importlib.util
import os
import sys
from pathlib import Path

import nbformat

from helpers.plumbing import atomic_path
from helpers.settings import PROJECT_ROOT, notebooks

STUB = "# your code here"
BEGIN, END = "### BEGIN SOLUTION", "### END SOLUTION"
INTRO = (
    "Try these on your own. Write your answer in place of `# YOUR CODE HERE` and `raise NotImplementedError()`,\n"
    "then run the check below it: it tries your answer and says, in one sentence, whether it is right or what to\n"
    "look at. Each task says what your answer gets and what it should give. Each check is a graded test worth one\n"
    "point: it runs again, on your saved notebook, when the notebook is graded."
)
CONFIG = """\
# nbgrader's settings for the concrete-crack workbook's assignments (written by scripts/make_assignments.py once;
# edit freely, it is not overwritten).
c = get_config()  # noqa: F821 (nbgrader defines get_config)
c.CourseDirectory.course_id = "concrete-crack-workbook"
# Seconds per cell when grading, as `python -m helpers run` allows; nbgrader's 30 can stop 04 on the full data set.
c.Execute.timeout = {timeout}
"""


def solution_code(stem: str) -> tuple[list[str], dict[str, ast.stmt]]:
    """The lines of solutions/<stem>.py and its top-level definitions by name."""
    path = PROJECT_ROOT / "solutions" / f"{stem}.py"
    text = path.read_text(encoding="utf-8")
    names = {}
    for node in ast.parse(text).body:
        if isinstance(node, ast.FunctionDef):
            names[node.name] = node
        elif isinstance(node, ast.Assign) and isinstance(node.targets[0], ast.Name):
            names[node.targets[0].id] = node
    return text.splitlines(), names


def answer_cell(stub: str, check: ast.Call, lines: list[str], references: dict[str, ast.stmt]) -> str:
    """The source version of an exercise's answer cell: the stub's own lines, then the reference between nbgrader's
    solution markers, which generate_assignment replaces by `# YOUR CODE HERE` and `raise NotImplementedError()`."""
    name = check.args[0].id  # the check is given the answer by its name
    reference = references[name]
    stub_lines = stub.splitlines()
    at = next(i for i, line in enumerate(stub_lines) if STUB in line)
    hint = stub_lines[at].split(STUB, 1)[1].lstrip(":").strip()
    if any(isinstance(node, ast.FunctionDef) and node.name == name for node in ast.parse(stub).body):
        indent = " " * (len(stub_lines[at]) - len(stub_lines[at].lstrip()))  # a function: keep its def line
        head = stub_lines[:at] + ([f"{indent}# {hint}"] if hint else [])
        body = reference.body[1:] if isinstance(reference.body[0], ast.Expr) else reference.body  # no docstring
        code = lines[body[0].lineno - 1 : reference.end_lineno]
    else:  # a value: the reference itself, or the function that reaches it from the run's own objects
        indent, head = "", [f"{name} = None" + (f"  # {hint}" if hint else "")]  # the check says "not answered yet"
        first = reference.lineno - 1
        while first and lines[first - 1].startswith("#"):  # the comment that explains it
            first -= 1
        code = lines[first : reference.end_lineno]
        if isinstance(reference, ast.FunctionDef):
            code.append(f"{name} = {name}({', '.join(ast.unparse(argument) for argument in check.args[1:])})")
    return "\n".join([*head, f"{indent}{BEGIN}", *code, f"{indent}{END}"])


def source_version(notebook: Path) -> nbformat.NotebookNode | None:
    """The notebook as nbgrader's source version; None when it has no exercises."""
    nb = nbformat.read(notebook, as_version=4)
    if not any(STUB in cell.source for cell in nb.cells if cell.cell_type == "code"):
        return None
    lines, references = solution_code("ex" + notebook.stem)
    exercise = 0
    for cell, following in zip(nb.cells, nb.cells[1:]):
        if cell.cell_type == "markdown" and cell.source.startswith("## Exercises"):
            cell.source = "## Exercises\n\n" + INTRO
        if cell.cell_type != "code" or STUB not in cell.source:
            continue
        statements = ast.parse(following.source).body if following.cell_type == "code" else []
        last = statements[-1] if statements else None
        call = last.value if isinstance(last, ast.Expr) and isinstance(last.value, ast.Call) else None
        if call is None or not getattr(call.func, "id", "").startswith("check_"):
            raise SystemExit(f"{notebook.name}: the cell after an exercise's `{STUB}` must end with its check_...().")
        exercise += 1
        cell.source = answer_cell(cell.source, call, lines, references)
        check_lines = following.source.splitlines()[: last.lineno - 1]
        following.source = "\n".join(
            [*check_lines, f"assert {ast.unparse(call)}, 'the sentence above says what to look at'"]
        )
        grade_id = f"exercise_{exercise}"
        cell.metadata["nbgrader"] = {
            "grade": False, "solution": True, "locked": False, "grade_id": f"{grade_id}_answer", "schema_version": 3
        }  # fmt: skip
        following.metadata["nbgrader"] = {
            "grade": True, "solution": False, "locked": True, "points": 1, "grade_id": f"{grade_id}_check",
            "schema_version": 3,
        }  # fmt: skip
    return nb


def nbgrader_api(course: Path):
    """nbgrader's Python API over `course`, with the settings of its nbgrader_config.py, as its commands read them."""
    from nbgrader.apps import NbGraderAPI
    from traitlets.config.loader import PyFileConfigLoader

    # nbgrader runs `alembic` from PATH: the environment's own, also where it is not activated
    scripts = str(Path(sys.executable).parent)
    if scripts not in os.environ.get("PATH", "").split(os.pathsep):
        os.environ["PATH"] = os.pathsep.join([scripts, os.environ.get("PATH", "")])
    config = PyFileConfigLoader("nbgrader_config.py", path=str(course)).load_config()
    config.CourseDirectory.root = str(course.resolve())
    return NbGraderAPI(config=config)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python scripts/make_assignments.py", description=__doc__.split("\n")[0])
    parser.add_argument("course", type=Path, help="nbgrader's course folder (created when missing)")
    parser.add_argument("--force", action="store_true", help="rewrite source notebooks that differ (edited ones)")
    args = parser.parse_args(argv)
    if importlib.util.find_spec("nbgrader") is None:
        print('nbgrader is not installed: run `python -m pip install -e ".[teach]"` in the workbook.', file=sys.stderr)
        return 1
    versions = {}
    for notebook in notebooks():
        nb = source_version(notebook)
        if nb is not None:
            versions[args.course / "source" / notebook.stem / notebook.name] = nbformat.writes(nb) + "\n"
    edited = [path for path, text in versions.items() if path.exists() and path.read_text(encoding="utf-8") != text]
    if edited and not args.force:
        print(
            f"{edited[0]} differs from the workbook's exercises (edited?): keep it, or pass --force.", file=sys.stderr
        )
        return 1
    from helpers.commands import CELL_TIMEOUT  # imports torch: only when it is needed

    config = args.course / "nbgrader_config.py"
    for path, text in {config: CONFIG.format(timeout=CELL_TIMEOUT), **versions}.items():
        if path == config and path.exists():
            continue
        with atomic_path(path) as temp:  # whole or not at all
            temp.write_text(text, encoding="utf-8")
    api = nbgrader_api(args.course)
    for path in versions:
        result = api.generate_assignment(path.parent.name, force=True)
        if not result["success"]:
            print(result.get("log", "") + result.get("error", ""), file=sys.stderr)
            print(f"nbgrader could not generate {path.parent.name} (above).", file=sys.stderr)
            return 1
        checks = sum(
            cell.metadata.get("nbgrader", {}).get("grade", False) for cell in nbformat.reads(versions[path], 4).cells
        )
        print(f"{path.parent.name}: {checks} graded exercises; student version in release/{path.parent.name}/")
    print("Next: release, collect and autograde with nbgrader (TEACHING.md, Grading with nbgrader).")
    return 0


if __name__ == "__main__":
    sys.exit(main())
