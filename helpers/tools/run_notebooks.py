"""Run every notebook in order, headless, each in a fresh kernel (`make run`).

Executed copies go to `build/executed/` (git-ignored), figures to `images/` (in a class on a
shared hub, WORKBOOK_DATASET set, both go under the learner's WORKBOOK_DATA_DIR). The data question
is settled first, so that an offline machine says so in the first lines of the output; a short
summary closes the run: which data, how many images, which weights, how long each notebook took
and how much memory its kernel needed at most (its peak RSS, which sizes a class's hub).
"""

from __future__ import annotations

import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import nbformat
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError

from helpers.data import prepare_data, read_source, verify_dataset
from helpers.plumbing.files import atomic_path
from helpers.analysis import accuracy_interval
from helpers.model import (
    CheckpointMismatchError,
    WeightsUnavailableError,
    imagenet_weights_path,
    load_checkpoint,
    load_imagenet_state_dict,
)
from helpers.settings import (
    ALLOW_RANDOM_WEIGHTS,
    PLAIN_PROGRESS,
    PROJECT_ROOT,
    QUICK,
    default_checkpoint_path,
    environment_with,
    executed_dir,
    images_dir,
    quick_mode,
)

EXECUTED_DIR = PROJECT_ROOT / "build" / "executed"  # outside a class; helpers.settings.executed_dir() says where
PROC = Path("/proc")  # Linux's view of the processes: the kernels' memory is read there
SAMPLE_EVERY_S = 0.5  # how often the loader workers' memory is sampled


@dataclass(frozen=True)
class NotebookRun:
    """How one notebook ran: its seconds and its kernel's peak memory (None where it cannot be measured).

    peak_rss: the kernel process's high-water mark of resident memory (VmHWM, exact);
    workers_peak: the largest total, sampled every SAMPLE_EVERY_S, of the memory of the processes
    the kernel started (DataLoader workers), each counted by its proportional share (PSS) so
    that pages they share with the kernel are not counted twice.
    """

    seconds: float
    peak_rss: int | None = None
    workers_peak: int | None = None

    def memory(self) -> str:
        """ "peak RSS 1.2 GB (+0.3 GB in loader workers)", or "peak RSS not measured" (not Linux)."""
        if self.peak_rss is None:
            return "peak RSS not measured"
        workers = f" (+{gigabytes(self.workers_peak)} in loader workers)" if self.workers_peak else ""
        return f"peak RSS {gigabytes(self.peak_rss)}{workers}"


def gigabytes(count: int) -> str:
    """Bytes as gigabytes with two decimals: 1.23 GB."""
    return f"{count / 1e9:.2f} GB"


