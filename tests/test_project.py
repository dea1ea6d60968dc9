"""The project's promises about itself: same packages for pip and conda, clean notebooks, set-up files."""

from __future__ import annotations

import ast
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest
import yaml
from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
CONDA_NAMES = {"pytorch": "torch", "playwright-python": "playwright"}  # conda-forge's name -> PyPI's name


def pyproject_requirements(list_name: str = "dependencies") -> dict[str, str]:
    """The runtime dependencies ("dependencies") or an extra ("lab", "test") of pyproject.toml: name -> specifier."""
    text = (ROOT / "pyproject.toml").read_text(encoding="utf-8")
    block = re.search(rf"^{list_name}\s*=\s*\[(.*?)^\]", text, re.S | re.M).group(1)
    return dict(name_and_specifier(item) for item in re.findall(r'"([^"]+)"', block))


def name_and_specifier(text: str) -> tuple[str, str]:
    requirement = Requirement(text)
    return requirement.name.lower(), str(requirement.specifier)


# Import names that differ from the package that brings them (PyPI name).
IMPORT_TO_PACKAGE = {"PIL": "pillow", "nbformat": "nbconvert", "nbclient": "nbconvert"}
STANDARD_LIBRARY = set(sys.stdlib_module_names) | {"helpers"}


def third_party_imports(text: str) -> set[str]:
    """Top-level names of the modules a Python text imports (read with ast), standard library and helpers left out."""
    names = set()
    for node in ast.walk(ast.parse(text)):
        if isinstance(node, ast.Import):
            names |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return {name for name in names if name not in STANDARD_LIBRARY and name != "__future__"}


def environment_requirements() -> dict[str, str]:
    requirements = {}
    text = (ROOT / "environment.yml").read_text(encoding="utf-8")
    for line in text.split("\ndependencies:", 1)[1].splitlines():
        match = re.match(r"^  (?:    )?- ([A-Za-z][^\s#]*)\s*$", line)  # conda's list, then pip's
        if match and not match.group(1).startswith(("python", "pip")):
            name, specifier = name_and_specifier(match.group(1))
            requirements[CONDA_NAMES.get(name, name)] = specifier
    return requirements


def test_environment_yml_and_pyproject_name_the_same_packages_and_floors():
    pyproject = {**pyproject_requirements(), **pyproject_requirements("lab"), **pyproject_requirements("test")}
    pyproject |= pyproject_requirements("teach")
    assert pyproject == environment_requirements()


def imported_packages(texts: list[str]) -> set[str]:
    """The packages (PyPI names, lower case) that Python texts import."""
    return {IMPORT_TO_PACKAGE.get(name, name).lower() for text in texts for name in third_party_imports(text)}


def test_runtime_dependencies_are_what_a_notebook_imports_and_jupyter_is_the_lab_extra():
    runtime, lab, test_tools = (pyproject_requirements(name) for name in ("dependencies", "lab", "test"))
    assert {"pytest", "nbval", "playwright"} <= set(test_tools) and not set(test_tools) & set(runtime)
    assert {"jupyterlab", "ipykernel"} <= set(lab) and not set(lab) & set(runtime)  # Colab keeps its own Jupyter
    runner = ROOT / "helpers" / "commands.py"  # `python -m helpers run` executes notebooks: what it needs is [lab]'s
    sources = [path.read_text(encoding="utf-8") for path in (ROOT / "helpers").rglob("*.py") if path != runner]
    for notebook in NOTEBOOKS:
        cells = json.loads(notebook.read_text(encoding="utf-8"))["cells"]
        sources += ["".join(cell["source"]) for cell in cells if cell["cell_type"] == "code"]
    imported = imported_packages(sources)
    assert imported - set(runtime) == {"ipython"}, (
        "imported by a notebook but not a runtime dependency (IPython: the kernel's)"
    )
    assert set(runtime) - imported == set(), "declared but never imported by a notebook"
    for_running = imported_packages([runner.read_text(encoding="utf-8")]) - set(runtime)
    assert for_running and for_running <= set(lab), "what `python -m helpers run` imports is in [lab]"


