"""The CI workflows do what the README promises (the lint step checks them against GitHub's schema), and so does
`python -m helpers run` when it is interrupted."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import nbformat
import pytest
import yaml
from nbclient.exceptions import DeadKernelError

from helpers import commands
from helpers.data import DataChoice

ROOT = Path(__file__).resolve().parent.parent
WORKFLOWS = ROOT / ".github" / "workflows"


def load(name: str) -> dict:
    """A workflow as data; PyYAML reads the key `on` as True (YAML 1.1), so it is put back under "on"."""
    workflow = yaml.safe_load((WORKFLOWS / name).read_text(encoding="utf-8"))
    workflow["on"] = workflow.pop(True)
    return workflow


def version(text: str) -> tuple[int, ...]:
    return tuple(int(part) for part in text.split("."))


def test_the_tests_run_on_three_systems_with_the_oldest_and_a_newer_python_in_quick_mode():
    job = load("test.yml")["jobs"]["test"]
    matrix = job["strategy"]["matrix"]
    assert set(matrix["os"]) == {"ubuntu-latest", "macos-latest", "windows-latest"} and not job["strategy"]["fail-fast"]
    assert all(isinstance(value, str) for value in matrix["python"]), "quote the versions: YAML reads 3.10 as 3.1"
    floor = re.search(r'^requires-python = ">=([\d.]+)"', (ROOT / "pyproject.toml").read_text(), re.M).group(1)
    pythons = sorted(matrix["python"], key=version)
    assert pythons[0] == floor and version(pythons[-1]) > version(floor)
    runs = {step["run"].strip().splitlines()[-1]: step for step in job["steps"] if "run" in step}
    assert runs["make test PYTHON=python"]["if"] == "runner.os == 'Linux'"  # as a newcomer runs it
    assert runs["python -m helpers test"]["if"] == "runner.os != 'Linux'"  # no make there
    assert job["env"]["WORKBOOK_QUICK"] == "1"


def test_the_floors_job_runs_make_floors_weekly_not_on_every_push():
    workflow = load("floors.yml")
    assert "schedule" in workflow["on"] and "push" not in workflow["on"]  # it downloads old torch
    (job,) = workflow["jobs"].values()
    assert any("make floors" in step.get("run", "") for step in job["steps"])
    assert re.search(
        r"^floors:\n(\t.*\n)*\tuv pip install .*--resolution lowest-direct", (ROOT / "Makefile").read_text(), re.M
    )


def test_actionlint_finds_nothing_in_the_workflows():
    """actionlint checks what the schema cannot: expressions, runner labels, action inputs, the shell of `run:` (with
    shellcheck where it is installed). The Linux CI job installs it before the tests (next test); elsewhere it skips."""
    actionlint = shutil.which("actionlint")
    if actionlint is None:
        pytest.skip("actionlint is not installed (the Linux CI job installs it)")
    done = subprocess.run([actionlint], cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr


def test_the_linux_job_installs_actionlint_before_it_tests():
    steps = load("test.yml")["jobs"]["test"]["steps"]
    names = [step.get("name", "") for step in steps]
    (install,) = [i for i, name in enumerate(names) if name.startswith("actionlint")]
    test = next(i for i, step in enumerate(steps) if "make test" in step.get("run", ""))
    assert install < test and steps[install]["if"] == "runner.os == 'Linux'"
    assert "| tar -xz" in steps[install]["run"] and "GITHUB_PATH" in steps[install]["run"]


@pytest.mark.parametrize(
    "stop",
    ["import os, signal, time\nos.kill(os.getppid(), signal.SIGINT)\ntime.sleep(60)", "import os\nos._exit(1)"],
    ids=["ctrl_c", "kernel_killed"],
)
def test_an_interrupted_run_leaves_the_previous_executed_copy_as_it_was(monkeypatch, tmp_path, stop):
    """Issue 29, item 13: `python -m helpers run` stopped by Ctrl+C or a dead kernel writes no partial copy."""
    monkeypatch.setattr(commands, "executed_dir", lambda: tmp_path / "executed")
    lesson = nbformat.v4.new_notebook(
        cells=[nbformat.v4.new_code_cell("print('first')"), nbformat.v4.new_code_cell(stop)]
    )
    nbformat.write(lesson, tmp_path / "01_lesson.ipynb")
    previous = tmp_path / "executed" / "01_lesson.ipynb"
    previous.parent.mkdir()
    previous.write_text("the copy of the last complete run", encoding="utf-8")
    with pytest.raises((KeyboardInterrupt, DeadKernelError)):
        commands.run_notebook(tmp_path / "01_lesson.ipynb", {**os.environ})
    assert previous.read_text(encoding="utf-8") == "the copy of the last complete run"
    assert sorted(p.name for p in previous.parent.iterdir()) == ["01_lesson.ipynb", "01_lesson.kernel.log"]


@pytest.mark.parametrize(
    "cell, says",
    [
        ("import os\nos._exit(1)", "its kernel died; close other programs"),
        ("import time\ntime.sleep(60)", "a cell ran over 2 s"),
    ],
    ids=["kernel_killed", "cell_timeout"],
)
def test_run_names_a_notebook_whose_kernel_died_or_hung_in_one_line_and_stops(
    monkeypatch, tmp_path, capsys, cell, says
):
    """`python -m helpers run` ends with its summary and exit status 1, not a traceback, when a kernel dies or hangs."""
    monkeypatch.setenv("WORKBOOK_DATA_DIR", str(tmp_path))
    monkeypatch.setattr(commands, "executed_dir", lambda: tmp_path / "executed")
    monkeypatch.setattr(commands, "prepare_data", lambda: DataChoice(tmp_path, "synthetic", "a test."))
    monkeypatch.setattr(commands, "prepare_weights", lambda: ("random", {**os.environ}))
    monkeypatch.setattr(commands, "CELL_TIMEOUT", 2)
    paths = [tmp_path / "01_lesson.ipynb", tmp_path / "02_lesson.ipynb"]
    for path in paths:
        nbformat.write(nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(cell)]), path)
    assert commands.run_all(paths) == 1
    out = capsys.readouterr().out
    assert f"FAILED  01_lesson.ipynb: {says}" in out and "stopped at 01_lesson.ipynb" in out and "02_lesson" not in out
