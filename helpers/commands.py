"""The commands behind `python -m helpers`: `run` every notebook, `data` and `predict`. No notebook teaches them."""

import argparse
import inspect
import json
import os
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import NoReturn

from helpers.analysis import accuracy_interval
from helpers.data import SYNTHETIC_PER_CLASS, download_dataset, prepare_data, verify_dataset
from helpers.inference import classify_files
from helpers.model import CheckpointMismatchError, WeightsUnavailableError
from helpers.model import imagenet_weights_path, load_checkpoint, load_imagenet_state_dict
from helpers.plumbing import DownloadError, atomic_path, printable
from helpers.settings import ALLOW_RANDOM_WEIGHTS, QUICK, command, default_checkpoint_path, environment_with
from helpers.settings import executed_dir, images_dir, quick_mode, synthetic_dir
from helpers.synthetic_dataset import generate_dataset

CELL_TIMEOUT = 3600  # seconds one cell may run before `run` calls it stuck (the feature pass on a CPU takes minutes)


class Parser(argparse.ArgumentParser):
    """An ArgumentParser whose error is one line, `error: ...`, and exit status 2."""

    def error(self, message: str) -> NoReturn:
        print(f"error: {message}.", file=sys.stderr)
        raise SystemExit(2)


@command
def data_main(argv: list[str] | None = None) -> int:
    """`python -m helpers data`: get, make and check the data from a terminal, for teachers preparing a classroom."""
    parser = Parser(prog="python -m helpers data", description=inspect.getdoc(data_main))
    commands = parser.add_subparsers(dest="command", required=True)
    url = {"help": "an http(s) address or a local zip, instead of the known addresses"}
    download = commands.add_parser("download", help="download, unpack and verify the real data set")
    download.add_argument("--url", **url)
    download.add_argument("--dest", type=Path, help="folder for the images (default: data/concrete_crack_images)")
    download.add_argument("--sha256", help="expected SHA-256 of the zip")
    synthetic = commands.add_parser("synthetic", help="generate synthetic crack images (works offline)")
    synthetic.add_argument("--per-class", type=int, default=SYNTHETIC_PER_CLASS)
    synthetic.add_argument("--seed", type=int, default=0)
    synthetic.add_argument("--dest", type=Path, default=synthetic_dir(False), help="default: %(default)s")
    synthetic.add_argument("--overwrite", action="store_true", help="replace a set made with other settings")
    verify = commands.add_parser("verify", help="check a data folder: class folders, counts, every image decodable")
    verify.add_argument("dir", type=Path)
    verify.add_argument("--no-decode", action="store_true", help="only count the files")
    prepare = commands.add_parser("prepare", help="real data if reachable, else synthetic (notebook 01)")
    prepare.add_argument("--url", **url)
    args = parser.parse_args(argv)
    try:
        if args.command == "download":
            report = download_dataset(args.dest, url=args.url, sha256=args.sha256)
        elif args.command == "synthetic":
            if args.per_class < 1:
                raise ValueError(f"--per-class must be at least 1, not {args.per_class}.")
            dest = generate_dataset(args.dest, args.per_class, args.seed, overwrite=args.overwrite)
            report = verify_dataset(dest, decode=False)
        elif args.command == "verify":
            report = verify_dataset(args.dir, decode=not args.no_decode)
        else:
            choice = prepare_data(url=args.url)
            print(choice)
            report = verify_dataset(choice.path, decode=False)
    except (DownloadError, ValueError, OSError) as error:
        print(f"error: {printable(error)}", file=sys.stderr)
        return 1
    print(report)
    return 0 if report.ok else 1


@command
def predict_main(argv: Sequence[str] | None = None) -> int:
    """Classify photos with a checkpoint the workbook saved: one line per photo, or --json. A photo that cannot be read,
    or that the model gives no numbers for, is an `error: ...` line on stderr after the others', and exit status 1."""
    parser = Parser(prog="python -m helpers predict", description=inspect.getdoc(predict_main))
    parser.add_argument("images", nargs="+", help="image files (227x227; other sizes are resized)")
    parser.add_argument("--checkpoint", help=f"a checkpoint the workbook saved (default: {default_checkpoint_path()})")
    parser.add_argument("--json", action="store_true", help="print a JSON list instead of one line per image")
    try:
        args = parser.parse_args(argv)
    except SystemExit as exit_:  # --help (0) and argument errors (2), already printed
        return exit_.code if isinstance(exit_.code, int) else 2
    if sys.stdout is None:  # started with stdout closed (`>&-`): the predictions would be lost
        print("error: stdout is closed, so the predictions cannot be printed.", file=sys.stderr)
        return 1
    errors: list[tuple[Path, Exception]] = []
    try:
        predictions = classify_files(args.images, args.checkpoint, errors=errors)
    except (OSError, CheckpointMismatchError) as error:
        print(f"error: {printable(error)}", file=sys.stderr)
        return 1
    try:
        if args.json:
            print(json.dumps([{**asdict(p), "path": str(p.path)} for p in predictions], indent=2))
        else:
            for p in predictions:
                print(f"{printable(p.path)}: {printable(p.label)} ({p.probability:.1%})")
        sys.stdout.flush()
    except BrokenPipeError:  # its reader went away (`| head`): quietly, with `cat`'s status 141 (128 + SIGPIPE)
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # so that the flush at exit is silent too
        return 141
    except OSError as error:  # a full disk
        print(f"error: the output could not be written ({printable(error.strerror or error)}).", file=sys.stderr)
        return 1
    for _, error in errors:
        print(f"error: {printable(error)}", file=sys.stderr)
    return 1 if errors else 0


