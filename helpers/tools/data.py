"""`python -m helpers data`: get, make and check the data from a terminal, for teachers preparing a classroom.

python -m helpers data download [--url URL] [--dest DIR] [--sha256 HEX]
python -m helpers data synthetic [--per-class N] [--seed S] [--dest DIR] [--overwrite]
python -m helpers data verify DIR [--no-decode]
python -m helpers data prepare [--url URL]   # what notebook 01 does: real data if reachable, else synthetic
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from helpers.data import download_dataset, prepare_data, verify_dataset
from helpers.plumbing import DownloadError, printable
from helpers.data import SYNTHETIC_PER_CLASS
from helpers.settings import synthetic_dir
from helpers.synthetic_dataset import generate_dataset
from helpers.tools.guard import command


@command
def main(argv: list[str] | None = None) -> int:
    """`python -m helpers data ...` (see the module's docstring); returns the exit status."""
    parser = argparse.ArgumentParser(prog="python -m helpers data", description=__doc__.split("\n\n")[0])
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
    commands.add_parser("prepare", help="real data if reachable, else synthetic (notebook 01)").add_argument(
        "--url", **url
    )
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
