"""Remove outputs, execution counts and widget state from notebooks, in place.

Notebooks are committed without outputs (a test checks it): run `make strip` before committing.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path


def strip(path: Path) -> bool:
    """Strip one notebook; return True when it changed."""
    text = path.read_text(encoding="utf-8")
    notebook = json.loads(text)
    for cell in notebook.get("cells", []):
        if cell.get("cell_type") == "code":
            cell["outputs"] = []
            cell["execution_count"] = None
        cell.get("metadata", {}).pop("execution", None)
    notebook.get("metadata", {}).pop("widgets", None)
    new_text = json.dumps(notebook, indent=1, ensure_ascii=False) + "\n"
    if new_text != text:
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(new_text, encoding="utf-8")
        tmp.replace(path)
        return True
    return False


if __name__ == "__main__":
    paths = [Path(arg) for arg in sys.argv[1:]] or sorted(Path("notebooks").glob("*.ipynb"))
    for notebook_path in paths:
        print(f"{'stripped' if strip(notebook_path) else 'clean   '} {notebook_path}")
