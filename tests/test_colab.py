"""Google Colab: every notebook's first code cell is the same cell; there it clones, installs (without the [lab]
extra: Colab keeps its own Jupyter), makes sure `helpers` is the workbook's, changes folder and fetches the data set.

The cell runs for real in a subprocess: `google.colab` is a fake package on PYTHONPATH, `git` a script first
on PATH that clones a stand-in workbook (whose helpers.data records what it is asked), and `python -m pip` a fake
`pip` package that shadows the real one; each records its arguments. The subprocess starts with `python -S`, so
`helpers` is importable only from what the cell clones, or from the stand-in for PyPI's package of that name.
"""

from __future__ import annotations

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

from helpers.settings import notebooks

ROOT = Path(__file__).resolve().parent.parent
CELL = nbformat.read(notebooks()[0], as_version=4).cells[1].source
REPOSITORY = re.search(r'REPOSITORY = "([^"]+)"', CELL).group(1)
REF, FOLDER = re.search(r'REF, FOLDER = "([^"]+)", "([^"]+)"', CELL).groups()
PYPROJECT = (ROOT / "pyproject.toml").read_text(encoding="utf-8")
ADDRESS = re.search(r'^\[project\.urls\]\n(?:#.*\n)*Repository = "([^"]+)"$', PYPROJECT, re.M).group(1)
# Colab's own Jupyter packages, pinned there (Colab warns that upgrading them can break its runtime).
COLAB_PINS = {
    "ipykernel": "5.5.6",
    "jupyter-client": "7.4.9",
    "ipywidgets": "7.7.1",
    "notebook": "6.5.7",
    "ipython": "7.34.0",
}
# A stand-in for the workbook's helpers: the data set "downloads" into data/, and each call is recorded.
STAND_IN = {
    "settings.py": "import os\ndef real_dir():\n    return os.path.abspath('../data/concrete_crack_images')\n",
    "data.py": "import os\nis_verified = os.path.isdir\ndef prepare_data():\n"
    "    open(os.environ['FAKE_LOG'], 'a').write('prepare_data\\n')\n    os.makedirs('../data/concrete_crack_images')\n",
}

DRIVER = """\
import importlib.util, json, os, sys
if sys.argv[2] == "colab":
    import google.colab  # Colab imports it before the first cell runs
if sys.argv[3] == "pypi":
    import helpers  # PyPI's package of that name, installed and imported before the cell runs
else:
    assert importlib.util.find_spec("helpers") is None, "helpers must not be importable before the cell runs"
source = open(sys.argv[1], encoding="utf-8").read()
for _ in range(2):  # a learner may run the cell twice
    exec(compile(source, "first cell", "exec"), {})
spec = importlib.util.find_spec("helpers")
print(json.dumps({"cwd": os.getcwd(), "helpers": spec and spec.origin}))
"""


@pytest.mark.parametrize("path", notebooks(), ids=lambda p: p.name)
def test_every_notebook_starts_with_its_title_then_the_same_colab_cell(path):
    cells = nbformat.read(path, as_version=4).cells
    assert cells[0].cell_type == "markdown" and cells[0].source.startswith(f"# {path.name[:2]} ")
    assert cells[1].cell_type == "code" and cells[1].id == "colab" and cells[1].source == CELL
    assert CELL.startswith("# extra code – in Google Colab:")  # plumbing, said so in its first line


def test_the_repository_has_one_address_which_the_colab_cell_and_the_readmes_badges_use():
    """A fork sets it in pyproject.toml's [project.urls], then replaces the old address wherever this test finds it."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    links = re.findall(r"colab\.research\.google\.com/github/([^/]+/[^/]+)/blob/[^/]+/notebooks/([^)\s]+)", readme)
    assert REPOSITORY == ADDRESS, f"the notebooks' Colab cell clones {REPOSITORY}, pyproject.toml says {ADDRESS}"
    assert yaml.safe_load((ROOT / "CITATION.cff").read_text(encoding="utf-8"))["repository-code"] == ADDRESS
    assert {f"https://github.com/{repository}" for repository, _ in links} <= {ADDRESS}, "README.md's badges"
    assert {name for _, name in links} <= {path.name for path in notebooks()}


def test_the_colab_cell_clones_main_or_in_a_release_its_own_tag():
    """A class pinned to a release opens its notebooks on Colab from the tag: they must clone that tag, not main."""
    version = re.search(r'^version = "([^"]+)"$', PYPROJECT, re.M).group(1)
    assert REF in {"main", f"v{version}"}
    tag = subprocess.run(["git", "describe", "--tags", "--exact-match"], cwd=ROOT, capture_output=True, text=True)
    if tag.returncode == 0:  # this commit is a release: its notebooks clone its tag
        assert REF == tag.stdout.strip(), f"set REF in the notebooks' Colab cell to {tag.stdout.strip()}"


def test_the_workbooks_own_requirements_leave_colabs_jupyter_packages_as_they_are():
    """What the cell installs (no [lab] extra: the next test) accepts Colab's pinned versions, so pip keeps them."""
    block = re.search(r"^dependencies = \[(.*?)^\]", PYPROJECT, re.S | re.M).group(1)
    for requirement in map(Requirement, re.findall(r'"([^"]+)"', block)):
        pinned = COLAB_PINS.get(requirement.name.lower().replace("_", "-"))
        assert pinned is None or requirement.specifier.contains(pinned), f"{requirement} would replace Colab's {pinned}"


