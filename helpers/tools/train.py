"""Train the capstone's model from a terminal: no notebooks (the seed project's `python train_model.py`).

The capstone's method, as notebooks 01-04 teach it: ResNet18 with ImageNet weights, a frozen
backbone, a new Linear(512, 2) head, Adam (lr 0.001, batches of 100, 1 epoch), and the
validation accuracy with its 95% interval. It writes the checkpoint notebook 05 loads
(resnet18_cracks.pt), the loss plot (loss.png) and every number of the run (metrics.json).

    python -m helpers train                                 # the data notebook 01 would find or fetch
    python -m helpers train --data data/concrete_crack_images --epochs 3 --out data/runs/three
    python -m helpers train --data my_photos --dedupe --device cpu --quiet
    python -m helpers train --weights random                # no ImageNet weights: accuracies mean little
    crack-train --help                                      # the same, once `pip install -e .` is done
"""

from __future__ import annotations

import argparse
import contextlib
import math
import os
import sys
import time
from collections.abc import Callable, Sequence
from datetime import datetime
from pathlib import Path
from typing import NoReturn

import matplotlib
import matplotlib.pyplot as plt

from helpers.analysis import compute_metrics
from helpers.inference import predict_dataset
from helpers.data import DataChoice, prepare_data, read_source
from helpers.dataset import CLASS_NAMES, DatasetNotFoundError, list_class_files
from helpers.plumbing.files import atomic_path, write_json_atomically
from helpers.model import (
    WeightsChoice,
    WeightsUnavailableError,
    build_resnet18,
    imagenet_weights_path,
    resolve_weights,
)
from helpers.pipeline import save_trained_head, train_capstone_head
from helpers.plumbing.text import printable
from helpers.plots import plot_training_history
from helpers.settings import SettingsError, data_dir, pick_device
from helpers.tools.guard import command

CAPSTONE_ACCURACY = "99.44%"
CHECKPOINT_NAME, PLOT_NAME, METRICS_NAME = "resnet18_cracks.pt", "loss.png", "metrics.json"
MAX_EPOCHS, MAX_BATCH_SIZE, MAX_LR = 10_000, 100_000, 10.0  # far beyond any useful run: a typo, not a plan
RUNTIME_ERRORS = (SettingsError, WeightsUnavailableError, DatasetNotFoundError, OSError, RuntimeError, ValueError)


