"""The commands that do the workbook's work, behind `python -m helpers` (helpers.cli): `run` every notebook, `data`,
`train` and `predict` (these two also as `crack-train` and `crack-predict`). No notebook teaches them."""

from __future__ import annotations

import argparse
import errno
import inspect
import json
import os
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict
from datetime import datetime
from pathlib import Path
from typing import NoReturn

import matplotlib
import matplotlib.pyplot as plt
import nbformat
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError

from helpers.analysis import accuracy_interval, compute_metrics
from helpers.cli import command
from helpers.data import SYNTHETIC_PER_CLASS, DataChoice, download_dataset, prepare_data, read_source, verify_dataset
from helpers.dataset import CLASS_NAMES, DatasetNotFoundError, list_class_files
from helpers.inference import classify_files, predict_dataset
from helpers.model import CheckpointMismatchError, WeightsChoice, WeightsUnavailableError, build_resnet18
from helpers.model import imagenet_weights_path, load_checkpoint, load_imagenet_state_dict, resolve_weights
from helpers.inference import train_capstone_head
from helpers.plots import plot_training_history
from helpers.plumbing import DownloadError, atomic_path, printable, write_json_atomically
from helpers.settings import ALLOW_RANDOM_WEIGHTS, QUICK, SettingsError, data_dir, default_checkpoint_path
from helpers.settings import environment_with, executed_dir, images_dir, pick_device, quick_mode, synthetic_dir
from helpers.synthetic_dataset import generate_dataset

LIMITS = {"epochs": 10_000, "batch_size": 100_000, "lr": 10.0}  # far beyond any useful run: a typo, not a plan


class Parser(argparse.ArgumentParser):
    """An ArgumentParser named as the command was called (`crack-predict`, `python -m helpers predict`);
    an error is one line, `error: ...`, and exit status 2."""

    def __init__(self, name: str, argv: Sequence[str] | None, **kwargs) -> None:
        prog = Path(sys.argv[0]).stem if argv is None else f"python -m helpers {name}"  # None: a console script
        super().__init__(prog=prog, formatter_class=argparse.RawDescriptionHelpFormatter, **kwargs)

    def error(self, message: str) -> NoReturn:
        print(f"error: {message}.", file=sys.stderr)
        raise SystemExit(2)


def unwritable_output(error: OSError) -> int:
    """The exit status when stdout cannot be written: 141 quietly when its reader went away (`| head`), else 1."""
    if isinstance(error, BrokenPipeError):
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # so that the flush at exit is silent too
        return 141  # 128 + SIGPIPE, what `cat` returns
    print(f"error: the output could not be written ({printable(error.strerror or error)}).", file=sys.stderr)
    return 1


@command
def data_main(argv: list[str] | None = None) -> int:
    """`python -m helpers data`: get, make and check the data from a terminal, for teachers preparing a classroom."""
    parser = argparse.ArgumentParser(prog="python -m helpers data", description=inspect.getdoc(data_main))
    commands = parser.add_subparsers(dest="command", required=True)
    url = {"help": "an http(s) address or a local zip, instead of the known addresses"}
    download = commands.add_parser("download", help="download, unpack and verify the real data set")
    download.add_argument("--url", **url)
    download.add_argument("--dest", type=Path, help="folder for the images (default: data/concrete_crack_images)")
    download.add_argument("--sha256", help="expected SHA-256 of the zip")
    synthetic = commands.add_parser("synthetic", help="generate synthetic crack images (works offline)")
    synthetic.add_argument("--per-class", type=int, default=SYNTHETIC_PER_CLASS)
    synthetic.add_argument("--seed", type=int, default=0)
    synthetic.add_argument("--dest", type=Path, help="default: data/synthetic_cracks")
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
            dest = generate_dataset(
                args.dest or synthetic_dir(False), args.per_class, args.seed, overwrite=args.overwrite
            )
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
    parser = Parser("predict", argv, description=inspect.getdoc(predict_main))
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
    except OSError as error:  # a reader that went away, a full disk
        return unwritable_output(error)
    for _, error in errors:
        print(f"error: {printable(error)}", file=sys.stderr)
    return 1 if errors else 0