def section_heading(cell) -> str | None:
    """The title of a notebook's markdown cell that starts a section ("## The training loop" -> "The training loop")."""
    first = cell.source.lstrip().split("\n", 1)[0]
    return first.lstrip("#").strip() if cell.cell_type == "markdown" and first.startswith("#") else None


def run_notebook(path: Path, kernel_env: dict[str, str]) -> float:
    """Execute a notebook in a fresh kernel, naming each section as it starts; its seconds. The executed copy is written
    when each cell ran or one failed (named here, then raised); Ctrl+C, a dead kernel or a timeout leave the old one."""
    import nbformat  # the runner's packages are the [lab] extra's: `data` and `predict` work without them
    from nbclient import NotebookClient
    from nbclient.exceptions import CellExecutionError

    notebook = nbformat.read(path, as_version=4)
    client = NotebookClient(notebook, timeout=CELL_TIMEOUT, kernel_name="python3", coalesce_streams=True)
    executed = executed_dir()
    executed.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    print(path.name, flush=True)
    failure = None
    with (
        open(executed / f"{path.stem}.kernel.log", "w", encoding="utf-8") as log,
        client.setup_kernel(stderr=log, env=kernel_env, cwd=path.parent),
    ):
        for index, cell in enumerate(notebook.cells):
            if section_heading(cell):
                print(f"  · {section_heading(cell)}", flush=True)
            try:
                client.execute_cell(cell, index)
            except CellExecutionError as error:
                failure = error
                print(f"FAILED  {path.name}, cell {index + 1} of {len(notebook.cells)}:\n{str(error)[-2000:]}")
                break
    client.set_widgets_metadata()  # the progress bars, as they ended, for JupyterLab to draw
    with atomic_path(executed / path.name) as temp:
        nbformat.write(notebook, temp)
    if failure:
        print(f"The executed copy in {executed}/ shows it in place.")
        raise failure
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
    if not (isinstance(n_val, int) and n_val > 0 and isinstance(accuracy, float)):
        return f"  model:   {path}"
    low, high = accuracy_interval(round(accuracy * n_val), n_val)
    caveat = "" if comparable else "; with stand-in data or weights it cannot be compared with the capstone's 99.44%"
    result = f"{accuracy:.2%} of {n_val:,} validation images ({low:.2%} to {high:.2%}){caveat}"
    return f"  model:   {path}\n  result:  {result}"


def run_all(paths: list[Path]) -> int:
    """Run `paths` in order (stopping at the first failure) and print the summary; 0 when every notebook ran, else 1."""
    from nbclient.exceptions import CellExecutionError, CellTimeoutError, DeadKernelError

    start, started_at = time.perf_counter(), time.time()
    choice = prepare_data()  # prints one plain sentence when it falls back to synthetic data
    weights, kernel_env = prepare_weights()
    print(choice)
    print(f"Mode: {f'quick ({QUICK}=1)' if quick_mode() else 'full'}; executed copies go to {executed_dir()}/\n")
    seconds, failed = {}, None
    for path in paths:
        try:
            seconds[path.name] = run_notebook(path, kernel_env)
        except (CellExecutionError, CellTimeoutError, DeadKernelError) as error:
            if isinstance(error, CellTimeoutError):  # run_notebook named no cell: one line here, no traceback
                print(f"FAILED  {path.name}: a cell ran over {CELL_TIMEOUT} s; open it in JupyterLab to see which.")
            elif isinstance(error, DeadKernelError):  # often killed for memory
                print(f"FAILED  {path.name}: its kernel died; close other programs, or run in quick mode ({QUICK}=1).")
            failed = path.name
            break
        print(f"ok      {path.name:<32} {seconds[path.name]:6.1f} s")
    figures = sorted(p.name for p in images_dir().glob("*.png") if p.stat().st_mtime >= started_at)
    print(f"\nSummary\n  data:    {choice.source}, {choice.path}\n  weights: {weights}")
    print(trained_model_summary(choice.is_real and weights.startswith("ImageNet")))
    print(f"  figures: {', '.join(figures) or 'none'} in {images_dir()}/")
    times = "".join(f", {name[:2]} {s:.0f} s" for name, s in seconds.items())
    stopped = f"; stopped at {failed}" if failed else ""
    print(f"  time:    {time.perf_counter() - start:.0f} s in all{times}{stopped}")
    return 1 if failed else 0