def test_environment_yml_installs_the_project_in_editable_mode():
    text = (ROOT / "environment.yml").read_text(encoding="utf-8")
    assert re.search(r"^\s+- pip:\s*\n(\s+- .+\n)*\s+- -e \.\s*$", text, re.M), (
        "environment.yml should pip-install '-e .'"
    )


def test_there_are_numbered_notebooks():
    assert [p.name[:2] for p in NOTEBOOKS] == [f"{i:02d}" for i in range(1, len(NOTEBOOKS) + 1)]
    assert len(NOTEBOOKS) >= 2


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_committed_notebooks_are_in_nbformats_own_layout(path):
    """What JupyterLab writes on save (nbformat.write) is what is committed: a save changes no line."""
    text = path.read_text(encoding="utf-8")
    notebook = nbformat.read(path, as_version=nbformat.NO_CONVERT)
    assert text == nbformat.writes(notebook, version=nbformat.NO_CONVERT) + "\n", (
        f"{path.name} is not in nbformat's layout: run `make strip`"
    )
    assert notebook.metadata.kernelspec.name == "python3"


def test_licence_and_dataset_credit():
    assert "Apache License" in (ROOT / "LICENSE").read_text(encoding="utf-8")[:200]
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    for credit in ("10.17632/5y9wdsg2zt.2", "CC BY 4.0", "ISARC", "Özgenel"):
        assert credit in readme


def test_the_workbook_command_offers_what_the_makefile_runs():
    result = subprocess.run(
        [sys.executable, "-m", "helpers", "--help"], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0
    makefile = (ROOT / "Makefile").read_text(encoding="utf-8")
    targets = re.search(r"^([a-z ]+): \$\(STAMP\)\n\t\$\(BIN\)/python -m helpers \$@$", makefile, re.M).group(1).split()
    offered = re.search(r"\{([a-z,]+)\}", result.stdout).group(1).split(",")
    assert {"run", "test", "lint", "format", "lab", "bench", "strip"} <= set(targets) <= set(offered)


@pytest.mark.skipif(shutil.which("git") is None, reason="git is not installed")
def test_data_folder_is_ignored_by_git():
    result = subprocess.run(
        ["git", "check-ignore", "-q", "data/concrete_crack_images/Positive/00001.jpg"], cwd=ROOT, capture_output=True
    )
    if result.returncode == 128:
        pytest.skip("not a git checkout")
    assert result.returncode == 0, "data/ downloads must be ignored by git"


def test_a_non_editable_install_refuses_in_one_sentence_that_says_to_install_in_editable_mode(tmp_path):
    """`pip install .` copies helpers/ alone into site-packages: no notebooks/ and no data/ beside it."""
    shutil.copytree(ROOT / "helpers", tmp_path / "site-packages" / "helpers")
    result = subprocess.run(
        [sys.executable, "-c", "import helpers.settings"],
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(tmp_path / "site-packages")},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 1
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("ImportError: ") and "`pip install -e .`" in last and last.count(". ") == 0


def test_the_version_a_class_pins_is_the_same_in_pyproject_the_citation_and_the_changelog():
    """A release is the tag v<version>: CITATION.cff cites it and CHANGELOG.md's newest release is it."""
    version = re.search(r'^version = "([^"]+)"$', (ROOT / "pyproject.toml").read_text(encoding="utf-8"), re.M).group(1)
    assert yaml.safe_load((ROOT / "CITATION.cff").read_text(encoding="utf-8"))["version"] == version
    changelog = (ROOT / "CHANGELOG.md").read_text(encoding="utf-8")
    assert re.findall(r"^## \[(\d[^\]]*)\] - \d{4}-\d{2}-\d{2}$", changelog, re.M)[0] == version
    assert re.search(rf"^\[{re.escape(version)}\]: \S+/releases/tag/v{re.escape(version)}$", changelog, re.M)


def test_data_and_predict_run_without_the_lab_extra():
    """Issue 30: helpers.commands imported nbformat at its top, so `data` and `predict` needed JupyterLab's extra."""
    blocked = "import sys; sys.modules['nbformat'] = sys.modules['nbclient'] = None; "  # as if not installed
    code = blocked + "from helpers.commands import predict_main; sys.exit(predict_main(['--help']))"
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0 and result.stdout.startswith("usage: python -m helpers predict"), result.stderr