def parse_train_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """The command line, with the capstone's settings as defaults; a bad value is one line and exit 2."""
    parser = Parser("train", argv, description=inspect.getdoc(train_main))
    parser.add_argument("--data", type=Path, metavar="DIR", help="Positive/ + Negative/ (default: notebook 01's)")
    parser.add_argument("--epochs", type=int, default=1, metavar="N", help="passes over the data (default: 1)")
    parser.add_argument("--batch-size", type=int, default=100, metavar="N", help="images per step (default: 100)")
    parser.add_argument("--lr", type=float, default=0.001, help="Adam's learning rate (default: 0.001)")
    parser.add_argument("--dedupe", action="store_true", help="keep byte-identical copies on one side of the split")
    parser.add_argument("--device", metavar="NAME", help="cpu, cuda, cuda:1, mps (default: the best there is)")
    parser.add_argument("--seed", type=int, default=0, metavar="N", help="random seed (default: 0)")
    parser.add_argument("--weights", default="imagenet", metavar="imagenet|random|PATH", help="(default: imagenet)")
    parser.add_argument("--out", type=Path, metavar="DIR", help=f"(default: {data_dir() / 'runs'}/<date-time>)")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    args = parser.parse_args(argv)
    for name, limit in LIMITS.items():  # NaN fails every comparison
        if not 0 < getattr(args, name) <= limit:
            parser.error(f"argument --{name.replace('_', '-')}: must be above 0 and at most {limit:,g}")
    if args.weights not in ("imagenet", "random"):
        if not Path(args.weights).expanduser().is_file():
            parser.error(f"argument --weights: no file at {args.weights} (use imagenet, random or a state dict's path)")
        args.weights = str(Path(args.weights).expanduser().resolve())
    try:
        args.device = pick_device(args.device)
        if args.data is not None:
            args.data = args.data.expanduser().resolve()
            if args.data.is_file():
                parser.error(f"argument --data: {args.data} is a file, not a folder of Negative/ and Positive/")
            for name in CLASS_NAMES:
                list_class_files(args.data, name)
    except (SettingsError, DatasetNotFoundError) as error:
        parser.error(f"argument --{'data' if isinstance(error, DatasetNotFoundError) else 'device'}: {error}")
    args.out = (args.out or data_dir() / "runs" / datetime.now().strftime("%Y%m%d-%H%M%S")).expanduser().resolve()
    existing = next(folder for folder in (args.out, *args.out.parents) if folder.exists())
    if not existing.is_dir():
        parser.error(f"argument --out: {existing} is a file, so {args.out} cannot be a folder for the results")
    if not os.access(existing, os.W_OK | os.X_OK):
        parser.error(f"argument --out: {existing} is not writable, choose another folder")
    return args


