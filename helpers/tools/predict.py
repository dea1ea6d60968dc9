"""`python -m helpers predict`: classify photos with a trained checkpoint, from a terminal.

    python -m helpers predict photo1.jpg photo2.jpg --checkpoint data/checkpoints/resnet18_cracks.pt
    python -m helpers predict photo1.jpg --json

A photo that cannot be read is reported on stderr (`error: <file>: <reason>`) and the others are
still classified; the exit status is then 1. Class names and file names are printed without
control characters (a checkpoint could hold "\\x1b[2J" in a name); --json escapes them.
The functions it calls are notebook 06's (helpers.predict).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Sequence

from helpers.inference import classify_photos
from helpers.model import CheckpointMismatchError
from helpers.plumbing.text import printable
from helpers.predict import format_prediction, load_model
from helpers.settings import default_checkpoint_path
from helpers.tools.guard import command


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """The command line: images, --checkpoint, --json."""
    parser = argparse.ArgumentParser(
        prog="python -m helpers predict", description="Classify 227x227 concrete photos with a trained checkpoint."
    )
    parser.add_argument("images", nargs="+", help="image files (227x227; other sizes are resized)")
    parser.add_argument(
        "--checkpoint", default=None, help=f"a checkpoint saved by notebook 04 (default: {default_checkpoint_path()})"
    )
    parser.add_argument("--json", action="store_true", help="print a JSON list instead of one line per image")
    return parser.parse_args(argv)


@command
def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status (0 when all went well, 1 on an error).

    Photos that cannot be read are reported on stderr after the others' predictions. When the
    reader of the output goes away (`| head`), the command stops quietly with status 141.
    """
    args = parse_args(argv)
    try:
        model, class_names = load_model(args.checkpoint)
    except (OSError, CheckpointMismatchError) as error:
        print(f"error: {printable(error)}", file=sys.stderr)
        return 1
    errors: list[tuple[Path, Exception]] = []
    predictions = classify_photos(model, args.images, class_names, errors=errors)
    try:
        if args.json:
            print(json.dumps([p.to_dict() for p in predictions], indent=2, allow_nan=False))
        else:
            for prediction in predictions:
                print(format_prediction(prediction))
        sys.stdout.flush()
    except BrokenPipeError:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # so the flush at exit is silent too
        return 141  # 128 + SIGPIPE, what `cat` would return
    for _, error in errors:
        print(f"error: {printable(error)}", file=sys.stderr)
    return 1 if errors else 0
