"""Every setting of the workbook in one place: environment variables, folders, the device.

The notebooks, the command-line tools and the tests all ask this module, and no other module
reads a ``WORKBOOK_*`` variable. Each variable is read when it is asked for (so a test or a
notebook cell can change it), through one parser per kind of value, and a value that cannot be
understood stops with one sentence that names the variable and what it accepts. Every command
(``python -m helpers ...``) checks them all first, with :func:`validate_settings`, so a bad value
stops it in its first line rather than minutes later in notebook 04.

| variable | what it does |
| --- | --- |
| WORKBOOK_QUICK | 1: tiny synthetic data and the shortest training (CI, a first look) |
| WORKBOOK_DATA_DIR | keep downloads, generated data, caches and checkpoints there instead of data/ |
| WORKBOOK_DATASET | a class's shared data set (Positive/ + Negative/, may be read-only): used as is, never written to; figures and executed copies then follow WORKBOOK_DATA_DIR |
| WORKBOOK_DATA_URL | an address or a local zip to download instead of the known addresses |
| WORKBOOK_OFFLINE | 1: do not try to download (data or ImageNet weights); use synthetic data |
| WORKBOOK_SYNTHETIC_PER_CLASS | images per class of the synthetic stand-in in a full run (default 1,000) |
| WORKBOOK_WEIGHTS_URL | a mirror of the ImageNet weights file (its SHA-256 is still checked) |
| WORKBOOK_ALLOW_RANDOM_WEIGHTS | 1: carry on with a random backbone when the ImageNet weights are missing |
| WORKBOOK_DEVICE | cpu, cuda, cuda:1, mps: the device to run on (default: the best there is) |
| WORKBOOK_REAL_SAMPLE | a folder with a real Positive/ + Negative/ sample (only the tests, notebook 01 and `make bench` read it) |
| WORKBOOK_REQUIRE_BROWSER | 1: the browser test fails instead of skipping without Chromium (only `make test` reads it; CI sets it) |
| WORKBOOK_PLAIN_PROGRESS | 1: plain-text progress bars, never widgets (the kernels `make run` starts set it) |
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # torch is imported only where the device is chosen
    import torch

PROJECT_ROOT = Path(__file__).resolve().parent.parent
SOURCE_FILE = "workbook_source.json"  # how a data folder was made (download or synthetic), in that folder

QUICK = "WORKBOOK_QUICK"
DATA_DIR = "WORKBOOK_DATA_DIR"
DATASET = "WORKBOOK_DATASET"
DATA_URL = "WORKBOOK_DATA_URL"
OFFLINE = "WORKBOOK_OFFLINE"
SYNTHETIC_PER_CLASS = "WORKBOOK_SYNTHETIC_PER_CLASS"
WEIGHTS_URL = "WORKBOOK_WEIGHTS_URL"
ALLOW_RANDOM_WEIGHTS = "WORKBOOK_ALLOW_RANDOM_WEIGHTS"
DEVICE = "WORKBOOK_DEVICE"
REAL_SAMPLE = "WORKBOOK_REAL_SAMPLE"
REQUIRE_BROWSER = "WORKBOOK_REQUIRE_BROWSER"
PLAIN_PROGRESS = "WORKBOOK_PLAIN_PROGRESS"

DEFAULT_SYNTHETIC_PER_CLASS = 1_000  # offline stand-in for a full run
QUICK_SYNTHETIC_PER_CLASS = 50  # WORKBOOK_QUICK=1

_YES = {"1", "true", "yes", "on"}
_NO = {"0", "false", "no", "off"}


class SettingsError(ValueError):
    """A WORKBOOK_* variable (or a setting given in code) holds a value the workbook cannot use."""


# ----------------------------------------------------------------------------- parsers
def env_text(name: str) -> str | None:
    """The variable's value without surrounding spaces, or None when it is unset or empty."""
    value = os.environ.get(name, "").strip()
    return value or None


def env_flag(name: str, default: bool = False) -> bool:
    """A yes/no variable: 1, true, yes, on / 0, false, no, off (any case); unset means `default`."""
    value = env_text(name)
    if value is None:
        return default
    if value.lower() in _YES:
        return True
    if value.lower() in _NO:
        return False
    raise SettingsError(f"{name}={value!r} is not understood: use 1 (or yes, true, on) or 0 (or no, false, off).")


def env_int(name: str, default: int, minimum: int = 1) -> int:
    """A whole-number variable of at least `minimum`; unset means `default`."""
    value = env_text(name)
    if value is None:
        return default
    try:
        number = int(value.replace("_", "").replace(",", ""))
    except ValueError:
        number = None
    if number is None or number < minimum:
        raise SettingsError(
            f"{name}={value!r} is not understood: use a whole number of at least {minimum}, e.g. {name}={default}."
        )
    return number


