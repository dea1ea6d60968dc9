"""Train the capstone's model from a terminal as notebooks 01-04 do (ResNet18, ImageNet weights, frozen backbone,
new Linear(512, 2) head, Adam): writes the checkpoint notebook 05 loads, loss.png and metrics.json. For example:

    python -m helpers train --data data/concrete_crack_images --epochs 3 --out data/runs/three
"""

from __future__ import annotations

import argparse
import errno
import os
import sys
import time
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path

import matplotlib
import matplotlib.pyplot as plt

from helpers.analysis import compute_metrics
from helpers.data import DataChoice, prepare_data, read_source
from helpers.dataset import CLASS_NAMES, DatasetNotFoundError, list_class_files
from helpers.inference import predict_dataset
from helpers.model import WeightsChoice, build_resnet18, resolve_weights
from helpers.pipeline import train_capstone_head
from helpers.plots import plot_training_history
from helpers.plumbing import atomic_path, printable, write_json_atomically
from helpers.settings import SettingsError, data_dir, pick_device
from helpers.tools.guard import command
from helpers.tools.predict import Parser, unwritable_output

LIMITS = {"epochs": 10_000, "batch_size": 100_000, "lr": 10.0}  # far beyond any useful run: a typo, not a plan


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """The command line, with the capstone's settings as defaults; a bad value is one line and exit 2."""
    parser = Parser("train", argv, description=__doc__)
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


def run(args: argparse.Namespace) -> dict:
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
def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; the exit status: 0 done, 1 an error, 2 a bad argument, 141 stdout's reader went away."""
    try:
        args = parse_args(argv)
        matplotlib.use("Agg")  # no window: the command only saves its figure
        run(args)
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
