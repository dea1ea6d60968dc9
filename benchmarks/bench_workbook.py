"""How long does the whole workbook take at the real data set's size? Seconds per notebook and per long cell.

Runs `python -m helpers run` (what `make run` does) offline on a synthetic set of the
real set's size and layout (20,000 images per class by default: 40,000 in all), in its own data
folder (build/bench-data, so the learner's data/ is left alone), then reads the executed copies
under build/executed/ and prints the time of each notebook and of every cell that took longer
than a few seconds, with the section it belongs to.

    python benchmarks/bench_workbook.py                    # 40,000 images: about 20 minutes on 2 CPU cores
    python benchmarks/bench_workbook.py --per-class 1000   # the default offline size of `make run`

It is a benchmark, not a test: it reports numbers and checks nothing (a failing notebook is reported).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from anywhere without installing

from helpers.settings import (
    DATA_DIR,
    OFFLINE,
    executed_dir,
    PROJECT_ROOT,
    environment_with,
    notebooks,
)  # noqa: E402


def cell_seconds(cell: dict) -> float:
    """How long an executed cell ran, from the timing nbclient records in its metadata."""
    timing = cell.get("metadata", {}).get("execution", {})
    start, end = timing.get("iopub.execute_input"), timing.get("shell.execute_reply")
    if not (start and end):
        return 0.0
    parse = lambda text: datetime.fromisoformat(text.replace("Z", "+00:00"))  # noqa: E731
    return (parse(end) - parse(start)).total_seconds()


def long_cells(path: Path, at_least: float) -> tuple[float, list[tuple[float, str, str]]]:
    """(seconds of all cells, [(seconds, section, first code line)] of the cells above `at_least` seconds)."""
    cells = json.loads(path.read_text(encoding="utf-8"))["cells"]
    total, slow, section = 0.0, [], ""
    for cell in cells:
        source = "".join(cell["source"])
        if cell["cell_type"] == "markdown" and source.lstrip().startswith("#"):
            section = source.lstrip().split("\n", 1)[0].lstrip("#").strip()
        if cell["cell_type"] != "code":
            continue
        seconds = cell_seconds(cell)
        total += seconds
        if seconds >= at_least:
            first = next(
                (line for line in source.splitlines() if line.strip() and not line.startswith(("from ", "import "))), ""
            )
            slow.append((seconds, section, first.strip()))
    return total, slow


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--per-class", type=int, default=20_000, help="synthetic images per class (default 20,000)")
    parser.add_argument("--data-dir", type=Path, default=PROJECT_ROOT / "build" / "bench-data")
    parser.add_argument("--long", type=float, default=5.0, help="report cells that took at least this many seconds")
    args = parser.parse_args()

    env = environment_with(**{DATA_DIR: str(args.data_dir), OFFLINE: "1"})
    print(f"generating {2 * args.per_class:,} synthetic images in {args.data_dir} ...", flush=True)
    generate = [sys.executable, "-m", "helpers", "data", "synthetic", "--per-class", str(args.per_class)]
    subprocess.run(generate + ["--overwrite"], cwd=PROJECT_ROOT, env=env, check=True)  # the notebooks reuse them
    start = time.perf_counter()
    status = subprocess.call([sys.executable, "-m", "helpers", "run"], cwd=PROJECT_ROOT, env=env)
    wall = time.perf_counter() - start

    print(f"\nwhere the time went ({2 * args.per_class:,} images; cells of {args.long:g} s or more):")
    in_notebooks = 0.0
    for notebook in notebooks():
        executed = executed_dir() / notebook.name
        if not executed.is_file():
            print(f"  {notebook.name:<30} not run")
            continue
        total, slow = long_cells(executed, args.long)
        in_notebooks += total
        print(f"  {notebook.name:<30} {total:7.1f} s")
        for seconds, section, line in sorted(slow, reverse=True):
            print(f"      {seconds:7.1f} s  {section[:40]:<40}  {line[:60]}")
    print(f"  {'outside the cells':<30} {wall - in_notebooks:7.1f} s  (data found, weights, kernels)")
    print(f"  {'all':<30} {wall:7.1f} s = {wall / 60:.1f} min" + ("" if status == 0 else f"  (run failed: {status})"))
    return status


if __name__ == "__main__":
    sys.exit(main())
