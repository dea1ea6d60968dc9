"""`python -m helpers run`: every notebook in order, headless, each in a fresh kernel (nbclient), then a summary.

The data and the weights are settled first, so an offline machine says so in the first lines.
Executed copies go to build/executed/ (in a class, under WORKBOOK_DATA_DIR), figures to images/.
"""

from __future__ import annotations

import time
from pathlib import Path

import nbformat
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError

from helpers.analysis import accuracy_interval
from helpers.data import prepare_data
from helpers.model import (
    CheckpointMismatchError,
    WeightsUnavailableError,
    imagenet_weights_path,
    load_checkpoint,
    load_imagenet_state_dict,
)
from helpers.plumbing import atomic_path
from helpers.settings import ALLOW_RANDOM_WEIGHTS, QUICK, default_checkpoint_path, environment_with, executed_dir
from helpers.settings import images_dir, quick_mode


def section_heading(cell: nbformat.NotebookNode) -> str | None:
    """The title of a markdown cell that starts a section ("## The training loop" -> "The training loop")."""
    first = cell.source.lstrip().split("\n", 1)[0]
    return first.lstrip("#").strip() if cell.cell_type == "markdown" and first.startswith("#") else None


def run_notebook(path: Path, kernel_env: dict[str, str], timeout: int = 3600) -> float:
    """Execute one notebook in a fresh `python3` kernel, naming each section as it starts; its seconds.

    A failing cell is named here, then its CellExecutionError raised again; the executed copy is written
    (atomically) either way.
    """
    notebook = nbformat.read(path, as_version=4)
    client = NotebookClient(
        notebook,
        timeout=timeout,
        kernel_name="python3",
        coalesce_streams=True,
        resources={"metadata": {"path": str(path.parent)}},
    )
    executed = executed_dir()
    executed.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    print(path.name, flush=True)
    try:
        with (
            open(executed / f"{path.stem}.kernel.log", "w", encoding="utf-8") as log,
            client.setup_kernel(stderr=log, env=kernel_env),
        ):
            for index, cell in enumerate(notebook.cells):
                if section_heading(cell):
                    print(f"  · {section_heading(cell)}", flush=True)
                try:
                    client.execute_cell(cell, index)
                except CellExecutionError as error:
                    print(f"FAILED  {path.name}, cell {index + 1} of {len(notebook.cells)}:\n{str(error)[-2000:]}")
                    print(f"The executed copy in {executed}/ shows it in place.")
                    raise
    finally:
        client.set_widgets_metadata()  # the progress bars, as they ended, for JupyterLab to draw
        with atomic_path(executed / path.name) as temp:
            nbformat.write(notebook, temp)
    return time.perf_counter() - start


def prepare_weights() -> tuple[str, dict[str, str]]:
    """(what the run uses, the kernels' environment): the ImageNet weights, or a random backbone said in one sentence."""
    try:
        load_imagenet_state_dict()
        return f"ImageNet (torchvision IMAGENET1K_V1) from {imagenet_weights_path()}", environment_with()
    except WeightsUnavailableError:
        print(
            "The ImageNet weights for ResNet18 cannot be had on this machine, so this run trains on a randomly "
            "initialised backbone and its accuracies mean little (see notebook 03 for how to get them)."
        )
        return "random initialisation, NOT pretrained", environment_with(**{ALLOW_RANDOM_WEIGHTS: "1"})


def trained_model_summary(comparable: bool) -> str:
    """The checkpoint notebook 04 saved: its validation accuracy with a 95% interval, and its path."""
    path = default_checkpoint_path()
    try:
        meta = load_checkpoint(path).metadata
    except (FileNotFoundError, CheckpointMismatchError) as error:
        return f"  model:   none saved ({error})"
    n_val, accuracy = meta.get("n_val"), meta.get("val_accuracy")
    if isinstance(n_val, int) and n_val > 0 and isinstance(accuracy, float):
        low, high = accuracy_interval(round(accuracy * n_val), n_val)
        caveat = (
            "" if comparable else "; with stand-in data or weights it cannot be compared with the capstone's 99.44%"
        )
        return f"  model:   {path}\n  result:  {accuracy:.2%} of {n_val:,} validation images ({low:.2%} to {high:.2%}){caveat}"
    return f"  model:   {path}"


def run_all(paths: list[Path]) -> int:
    """Run `paths` in order (stopping at the first failure) and print the summary; 0 when every notebook ran, else 1."""
    start, started_at = time.perf_counter(), time.time()
    choice = prepare_data()  # prints one plain sentence when it falls back to synthetic data
    weights, kernel_env = prepare_weights()
    print(choice)
    print(f"Mode: {f'quick ({QUICK}=1)' if quick_mode() else 'full'}; executed copies go to {executed_dir()}/\n")
    seconds, failed = {}, None
    for path in paths:
        try:
            seconds[path.name] = run_notebook(path, kernel_env)
        except CellExecutionError:
            failed = path.name
            break
        print(f"ok      {path.name:<32} {seconds[path.name]:6.1f} s")

    figures = sorted(p.name for p in images_dir().glob("*.png") if p.stat().st_mtime >= started_at)
    print(f"\nSummary\n  data:    {choice.source}, {choice.path}\n  weights: {weights}")
    print(trained_model_summary(choice.is_real and weights.startswith("ImageNet")))
    print(f"  figures: {', '.join(figures) or 'none'} in {images_dir()}/")
    times = "".join(f", {name[:2]} {s:.0f} s" for name, s in seconds.items())
    print(
        f"  time:    {time.perf_counter() - start:.0f} s in all{times}" + (f"; stopped at {failed}" if failed else "")
    )
    return 1 if failed else 0
