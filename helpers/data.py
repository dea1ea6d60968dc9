"""Getting the data: download the real set, or generate synthetic cracks, and check what you have.

The workbook uses the public *Concrete Crack Images for Classification* set (Özgenel 2019,
Mendeley Data, doi:10.17632/5y9wdsg2zt.2, CC BY 4.0): 20,000 `Positive/` (crack) and
20,000 `Negative/` (no crack) 227x227 RGB JPEGs. The IBM AI Capstone serves it as one zip.

When the data cannot be fetched (no internet, a firewall, a classroom without a mirror), the
workbook carries on with synthetic images (`helpers.synthetic`) and says so plainly.

In a class on a shared JupyterHub the teacher downloads and verifies the set once into a folder
the learners may only read, and names it with WORKBOOK_DATASET: then every notebook uses that
folder, never downloads, and writes nothing there (TEACHING.md, "A class on a shared JupyterHub").

Command line, for teachers preparing a classroom (helpers.tools.data):

    python -m helpers data download [--url URL] [--dest DIR] [--sha256 HEX] [--format jpeg|tensors]
    python -m helpers data synthetic [--per-class N] [--seed S] [--dest DIR] [--overwrite]
    python -m helpers data verify DIR [--expected-per-class N] [--no-decode]
    python -m helpers data prepare      # what notebook 01 does: real data if reachable, else synthetic
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import requests

from helpers.plumbing.archive import ArchiveError, extract_zip
from helpers.dataset import CLASS_NAMES
from helpers.plumbing.download import DownloadError, download_first
from helpers.plumbing.files import (
    DIGEST_CACHE_NAME,
    KEY_FILE_NAME,
    exclusive_lock,
    file_digest,
    read_json,
    write_json_atomically,
)
from helpers.settings import (
    DATASET,
    OFFLINE,
    QUICK,
    SOURCE_FILE,
    data_dir,
    data_url,
    download_attempt_file,
    downloads_dir,
    offline,
    quick_mode,
    real_dir,
    shared_dataset_dir,
    synthetic_dir,
    synthetic_per_class,
    tensors_dir,
)
from helpers.synthetic_dataset import generate_dataset
from helpers.verify import VERIFIED_FILE, VerifyReport, is_verified, verify_dataset

ARCHIVE_NAME = "concrete_crack_images_for_classification.zip"
TENSOR_ARCHIVES = ("Positive_tensors.zip", "Negative_tensors.zip")
# The most an archive may weigh, and separately the most it may unpack to: far above the real
# images archive (~250 MB, 40,000 JPEGs of 10-20 kB), so that a wrong address or a zip bomb stops
# early. The tensor archives' sizes are not recorded here (20,000 float32 3x224x224 tensors would
# be 12 GB), so their limit is generous.
ARCHIVE_MAX_BYTES = 2 * 1024**3
TENSOR_ARCHIVE_MAX_BYTES = 16 * 1024**3

# Known homes of the capstone's files, tried in order. Add a mirror by adding a line.
# The first is the address the capstone's notebooks use; the others are the same bucket on
# IBM's newer object-storage host, under the old and the newer course paths.
BASE_URLS = (
    "https://s3-api.us-geo.objectstorage.softlayer.net/cf-courses-data/CognitiveClass/DL0321EN/data/images/",
    "https://cf-courses-data.s3.us.cloud-object-storage.appdomain.cloud/CognitiveClass/DL0321EN/data/images/",
    "https://cf-courses-data.s3.us.cloud-object-storage.appdomain.cloud/IBMDeveloperSkillsNetwork-DL0321EN-SkillsNetwork/images/",
)
EXPECTED_PER_CLASS = 20_000  # the full real set
RECORD_NAMES = (VERIFIED_FILE, SOURCE_FILE, DIGEST_CACHE_NAME, KEY_FILE_NAME)  # the workbook's, never an archive's


def candidate_urls(file_name: str = ARCHIVE_NAME, url: str | None = None) -> list[str]:
    """The addresses to try for `file_name`: the user's own (argument or $WORKBOOK_DATA_URL) only, else the known ones."""
    url = url or data_url()
    if url:
        return [url]
    return [base + file_name for base in BASE_URLS]


def _is_remote(url: str) -> bool:
    return url.startswith(("http://", "https://"))