def train(args: argparse.Namespace) -> dict:
    """Train, evaluate, and write the checkpoint, the loss plot and metrics.json to args.out; returns the metrics."""
    start, progress, out = time.perf_counter(), not args.quiet, args.out
    if args.weights == "random":  # the weights before the data: no download for a run that cannot start
        weights = WeightsChoice(None, "random initialisation (NOT pretrained: --weights random)")
    elif args.weights == "imagenet":
        weights = resolve_weights(allow_random=False)  # downloads them if needed
    else:
        weights = WeightsChoice(args.weights)
        build_resnet18(weights=args.weights, progress=False)  # a file that is not ResNet18 weights fails here
    if args.data is None:
        choice = prepare_data(progress=progress)
    else:
        synthetic = read_source(args.data).get("source") == "synthetic"
        choice = DataChoice(args.data, "synthetic" if synthetic else "real", "given with --data.")
    print(f"data:    {choice.source}, {printable(choice.path)}: {printable(choice.reason)}")
    print(f"weights: {printable(weights.description)}\ndevice:  {args.device}\nout:     {printable(out)}", flush=True)
    settings = {name: getattr(args, name) for name in ("epochs", "lr", "batch_size", "seed", "dedupe")}
    trained = train_capstone_head(choice, weights, device=args.device, progress=progress, **settings)
    metrics = compute_metrics(predict_dataset(trained.model, trained.val_set, features=trained.val_features))
    low, high = metrics.interval
    print(f"validation accuracy {metrics.accuracy:.2%} (95% interval {low:.2%}-{high:.2%}) on {metrics.total:,} images")
    caveats = {"synthetic images": not choice.is_real, "a random backbone": weights.is_random}
    caveats = [what for what, applies in caveats.items() if applies]
    if caveats:
        print(f"This cannot be compared with the capstone's 99.44%: it was measured with {' and '.join(caveats)}.")
    files = {"checkpoint": out / "resnet18_cracks.pt", "loss_plot": out / "loss.png", "metrics": out / "metrics.json"}
    record = trained.metadata | {"accuracy": metrics.accuracy, "correct": metrics.correct, "interval_95": [low, high]}
    record |= {"comparable_with_capstone": not caveats, "dedupe": args.dedupe, "device": str(args.device)}
    record |= {"files": {name: str(path) for name, path in files.items()}}
    try:
        trained.save(files["checkpoint"])
        figure = plot_training_history(trained.history, title=f"Training the head ({choice.source} data)")
        with atomic_path(files["loss_plot"]) as temp:
            figure.savefig(temp, dpi=100)
        plt.close(figure)
        write_json_atomically(record | {"seconds": round(time.perf_counter() - start, 2)}, files["metrics"])
    except OSError as error:
        if error.errno not in (errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC)):
            raise
        raise OSError(f"the disk holding {out} is full: free some space, or choose another --out.") from None
    print(f"wrote {files['checkpoint']}, loss.png and metrics.json in {time.perf_counter() - start:.1f} s")
    return record


@command
def train_main(argv: Sequence[str] | None = None) -> int:
    """Train the capstone's model from a terminal as notebooks 01-04 do (ResNet18, ImageNet weights, frozen backbone,
    new Linear(512, 2) head, Adam): writes the checkpoint notebook 05 loads, loss.png and metrics.json. For example:

        python -m helpers train --data data/concrete_crack_images --epochs 3 --out data/runs/three
    """
    try:
        args = parse_train_args(argv)
        matplotlib.use("Agg")  # no window: the command only saves its figure
        train(args)
        if sys.stdout:
            sys.stdout.flush()
    except SystemExit as exit_:  # --help (0) and argument errors (2), already printed
        return exit_.code if isinstance(exit_.code, int) else 2
    except BrokenPipeError as error:  # `crack-train | head -1`
        return unwritable_output(error)
    except (OSError, RuntimeError, ValueError) as error:  # WeightsUnavailableError, DatasetNotFoundError among them
        print(f"error: {' '.join(printable(error).split()) or type(error).__name__}", file=sys.stderr)
        return 1
    return 0


def section_heading(cell: nbformat.NotebookNode) -> str | None:
    """The title of a markdown cell that starts a section ("## The training loop" -> "The training loop")."""
    first = cell.source.lstrip().split("\n", 1)[0]
    return first.lstrip("#").strip() if cell.cell_type == "markdown" and first.startswith("#") else None


def run_notebook(path: Path, kernel_env: dict[str, str], timeout: int = 3600) -> float:
    """Execute one notebook in a fresh `python3` kernel, naming each section as it starts; its seconds. The executed copy
    is written (atomically) when every cell ran or one failed: that one is named here, then its CellExecutionError raised
    again. An interrupted run (Ctrl+C, a dead kernel) leaves the previous copy as it was."""
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
    failure = None
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
