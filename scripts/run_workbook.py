"""Run every notebook in order, headless, each in a fresh kernel (`make run`).

Executed copies go to `build/executed/` (git-ignored), figures to `images/`. The data question
is settled first, so that an offline machine says so in the first lines of the output; a short
summary closes the run: which data, how many images, which weights, how long it took.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import nbformat
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError
from tqdm.auto import tqdm

from helpers.data import prepare_data, read_source, verify_dataset
from helpers.model import RANDOM_WEIGHTS_ENV, WeightsUnavailableError, imagenet_weights_path, load_imagenet_state_dict
from helpers.workbook import IMAGES_DIR, PROJECT_ROOT, quick_mode

EXECUTED_DIR = PROJECT_ROOT / "build" / "executed"


def run_notebook(path: Path, timeout: int = 3600) -> float:
    """Execute one notebook in a fresh `python3` kernel, cell by cell with a progress bar; return seconds."""
    notebook = nbformat.read(path, as_version=4)
    client = NotebookClient(notebook, timeout=timeout, kernel_name="python3",
                            resources={"metadata": {"path": str(path.parent)}})
    start = time.perf_counter()
    EXECUTED_DIR.mkdir(parents=True, exist_ok=True)
    log_path = EXECUTED_DIR / f"{path.stem}.kernel.log"  # the kernel's own chatter, kept out of the way
    try:
        with open(log_path, "w", encoding="utf-8") as kernel_log, client.setup_kernel(stderr=kernel_log):
            for index, cell in enumerate(tqdm(notebook.cells, desc=path.name, unit="cell", leave=False)):
                client.execute_cell(cell, index)
    finally:
        nbformat.write(notebook, EXECUTED_DIR / path.name)
    return time.perf_counter() - start


def prepare_weights() -> str:
    """Fetch the ImageNet weights now, or allow the notebooks a random backbone and say so in one sentence."""
    try:
        load_imagenet_state_dict()
        return f"ImageNet (torchvision IMAGENET1K_V1) from {imagenet_weights_path()}"
    except WeightsUnavailableError:
        print("The ImageNet weights for ResNet18 cannot be had on this machine, so this run trains on a "
              "randomly initialised backbone and its accuracies mean little (see notebook 03 for how to get them).")
        os.environ[RANDOM_WEIGHTS_ENV] = "1"  # the notebooks' kernels inherit it, and say so loudly
        return f"random initialisation, NOT pretrained (no file at {imagenet_weights_path()})"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("notebooks", nargs="*", type=Path, help="default: notebooks/NN_*.ipynb in order")
    args = parser.parse_args(argv)
    notebooks = args.notebooks or sorted((PROJECT_ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
    start = time.perf_counter()
    run_started = time.time()

    choice = prepare_data()  # prints one plain sentence when it falls back to synthetic data
    weights = prepare_weights()  # the same for the pretrained weights
    print(choice)
    print(f"Mode: {'quick (WORKBOOK_QUICK=1)' if quick_mode() else 'full'}; "
          f"executed copies go to {EXECUTED_DIR.relative_to(PROJECT_ROOT)}/\n")

    failed = None
    for path in notebooks:
        try:
            seconds = run_notebook(path)
        except CellExecutionError as exc:
            failed = path
            print(f"FAILED  {path.name}: a cell raised an error; the executed copy in "
                  f"{EXECUTED_DIR.relative_to(PROJECT_ROOT)}/{path.name} shows where.\n{str(exc)[-2000:]}")
            break
        print(f"ok      {path.name:<32} {seconds:6.1f} s")

    report = verify_dataset(choice.path, decode=False, progress=False)
    source = read_source(choice.path)
    figures = sorted(p.name for p in IMAGES_DIR.glob("*.png") if p.stat().st_mtime >= run_started)
    print("\nSummary")
    print(f"  data:    {choice.source}" + (f" (seed {source.get('seed')})" if choice.source == "synthetic" else "")
          + f", {report.total:,} images ({', '.join(f'{n:,} {c}' for c, n in report.counts.items())}) in {choice.path}")
    print(f"  weights: {weights}")
    print(f"  figures: {', '.join(figures) if figures else 'none'} in {IMAGES_DIR.relative_to(PROJECT_ROOT)}/")
    print(f"  time:    {time.perf_counter() - start:.0f} s for {len(notebooks)} notebook(s)"
          + (f"; stopped at {failed.name}" if failed else ""))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
