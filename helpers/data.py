"""Getting the data: the real set (Özgenel 2019, doi:10.17632/5y9wdsg2zt.2, CC BY 4.0, 20,000 227x227 JPEGs
in `Positive/` with cracks and 20,000 in `Negative/`) downloaded, or synthetic cracks when it cannot be; every
image checked. In a class, WORKBOOK_DATASET names the teacher's copy, which learners only read."""

import hashlib
import os
import re
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from tqdm.auto import tqdm

from helpers.dataset import CLASS_NAMES, DOWNLOAD_HINT, DatasetNotFoundError, list_class_files
from helpers.plumbing import BadImageError, DownloadError, download, extract_folders, file_digest, lock, open_photo
from helpers.plumbing import printable, read_json, replacing, write_json_atomically
from helpers.settings import DATASET, OFFLINE, QUICK, SOURCE_FILE, data_dir, downloads_dir, offline, quick_mode
from helpers.settings import real_dir, shared_dataset_dir, synthetic_dir
from helpers.synthetic_dataset import generate_dataset

ARCHIVE_NAME = "concrete_crack_images_for_classification.zip"
BASE_URLS = (  # tried in order: the address the capstone's notebooks use, then IBM's newer host (old and new paths)
    "https://s3-api.us-geo.objectstorage.softlayer.net/cf-courses-data/CognitiveClass/DL0321EN/data/images/",
    "https://cf-courses-data.s3.us.cloud-object-storage.appdomain.cloud/CognitiveClass/DL0321EN/data/images/",
    "https://cf-courses-data.s3.us.cloud-object-storage.appdomain.cloud/IBMDeveloperSkillsNetwork-DL0321EN-SkillsNetwork/images/",
)

SYNTHETIC_PER_CLASS, QUICK_PER_CLASS = 1_000, 50  # the offline stand-in of a full run, of quick mode


@dataclass
class DataChoice:
    """Which data a run uses, and why: `source` is "real" or "synthetic"."""

    path: Path
    source: str
    reason: str

    @property
    def is_real(self) -> bool:
        return self.source == "real"

    def __str__(self) -> str:
        return f"Using {self.source} data from {self.path}: {self.reason}"


@dataclass
class VerifyReport:
    """What `verify_dataset` found: images per class, and every problem, file by file."""

    root: Path
    counts: dict[str, int] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)
    decoded: bool = False  # every file was decoded, not only counted

    @property
    def ok(self) -> bool:
        return not self.problems

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    def __str__(self) -> str:
        counts = ", ".join(f"{n:,} {name}" for name, n in self.counts.items())
        lines = [f"{self.root}: {counts or 'no images'} ({self.total:,} in all)."]
        if self.problems:
            more = [f"  ... and {len(self.problems) - 20} more"] if len(self.problems) > 20 else []
            lines += [f"{len(self.problems)} problem(s):", *(f"  - {p}" for p in self.problems[:20]), *more]
        elif self.decoded:
            lines.append("Every file is a decodable image.")
        return "\n".join(printable(line) for line in lines)  # file names come from archives


def _fetch(url: str | None, progress: bool) -> tuple[Path, str]:
    """(the zip, its address): the local zip or address `url`, else the first of BASE_URLS that serves one."""
    errors = []
    for url in [url] if url is not None else [base + ARCHIVE_NAME for base in BASE_URLS]:
        if not url.startswith(("http://", "https://")):
            if Path(url).expanduser().is_file():
                return Path(url).expanduser(), url
            errors.append(f"{url!r} is neither an http(s) address nor a file: check it.")
            continue
        try:
            with lock(downloads_dir() / ARCHIVE_NAME):
                return download(url, downloads_dir() / ARCHIVE_NAME, progress), url
        except DownloadError as error:
            errors.append(str(error))
    raise DownloadError(" ".join(errors))


def download_dataset(
    dest: Path | None = None, url: str | None = None, sha256: str | None = None, progress: bool = True
) -> VerifyReport:
    """Fetch the capstone's zip (or take the local zip `url`), unpack its class folders into `dest`, verify them.
    `dest` (default data/concrete_crack_images) is replaced only if a download made it; it stays locked till verified."""
    if sha256 is not None and not re.fullmatch(r"[0-9a-fA-F]{64}", sha256):
        raise ValueError(f"The SHA-256 given ({printable(sha256)!r}) is not 64 hexadecimal digits: copy it again.")
    dest = Path(dest) if dest else real_dir()
    with lock(dest):
        with replacing(dest, "download") as temp:
            archive, used = _fetch(url, progress)
            digest = file_digest(archive)
            if sha256 and digest != sha256.lower():
                raise DownloadError(f"{archive} (from {used}) has the SHA-256 {digest}, not the one given: check both.")
            extract_folders(archive, temp, CLASS_NAMES)
            created = datetime.now(timezone.utc).isoformat(timespec="seconds")
            record = {"source": "download", "url": used, "archive_sha256": digest, "created": created}
            write_json_atomically(record, temp / SOURCE_FILE)
        return verify_dataset(dest, progress=progress)


