"""`python -m helpers data`: get, make and check the data from a terminal, for teachers preparing a classroom.

    python -m helpers data download [--url URL] [--dest DIR] [--sha256 HEX] [--format jpeg|tensors]
    python -m helpers data synthetic [--per-class N] [--seed S] [--dest DIR] [--overwrite]
    python -m helpers data verify DIR [--expected-per-class N] [--no-decode]
    python -m helpers data prepare      # what notebook 01 does: real data if reachable, else synthetic

The functions it calls are notebook 01's (helpers.data, helpers.verify).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from helpers.data import download_and_verify, download_tensors, prepare_data
from helpers.plumbing.archive import ArchiveError
from helpers.plumbing.download import DownloadError
from helpers.plumbing.text import printable
from helpers.settings import DATA_URL, DEFAULT_SYNTHETIC_PER_CLASS, SettingsError, check_address, synthetic_dir
from helpers.synthetic_dataset import generate_dataset
from helpers.verify import verify_dataset
from helpers.tools.guard import command


def _address(text: str) -> str:
    """An argparse type: an http(s) or file:// address, or a local path (not empty, not ftp://...)."""
    try:
        return check_address("--url", text)
    except SettingsError as error:
        raise argparse.ArgumentTypeError(str(error).rstrip(".")) from None


@command
def main(argv: list[str] | None = None) -> int:
    """`python -m helpers data ...` (see the module's docstring); returns the exit status."""
    parser = argparse.ArgumentParser(prog="python -m helpers data", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    download = commands.add_parser("download", help="download and extract the real dataset")
    download.add_argument(
        "--url", type=_address, help=f"an address or a local zip to use instead of the known ones (or set ${DATA_URL})"
    )
    download.add_argument(
        "--dest",
        type=Path,
        help="folder for the images (default: data/concrete_crack_images, "
        "or data/concrete_crack_tensors with --format tensors)",
    )
    download.add_argument("--sha256", help="expected SHA-256 of the archive")
    download.add_argument(
        "--format",
        choices=("jpeg", "tensors"),
        default="jpeg",
        help="jpeg: the 40,000 images (default); tensors: the capstone's preprocessed .pt files",
    )
    synthetic = commands.add_parser("synthetic", help="generate synthetic crack images (works offline)")
    synthetic.add_argument("--per-class", type=int, default=DEFAULT_SYNTHETIC_PER_CLASS)
    synthetic.add_argument("--seed", type=int, default=0)
    synthetic.add_argument("--dest", type=Path, help="default: data/synthetic_cracks")
    synthetic.add_argument(
        "--overwrite",
        action="store_true",
        help="replace a synthetic set made with other settings (never a folder the workbook did not make)",
    )
    verify = commands.add_parser("verify", help="check a data folder: class folders, counts, every image decodable")
    verify.add_argument("dir", type=Path)
    verify.add_argument("--expected-per-class", type=int)
    verify.add_argument("--no-decode", action="store_true", help="only count the files")
    commands.add_parser("prepare", help="real data if reachable, else synthetic (what notebook 01 does)")
    args = parser.parse_args(argv)

    try:
        if args.command == "download":
            if args.format == "tensors":
                path = download_tensors(args.dest, base_url=args.url)
                report = verify_dataset(path)
            else:
                path, report = download_and_verify(args.dest, url=args.url, sha256=args.sha256)
        elif args.command == "synthetic":
            if args.per_class < 1:
                raise ValueError(f"--per-class must be at least 1, not {args.per_class}.")
            path = generate_dataset(
                args.dest or synthetic_dir(False), per_class=args.per_class, seed=args.seed, overwrite=args.overwrite
            )
            report = verify_dataset(path, decode=False)
        elif args.command == "verify":
            report = verify_dataset(args.dir, expected_per_class=args.expected_per_class, decode=not args.no_decode)
        else:
            choice = prepare_data()
            print(choice)
            report = verify_dataset(choice.path, decode=False)
    except (DownloadError, ArchiveError, FileExistsError, ValueError, OSError) as exc:
        print(f"error: {printable(exc)}", file=sys.stderr)
        return 1
    except KeyboardInterrupt as exc:  # Ctrl+C: one line, and the .part is kept for resuming
        if args.command != "download":
            raise
        part = getattr(exc, "part", None)
        resume = f" to resume from {part}" if part else ""
        print(f"Download interrupted; run the same command again{resume}.", file=sys.stderr)
        return 130
    print(report)
    return 0 if report.ok else 1
