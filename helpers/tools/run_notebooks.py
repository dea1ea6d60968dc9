"""Run every notebook in order, headless, each in a fresh kernel (`make run`).

Executed copies go to `build/executed/` (git-ignored), figures to `images/`. The data question
is settled first, so that an offline machine says so in the first lines of the output; a short
summary closes the run: which data, how many images, which weights, how long it took.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import nbformat
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError

from helpers.data import prepare_data, read_source
from helpers.verify import verify_dataset
from helpers.analysis import accuracy_interval
from helpers.model import (
    CheckpointMismatchError, WeightsUnavailableError, imagenet_weights_path, load_checkpoint, load_imagenet_state_dict,
)
from helpers.settings import (
    ALLOW_RANDOM_WEIGHTS, PLAIN_PROGRESS, PROJECT_ROOT, QUICK, default_checkpoint_path, environment_with, images_dir,
    quick_mode,
)

EXECUTED_DIR = PROJECT_ROOT / "build" / "executed"


class EchoingClient(NotebookClient):
    """A NotebookClient that also shows, on this terminal, what the kernel writes to stderr: the text
    progress bars of long cells (features, training, hashing) and warnings, as they happen."""

    def output(self, outs, msg, display_id, cell_index):
        content = msg.get("content", {})
        if msg.get("msg_type") == "stream" and content.get("name") == "stderr":
            sys.stderr.write(content.get("text", ""))
            sys.stderr.flush()
        return super().output(outs, msg, display_id, cell_index)


def run_notebook(path: Path, kernel_env: dict[str, str] | None = None, timeout: int = 3600) -> float:
    """Execute one notebook in a fresh `python3` kernel, cell by cell, naming each section; return seconds."""
    notebook = nbformat.read(path, as_version=4)
    client = EchoingClient(notebook, timeout=timeout, kernel_name="python3", coalesce_streams=True,
                           resources={"metadata": {"path": str(path.parent)}})
    start = time.perf_counter()
    EXECUTED_DIR.mkdir(parents=True, exist_ok=True)
    log_path = EXECUTED_DIR / f"{path.stem}.kernel.log"  # the kernel's own chatter, kept out of the way
    try:
        with open(log_path, "w", encoding="utf-8") as kernel_log, \
                client.setup_kernel(stderr=kernel_log, env=kernel_env or kernel_environment()):
            print(path.name, flush=True)
            for index, cell in enumerate(notebook.cells):
                heading = section_heading(cell)
                if heading:  # say which section of the lesson is running
                    print(f"  · {heading}", flush=True)
                client.execute_cell(cell, index)
    finally:
        nbformat.write(notebook, EXECUTED_DIR / path.name)
    return time.perf_counter() - start


def section_heading(cell) -> str | None:
    """The title of a markdown cell that starts a section ("## The training loop" -> "The training loop")."""
    if cell.cell_type != "markdown":
        return None
    first = cell.source.lstrip().split("\n", 1)[0]
    return first.lstrip("#").strip() if first.startswith("#") else None


def prepare_weights() -> tuple[str, dict[str, str]]:
    """(what the run uses, the kernels' environment): the ImageNet weights, or a random backbone said in one sentence."""
    try:
        load_imagenet_state_dict()
        return f"ImageNet (torchvision IMAGENET1K_V1) from {imagenet_weights_path()}", kernel_environment()
    except WeightsUnavailableError:
        print("The ImageNet weights for ResNet18 cannot be had on this machine, so this run trains on a "
              "randomly initialised backbone and its accuracies mean little (see notebook 03 for how to get them).")
        # the notebooks' kernels may use a random backbone, and say so loudly
        return (f"random initialisation, NOT pretrained (no file at {imagenet_weights_path()})",
                kernel_environment(**{ALLOW_RANDOM_WEIGHTS: "1"}))


def kernel_environment(**overrides: str) -> dict[str, str]:
    """The notebooks' kernels' environment: plain-text progress bars (kept as they ended in the executed
    copies, echoed to this terminal), redrawn at most once a second."""
    return environment_with(**{PLAIN_PROGRESS: "1", "TQDM_MININTERVAL": "1"}, **overrides)


def run_all(paths: list[Path]) -> int:
    """Run `paths` in order and print the summary; 0 when every notebook ran, else 1."""
    start = time.perf_counter()
    run_started = time.time()
    choice = prepare_data()  # prints one plain sentence when it falls back to synthetic data
    weights, kernel_env = prepare_weights()  # the same for the pretrained weights
    print(choice)
    print(f"Mode: {f'quick ({QUICK}=1)' if quick_mode() else 'full'}; "
          f"executed copies go to {EXECUTED_DIR.relative_to(PROJECT_ROOT)}/\n")

    failed, times = None, {}
    for path in paths:
        try:
            times[path.name] = run_notebook(path, kernel_env)
        except CellExecutionError as exc:
            failed = path
            print(f"FAILED  {path.name}: a cell raised an error; the executed copy in "
                  f"{EXECUTED_DIR.relative_to(PROJECT_ROOT)}/{path.name} shows where.\n{str(exc)[-2000:]}")
            break
        print(f"ok      {path.name:<32} {times[path.name]:6.1f} s")

    report = verify_dataset(choice.path, decode=False, progress=False)
    source = read_source(choice.path)
    figures = sorted(p.name for p in images_dir().glob("*.png") if p.stat().st_mtime >= run_started)
    print("\nSummary")
    print(f"  data:    {choice.source}" + (f" (seed {source.get('seed')})" if choice.source == "synthetic" else "")
          + f", {report.total:,} images ({', '.join(f'{n:,} {c}' for c, n in report.counts.items())}) in {choice.path}")
    print(f"  weights: {weights}")
    print(trained_model_summary(choice.is_real and weights.startswith("ImageNet")))
    print(f"  figures: {', '.join(figures) if figures else 'none'} in {images_dir().relative_to(PROJECT_ROOT)}/")
    ran = len(times) + (failed is not None)
    print(f"  time:    {time.perf_counter() - start:.0f} s for {ran} of {len(paths)} notebook(s)"
          + (f"; stopped at {failed.name}" if failed else "") + ": "
          + ", ".join(f"{name[:2]} {seconds:.0f} s" for name, seconds in times.items()))
    return 1 if failed else 0


def trained_model_summary(comparable: bool) -> str:
    """Lines on the checkpoint notebook 04 saved: its split, validation accuracy with its interval, its path."""
    path = default_checkpoint_path()
    try:
        meta = load_checkpoint(path).metadata
    except (FileNotFoundError, CheckpointMismatchError) as error:
        return f"  model:   none saved ({error})"
    n_val, accuracy = meta.get("n_val"), meta.get("val_accuracy")
    lines = [f"  split:   {meta.get('n_train', 0):,} training / {n_val or 0:,} validation images, {meta.get('split')}"]
    if isinstance(n_val, int) and n_val > 0 and isinstance(accuracy, float):
        low, high = accuracy_interval(round(accuracy * n_val), n_val)
        lines.append(f"  result:  validation accuracy {accuracy:.2%} (95% interval {low:.2%} to {high:.2%}), "
                     f"{meta.get('training', {}).get('epochs', '?')} epoch(s)"
                     + ("" if comparable else "; with stand-in data or weights it cannot be compared with the "
                                              "capstone's 99.44%"))
    lines.append(f"  model:   {path}")
    return "\n".join(lines)
