"""The layout says the architecture: lessons in front, plumbing, speed and tools behind, imports one way.

helpers/*.py are the lessons' modules (what a notebook names); helpers/plumbing.py is what no lesson
teaches; helpers/speed/ is notebook 07's optional machinery, entered through its __init__ alone;
helpers/__main__.py and helpers/commands.py hold the commands. Each rule below is one arrow the layout forbids.
"""

from __future__ import annotations

import ast
import json
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
HELPERS = ROOT / "helpers"
BEHIND = {"plumbing": "plumbing", "speed": "speed", "commands": "tools"}  # helpers.NAME


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def workbook_imports(source: str) -> set[str]:
    """Every helpers.* module a source imports, at any depth (lazy imports inside functions too)."""
    found = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    return {name for name in found if name == "helpers" or name.startswith("helpers.")}


def imports_by_module() -> dict[str, set[str]]:
    return {module_name(path): workbook_imports(path.read_text(encoding="utf-8")) for path in HELPERS.rglob("*.py")}


def layer(module: str) -> str:
    """ "lesson", "plumbing", "speed", "tools", or "entry" (helpers/__main__.py)."""
    parts = module.split(".")
    if len(parts) > 1 and parts[1] in BEHIND:
        return BEHIND[parts[1]]
    return "entry" if module == "helpers.__main__" else "lesson"


def test_lessons_enter_the_speed_machinery_through_its_one_door():
    for module, imported in imports_by_module().items():
        if layer(module) == "lesson":
            inside = sorted(name for name in imported if name.startswith("helpers.speed."))
            assert not inside, f"{module} imports {inside}: import from helpers.speed (its __init__) instead"


def test_plumbing_imports_no_lesson_and_nothing_above_it():
    for module, imported in imports_by_module().items():
        if layer(module) == "plumbing":
            allowed = {name for name in imported if name.startswith("helpers.plumbing") or name == "helpers.settings"}
            assert imported == allowed, f"{module} imports {sorted(imported - allowed)}"


def test_only_the_entry_points_import_the_tools():
    for module, imported in imports_by_module().items():
        if layer(module) not in ("tools", "entry"):
            tools = sorted(name for name in imported if layer(name) == "tools")
            assert not tools, f"{module} imports {tools}: tools sit on top, nothing below may import them"


def test_the_notebooks_import_lessons_and_the_speed_door_only():
    for notebook in sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb")):
        cells = json.loads(notebook.read_text(encoding="utf-8"))["cells"]
        source = "\n".join("".join(cell["source"]) for cell in cells if cell["cell_type"] == "code")
        source = "\n".join(line for line in source.splitlines() if not line.lstrip().startswith(("%", "!")))
        for name in workbook_imports(source):
            assert layer(name) in ("lesson", "speed") and not name.startswith("helpers.speed."), (
                f"{notebook.name} imports {name}"
            )