def any_host_reachable(urls: list[str], timeout: float = 5.0) -> bool:
    """True when at least one address answers at all (any HTTP status), or is a local file.

    A quick look before a long download, so an offline machine learns in a second, not after
    every retry, that it has to use synthetic data.
    """
    for url in urls:
        if not _is_remote(url):
            return True
        try:
            requests.head(url, timeout=(timeout, timeout), allow_redirects=True)
            return True
        except requests.RequestException:
            continue
    return False


def download_dataset(
    dest: str | Path | None = None, url: str | None = None, sha256: str | None = None, progress: bool = True
) -> Path:
    """Download the capstone's JPEG archive, extract it safely into `dest` and verify it.

    `url` may be an address or a local zip (a teacher's mirror); by default the known addresses
    are tried in order. Each address's archive is kept under its own name in the downloads folder,
    so another address is really fetched. Nothing half-written is left behind: the archive is
    downloaded to a `.part` file (resumed on the next call if the server's file is unchanged)
    and extracted through a temporary folder.

    The class folders the archive brings (at its top or inside one folder) replace `dest`'s, so
    the images in `dest` are always those of the address its workbook_source.json names; the
    record is removed before and written after. Only Positive/ and Negative/ are taken from the
    archive, never a record of the workbook's own. `dest` is locked throughout: a second
    download into it stops with BusyError instead of mixing two sets.
    """
    dest = Path(dest) if dest else real_dir()
    check_destination(dest)
    urls = candidate_urls(ARCHIVE_NAME, url)
    with exclusive_lock(dest):
        archive, used_url = download_first(
            urls, downloads_dir() / ARCHIVE_NAME, sha256=sha256, progress=progress, max_bytes=ARCHIVE_MAX_BYTES
        )
        (dest / SOURCE_FILE).unlink(missing_ok=True)  # from here until the new record, no address is claimed
        extract_zip(
            archive,
            dest,
            progress=progress,
            max_bytes=ARCHIVE_MAX_BYTES,
            folders=CLASS_NAMES[::-1],
            ignore=RECORD_NAMES,
        )
        write_json_atomically(
            {
                "source": "download",
                "url": used_url,
                "archive": archive.name,
                "archive_sha256": file_digest(archive),
                "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            },
            dest / SOURCE_FILE,
        )
    return dest


def download_and_verify(
    dest: str | Path | None = None, url: str | None = None, sha256: str | None = None, progress: bool = True
) -> tuple[Path, VerifyReport]:
    """download_dataset, then verify_dataset, with `dest` locked throughout: no other download
    can replace the images while they are checked (BusyError while another one runs)."""
    dest = Path(dest) if dest else real_dir()
    check_destination(dest)
    with exclusive_lock(dest):
        download_dataset(dest, url=url, sha256=sha256, progress=progress)
        return dest, verify_dataset(dest, progress=progress)


def check_destination(dest: Path) -> None:
    """Raise NotADirectoryError, before any download, when `dest` is a file or lies under one."""
    for folder in (dest, *dest.parents):
        if folder.exists():
            if not folder.is_dir():
                raise NotADirectoryError(f"{dest} cannot be a data folder: {folder} is a file; choose another --dest.")
            return


def download_tensors(dest: str | Path | None = None, base_url: str | None = None, progress: bool = True) -> Path:
    """Download the capstone's optional tensor format (`Positive_tensors.zip`, `Negative_tensors.zip`).

    Each `.pt` file holds one image already resized and normalised; `CrackDataset` reads them
    from `dest/Positive_tensors/` and `dest/Negative_tensors/`.
    """
    dest = Path(dest) if dest else tensors_dir()
    check_destination(dest)
    for name in TENSOR_ARCHIVES:
        urls = [base_url.rstrip("/") + "/" + name] if base_url else candidate_urls(name)
        archive, _ = download_first(urls, downloads_dir() / name, progress=progress, max_bytes=TENSOR_ARCHIVE_MAX_BYTES)
        extract_zip(archive, dest, progress=progress, max_bytes=TENSOR_ARCHIVE_MAX_BYTES, ignore=RECORD_NAMES)
    return dest


def read_source(root: str | Path) -> dict:
    """The `workbook_source.json` record of how a data folder was made ({} when unknown)."""
    return read_json(Path(root) / SOURCE_FILE)


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


def make_synthetic(progress: bool = True) -> Path:
    """Generate (or reuse) the synthetic stand-in for this mode and return its folder."""
    return generate_dataset(synthetic_dir(), per_class=synthetic_per_class(), seed=0, overwrite=True, progress=progress)


def shared_choice() -> DataChoice | None:
    """The class's shared data set (WORKBOOK_DATASET) as a DataChoice, or None outside a class.

    Its workbook_source.json, when the teacher's folder has one, says whether it is synthetic;
    nothing is written there.
    """
    shared = shared_dataset_dir()
    if shared is None:
        return None
    source = "synthetic" if read_source(shared).get("source") == "synthetic" else "real"
    return DataChoice(
        shared,
        source,
        f"the class's shared data set ({DATASET}), read-only; your caches, checkpoints and figures go to {data_dir()}.",
    )


def locate_dataset(progress: bool = True) -> DataChoice:
    """Find the data a notebook should use, without downloading anything.

    In a class, the shared data set named by WORKBOOK_DATASET, whatever the mode. Quick mode
    otherwise uses the tiny synthetic set. Otherwise the real set when notebook 01 has
    downloaded and verified it, else the synthetic stand-in (generated now if missing).
    """
    shared = shared_choice()
    if shared is not None:
        return shared
    if quick_mode():
        return DataChoice(make_synthetic(progress), "synthetic", f"quick mode ({QUICK}=1) uses a tiny synthetic set.")
    if is_verified(real_dir()):
        return DataChoice(real_dir(), "real", "the downloaded and verified Concrete Crack Images set.")
    attempt = read_json(download_attempt_file())
    if attempt:  # notebook 01 (or make run) tried already: say what happened, not "run 01"
        return DataChoice(
            make_synthetic(progress),
            "synthetic",
            f"the real set could not be downloaded ({attempt.get('why', 'reason unknown')}, "
            f"{attempt.get('when', '')[:10]}); to get it later: `python -m helpers data download` "
            "(README, \"Getting the real data\"), then rerun the notebooks.",
        )
    return DataChoice(
        make_synthetic(progress),
        "synthetic",
        "the real set is not downloaded yet; run notebooks/01_download_data.ipynb to fetch it.",
    )


def _fall_back(why: str, progress: bool) -> DataChoice:
    """The synthetic stand-in, with the failed download recorded for the notebooks that follow."""
    try:
        write_json_atomically(
            {"why": why, "when": datetime.now(timezone.utc).isoformat(timespec="seconds")}, download_attempt_file()
        )
    except OSError:
        pass  # a read-only data folder: later notebooks just say less
    return DataChoice(make_synthetic(progress), "synthetic", f"the real set could not be downloaded ({why}).")


def prepare_data(url: str | None = None, progress: bool = True) -> DataChoice:
    """What notebook 01 and `make run` do: real data if it can be had, else synthetic, said in one sentence.

    In a class (WORKBOOK_DATASET) nothing is downloaded: the shared data set is the data.
    """
    if quick_mode() or shared_dataset_dir() is not None:
        return locate_dataset(progress)
    if is_verified(real_dir()):
        return DataChoice(real_dir(), "real", "already downloaded and verified.")
    urls = candidate_urls(ARCHIVE_NAME, url)
    told_offline = offline()
    if told_offline or not any_host_reachable(urls):
        why = f"{OFFLINE} is set" if told_offline else "none of its addresses can be reached from this machine"
        print(f"The real dataset cannot be downloaded ({why}), so this run uses synthetic crack images instead.")
        return _fall_back(why, progress)
    try:
        _, report = download_and_verify(url=url, progress=progress)
    except (DownloadError, ArchiveError) as exc:
        print(f"The real dataset could not be downloaded, so this run uses synthetic crack images instead: {exc}")
        return _fall_back("the download failed: " + str(exc).splitlines()[0], progress)
    if not report.ok:
        print(f"The downloaded dataset has problems, so this run uses synthetic crack images instead:\n{report}")
        return _fall_back("the downloaded set did not verify", progress)
    download_attempt_file().unlink(missing_ok=True)
    return DataChoice(real_dir(), "real", "downloaded and verified.")
