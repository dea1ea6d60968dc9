"""Google Colab: every notebook's first code cell, README's badges, and what the cell does in and out of Colab.

The cell runs for real in a subprocess: `google.colab` is a fake package on PYTHONPATH, `git` a
script first on PATH, and `python -m pip` a fake `pip` package that shadows the real one; each
records its arguments. The subprocess starts with `python -S`, so that `helpers` is importable
only from what the cell clones, as in a fresh Colab runtime.
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
from helpers.tools.colab import (
    CELL_ID,
    REPOSITORY,
    badge_markdown,
    colab_cell_source,
    readme_badges,
    repository_name,
    write_colab_cell,
    write_readme_badges,
)

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = notebooks()
COLAB_FOLDER = "/content/concrete-crack-workbook"

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


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_every_notebook_starts_with_its_title_then_the_colab_cell(path):
    cells = nbformat.read(path, as_version=4).cells
    assert cells[0].cell_type == "markdown" and cells[0].source.startswith(f"# {path.name[:2]} ")
    assert cells[1].cell_type == "code" and cells[1].id == CELL_ID
    assert cells[1].source == colab_cell_source()
    assert cells[1].source.startswith("# extra code – in Google Colab:")  # plumbing, said so in its first line


def test_readme_has_one_colab_badge_per_notebook_made_from_the_repository():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert readme_badges() in readme
    links = re.findall(r"\]\((https://colab\.research\.google\.com/github/[^)]+)\)", readme)
    assert links == [
        f"https://colab.research.google.com/github/{repository_name()}/blob/main/notebooks/{path.name}"
        for path in NOTEBOOKS
    ]
    assert all(readme.count(badge_markdown(path.name)) == 1 for path in NOTEBOOKS)


def test_the_address_is_written_in_one_place():
    holders = [
        path.relative_to(ROOT).as_posix()
        for path in (ROOT / "helpers").rglob("*.py")
        if repository_name() in path.read_text(encoding="utf-8")
    ]
    assert holders == ["helpers/tools/colab.py"]
    assert REPOSITORY in colab_cell_source() and repository_name() in badge_markdown("01_download_data.ipynb")
    fork = "https://github.com/someone/fork-of-it"
    assert fork in colab_cell_source(fork) and '"/content/fork-of-it"' in colab_cell_source(fork)
    assert "github/someone/fork-of-it/blob/main/notebooks/02_x.ipynb" in badge_markdown("02_x.ipynb", fork)
    with pytest.raises(ValueError, match="not a GitHub repository"):
        repository_name("https://gitlab.com/a/b")


def test_python_m_helpers_colab_writes_what_is_committed(tmp_path):
    """The generator reproduces the committed files: inserted after the title, then updated in place."""
    for path in NOTEBOOKS:
        copy = tmp_path / path.name
        notebook = nbformat.read(path, as_version=nbformat.NO_CONVERT)
        notebook.cells = [cell for cell in notebook.cells if cell.get("id") != CELL_ID]
        nbformat.write(notebook, copy)
        assert write_colab_cell(copy) is True
        assert copy.read_text(encoding="utf-8") == path.read_text(encoding="utf-8")
        assert write_colab_cell(copy) is False
    fork = colab_cell_source("https://github.com/someone/fork-of-it")
    assert write_colab_cell(copy, fork) is True
    cells = nbformat.read(copy, as_version=4).cells
    assert [cell.source for cell in cells if cell.get("id") == CELL_ID] == [fork] and cells[1].source == fork

    readme = tmp_path / "README.md"
    committed = (ROOT / "README.md").read_text(encoding="utf-8")
    readme.write_text(
        committed.replace(readme_badges(), readme_badges(repository="https://github.com/a/b")), encoding="utf-8"
    )
    assert write_readme_badges(readme) is True and readme.read_text(encoding="utf-8") == committed
    assert write_readme_badges(readme) is False


@pytest.fixture
def fake_colab_machine(tmp_path):
    """(run, log): run(cell_source, colab) executes the cell as a first cell would run; log() lists the commands."""
    fakes, bin_dir, log = tmp_path / "fakes", tmp_path / "bin", tmp_path / "commands.log"
    (fakes / "google" / "colab").mkdir(parents=True)
    (fakes / "google" / "__init__.py").write_text("", encoding="utf-8")
    (fakes / "google" / "colab" / "__init__.py").write_text("", encoding="utf-8")
    (fakes / "pip").mkdir()
    (fakes / "pip" / "__init__.py").write_text("", encoding="utf-8")
    (fakes / "pip" / "__main__.py").write_text(
        "import os, sys\n"
        "with open(os.environ['FAKE_LOG'], 'a', encoding='utf-8') as log:\n"
        "    log.write(' '.join(['pip', *sys.argv[1:]]) + '\\n')\n",
        encoding="utf-8",
    )
    bin_dir.mkdir()
    git = bin_dir / "git"  # a clone of the workbook: helpers/ and notebooks/, marked as the clone's
    git.write_text(
        '#!/bin/sh\necho "git $*" >> "$FAKE_LOG"\n'
        'for folder; do :; done\n'
        'mkdir -p "$folder/helpers" "$folder/notebooks"\n'
        'echo "CLONED = True" > "$folder/helpers/__init__.py"\n',
        encoding="utf-8",
    )
    git.chmod(0o755)
    driver = tmp_path / "driver.py"
    driver.write_text(DRIVER, encoding="utf-8")
    work = tmp_path / "content"
    work.mkdir()

    def run(source: str, colab: bool) -> dict:
        cell = tmp_path / "cell.py"
        cell.write_text(source, encoding="utf-8")
        env = {
            **os.environ,
            "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
            "PYTHONPATH": str(fakes),
            "FAKE_LOG": str(log),
        }
        result = subprocess.run(
            [sys.executable, "-S", str(driver), str(cell), "colab" if colab else "elsewhere"],
            cwd=work,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert result.returncode == 0, result.stdout + result.stderr
        return json.loads(result.stdout.splitlines()[-1])

    def commands() -> list[str]:
        return log.read_text(encoding="utf-8").splitlines() if log.exists() else []

    return run, commands, work


@pytest.mark.skipif(os.name == "nt", reason="the fake git is a shell script")
def test_in_colab_the_cell_clones_the_repository_installs_it_and_imports_helpers(fake_colab_machine):
    run, commands, work = fake_colab_machine
    source = colab_cell_source()
    assert source.count(f'"{COLAB_FOLDER}"') == 1
    folder = work / "concrete-crack-workbook"  # /content/... is Colab's; here the test's own folder stands in
    result = run(source.replace(f'"{COLAB_FOLDER}"', f'"{folder}"'), colab=True)
    assert commands() == [
        f"git clone --quiet --depth 1 {REPOSITORY} {folder}",  # once, though the cell ran twice
        f"pip install --quiet -e {folder}",
    ]
    assert result == {"cwd": str(folder / "notebooks"), "helpers": str(folder / "helpers" / "__init__.py")}


@pytest.mark.skipif(os.name == "nt", reason="the fake git is a shell script")
def test_outside_colab_the_cell_does_nothing(fake_colab_machine):
    run, commands, work = fake_colab_machine
    result = run(colab_cell_source(), colab=False)  # google.colab is importable, but not imported: not Colab
    assert commands() == [] and result == {"cwd": str(work), "helpers": None}
    assert list(work.iterdir()) == []