def env_path(name: str) -> Path | None:
    """A folder or file named by the variable (~ expanded, made absolute), or None when unset."""
    value = env_text(name)
    return Path(value).expanduser().resolve() if value else None


# ----------------------------------------------------------------------------- the settings
def quick_mode() -> bool:
    """True when WORKBOOK_QUICK=1: tiny synthetic data and the shortest training (CI, a first look)."""
    return env_flag(QUICK)


def offline() -> bool:
    """True when WORKBOOK_OFFLINE=1: no download is tried."""
    return env_flag(OFFLINE)


def data_url() -> str | None:
    """The learner's own address (or local zip) of the data set, from WORKBOOK_DATA_URL."""
    return env_text(DATA_URL)


def weights_url() -> str | None:
    """A mirror of the ImageNet weights file, from WORKBOOK_WEIGHTS_URL."""
    return env_text(WEIGHTS_URL)


def random_weights_allowed() -> bool:
    """True when WORKBOOK_ALLOW_RANDOM_WEIGHTS=1: a random backbone may stand in, loudly."""
    return env_flag(ALLOW_RANDOM_WEIGHTS)


def synthetic_per_class() -> int:
    """Images per class for the synthetic stand-in: 50 in quick mode, else WORKBOOK_SYNTHETIC_PER_CLASS or 1,000."""
    if quick_mode():
        return QUICK_SYNTHETIC_PER_CLASS
    return env_int(SYNTHETIC_PER_CLASS, DEFAULT_SYNTHETIC_PER_CLASS)


def real_sample_dir() -> Path | None:
    """The folder of a real sample (Positive/ + Negative/) named by WORKBOOK_REAL_SAMPLE, or None."""
    return env_path(REAL_SAMPLE)


def shared_dataset_dir() -> Path | None:
    """The class's shared data set named by WORKBOOK_DATASET, or None; SettingsError when it is not a data folder.

    The folder may be read-only: the workbook reads its images and writes nothing there (every
    cache, record and checkpoint about it goes under the learner's own data folder).
    """
    path = env_path(DATASET)
    if path is None:
        return None
    if not path.exists():
        raise SettingsError(
            f"{DATASET}={str(path)!r} does not exist: point it at the shared folder that holds "
            "Positive/ and Negative/ (ask your teacher where it is), or unset it."
        )
    if not path.is_dir():
        raise SettingsError(
            f"{DATASET}={str(path)!r} is a file, not a folder: point it at the folder that holds "
            "Positive/ and Negative/."
        )
    missing = [name for name in ("Positive", "Negative") if not (path / name).is_dir()]
    if missing:
        raise SettingsError(
            f"{DATASET}={str(path)!r} has no {' and no '.join(f'{m}/' for m in missing)} folder: "
            "point it at the folder that holds Positive/ and Negative/."
        )
    own = data_dir()
    if own == path or path in own.parents:
        raise SettingsError(
            f"{DATA_DIR}={str(own)!r} lies inside {DATASET}={str(path)!r}, which learners only read: "
            f"give each learner a folder of their own, e.g. {DATA_DIR}=~/workbook-data."
        )
    return path


def in_class() -> bool:
    """True when WORKBOOK_DATASET is set: a learner of a class, whose runs write only under their data folder."""
    return env_text(DATASET) is not None


def plain_progress() -> bool:
    """True when WORKBOOK_PLAIN_PROGRESS=1: progress bars as text, never as widgets (headless runs)."""
    return env_flag(PLAIN_PROGRESS)


def browser_required() -> bool:
    """True when WORKBOOK_REQUIRE_BROWSER=1 (CI): a missing Chromium fails the browser test."""
    return env_flag(REQUIRE_BROWSER)


def check_address(name: str, value: str | None) -> str | None:
    """`value` when it is an http(s) or file:// address or a local path; SettingsError for an empty one or another scheme."""
    if value is None:
        return None
    scheme = re.match(r"([A-Za-z][A-Za-z0-9+.-]+)://", value)
    if not value.strip() or (scheme and scheme.group(1).lower() not in ("http", "https", "file")):
        raise SettingsError(
            f"{name}={value!r} is not an address the workbook can fetch: give an http://, https:// "
            "or file:// address, or the path of a local file."
        )
    return value


