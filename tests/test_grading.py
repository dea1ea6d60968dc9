"""Issue 30, section 4: a teacher turns the exercises into nbgrader assignments with one command
(scripts/make_assignments.py), releases the student version, and autogrades what comes back."""

from __future__ import annotations

import ast
import builtins
import importlib.util
import shutil
from pathlib import Path

import nbformat
import pytest

pytest.importorskip("nbgrader", reason="nbgrader is the [teach] extra, which `make test` installs")
from nbgrader.api import Gradebook  # noqa: E402

from helpers.settings import notebooks  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
spec = importlib.util.spec_from_file_location("make_assignments", ROOT / "scripts" / "make_assignments.py")
make_assignments = importlib.util.module_from_spec(spec)
spec.loader.exec_module(make_assignments)

WITH_EXERCISES = [path for path in notebooks() if "# your code here" in path.read_text(encoding="utf-8")]


@pytest.fixture(scope="module")
def course(tmp_path_factory) -> Path:
    course = tmp_path_factory.mktemp("grading") / "course"
    assert make_assignments.main([str(course)]) == 0
    return course


def version(course: Path, kind: str, stem: str) -> nbformat.NotebookNode:
    return nbformat.read(course / kind / stem / f"{stem}.ipynb", as_version=4)


def graded(nb: nbformat.NotebookNode, what: str) -> list[nbformat.NotebookNode]:
    """The answer cells ("solution") or the test cells ("grade") of an nbgrader notebook, in order."""
    return [cell for cell in nb.cells if cell.metadata.get("nbgrader", {}).get(what)]


def reference_lines(cell: nbformat.NotebookNode) -> list[str]:
    """The code lines between a source answer cell's solution markers."""
    lines = cell.source.splitlines()
    inside = lines[[line.strip() for line in lines].index(make_assignments.BEGIN) + 1 :]
    return inside[: [line.strip() for line in inside].index(make_assignments.END)]


def test_the_one_command_covers_notebooks_02_to_06():
    assert [p.stem[:2] for p in WITH_EXERCISES] == ["02", "03", "04", "05", "06"]


@pytest.mark.parametrize("notebook", WITH_EXERCISES, ids=lambda p: p.stem[:2])
def test_each_exercise_becomes_an_answer_cell_with_the_reference_and_a_one_point_check(course, notebook):
    workbook = nbformat.read(notebook, as_version=4)
    source, release = version(course, "source", notebook.stem), version(course, "release", notebook.stem)
    stubs = [cell for cell in workbook.cells if cell.cell_type == "code" and "# your code here" in cell.source]
    answers, checks = graded(source, "solution"), graded(source, "grade")
    assert len(answers) == len(checks) == len(stubs) > 0
    assert all(source.cells[source.cells.index(a) + 1] is c for a, c in zip(answers, checks))  # check right below
    assert all(
        c.metadata.nbgrader["points"] == 1 and c.source.splitlines()[-1].startswith("assert check_") for c in checks
    )
    # every other cell is the lesson as learners know it, and nothing in any version sends them to solutions/
    changed = {i + k for i, cell in enumerate(workbook.cells) if cell in stubs for k in (0, 1)}
    changed |= {i for i, cell in enumerate(workbook.cells) if cell.source.startswith("## Exercises")}
    assert [c.source for i, c in enumerate(source.cells) if i not in changed] == [
        c.source for i, c in enumerate(workbook.cells) if i not in changed
    ] and len(source.cells) == len(workbook.cells)
    assert "solutions/" not in nbformat.writes(source) + nbformat.writes(release)
    # the student version: each answer cleared, no line of a reference left, the checks as they are
    student = graded(release, "solution")
    assert all(cell.source.splitlines()[-1].strip() == "raise NotImplementedError()" for cell in student)
    text = nbformat.writes(release)
    assert not [line for a in answers for line in reference_lines(a) if len(line.strip()) > 12 and line in text]
    assert [c.source for c in graded(release, "grade")] == [c.source for c in checks]
    with Gradebook(f"sqlite:///{course / 'gradebook.db'}") as gradebook:
        assert gradebook.find_assignment(notebook.stem).max_score == len(stubs)


def bound_names(tree: ast.AST) -> set[str]:
    """The names a piece of code binds: imports, assignments, definitions, arguments, loop variables."""
    names = {node.id for node in ast.walk(tree) if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store)}
    names |= {node.name for node in ast.walk(tree) if isinstance(node, (ast.FunctionDef, ast.ClassDef))}
    names |= {node.arg for node in ast.walk(tree) if isinstance(node, ast.arg)}
    imports = [node for node in ast.walk(tree) if isinstance(node, (ast.Import, ast.ImportFrom))]
    return names | {(a.asname or a.name).split(".")[0] for node in imports for a in node.names}


@pytest.mark.parametrize("notebook", WITH_EXERCISES, ids=lambda p: p.stem[:2])
def test_each_reference_answer_is_the_solution_files_code_and_its_names_are_defined_above_it(course, notebook):
    """The source version's answers run as the reference does: the same statements (compared as syntax trees), and
    every name they use is bound by the notebook before them (an import the reference file has and the notebook
    lacks would fail only when graded)."""
    solutions = ast.parse((ROOT / "solutions" / f"ex{notebook.stem}.py").read_text(encoding="utf-8"))
    reference = {node.name: node for node in solutions.body if isinstance(node, ast.FunctionDef)}
    source = version(course, "source", notebook.stem)
    for at, cell in enumerate(source.cells):
        if not cell.metadata.get("nbgrader", {}).get("solution"):
            continue
        tree = ast.parse(cell.source)  # the markers are comments
        for function in [node for node in tree.body if isinstance(node, ast.FunctionDef)]:
            ours, theirs = function.body, reference[function.name].body
            theirs = theirs[1:] if isinstance(theirs[0], ast.Expr) and len(ours) < len(theirs) else theirs
            assert [ast.dump(s) for s in ours] == [ast.dump(s) for s in theirs], function.name
        above = set(dir(builtins))
        for earlier in source.cells[:at]:
            if earlier.cell_type == "code":
                above |= bound_names(ast.parse(earlier.source))
        used = {node.id for node in ast.walk(tree) if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Load)}
        assert used - bound_names(tree) - above == set(), f"{notebook.stem}: names no cell above defines"