def record_path(root: Path) -> Path:
    """Where the learner keeps the record of the verified folder `root`: data/cache/verified/<name>-<12 hex>.json."""
    resolved = Path(root).resolve()
    tag = hashlib.sha256(os.fsencode(resolved)).hexdigest()[:12]
    return data_dir() / "cache" / "verified" / f"{resolved.name}-{tag}.json"


def _fingerprint(root: Path, files: list[Path]) -> str:
    """SHA-256 over every file's name, size and modification time."""
    lines = sorted(f"{p.relative_to(root).as_posix()}|{p.stat().st_size}|{p.stat().st_mtime_ns}" for p in files)
    return hashlib.sha256("\n".join(lines).encode("utf-8", "surrogateescape")).hexdigest()


def verify_dataset(root: Path, decode: bool = True, progress: bool = True) -> VerifyReport:
    """Check a data folder: class folders, images per class, each file decodable (`decode`), a clean check recorded."""
    root = Path(root)
    report = VerifyReport(root=root)
    if not root.is_dir():  # missing, or a file
        report.problems.append(f"{root} is not a folder holding Positive/ and Negative/. {DOWNLOAD_HINT}")
        return report
    files = []
    for name in CLASS_NAMES[::-1]:  # Positive first, as the capstone lists them
        try:
            found = list_class_files(root, name)
        except DatasetNotFoundError as error:  # no such folder, or no images in it
            report.problems.append(str(error).split(". ")[0])
            found = []
        report.counts[name] = len(found)
        files += found
    if decode:
        fingerprint = _fingerprint(root, files)  # taken first: a file changed during the check fails is_verified
        report.decoded = True
        for path in tqdm(files, desc="Checking images", unit="img", disable=not progress):
            try:
                open_photo(path)
            except BadImageError as error:
                report.problems.append(str(error))
        if report.ok:
            write_json_atomically({"root": str(root.resolve()), "fingerprint": fingerprint}, record_path(root))
    return report


def is_verified(root: Path) -> bool:
    """True when `root` passed `verify_dataset` and no file was added, removed, resized or touched since."""
    try:
        files = [path for name in CLASS_NAMES for path in list_class_files(root, name)]
        return read_json(record_path(root)).get("fingerprint") == _fingerprint(Path(root), files)
    except (OSError, DatasetNotFoundError):
        return False


def make_synthetic(progress: bool = True) -> Path:
    """The synthetic set in synthetic_dir() if the generator made one (any size), else a new one of this mode's size."""
    folder = synthetic_dir()
    if read_json(folder / SOURCE_FILE).get("source") == "synthetic":
        return folder
    per_class = QUICK_PER_CLASS if quick_mode() else SYNTHETIC_PER_CLASS
    return generate_dataset(folder, per_class=per_class, seed=0, overwrite=True, progress=progress)


def locate_dataset(progress: bool = True) -> DataChoice:
    """The data a notebook uses, without downloading: the class's shared set, else in quick mode the tiny
    synthetic set, else the real set once notebook 01 has downloaded and verified it, else the synthetic one."""
    shared = shared_dataset_dir()
    if shared is not None:
        source = "synthetic" if read_json(shared / SOURCE_FILE).get("source") == "synthetic" else "real"
        why = f"the class's shared data set ({DATASET}), read-only; your caches, checkpoints and figures go to {data_dir()}."
        return DataChoice(shared, source, why)
    if quick_mode():
        return DataChoice(make_synthetic(progress), "synthetic", f"quick mode ({QUICK}=1) uses a tiny synthetic set.")
    if is_verified(real_dir()):
        return DataChoice(real_dir(), "real", "the downloaded and verified Concrete Crack Images set.")
    why = "the real set is not here; notebook 01 or `python -m helpers data download` fetches it."
    return DataChoice(make_synthetic(progress), "synthetic", why)


def prepare_data(url: str | None = None, progress: bool = True) -> DataChoice:
    """What notebook 01 does: the real set if it can be had (from `url` or the known addresses), else synthetic."""
    if quick_mode() or shared_dataset_dir() is not None or is_verified(real_dir()):
        return locate_dataset(progress)
    why = f"{OFFLINE} is set"
    if not offline():
        try:
            report = download_dataset(url=url, progress=progress)
            if report.ok:
                return DataChoice(real_dir(), "real", "downloaded and verified.")
            why = f"the downloaded set did not verify: {report}"
        except (DownloadError, FileExistsError) as error:
            why = str(error)
    print(f"The real dataset cannot be downloaded, so this run uses synthetic crack images instead: {why}")
    return DataChoice(make_synthetic(progress), "synthetic", "the real set could not be downloaded (why: above).")