def validate_settings() -> None:
    """Read every WORKBOOK_* setting once; the first bad one raises SettingsError with its one sentence.

    Each command calls this before any work (and `python -m helpers run` before notebook 01, so
    the kernels it starts, which inherit the environment, never meet a bad value).
    """
    for flag in (QUICK, OFFLINE, ALLOW_RANDOM_WEIGHTS, PLAIN_PROGRESS, REQUIRE_BROWSER):
        env_flag(flag)
    env_int(SYNTHETIC_PER_CLASS, DEFAULT_SYNTHETIC_PER_CLASS)
    check_address(DATA_URL, data_url())
    check_address(WEIGHTS_URL, weights_url())
    for name, path in ((DATA_DIR, env_path(DATA_DIR)), (REAL_SAMPLE, env_path(REAL_SAMPLE))):
        if path is not None and path.exists() and not path.is_dir():
            raise SettingsError(f"{name}={str(path)!r} is a file, not a folder: point it at a folder.")
    shared_dataset_dir()
    pick_device()


def environment_with(**overrides: str) -> dict[str, str]:
    """This process's environment plus `overrides`, for a child process (a kernel, pytest, JupyterLab)."""
    return {**os.environ, **overrides}


# ----------------------------------------------------------------------------- folders
def images_dir() -> Path:
    """Where the notebooks save their figures: images/, or in a class (WORKBOOK_DATASET) data/images/."""
    return data_dir() / "images" if in_class() else PROJECT_ROOT / "images"


def executed_dir() -> Path:
    """Where `python -m helpers run` keeps executed copies: build/executed/, or in a class data/executed/."""
    return data_dir() / "executed" if in_class() else PROJECT_ROOT / "build" / "executed"


def notebooks() -> list[Path]:
    """The workbook's notebooks, notebooks/NN_*.ipynb, in order."""
    return sorted((PROJECT_ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))


def data_dir() -> Path:
    """The folder downloads and generated data land in: data/, or WORKBOOK_DATA_DIR."""
    return env_path(DATA_DIR) or PROJECT_ROOT / "data"


def real_dir() -> Path:
    """Where the downloaded JPEGs live: data/concrete_crack_images/{Positive,Negative}."""
    return data_dir() / "concrete_crack_images"


def tensors_dir() -> Path:
    """Where the capstone's optional .pt format lives: data/concrete_crack_tensors/."""
    return data_dir() / "concrete_crack_tensors"


def synthetic_dir(quick: bool | None = None) -> Path:
    """Where generated images live: data/synthetic_cracks/ (data/synthetic_quick/ in quick mode)."""
    quick = quick_mode() if quick is None else quick
    return data_dir() / ("synthetic_quick" if quick else "synthetic_cracks")


def download_attempt_file() -> Path:
    """Where a failed attempt to download the real set is recorded, so later notebooks do not send the learner back."""
    return data_dir() / "download_attempt.json"


def downloads_dir() -> Path:
    """Where archives are downloaded to before extraction: data/downloads/."""
    return data_dir() / "downloads"


def feature_cache_dir() -> Path:
    """Where the backbone's features are cached: data/cache/features/."""
    return data_dir() / "cache" / "features"


def checkpoints_dir() -> Path:
    """Where trained models are saved: data/checkpoints/."""
    return data_dir() / "checkpoints"


def default_checkpoint_path() -> Path:
    """Where notebook 04 saves the trained model and notebook 05 looks for it (quick mode keeps its own)."""
    return checkpoints_dir() / ("resnet18_cracks_quick.pt" if quick_mode() else "resnet18_cracks.pt")


# ----------------------------------------------------------------------------- the device
def available_devices() -> list[str]:
    """The devices this machine can run on, e.g. ["cpu"] or ["cpu", "cuda:0", "cuda:1"]."""
    import torch

    devices = ["cpu"]
    if torch.cuda.is_available():
        devices += [f"cuda:{i}" for i in range(torch.cuda.device_count())]
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        devices.append("mps")
    return devices


def pick_device(preference: str | torch.device | None = None) -> torch.device:
    """The device to run on: `preference`, else WORKBOOK_DEVICE, else CUDA, then Apple's MPS, then the CPU.

    A device this machine does not have (cuda without a driver, cuda:7 on one GPU, mps on Linux,
    a misspelling) raises SettingsError with one sentence that lists the devices it does have.
    """
    import torch

    source = "the device" if preference is not None else DEVICE
    preference = preference if preference is not None else env_text(DEVICE)
    if preference is None:
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    available = available_devices()
    shown = f"{source}={str(preference)!r}" if source == DEVICE else f"device {str(preference)!r}"
    try:
        device = torch.device(preference)
    except (RuntimeError, ValueError, TypeError):
        raise SettingsError(f"{shown} is not a device name; this machine has: {', '.join(available)}.") from None
    index = 0 if device.index is None else device.index
    known = (
        device.type == "cpu"
        or (device.type == "mps" and "mps" in available)
        or (device.type == "cuda" and f"cuda:{index}" in available)
    )
    if not known:
        raise SettingsError(f"{shown} is not available on this machine, which has: {', '.join(available)}.")
    return device