WRONG_INTERLEAVE = """def my_interleave(groups):
    files = [file for _, group in groups for file in group]  # one group after the other
    labels = [label for label, group in groups for _ in group]
    return files, labels"""


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore::sqlalchemy.exc.SAWarning")  # nbgrader 0.9.6's own, with SQLAlchemy 2.1
def test_autograde_gives_the_reference_every_point_and_a_wrong_or_missing_answer_none(course, monkeypatch):
    """The round trip on notebook 02, in quick mode: one student hands in the reference answers, another a wrong
    interleave, a right split and the third exercise left as released."""
    monkeypatch.setenv("WORKBOOK_QUICK", "1")  # the kernels nbgrader starts inherit it
    stem = "02_dataset_class"
    answers = {cell.metadata.nbgrader["grade_id"]: cell for cell in graded(version(course, "source", stem), "solution")}
    handed_in = {
        "reference": {grade_id: "\n".join(reference_lines(cell)) for grade_id, cell in answers.items()},
        "wrong": {"exercise_1_answer": WRONG_INTERLEAVE, "exercise_2_answer": None},
    }
    for student, replies in handed_in.items():
        nb = version(course, "release", stem)
        for cell in graded(nb, "solution"):
            grade_id = cell.metadata.nbgrader["grade_id"]
            if grade_id in replies:  # None: the reference (the stub's def line, then the reference's body)
                reply = replies[grade_id] or "\n".join(reference_lines(answers[grade_id]))
                head = [line for line in cell.source.splitlines() if line.startswith("def ")]
                cell.source = reply if reply.startswith("def ") else "\n".join(head + [reply])
        folder = course / "submitted" / student / stem
        folder.mkdir(parents=True)
        nbformat.write(nb, folder / f"{stem}.ipynb")
        result = make_assignments.nbgrader_api(course).autograde(stem, student)
        assert result["success"], result.get("log", "") + result.get("error", "")
    with Gradebook(f"sqlite:///{course / 'gradebook.db'}") as gradebook:
        scores = {s: gradebook.find_submission(stem, s).score for s in handed_in}
        wrong = {g.name: g.score for g in gradebook.find_submission_notebook(stem, stem, "wrong").grades}
    assert scores == {"reference": 3, "wrong": 1}
    assert wrong == {"exercise_1_check": 0, "exercise_2_check": 1, "exercise_3_check": 0}
    autograded = nbformat.read(course / "autograded" / "reference" / stem / f"{stem}.ipynb", as_version=4)
    errors = [o for c in autograded.cells if c.cell_type == "code" for o in c.outputs if o.output_type == "error"]
    assert not errors, errors  # every lesson cell ran too


def test_an_edited_source_notebook_is_kept_unless_forced(course, tmp_path, capsys):
    copy = shutil.copytree(course, tmp_path / "course", ignore=shutil.ignore_patterns("submitted", "autograded"))
    edited = copy / "source" / "03_replace_the_head" / "03_replace_the_head.ipynb"
    edited.write_text(edited.read_text().replace('"points": 1', '"points": 2'), encoding="utf-8")
    before = {p: p.read_bytes() for p in copy.rglob("*") if p.is_file()}
    assert make_assignments.main([str(copy)]) == 1
    assert (
        capsys.readouterr().err
        == f"{edited} differs from the workbook's exercises (edited?): keep it, or pass --force.\n"
    )
    assert {p: p.read_bytes() for p in copy.rglob("*") if p.is_file()} == before  # nothing written
    assert make_assignments.main([str(copy), "--force"]) == 0
    assert edited.read_bytes() == (course / "source" / "03_replace_the_head" / edited.name).read_bytes()


def test_without_nbgrader_one_sentence_says_what_to_install(monkeypatch, tmp_path, capsys):
    find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *args: None if name == "nbgrader" else find_spec(name)
    )
    assert make_assignments.main([str(tmp_path / "course")]) == 1
    assert (
        capsys.readouterr().err
        == 'nbgrader is not installed: run `python -m pip install -e ".[teach]"` in the workbook.\n'
    )
    assert not (tmp_path / "course").exists()


def test_teachings_commands_are_nbgraders_own_on_an_assignment_the_script_makes(course):
    from nbgrader.apps.nbgraderapp import NbGraderApp

    section = (ROOT / "TEACHING.md").read_text(encoding="utf-8").split("## 8. Grading with nbgrader")[1]
    commands = [line.split("#")[0].split() for line in section.splitlines() if line.startswith(("nbgrader", "python"))]
    assert ["python", "scripts/make_assignments.py", "~/course"] in commands
    made = {path.name for path in (course / "source").iterdir()}
    for command in commands:
        if command[0] == "nbgrader":
            assert command[1] in NbGraderApp.subcommands and set(command[2:3]) <= made, command
    assert {command[1] for command in commands if command[0] == "nbgrader"} >= {"release_assignment", "autograde"}
