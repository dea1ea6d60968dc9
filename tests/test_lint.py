"""The lint step (helpers/tools/lint.py): each check finds what it is for and says what to run; the
test command runs it; ruff's notebook formatting and `python -m helpers strip` agree; pre-commit
runs the same tools."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest
import yaml

import helpers.tools.cli as cli
import helpers.tools.lint as lint
from helpers.tools.lint import (
    LINTED,
    Problem,
    format_tree,
    notebook_layout_check,
    ruff_check,
    ruff_format_check,
    workflow_schema_check,
)
from helpers.tools.notebook_files import strip_notebook, stripped_text

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))


@pytest.fixture
def project(tmp_path) -> Path:
    """An empty project folder with the workbook's pyproject.toml (ruff reads its settings there)."""
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    (tmp_path / "helpers").mkdir()
    return tmp_path


def with_outputs(source: Path, dest: Path) -> Path:
    """A copy of the notebook `source` at `dest` whose first code cell holds an output and a count."""
    notebook = json.loads(source.read_text(encoding="utf-8"))
    code = next(cell for cell in notebook["cells"] if cell["cell_type"] == "code")
    code["outputs"] = [{"output_type": "stream", "name": "stdout", "text": ["hello\n"]}]
    code["execution_count"] = 3
    dest.parent.mkdir(parents=True, exist_ok=True)
    dest.write_text(json.dumps(notebook, indent=1) + "\n", encoding="utf-8")
    return dest


@pytest.mark.parametrize(
    "check, module, package",
    [
        (ruff_check, "ruff", "ruff"),
        (ruff_format_check, "ruff", "ruff"),
        (workflow_schema_check, "check_jsonschema", "check-jsonschema"),
    ],
)
def test_a_missing_tool_says_how_to_install_it(monkeypatch, check, module, package):
    real_find_spec = lint.importlib.util.find_spec
    monkeypatch.setattr(lint.importlib.util, "find_spec", lambda name: None if name == module else real_find_spec(name))
    problem = check()
    assert problem is not None
    assert problem.sentence.startswith(f"{package} is not installed")
    assert 'python -m pip install -e ".[test]"' in problem.sentence


def test_ruff_check_finds_an_unused_import_and_says_what_to_run(project):
    module = project / "helpers" / "probe.py"
    module.write_text('"""An availability probe done the wrong way."""\n\nimport json\n', encoding="utf-8")
    problem = ruff_check(project)
    assert problem is not None and problem.check == "ruff check"
    assert "helpers/probe.py:3:8: F401" in problem.details.replace("\\", "/")
    assert "`python -m ruff check --fix helpers`" in problem.sentence
    module.write_text(
        '"""The right way."""\n\nimport importlib.util\n\nHAS_JSON = importlib.util.find_spec("json") is not None\n',
        encoding="utf-8",
    )
    assert ruff_check(project) is None


def test_ruff_format_check_names_the_files_and_the_command_that_fixes_them(project):
    (project / "helpers" / "tidy.py").write_text("x = (1, 2)\n", encoding="utf-8")
    (project / "helpers" / "ugly.py").write_text("x = ( 1,2 )\n", encoding="utf-8")
    problem = ruff_format_check(project)
    assert problem is not None
    assert problem.sentence == "ruff format would reformat 1 file(s) (helpers/ugly.py): run `python -m helpers format`."
    assert format_tree(project) == 0
    assert (project / "helpers" / "ugly.py").read_text(encoding="utf-8") == "x = (1, 2)\n"
    assert ruff_format_check(project) is None


def test_the_format_options_keep_the_quotes_of_each_string(project):
    (project / "helpers" / "quotes.py").write_text("a = 'single'\nb = \"double\"\n", encoding="utf-8")
    assert ruff_format_check(project) is None


def test_the_notebook_layout_check_names_the_notebook_and_the_strip_command(project):
    dirty = with_outputs(NOTEBOOKS[0], project / "notebooks" / NOTEBOOKS[0].name)
    shutil.copy(NOTEBOOKS[1], project / "notebooks" / NOTEBOOKS[1].name)
    problem = notebook_layout_check(project)
    assert problem is not None
    assert problem.sentence.startswith(f"{dirty.name} hold(s) outputs") and NOTEBOOKS[1].name not in problem.sentence
    assert problem.sentence.endswith("run `python -m helpers strip`.")
    assert strip_notebook(dirty) and notebook_layout_check(project) is None