def _status_bytes(pid: int, field: str) -> int | None:
    """A memory field of /proc/<pid>/status (VmHWM, VmRSS) in bytes; None when it cannot be read."""
    try:
        for line in (PROC / str(pid) / "status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024  # the kernel reports kB
    except (OSError, ValueError, IndexError):
        return None
    return None


def _proportional_bytes(pid: int) -> int:
    """The process's proportional set size (PSS) from smaps_rollup, else its RSS; 0 when it is gone."""
    try:
        for line in (PROC / str(pid) / "smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return _status_bytes(pid, "VmRSS") or 0


def _descendants(pid: int) -> list[int]:
    """The processes below `pid` (its children, theirs, ...), from each process's parent in /proc/<pid>/stat."""
    parents: dict[int, list[int]] = {}
    for entry in PROC.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            parent = int(stat[stat.rindex(")") + 2 :].split()[1])  # after "pid (name) state"
        except (OSError, ValueError, IndexError):
            continue
        parents.setdefault(parent, []).append(int(entry.name))
    found, todo = [], [pid]
    while todo:
        children = parents.get(todo.pop(), [])
        found += children
        todo += children
    return found


class MemoryWatch:
    """Watch a kernel's memory while its notebook runs: its own peak at the end, its workers' by sampling.

    Only on Linux (/proc); elsewhere every figure is None and the summary says "not measured".
    """

    def __init__(self, pid: int | None) -> None:
        self.pid = pid if pid is not None and (PROC / str(pid) / "status").is_file() else None
        self.workers_peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, name="memory-watch", daemon=True)

    def __enter__(self) -> MemoryWatch:
        if self.pid is not None:
            self._thread.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()

    def _sample(self) -> None:
        while not self._stop.wait(SAMPLE_EVERY_S):
            try:
                total = sum(_proportional_bytes(child) for child in _descendants(self.pid))
            except OSError:
                continue
            self.workers_peak = max(self.workers_peak, total)

    def peak_rss(self) -> int | None:
        """The kernel's VmHWM now (read it before the kernel shuts down); None off Linux."""
        return _status_bytes(self.pid, "VmHWM") if self.pid is not None else None


class EchoingClient(NotebookClient):
    """A NotebookClient that also shows, on this terminal, what the kernel writes to stderr: the text
    progress bars of long cells (features, training, hashing) and warnings, as they happen."""

    def output(self, outs, msg, display_id, cell_index):
        content = msg.get("content", {})
        if msg.get("msg_type") == "stream" and content.get("name") == "stderr":
            sys.stderr.write(content.get("text", ""))
            sys.stderr.flush()
        return super().output(outs, msg, display_id, cell_index)


def run_notebook(path: Path, kernel_env: dict[str, str] | None = None, timeout: int = 3600) -> NotebookRun:
    """Execute one notebook in a fresh `python3` kernel, cell by cell, naming each section; its seconds and memory."""
    notebook = nbformat.read(path, as_version=4)
    client = EchoingClient(
        notebook,
        timeout=timeout,
        kernel_name="python3",
        coalesce_streams=True,
        resources={"metadata": {"path": str(path.parent)}},
    )
    start = time.perf_counter()
    executed = executed_dir()
    executed.mkdir(parents=True, exist_ok=True)
    log_path = executed / f"{path.stem}.kernel.log"  # the kernel's own chatter, kept out of the way
    peak_rss, workers_peak = None, None
    try:
        with (
            open(log_path, "w", encoding="utf-8") as kernel_log,
            client.setup_kernel(stderr=kernel_log, env=kernel_env or kernel_environment()),
            MemoryWatch(kernel_pid(client)) as watch,
        ):
            print(path.name, flush=True)
            try:
                for index, cell in enumerate(notebook.cells):
                    heading = section_heading(cell)
                    if heading:  # say which section of the lesson is running
                        print(f"  · {heading}", flush=True)
                    client.execute_cell(cell, index)
            finally:  # while the kernel still runs
                peak_rss, workers_peak = watch.peak_rss(), watch.workers_peak or None
    finally:
        with atomic_path(executed / path.name) as temp:
            nbformat.write(notebook, temp)
    return NotebookRun(time.perf_counter() - start, peak_rss, workers_peak)


def kernel_pid(client: NotebookClient) -> int | None:
    """The process id of the client's kernel (a local kernel started by jupyter_client), or None."""
    provisioner = getattr(getattr(client, "km", None), "provisioner", None)
    pid = getattr(provisioner, "pid", None)
    return pid if isinstance(pid, int) and pid > 0 else None


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
        print(
            "The ImageNet weights for ResNet18 cannot be had on this machine, so this run trains on a "
            "randomly initialised backbone and its accuracies mean little (see notebook 03 for how to get them)."
        )
        # the notebooks' kernels may use a random backbone, and say so loudly
        return (
            f"random initialisation, NOT pretrained (no file at {imagenet_weights_path()})",
            kernel_environment(**{ALLOW_RANDOM_WEIGHTS: "1"}),
        )


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
    prepared = time.perf_counter() - start  # finding or generating the data, the weights
    print(choice)
    print(f"Mode: {f'quick ({QUICK}=1)' if quick_mode() else 'full'}; executed copies go to {shown(executed_dir())}/\n")

    failed, runs = None, {}
    for path in paths:
        try:
            runs[path.name] = run_notebook(path, kernel_env)
        except CellExecutionError as exc:
            failed = path
            print(
                f"FAILED  {path.name}: a cell raised an error; the executed copy in "
                f"{shown(executed_dir())}/{path.name} shows where.\n{str(exc)[-2000:]}"
            )
            break
        print(f"ok      {path.name:<32} {runs[path.name].seconds:6.1f} s, {runs[path.name].memory()}")

    report = verify_dataset(choice.path, decode=False, progress=False)
    source = read_source(choice.path)
    figures = sorted(p.name for p in images_dir().glob("*.png") if p.stat().st_mtime >= run_started)
    print("\nSummary")
    print(
        f"  data:    {choice.source}"
        + (f" (seed {source.get('seed')})" if choice.source == "synthetic" else "")
        + f", {report.total:,} images ({', '.join(f'{n:,} {c}' for c, n in report.counts.items())}) in {choice.path}"
    )
    print(f"  weights: {weights}")
    print(trained_model_summary(choice.is_real and weights.startswith("ImageNet")))
    print(f"  figures: {', '.join(figures) if figures else 'none'} in {shown(images_dir())}/")
    ran = len(runs) + (failed is not None)
    print(
        f"  time:    {time.perf_counter() - start:.0f} s in all: {prepared:.0f} s preparing the data and the weights, "
        f"then {sum(run.seconds for run in runs.values()):.0f} s for {ran} of {len(paths)} notebook(s)"
        + (f"; stopped at {failed.name}" if failed else "")
        + ": "
        + ", ".join(f"{name[:2]} {run.seconds:.0f} s" for name, run in runs.items())
    )
    print(f"  memory:  {memory_summary(runs)}")
    return 1 if failed else 0


def memory_summary(runs: dict[str, NotebookRun]) -> str:
    """Each notebook's kernel peak RSS, e.g. "01 0.52 GB, 02 0.61 GB (+0.20 GB in loader workers)"."""
    if not runs:
        return "no notebook ran"
    if all(run.peak_rss is None for run in runs.values()):
        return "peak RSS not measured (it is read from /proc, on Linux only)"
    parts = []
    for name, run in runs.items():
        workers = f" (+{gigabytes(run.workers_peak)} in loader workers)" if run.workers_peak else ""
        parts.append(
            f"{name[:2]} {gigabytes(run.peak_rss)}{workers}" if run.peak_rss is not None else f"{name[:2]} not measured"
        )
    return "peak RSS of each kernel: " + ", ".join(parts)


def shown(path: Path) -> str:
    """`path` relative to the project when it lies inside it (build/executed), else in full."""
    try:
        return str(path.relative_to(PROJECT_ROOT))
    except ValueError:
        return str(path)


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
        lines.append(
            f"  result:  validation accuracy {accuracy:.2%} (95% interval {low:.2%} to {high:.2%}), "
            f"{meta.get('training', {}).get('epochs', '?')} epoch(s)"
            + ("" if comparable else "; with stand-in data or weights it cannot be compared with the capstone's 99.44%")
        )
    lines.append(f"  model:   {path}")
    return "\n".join(lines)