class _Parser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are one line, `error: ...`, with exit status 2."""

    def error(self, message: str) -> NoReturn:
        print(f"error: {message}.", file=sys.stderr)
        raise SystemExit(2)


def _between(minimum: int, maximum: int) -> Callable[[str], int]:
    """An argparse type: a whole number from `minimum` to `maximum`."""

    def check(text: str) -> int:
        value = int(text)  # a ValueError becomes argparse's "invalid ... value"
        if not minimum <= value <= maximum:
            raise argparse.ArgumentTypeError(f"must be from {minimum} to {maximum:,}, not {text[:30]}")
        return value

    check.__name__ = "whole number"
    return check


def _learning_rate(text: str) -> float:
    """An argparse type: a finite number above 0 and at most MAX_LR."""
    value = float(text)
    if not (math.isfinite(value) and 0 < value <= MAX_LR):
        raise argparse.ArgumentTypeError(f"must be a number above 0 and at most {MAX_LR:g}, not {text}")
    return value


def _weights(text: str) -> str:
    """An argparse type: imagenet, random, or the path of a file that exists."""
    if text in ("imagenet", "random"):
        return text
    if not Path(text).expanduser().is_file():
        raise argparse.ArgumentTypeError(f"no weights file at {text} (use imagenet, random or a state dict's path)")
    return str(Path(text).expanduser().resolve())


def _device(text: str) -> str:
    """An argparse type: a device this machine has (helpers.settings.pick_device)."""
    try:
        return str(pick_device(text))
    except SettingsError as error:
        raise argparse.ArgumentTypeError(str(error).rstrip(".")) from None


def _data_folder(text: str) -> Path:
    """An argparse type: a folder that holds Negative/ and Positive/ folders of images."""
    path = Path(text).expanduser().resolve()
    try:
        for name in CLASS_NAMES:
            list_class_files(path, name)
    except DatasetNotFoundError:
        if path.exists() and not path.is_dir():
            raise argparse.ArgumentTypeError(
                f"{path} is a file, not a folder of Negative/ and Positive/ images"
            ) from None
        raise argparse.ArgumentTypeError(
            f"{path} does not exist"
            if not path.is_dir()
            else f"{path} must hold Negative/ and Positive/ folders of images"
        ) from None
    return path


def _out_folder(text: str) -> Path:
    """An argparse type: a folder that is, or can be made, writable (checked before any work)."""
    path = Path(text).expanduser().resolve()
    existing = next(folder for folder in (path, *path.parents) if folder.exists())
    if not existing.is_dir():
        raise argparse.ArgumentTypeError(f"{existing} is a file, so {path} cannot be a folder for the results")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise argparse.ArgumentTypeError(f"{existing} is not writable: choose another --out")
    return path


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """The command line, with the capstone's settings as defaults."""
    parser = _Parser(
        prog="python -m helpers train",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description=__doc__.split("\n\n")[0],
        epilog="\n\n".join(__doc__.split("\n\n")[1:]),
    )
    parser.add_argument(
        "--data",
        type=_data_folder,
        metavar="DIR",
        help="a folder with Positive/ and Negative/ (default: what notebook 01 would find or fetch)",
    )
    parser.add_argument(
        "--epochs",
        type=_between(1, MAX_EPOCHS),
        default=1,
        metavar="N",
        help="passes over the training set (default: 1)",
    )
    parser.add_argument(
        "--batch-size",
        type=_between(1, MAX_BATCH_SIZE),
        default=100,
        metavar="N",
        help="images per step (default: 100)",
    )
    parser.add_argument("--lr", type=_learning_rate, default=0.001, help="Adam's learning rate (default: 0.001)")
    parser.add_argument(
        "--dedupe",
        action="store_true",
        help="keep byte-identical copies on one side of the split (default: the capstone's split)",
    )
    parser.add_argument(
        "--device", type=_device, metavar="NAME", help="cpu, cuda, cuda:1, mps (default: the best there is)"
    )
    parser.add_argument("--seed", type=int, default=0, metavar="N", help="random seed (default: 0)")
    parser.add_argument(
        "--weights",
        type=_weights,
        default="imagenet",
        metavar="imagenet|random|PATH",
        help="the backbone's weights (default: imagenet); random only when you ask for it",
    )
    parser.add_argument(
        "--out",
        type=_out_folder,
        metavar="DIR",
        help=f"where the results go (default: {data_dir() / 'runs'}/<date-time>)",
    )
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    return parser.parse_args(argv)


def _data_choice(folder: Path | None, progress: bool) -> DataChoice:
    """--data as a DataChoice, or what notebook 01 would find or fetch."""
    if folder is None:
        return prepare_data(progress=progress)
    if read_source(folder).get("source") == "synthetic":
        return DataChoice(folder, "synthetic", "given with --data; its workbook_source.json says synthetic.")
    return DataChoice(folder, "real", "given with --data.")


def _resolve(weights: str) -> WeightsChoice:
    """The weights for train_capstone_head; the ImageNet weights are fetched here if needed."""
    if weights == "random":
        print(
            "WARNING: --weights random: the backbone is NOT pretrained, so the accuracy below means little.",
            file=sys.stderr,
        )
        return WeightsChoice(None, "random initialisation (NOT pretrained: --weights random)")
    if weights != "imagenet":
        try:  # a file that is not a ResNet18 state dict fails here, before any work
            build_resnet18(weights=weights, progress=False)
        except Exception as error:  # torch.load fails on other files in many ways (IndexError for a text file)
            if isinstance(error, WeightsUnavailableError):
                raise
            raise WeightsUnavailableError(
                f"{weights} cannot be loaded as ResNet18 weights ({type(error).__name__})."
            ) from None
        return WeightsChoice(weights)
    try:
        with contextlib.redirect_stderr(sys.stdout):  # torch.hub's download messages are not errors
            return resolve_weights(allow_random=False)
    except WeightsUnavailableError as error:
        reason = f" ({error.__cause__})".splitlines()[0][:160] if error.__cause__ else ""
        raise WeightsUnavailableError(
            f"the ImageNet weights are not on this machine and could not be downloaded{reason}; put the file at "
            f"{imagenet_weights_path()}, pass --weights PATH, or --weights random for a random backbone."
        ) from None


