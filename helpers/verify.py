"""Checking a data folder: both classes there, every file a decodable image, and remembering that it was.

Notebook 01 calls :func:`verify_dataset` once after the download; it decodes every image and, when
all is well, records the files' contents in ``root/.verified.json`` (for a class's shared, read-only
data set, in the learner's own folder: helpers.plumbing.files.records_dir). Later notebooks ask
:func:`is_verified`, which costs one stat per file while nothing changed, instead of decoding
40,000 images again.
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass, field
from pathlib import Path

import torch

from helpers.dataset import CLASS_NAMES, DatasetNotFoundError, list_class_files
from helpers.plumbing.files import (
    folder_hashes,
    read_json,
    record_key,
    records_dir,
    relative_name,
    seal,
    write_json_atomically,
)
from helpers.plumbing.images import TILE_SIZE, open_image, size_problem
from helpers.plumbing.progress import tqdm
from helpers.plumbing.text import printable

VERIFIED_FILE = ".verified.json"


@dataclass
class VerifyReport:
    """What `verify_dataset` found: images per class, every problem file by file, and images of other sizes.

    `other_sizes` maps an image's name ("Positive/x.jpg") to its (width, height) when that is not
    227x227: not a problem (the datasets resize such images), but worth a note.
    """

    root: Path
    counts: dict[str, int] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)
    other_sizes: dict[str, tuple[int, int]] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.problems

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    @property
    def notes(self) -> list[str]:
        """Findings that are not problems: the images that are not 227x227, counted, with an example."""
        if not self.other_sizes:
            return []
        n = len(self.other_sizes)
        name, (width, height) = next(iter(self.other_sizes.items()))
        return [
            f"{n:,} image{'s are' if n > 1 else ' is'} not {TILE_SIZE}x{TILE_SIZE} (e.g. {name} is "
            f"{width}x{height}); the datasets resize them to {TILE_SIZE}x{TILE_SIZE}."
        ]

    def __str__(self) -> str:
        counts = ", ".join(f"{n:,} {name}" for name, n in self.counts.items())
        lines = [f"{self.root}: {counts or 'no images'} ({self.total:,} in all)."]
        if self.ok:
            lines.append("Every file is a decodable image." if self.counts else "")
        else:
            lines.append(f"{len(self.problems)} problem(s):")
            lines += [f"  - {problem}" for problem in self.problems[:20]]
            if len(self.problems) > 20:
                lines.append(f"  ... and {len(self.problems) - 20} more")
        lines += [f"Note: {note}" for note in self.notes]
        return "\n".join(printable(line) for line in lines if line)  # file names come from archives


def _check_file(path: Path) -> tuple[str | None, tuple[int, int] | None]:
    """(reason, size): reason is None when `path` decodes as an image (or a `.pt` image tensor).

    size is the image's (width, height) from its header (None for a tensor or an unreadable file).
    An image above helpers.plumbing.images.MAX_IMAGE_PIXELS is refused from that header, never decoded.
    """
    size = None
    try:
        if path.suffix.lower() == ".pt":
            tensor = torch.load(path, weights_only=True, map_location="cpu")
            if not isinstance(tensor, torch.Tensor) or tensor.dim() != 3:
                return "not an image tensor of shape (C, H, W)", None
        else:
            with open_image(path) as image:  # reads the header only
                size = image.size
                problem = size_problem(size)
                if problem is not None:
                    return problem, size
                image.load()
    except Exception as exc:  # any decoding failure is reported, not raised
        return f"cannot be decoded ({type(exc).__name__}: {exc})", size
    return None, size


def _fingerprint(root: Path, files: list[Path], progress: bool = False) -> dict:
    """Identity of a folder's data files by content: their count and one SHA-256 over names and SHA-1s.

    The SHA-1s come from helpers.plumbing.files.folder_hashes (root/.content_hashes.json, or the
    learner's copy for a shared folder): each file is read once, then its digest is reused while
    its size, mtime, inode and ctime stay the same.
    """
    hashes = folder_hashes(root, files, progress)
    lines = sorted(f"{relative_name(path, root)}|{digest}" for path, digest in zip(files, hashes))
    return {
        "n_files": len(files),
        "files_sha256": hashlib.sha256("\n".join(lines).encode("utf-8", "surrogateescape")).hexdigest(),
    }


def verify_dataset(
    root: str | Path, expected_per_class: int | None = None, decode: bool = True, progress: bool = True
) -> VerifyReport:
    """Check a data folder: both class folders present, how many images each, every file decodable.

    Images that are not 227x227 are listed in the report's notes (the datasets resize them);
    images above 40 megapixels are problems, found from their header without decoding them.
    A clean result is remembered in `root/.verified.json`, keyed by the files' contents (see
    is_verified), so that later notebooks can trust the folder without decoding 40,000 images again.
    """
    root = Path(root)
    report = VerifyReport(root=root)
    if root.exists() and not root.is_dir():
        report.problems.append(f"{root} is a file, not a folder: give the folder that holds Positive/ and Negative/")
        return report
    if not root.is_dir():
        report.problems.append(
            f"{root} does not exist: run notebooks/01_download_data.ipynb, "
            "or `python -m helpers data download` (real) / `synthetic` (offline)."
        )
        return report
    files: list[Path] = []
    for name in CLASS_NAMES[::-1]:  # Positive first, as the capstone lists them
        try:
            folder_files = list_class_files(root, name)
        except DatasetNotFoundError as exc:  # the folder is missing or holds no images
            report.problems.append(str(exc).split(". ")[0])
            folder_files = []
        if folder_files and expected_per_class is not None and len(folder_files) != expected_per_class:
            report.problems.append(f"{name}: {len(folder_files):,} images, expected {expected_per_class:,}")
        report.counts[name] = len(folder_files)
        files += folder_files
    if decode:
        # Hashed before decoding: a file changed in between then fails is_verified, never passes it.
        fingerprint = _fingerprint(root, files, progress) if files else None
        for path in tqdm(files, desc="Checking images", unit="img", disable=not progress):
            reason, size = _check_file(path)
            if reason:
                report.problems.append(f"{path.relative_to(root)} {reason}")
            elif size is not None and size != (TILE_SIZE, TILE_SIZE):
                report.other_sizes[path.relative_to(root).as_posix()] = size
    if report.ok and decode:
        try:
            key = record_key(create=True)
            write_json_atomically(
                {**fingerprint, "counts": report.counts, "seal": seal(fingerprint, key)},
                records_dir(root) / VERIFIED_FILE,
            )
        except OSError:
            pass  # a read-only mirror is fine; we just verify again next time
    return report


def is_verified(root: str | Path) -> bool:
    """True when `root` passed `verify_dataset` and its files have not changed since.

    "Not changed" is judged by content: the record holds a SHA-256 over every file's name and
    SHA-1, and the SHA-1s are recomputed for any file whose size, mtime, inode or ctime moved (see
    helpers.plumbing.files.content_hashes, which also says what remains metadata-based). So an edit that
    keeps the size and sets the modification time back is caught; a warm check costs one stat
    per file. The record is sealed with the data folder's secret key (helpers.plumbing.files.seal):
    a `.verified.json` that an archive brought, or one copied from another folder, is not trusted,
    nor is a record written before records were sealed (verify again to make a new one).
    """
    root = Path(root)
    recorded = read_json(records_dir(root) / VERIFIED_FILE)
    key = record_key()
    if not recorded or key is None:
        return False
    try:
        files = [p for name in CLASS_NAMES for p in list_class_files(root, name)]
        fingerprint = _fingerprint(root, files)
        return {k: recorded.get(k) for k in fingerprint} == fingerprint and hmac.compare_digest(
            str(recorded.get("seal", "")), seal(fingerprint, key)
        )
    except (OSError, DatasetNotFoundError):
        return False
