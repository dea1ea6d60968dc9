"""Google Colab: every notebook's first code cell is the same cell, and it clones, installs and changes folder there.

The cell runs for real in a subprocess: `google.colab` is a fake package on PYTHONPATH, `git` a script first
on PATH, and `python -m pip` a fake `pip` package that shadows the real one; each records its arguments.
The subprocess starts with `python -S`, so `helpers` is importable only from what the cell clones.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

from helpers.settings import notebooks

ROOT = Path(__file__).resolve().parent.parent
CELL = nbformat.read(notebooks()[0], as_version=4).cells[1].source
REPOSITORY, FOLDER = re.search(r'REPOSITORY, FOLDER = "([^"]+)", "([^"]+)"', CELL).groups()

DRIVER = """\
import importlib.util, json, os, sys
if sys.argv[2] == "colab":
    import google.colab  # Colab imports it before the first cell runs
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


def test_readmes_colab_links_open_this_repositorys_notebooks():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    links = re.findall(r"colab\.research\.google\.com/github/([^/]+/[^/]+)/blob/[^/]+/notebooks/([^)\s]+)", readme)
    assert {repository for repository, _ in links} <= {REPOSITORY.removeprefix("https://github.com/")}
    assert {name for _, name in links} <= {path.name for path in notebooks()}


@pytest.mark.skipif(os.name == "nt", reason="the fake git is a shell script")
@pytest.mark.parametrize("colab", [True, False], ids=["in Colab", "elsewhere"])
def test_the_cell_clones_and_installs_once_in_colab_and_does_nothing_elsewhere(tmp_path, colab):
    fakes, log, work = tmp_path / "fakes", tmp_path / "commands.log", tmp_path / "content"
    for package in ("google", "google/colab", "pip"):
        (fakes / package).mkdir(parents=True)
        (fakes / package / "__init__.py").touch()
    (fakes / "pip" / "__main__.py").write_text(
        "import os, sys\nopen(os.environ['FAKE_LOG'], 'a').write(' '.join(['pip', *sys.argv[1:]]) + '\\n')\n"
    )
    git = tmp_path / "bin" / "git"  # a clone of the workbook: helpers/ and notebooks/
    git.parent.mkdir()
    git.write_text(
        '#!/bin/sh\necho "git $*" >> "$FAKE_LOG"\nfor folder; do :; done\n'
        'mkdir -p "$folder/helpers" "$folder/notebooks"\ntouch "$folder/helpers/__init__.py"\n'
    )
    git.chmod(0o755)
    folder = work / "workbook"  # Colab's /content/workbook, here in the test's own folder
    assert CELL.count(f'"{FOLDER}"') == 1
    (tmp_path / "cell.py").write_text(CELL.replace(f'"{FOLDER}"', f'"{folder}"'), encoding="utf-8")
    (tmp_path / "driver.py").write_text(DRIVER, encoding="utf-8")
    work.mkdir()
    env = {**os.environ, "PATH": f"{git.parent}{os.pathsep}{os.environ['PATH']}", "PYTHONPATH": str(fakes)}
    result = subprocess.run(
        [sys.executable, "-S", "driver.py", "cell.py", "colab" if colab else "elsewhere"],
        cwd=tmp_path,
        env={**env, "FAKE_LOG": str(log)},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    ran = json.loads(result.stdout.splitlines()[-1])
    commands = log.read_text().splitlines() if log.exists() else []
    if colab:
        assert commands == [f"git clone --quiet --depth 1 {REPOSITORY} {folder}", f"pip install --quiet -e {folder}"]
        assert ran == {"cwd": str(folder / "notebooks"), "helpers": str(folder / "helpers" / "__init__.py")}
    else:
        assert commands == [] and ran == {"cwd": str(tmp_path), "helpers": None} and not list(work.iterdir())