def run(args: argparse.Namespace) -> dict:
    """Train, evaluate and write checkpoint, loss plot and metrics.json; returns the metrics."""
    start, progress = time.perf_counter(), not args.quiet
    weights = _resolve(args.weights)  # before the data: no download for a run that cannot start
    choice = _data_choice(args.data, progress)
    n_images = sum(len(list_class_files(choice.path, name)) for name in CLASS_NAMES)
    device = pick_device(args.device)
    out = (args.out or data_dir() / "runs" / datetime.now().strftime("%Y%m%d-%H%M%S")).expanduser().resolve()
    print(
        f"data:    {choice.source}, {printable(choice.path)} ({n_images:,} images): {printable(choice.reason)}\n"
        f"weights: {printable(weights.description)}\ndevice:  {device}\nout:     {out}",
        flush=True,
    )
    trained = train_capstone_head(
        choice,
        weights,
        epochs=args.epochs,
        lr=args.lr,
        batch_size=args.batch_size,
        dedupe=args.dedupe,
        device=device,
        seed=args.seed,
        progress=progress,
    )
    metrics = compute_metrics(predict_dataset(trained.model, trained.val_set, features=trained.val_features))
    low, high = metrics.interval
    print(
        f"validation accuracy {metrics.accuracy:.2%} (95% interval {100 * low:.2f}-{100 * high:.2f}%) "
        f"on {metrics.total:,} images"
    )
    caveats = [
        why
        for why, applies in (("synthetic images", not choice.is_real), ("a random backbone", weights.is_random))
        if applies
    ]
    if caveats:
        print(
            f"This number cannot be compared with the capstone's {CAPSTONE_ACCURACY}: "
            f"it was measured with {' and '.join(caveats)}."
        )
    paths = {"checkpoint": out / CHECKPOINT_NAME, "loss_plot": out / PLOT_NAME, "metrics": out / METRICS_NAME}
    save_trained_head(paths["checkpoint"], choice, trained)
    figure = plot_training_history(trained.history, title=f"Training the head ({choice.source} data)")
    with atomic_path(paths["loss_plot"]) as temp:
        figure.savefig(temp, dpi=100)
    plt.close(figure)
    record = {
        "accuracy": metrics.accuracy,
        "correct": metrics.correct,
        "interval_95": list(metrics.interval),
        "n_train": len(trained.train_set),
        "n_val": len(trained.val_set),
        "data_source": choice.source,
        "data_path": str(choice.path),
        "weights": weights.label,
        "weights_description": weights.description,
        "comparable_with_capstone": not caveats,
        "epochs": args.epochs,
        "lr": args.lr,
        "batch_size": args.batch_size,
        "dedupe": args.dedupe,
        "seed": args.seed,
        "device": str(device),
        "features": trained.train_features.number_format,
        "seconds": round(time.perf_counter() - start, 2),
        "files": {k: str(p) for k, p in paths.items()},
    }
    write_json_atomically(record, paths["metrics"])
    print(f"wrote {paths['checkpoint']}, {PLOT_NAME} and {METRICS_NAME} in {record['seconds']:.1f} s")
    return record


@command
def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status (0 done, 1 runtime error, 2 bad arguments or settings,
    130 Ctrl+C: helpers.tools.guard.command)."""
    try:
        args = parse_args(argv)
        matplotlib.use("Agg")  # no window: the command only saves its figure
        run(args)
    except SystemExit as exit_:  # --help (0) and argument errors (2), already printed
        return exit_.code if isinstance(exit_.code, int) else 2
    except RUNTIME_ERRORS as error:
        message = " ".join(printable(error).split()) or type(error).__name__
        print(f"error: {message}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