@pytest.mark.skipif(os.name == "nt", reason="the fake git is a shell script")
@pytest.mark.parametrize(
    "where", ["colab", "colab_with_pypis_helpers", "elsewhere"], ids=["in Colab", "PyPI's helpers", "elsewhere"]
)
def test_in_colab_the_cell_clones_installs_and_fetches_the_data_once_and_elsewhere_does_nothing(tmp_path, where):
    fakes, log, work, stand_in = tmp_path / "fakes", tmp_path / "commands.log", tmp_path / "content", tmp_path / "wb"
    for package in ("google", "google/colab", "pip", "helpers"):
        (fakes / package).mkdir(parents=True)
        (fakes / package / "__init__.py").touch()
    (fakes / "pip" / "__main__.py").write_text(
        "import os, sys\nopen(os.environ['FAKE_LOG'], 'a').write(' '.join(['pip', *sys.argv[1:]]) + '\\n')\n"
    )
    (stand_in / "notebooks").mkdir(parents=True)
    (stand_in / "helpers").mkdir()
    (stand_in / "helpers" / "__init__.py").touch()
    for name, text in STAND_IN.items():
        (stand_in / "helpers" / name).write_text(text, encoding="utf-8")
    git = tmp_path / "bin" / "git"  # a clone of the stand-in workbook
    git.parent.mkdir()
    git.write_text(f'#!/bin/sh\necho "git $*" >> "$FAKE_LOG"\nfor folder; do :; done\ncp -R "{stand_in}" "$folder"\n')
    git.chmod(0o755)
    folder = work / "workbook"  # Colab's /content/workbook, here in the test's own folder
    assert CELL.count(f'"{FOLDER}"') == 1
    (tmp_path / "cell.py").write_text(CELL.replace(f'"{FOLDER}"', f'"{folder}"'), encoding="utf-8")
    (tmp_path / "driver.py").write_text(DRIVER, encoding="utf-8")
    work.mkdir()
    if where != "colab_with_pypis_helpers":
        shutil.rmtree(fakes / "helpers")
    env = {**os.environ, "PATH": f"{git.parent}{os.pathsep}{os.environ['PATH']}", "PYTHONPATH": str(fakes)}
    result = subprocess.run(
        [sys.executable, "-S", "driver.py", "cell.py", where.split("_")[0], "pypi" if "pypi" in where else "-"],
        cwd=tmp_path,
        env={**env, "FAKE_LOG": str(log)},
        capture_output=True,
        text=True,
        timeout=60,
    )
    commands = log.read_text().splitlines() if log.exists() else []
    if where == "colab_with_pypis_helpers":
        assert result.returncode == 1 and result.stderr.splitlines()[-1] == (
            f"ImportError: {fakes / 'helpers' / '__init__.py'} is not this workbook's: run `pip uninstall -y helpers`, "
            "then restart the session."
        )
        assert "prepare_data" not in commands  # stopped before anything else
        return
    assert result.returncode == 0, result.stdout + result.stderr
    ran = json.loads(result.stdout.splitlines()[-1])
    if where == "colab":
        clone, install = (
            f"git clone --quiet --depth 1 --branch {REF} {REPOSITORY} {folder}",
            f"pip install --quiet -e {folder}",
        )
        assert commands == [clone, install, "prepare_data"]  # the data set once, though the cell ran twice
        assert result.stdout.count("No data set on this Colab machine yet") == 1
        assert ran == {"cwd": str(folder / "notebooks"), "helpers": str(folder / "helpers" / "__init__.py")}
    else:
        assert commands == [] and ran == {"cwd": str(tmp_path), "helpers": None} and not list(work.iterdir())
