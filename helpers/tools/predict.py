"""Classify photos with a checkpoint the workbook saved: one line per photo, or --json. A photo that cannot be read,
or that the model gives no numbers for, is an `error: ...` line on stderr after the others', and exit status 1."""

from __future__ import annotations

import argparse
import json
import os
import sys
from dataclasses import asdict
from pathlib import Path
from typing import NoReturn, Sequence

from helpers.inference import classify_files
from helpers.model import CheckpointMismatchError
from helpers.plumbing import printable
from helpers.settings import default_checkpoint_path
from helpers.tools.guard import command


class Parser(argparse.ArgumentParser):
    """An ArgumentParser named as the command was called (`crack-predict`, `python -m helpers predict`);
    an error is one line, `error: ...`, and exit status 2."""

    def __init__(self, command: str, argv: Sequence[str] | None, **kwargs) -> None:
        prog = Path(sys.argv[0]).stem if argv is None else f"python -m helpers {command}"  # None: a console script
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
def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status: 0 when every photo was classified, 1 on an error."""
    parser = Parser("predict", argv, description=__doc__)
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
