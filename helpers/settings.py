"""Every setting of the workbook in one place: the seven WORKBOOK_* environment variables (README.md lists them), the
folders, the device; and the check of the installed versions that every notebook runs first.

No other module reads a WORKBOOK_* variable. Each is read when asked for (so a test or a notebook cell can change it);
a value that cannot be understood stops with one sentence naming the variable and what it accepts. This module
imports nothing that might be missing (torch only where the device is chosen).
"""

from __future__ import annotations

import functools
import os
import platform
import sys
from collections.abc import Callable, Sequence
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING

from packaging.requirements import Requirement

if TYPE_CHECKING:  # torch is imported only where the device is chosen
    import torch

PROJECT_ROOT = Path(__file__).resolve().parent.parent  # the clone: an editable install keeps helpers/ in it
if not (PROJECT_ROOT / "pyproject.toml").is_file():  # `pip install .` copied helpers/ alone into site-packages
    raise ImportError("helpers is installed without the workbook's folders: run `pip install -e .` in its clone.")
SOURCE_FILE = "workbook_source.json"  # how a data folder was made (download or synthetic), in that folder

QUICK = "WORKBOOK_QUICK"
DATA_DIR = "WORKBOOK_DATA_DIR"
DATASET = "WORKBOOK_DATASET"
OFFLINE = "WORKBOOK_OFFLINE"
ALLOW_RANDOM_WEIGHTS = "WORKBOOK_ALLOW_RANDOM_WEIGHTS"
DEVICE = "WORKBOOK_DEVICE"
REAL_SAMPLE = "WORKBOOK_REAL_SAMPLE"


class SettingsError(ValueError):
    """A WORKBOOK_* variable (or a setting given in code) holds a value the workbook cannot use."""


def env_text(name: str) -> str | None:
    """The variable's value without surrounding spaces, or None when it is unset or empty."""
    return os.environ.get(name, "").strip() or None


def env_flag(name: str) -> bool:
    """A yes/no variable: 1, true, yes, on / 0, false, no, off (any case); unset means no."""
    value = env_text(name)
    if value is None or value.lower() in ("0", "false", "no", "off"):
        return False
    if value.lower() in ("1", "true", "yes", "on"):
        return True
    raise SettingsError(f"{name}={value!r} is not understood: use 1 (or yes, true, on) or 0 (or no, false, off).")


def env_path(name: str, folder: bool = True) -> Path | None:
    """A path named by the variable (~ expanded, made absolute), or None when unset; with `folder`, a path that is
    or lies inside a file is refused."""
    value = env_text(name)
    if value is None:
        return None
    try:
        path = Path(value).expanduser().resolve()
    except RuntimeError:  # ~someone who has no home folder here
        raise SettingsError(f"{name}={value!r} names a home folder this machine does not know: give a full path.")
    existing = next(part for part in (path, *path.parents) if part.exists())
    if folder and not existing.is_dir():
        raise SettingsError(f"{name}={value!r} is or lies inside a file ({existing}): point it at a folder.")
    return path


def quick_mode() -> bool:
    """True when WORKBOOK_QUICK=1: tiny synthetic data and the shortest training (CI, a first look)."""
    return env_flag(QUICK)


def offline() -> bool:
    """True when WORKBOOK_OFFLINE=1: no download is tried."""
    return env_flag(OFFLINE)


def random_weights_allowed() -> bool:
    """True when WORKBOOK_ALLOW_RANDOM_WEIGHTS=1: a random backbone may stand in, loudly."""
    return env_flag(ALLOW_RANDOM_WEIGHTS)


def real_sample_dir() -> Path | None:
    """The folder of a real sample (Positive/ + Negative/) named by WORKBOOK_REAL_SAMPLE, or None."""
    return env_path(REAL_SAMPLE)


