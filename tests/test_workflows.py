"""The CI workflows do what the README promises (the lint step checks them against GitHub's schema)."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

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
