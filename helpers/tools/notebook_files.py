"""The notebooks as committed: without outputs, in nbformat's own layout (`python -m helpers strip`).

Kept apart from run_notebooks (which imports torch through the lessons), so that stripping and
checking the notebooks (the lint step, the pre-commit hook) start in a second or two.
"""

from __future__ import annotations

from pathlib import Path

import nbformat

from helpers.plumbing.files import atomic_path


def stripped_text(path: Path) -> str:
    """The notebook at `path` without outputs, execution counts and widget state, in nbformat's own layout.

    The layout is the one JupyterLab saves (nbformat.write: sorted keys, one space of indent, a final
    newline), so saving a clean notebook in JupyterLab changes no line, and a diff shows only real edits.
    """
    notebook = nbformat.read(path, as_version=nbformat.NO_CONVERT)
    for cell in notebook.cells:
        if cell.cell_type == "code":
            cell.outputs = []
            cell.execution_count = None
        cell.metadata.pop("execution", None)
    notebook.metadata.pop("widgets", None)
    text = nbformat.writes(notebook, version=nbformat.NO_CONVERT)
    return text if text.endswith("\n") else text + "\n"


def strip_notebook(path: Path) -> bool:
    """Rewrite one notebook as stripped_text gives it, in place; True when it changed.

    Notebooks are committed that way (tests/test_project.py and the lint step check it).
    """
    new_text = stripped_text(path)
    if new_text == path.read_text(encoding="utf-8"):
        return False
    with atomic_path(path) as temp:
        temp.write_text(new_text, encoding="utf-8", newline="\n")
    return True


def unstripped(paths: list[Path]) -> list[Path]:
    """The notebooks among `paths` that are not as stripped_text gives them (outputs, or another layout)."""
    return [path for path in paths if path.read_text(encoding="utf-8") != stripped_text(path)]