def shared_dataset_dir() -> Path | None:
    """The class's shared data set named by WORKBOOK_DATASET (may be read-only: nothing is written there), or None;
    SettingsError when it is not a data folder."""
    path = env_path(DATASET, folder=False)
    if path is None:
        return None
    if not path.is_dir():
        raise SettingsError(
            f"{DATASET}={str(path)!r} {'is a file, not a folder' if path.exists() else 'does not exist'}: point it at "
            "the shared folder that holds Positive/ and Negative/ (ask your teacher where it is), or unset it."
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


def validate_settings() -> None:
    """Read every WORKBOOK_* setting once; the first bad one raises SettingsError with its one sentence."""
    for flag in (QUICK, OFFLINE, ALLOW_RANDOM_WEIGHTS):
        env_flag(flag)
    env_path(DATA_DIR)
    env_path(REAL_SAMPLE)
    shared_dataset_dir()
    pick_device()


def command(main: Callable[[Sequence[str] | None], int]) -> Callable[[Sequence[str] | None], int]:
    """`main` with every setting checked first; a bad one is `error: ...` (exit 2), Ctrl+C one line (exit 130)."""

    @functools.wraps(main)
    def guarded(argv: Sequence[str] | None = None) -> int:
        try:
            validate_settings()
            return main(argv)
        except SettingsError as error:
            print(f"error: {error}", file=sys.stderr)
            return 2
        except KeyboardInterrupt:
            print("interrupted (Ctrl+C): nothing half-written is left behind; run the command again.", file=sys.stderr)
            return 130

    return guarded


def environment_with(**overrides: str) -> dict[str, str]:
    """This process's environment plus `overrides`, for a child process (a kernel, pytest, JupyterLab)."""
    return {**os.environ, **overrides}


def check_versions() -> dict[str, str]:
    """Print Python's and each required package's version beside what pyproject.toml asks for; RuntimeError naming
    every package missing or too old, and the command that fixes it (found in the first cell, not mid-lesson)."""
    found, problems = {"python": platform.python_version()}, []
    print(f"{'python':<16} {found['python']:<16} (needs >=3.10)")
    if sys.version_info < (3, 10):
        problems.append(f"Python {found['python']} (needs >=3.10)")
    try:
        requirements = [Requirement(text) for text in metadata.requires("concrete-crack-workbook") or []]
    except metadata.PackageNotFoundError:
        requirements = []
        print("(the workbook is not installed, so its packages are not checked: `pip install -e .` installs it)")
    for requirement in (r for r in requirements if r.marker is None):  # extras ([test]) have a marker
        name, needs = requirement.name, requirement.specifier
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            found[name] = "missing"
        if found[name] == "missing" or not needs.contains(found[name], prereleases=True):
            problems.append(f"{name} {found[name]} (needs {needs})")
        print(f"{name:<16} {found[name]:<16} (needs {needs})")
    if problems:
        raise RuntimeError(
            f"Some packages are missing or too old: {'; '.join(problems)}. Run `make lab` from the project folder "
            "(it installs what is needed), or `pip install -e .` inside your environment."
        )
    return found


# ----------------------------------------------------------------------------- folders
def data_dir() -> Path:
    """The folder downloads and generated data land in: data/, or WORKBOOK_DATA_DIR."""
    return env_path(DATA_DIR) or PROJECT_ROOT / "data"


def images_dir() -> Path:
    """Where the notebooks save their figures: images/, or in a class (WORKBOOK_DATASET) data/images/."""
    return data_dir() / "images" if in_class() else PROJECT_ROOT / "images"


def executed_dir() -> Path:
    """Where `python -m helpers run` keeps executed copies: build/executed/, or in a class data/executed/."""
    return data_dir() / "executed" if in_class() else PROJECT_ROOT / "build" / "executed"


def notebooks() -> list[Path]:
    """The workbook's notebooks, notebooks/NN_*.ipynb, in order."""
    return sorted((PROJECT_ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))


def real_dir() -> Path:
    """Where the downloaded JPEGs live: data/concrete_crack_images/{Positive,Negative}."""
    return data_dir() / "concrete_crack_images"


def synthetic_dir(quick: bool | None = None) -> Path:
    """Where generated images live: data/synthetic_cracks/ (data/synthetic_quick/ in quick mode)."""
    quick = quick_mode() if quick is None else quick
    return data_dir() / ("synthetic_quick" if quick else "synthetic_cracks")


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

    devices = ["cpu"] + [f"cuda:{i}" for i in range(torch.cuda.device_count() if torch.cuda.is_available() else 0)]
    return devices + (["mps"] if torch.backends.mps.is_available() else [])


def pick_device(preference: str | torch.device | None = None) -> torch.device:
    """The device to run on: `preference`, else WORKBOOK_DEVICE, else CUDA, then Apple's MPS, then the CPU; a device
    this machine does not have raises SettingsError with one sentence listing the ones it has."""
    import torch

    named = preference if preference is not None else env_text(DEVICE)
    if named is None:
        return torch.device(
            "cuda" if torch.cuda.is_available() else "mps" if torch.backends.mps.is_available() else "cpu"
        )
    available = available_devices()
    shown = f"device {str(named)!r}" if preference is not None else f"{DEVICE}={str(named)!r}"
    try:
        device = torch.device(named)
    except (RuntimeError, ValueError, TypeError):
        raise SettingsError(f"{shown} is not a device name; this machine has: {', '.join(available)}.") from None
    index = 0 if device.index is None else device.index
    if device.type != "cpu" and f"{device.type}:{index}" not in available and device.type not in available:
        raise SettingsError(f"{shown} is not available on this machine, which has: {', '.join(available)}.")
    return device