def test_ruffs_notebook_formatting_and_the_strip_agree(project):
    """Format then strip leaves ruff nothing to change; strip after format changes nothing ruff wrote."""
    (project / "notebooks").mkdir()
    for notebook in NOTEBOOKS:
        shutil.copy(notebook, project / "notebooks" / notebook.name)
    assert lint._run("ruff", ["format", "notebooks"], project).returncode == 0  # ruff alone, no strip after it
    for notebook in sorted((project / "notebooks").glob("*.ipynb")):
        assert notebook.read_text(encoding="utf-8") == stripped_text(notebook), (
            f"ruff wrote {notebook.name} in another layout"
        )
    assert format_tree(project, ["notebooks"]) == 0 and ruff_format_check(project, ["notebooks"]) is None
    # A notebook saved with outputs and stripped again is still formatted.
    with_outputs(project / "notebooks" / NOTEBOOKS[-1].name, project / "notebooks" / NOTEBOOKS[-1].name)
    assert strip_notebook(project / "notebooks" / NOTEBOOKS[-1].name)
    assert ruff_format_check(project, ["notebooks"]) is None and notebook_layout_check(project) is None


class FakeCall:
    """Stands in for subprocess.call: records the command, returns `status`."""

    def __init__(self, status: int):
        self.status, self.commands = status, []

    def __call__(self, command, **kwargs):
        self.commands.append(command)
        return self.status


@pytest.mark.parametrize(
    "problems, pytest_status, expected",
    [
        ([], 0, 0),
        (
            [
                Problem(
                    "ruff format --check",
                    "ruff format would reformat 1 file(s) (x.py): run `python -m helpers format`.",
                )
            ],
            0,
            1,
        ),
        ([], 3, 3),
    ],
)
def test_the_test_command_runs_the_lint_step_then_every_test(monkeypatch, capsys, problems, pytest_status, expected):
    calls = FakeCall(pytest_status)
    monkeypatch.setattr(lint, "run_checks", lambda: problems)
    monkeypatch.setattr(cli.subprocess, "call", calls)
    assert cli.main(["test", "-k", "download"]) == expected
    (command,) = calls.commands  # the tests ran even when the lint step failed
    assert command[1:4] == ["-m", "pytest", "tests"] and command[-2:] == ["-k", "download"]
    out = capsys.readouterr().out
    if problems:
        assert out.strip().splitlines()[-1] == f"  ruff format --check: {problems[0].sentence}"
    else:
        assert out.startswith("lint: ") and "clean" in out


def test_the_lint_command_runs_the_checks_alone(monkeypatch):
    calls = FakeCall(0)
    monkeypatch.setattr(cli.subprocess, "call", calls)
    monkeypatch.setattr(lint, "run_checks", lambda: [Problem("notebook layout", "run `python -m helpers strip`.")])
    assert cli.main(["lint"]) == 1 and calls.commands == []
    monkeypatch.setattr(lint, "run_checks", lambda: [])
    assert cli.main(["lint"]) == 0


def test_run_checks_prints_one_line_per_check_and_the_sentence_under_a_failure(capsys):
    problem = Problem("b", "run `x`.", "b.py:1:1: F401 unused")
    assert lint.run_checks((("a", lambda: None), ("b", lambda: problem))) == [problem]
    assert capsys.readouterr().out.splitlines() == [
        "lint  ok      a",
        "lint  FAILED  b",
        "        b.py:1:1: F401 unused",
        "        run `x`.",
    ]


def test_pre_commit_runs_the_same_checks_offline_on_the_same_folders():
    config = yaml.safe_load((ROOT / ".pre-commit-config.yaml").read_text(encoding="utf-8"))
    (repo,) = config["repos"]
    assert repo["repo"] == "local"  # nothing to download: the project's own environment runs the hooks
    hooks = {hook["id"]: hook for hook in repo["hooks"]}
    assert all(hook["language"] == "system" for hook in hooks.values())
    entries = {hook_id: hook["entry"] for hook_id, hook in hooks.items()}
    assert entries == {
        "strip-notebooks": "python -m helpers strip",
        "ruff-check": "python -m ruff check --force-exclude",
        "ruff-format": "python -m ruff format --check --force-exclude",
        "workflow-schema": f"python -m check_jsonschema --builtin-schema {lint.WORKFLOW_SCHEMA}",
    }
    for hook_id in ("ruff-check", "ruff-format"):
        pattern = re.compile(hooks[hook_id]["files"])
        assert all(pattern.search(f"{folder}/x.py") for folder in LINTED), hook_id
        assert not pattern.search("solutions/x.py") and not pattern.search("docs/x.py"), hook_id
    assert re.search(hooks["strip-notebooks"]["files"], "notebooks/05_misclassification.ipynb")
    assert re.search(hooks["workflow-schema"]["files"], ".github/workflows/test.yml")
