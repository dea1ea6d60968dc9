"""The CI workflows: valid for GitHub (its published schema, checked offline) and doing what the README says.

GitHub cannot run a workflow here, so a broken one has to fail in `make test`: the schema check
(helpers.tools.lint, also the lint step of `python -m helpers test`) and the promises below.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from helpers.tools.lint import workflow_files, workflow_schema_check

ROOT = Path(__file__).resolve().parent.parent
WORKFLOWS = ROOT / ".github" / "workflows"
OSES = {"ubuntu-latest", "macos-latest", "windows-latest"}


def load(path: Path) -> dict:
    """A workflow as data; PyYAML reads the key `on` as True (YAML 1.1), so it is put back under "on"."""
    workflow = yaml.safe_load(path.read_text(encoding="utf-8"))
    if True in workflow:
        workflow["on"] = workflow.pop(True)
    return workflow


def run_steps(job: dict) -> list[dict]:
    return [step for step in job["steps"] if "run" in step]


def python_floor() -> str:
    """requires-python's floor in pyproject.toml, e.g. "3.10"."""
    text = (ROOT / "pyproject.toml").read_text(encoding="utf-8")
    return re.search(r'^requires-python\s*=\s*">=\s*([\d.]+)"', text, re.M).group(1)


def version(text: str) -> tuple[int, ...]:
    return tuple(int(part) for part in text.split("."))


@pytest.fixture(scope="module")
def test_job() -> dict:
    return load(WORKFLOWS / "test.yml")["jobs"]["test"]


def test_the_workflows_pass_githubs_schema():
    assert {path.name for path in workflow_files(ROOT)} >= {"test.yml", "floors.yml"}
    problem = workflow_schema_check(ROOT)
    assert problem is None, f"{problem.details}\n{problem.sentence}"


BROKEN = {
    "on misspelled": lambda text: text.replace("\non:\n", "\nonn:\n", 1),
    "runs-on missing": lambda text: re.sub(r"^    runs-on: .*\n", "", text, count=1, flags=re.M),
    "steps not a list": lambda text: text.replace("    steps:\n", "    steps: checkout\n    old_steps:\n", 1),
}


@pytest.mark.parametrize("breakage", BROKEN, ids=list(BROKEN))
def test_a_broken_workflow_fails_the_schema_check(tmp_path, breakage):
    original = (WORKFLOWS / "test.yml").read_text(encoding="utf-8")
    broken = BROKEN[breakage](original)
    assert broken != original, "the breakage did not apply: update BROKEN"
    path = tmp_path / "broken.yml"
    path.write_text(broken, encoding="utf-8")
    problem = workflow_schema_check(ROOT, files=[path])
    assert problem is not None and "GitHub's workflow schema" in problem.sentence
    assert "broken.yml" in problem.details


def test_the_matrix_covers_three_systems_and_the_oldest_and_newest_python(test_job):
    matrix = test_job["strategy"]["matrix"]
    assert set(matrix["os"]) == OSES and test_job["runs-on"] == "${{ matrix.os }}"
    pythons = sorted(map(str, matrix["python"]), key=version)
    assert all(isinstance(value, str) for value in matrix["python"]), "quote the versions: YAML reads 3.10 as 3.1"
    assert pythons[0] == python_floor() and version(pythons[-1]) > version(pythons[0])
    assert test_job["strategy"]["fail-fast"] is False  # one system failing does not hide the others


def test_the_test_job_runs_the_readmes_test_command_in_quick_mode(test_job):
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert "make test" in readme and "python -m helpers test" in readme
    by_command = {step["run"].strip().splitlines()[-1]: step for step in run_steps(test_job)}
    linux, others = by_command["make test PYTHON=python"], by_command["python -m helpers test"]
    assert linux["if"] == "runner.os == 'Linux'" and others["if"] == "runner.os != 'Linux'"
    assert linux["env"]["WORKBOOK_REQUIRE_BROWSER"] == "1"  # the browser test runs on Linux, not skips
    assert test_job["env"]["WORKBOOK_QUICK"] == "1" and "WORKBOOK_REAL_SAMPLE" not in test_job["env"]
    assert 'python -m pip install -e ".[test]"' in others["run"]


def test_the_test_job_caches_pip_installs_cpu_torch_and_chromium_on_linux(test_job):
    setup = next(step for step in test_job["steps"] if step.get("uses", "").startswith("actions/setup-python@"))
    assert setup["with"]["cache"] == "pip" and setup["with"]["cache-dependency-path"] == "pyproject.toml"
    assert setup["with"]["python-version"] == "${{ matrix.python }}"
    linux_runs = "\n".join(step["run"] for step in run_steps(test_job) if step.get("if") == "runner.os == 'Linux'")
    assert "--index-url https://download.pytorch.org/whl/cpu" in linux_runs
    assert "playwright install --with-deps chromium" in linux_runs and "/usr/bin/chromium" in linux_runs
    steps = [step.get("name", step.get("uses")) for step in test_job["steps"]]
    assert steps.index("Chromium for the browser test (Linux)") < steps.index("make test (Linux)")


def test_the_floors_job_is_scheduled_and_runs_make_floors():
    workflow = load(WORKFLOWS / "floors.yml")
    triggers = workflow["on"]
    assert re.fullmatch(r"[\d*/,-]+( [\d*/,-]+){4}", triggers["schedule"][0]["cron"])
    assert "workflow_dispatch" in triggers and "push" not in triggers  # it downloads old torch: not on every push
    (job,) = workflow["jobs"].values()
    assert job["runs-on"] == "ubuntu-latest"
    assert any(step["run"].startswith("make floors") for step in run_steps(job))
    makefile = (ROOT / "Makefile").read_text(encoding="utf-8")
    assert re.search(r"^floors:\n\t\$\(PYTHON\) scripts/check_floors.py$", makefile, re.M)
