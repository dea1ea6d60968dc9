"""The lint step (`python -m helpers lint`, the start of `python -m helpers test`): each failure says what to run,
`format` and `strip` fix what they say they fix, and pre-commit runs the same tools, pinned alike."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest
import yaml
from packaging.requirements import Requirement

import helpers.__main__ as cli
from helpers.__main__ import LINT, STRIP, format_tree, lint, tool

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOK = ROOT / "notebooks" / "04_training.ipynb"


@pytest.fixture
def project(tmp_path) -> Path:
    """What the lint step reads, copied: pyproject.toml (ruff's settings), the notebooks, the workflows."""
    shutil.copy(ROOT / "pyproject.toml", tmp_path)
    shutil.copytree(ROOT / "notebooks", tmp_path / "notebooks", ignore=shutil.ignore_patterns(".ipynb_checkpoints"))
    shutil.copytree(ROOT / ".github", tmp_path / ".github")
    return tmp_path


def test_each_failure_says_what_to_run_and_format_fixes_the_layout_and_the_outputs(project, capfd):
    (project / "probe.py").write_text("import json\n", encoding="utf-8")  # an unused import
    (project / "ugly.py").write_text("x = ( 1,2 )\n", encoding="utf-8")
    notebook = json.loads(NOTEBOOK.read_text(encoding="utf-8"))  # run in JupyterLab and saved
    for cell in notebook["cells"]:
        if cell["cell_type"] == "code":
            cell.update(outputs=[{"output_type": "stream", "name": "stdout", "text": ["hi\n"]}], execution_count=3)
            cell["metadata"]["execution"] = {"iopub.status.busy": "2026-12-01T10:00:00Z"}
    notebook["metadata"]["widgets"] = {"application/vnd.jupyter.widget-state+json": {"state": {}}}
    (project / "notebooks" / NOTEBOOK.name).write_text(json.dumps(notebook, indent=2), encoding="utf-8")
    workflow = project / ".github" / "workflows" / "test.yml"
    workflow.write_text(workflow.read_text(encoding="utf-8").replace("\non:\n", "\nonn:\n", 1), encoding="utf-8")

    checks = [" ".join(args) for args in LINT]
    assert [failure.split("`")[1] for failure in lint(project)] == checks
    out = capfd.readouterr().out
    assert "F401" in out and "probe.py:1:8" in out and "run `python -m helpers format`" in out
    assert "run `python -m helpers strip`" in out and "fix the workflow" in out

    assert format_tree(project) == 0
    assert (project / "ugly.py").read_text(encoding="utf-8") == "x = (1, 2)\n"
    assert (project / "notebooks" / NOTEBOOK.name).read_bytes() == NOTEBOOK.read_bytes()  # the committed bytes
    checks = [" ".join(args) for args in LINT]
    assert [failure.split("`")[1] for failure in lint(project)] == [checks[0], checks[3]]  # left to the maintainer


def test_a_missing_tool_is_one_sentence_that_says_how_to_install_it(monkeypatch, capsys):
    monkeypatch.setattr(cli.importlib.util, "find_spec", lambda name: None)
    assert tool(STRIP) == 1
    assert capsys.readouterr().err == 'nbstripout is not installed: run `python -m pip install -e ".[test]"`.\n'


@pytest.mark.parametrize("failures, pytest_status, expected", [([], 0, 0), (["lint: x failed"], 0, 1), ([], 3, 3)])
def test_the_test_command_runs_the_lint_step_then_every_test(monkeypatch, capsys, failures, pytest_status, expected):
    commands = []
    monkeypatch.setattr(cli, "lint", lambda: failures)
    monkeypatch.setattr(cli.subprocess, "call", lambda command, **kwargs: commands.append(command) or pytest_status)
    assert cli.main(["test", "-k", "download"]) == expected
    (command,) = commands  # the tests run even when the lint step failed
    assert command[1:4] == ["-m", "pytest", "tests"] and command[-2:] == ["-k", "download"]
    assert capsys.readouterr().out.splitlines()[-1] == (failures[0] if failures else "lint: clean.")


def test_pre_commit_runs_the_lint_steps_tools_with_its_options_and_pins():
    (repo,) = yaml.safe_load((ROOT / ".pre-commit-config.yaml").read_text(encoding="utf-8"))["repos"]
    assert repo["repo"] == "local"  # from PyPI, pinned: no hook repository to clone
    console_scripts = {"ruff": "ruff", "nbstripout": "nbstripout", "check-jsonschema": "check_jsonschema"}
    entries = [hook["entry"].split() for hook in repo["hooks"]]
    assert [(console_scripts[entry[0]], *entry[1:]) for entry in entries] == list(LINT)
    extra = re.search(r"^test = \[(.*?)^\]", (ROOT / "pyproject.toml").read_text(encoding="utf-8"), re.S | re.M)
    test_extra = [Requirement(text) for text in re.findall(r'^\s+"([^"]+)"', extra.group(1), re.M)]
    for hook in repo["hooks"]:
        assert hook["language"] == "python"
        (pin,) = map(Requirement, hook["additional_dependencies"])
        (declared,) = [requirement for requirement in test_extra if requirement.name == pin.name]
        assert declared.specifier.contains(str(pin.specifier).removeprefix("==")), f"{pin} against {declared}"
