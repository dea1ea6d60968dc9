"""Choose how the backbone computes by timing each way on this machine, once, and remembering it.

Which number format is fastest depends on the CPU in ways its flags do not tell: on a 2-core
Xeon with AMX, int8 ran 4x bfloat16's rate although AMX is made for bfloat16. So the workbook
times every way that can run here (:data:`CANDIDATES`) on the same few calibration images, in
turns (a busy moment on a shared machine then slows all of them alike), checks each one's
features against float32's, and takes the way that finishes the folder soonest, its set-up
(building int8, torch.compile) included. The result, a :class:`Measurement`, is remembered in a
small JSON file under the data folder, keyed by the machine (CPU model, cores, torch and torchao
versions), so the next run on the same machine does not measure again.

This module knows nothing of ResNet18: a candidate is a function that builds a runner (images ->
features). :mod:`helpers.speed.backbone` supplies the real ones; the tests supply fakes and a
fake clock.
"""

from __future__ import annotations

import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from helpers.plumbing.files import read_json, write_json_atomically
from helpers.settings import data_dir
from helpers.speed.int8 import ROUNDING_ERROR_RANGE, rounding_error, torchao_version
from helpers.speed.workers import cores

# float32 first: the reference. "int8 8-bit conv1": int8 with the first convolution's weights in 8
# bits, not 7 (helpers.speed.int8), where the CPU's flags do not rule it out.
CANDIDATES = ("float32", "bfloat16", "bfloat16 compiled", "int8", "int8 8-bit conv1")
QUICK_TO_BUILD = ("float32", "bfloat16")  # nothing to compile: measured in seconds
# Measuring every candidate costs about a minute (most of it building int8 and compiling) and saves
# images x (1 / float32's rate - 1 / the best rate): on the 2-core CPUs measured that pays from
# 2,000-9,000 images, so a folder measures them all from 5,000 images. From SMALL_FOLDER images,
# the candidates that are quick to build (QUICK_TO_BUILD) are measured, in a few seconds (where
# bfloat16 can run here: on 2,000 images it saved half a minute against float32). A measurement
# already remembered is free, and is used from SMALL_FOLDER images on. Below, float32: nothing to
# build, the same numbers in quick mode and the tests whatever the machine remembers.
MEASURE_MIN_IMAGES = 5_000
SMALL_FOLDER = 1_000
TIMED_IMAGES = 40  # calibration images per timed round
ROUNDS = 2  # timed rounds per candidate, taking turns; the median is kept
MAX_ROUNDING = ROUNDING_ERROR_RANGE[1]  # mean 1 - cosine against float32 above this: not exact enough
FILE_FORMAT = "concrete-crack-workbook/number-formats/1"

Runner = Callable[[torch.Tensor], torch.Tensor]


def decisions_file() -> Path:
    """Where the measured choices are remembered: data/cache/number_formats.json."""
    return data_dir() / "cache" / "number_formats.json"


def machine_key() -> str:
    """What the measurement depends on: CPU model, core count, torch and torchao versions."""
    cpu = platform.processor() or platform.machine()
    cpuinfo = Path("/proc/cpuinfo")
    if sys.platform == "darwin":  # no /proc; platform.processor() only says "arm" or "i386"
        brand = subprocess.run(
            ["sysctl", "-n", "machdep.cpu.brand_string"], capture_output=True, text=True, check=False
        )
        cpu = brand.stdout.strip() or cpu
    elif cpuinfo.is_file():
        for line in cpuinfo.read_text(errors="replace").splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    return f"{cpu}, {cores()} cores, torch {torch.__version__}, torchao {torchao_version() or '(none)'}"


@dataclass
class Trial:
    """How one candidate did: its rate, its set-up, its rounding, or why it was skipped."""

    name: str
    rate: float = 0.0  # images per second, median of the timed rounds
    setup_seconds: float = 0.0  # building it and its first call (int8: calibration and compilation)
    rounding: float = 0.0  # mean 1 - cosine against float32 on the same images
    skipped: str = ""  # why it cannot be used (it failed, or rounds too much); "" when usable

    def seconds_for(self, images: int) -> float:
        """The time this candidate would take for `images` images, set-up included."""
        return self.setup_seconds + images / self.rate


@dataclass
class Measurement:
    """The candidates' trials on one machine, and what measuring them cost."""

    machine: str
    trials: list[Trial] = field(default_factory=list)
    seconds: float = 0.0  # the whole measurement: building, warming up and timing every candidate

    def usable(self, allowed: Iterable[str]) -> list[Trial]:
        """The trials of `allowed` candidates that ran and round little enough."""
        allowed = set(allowed)
        return [trial for trial in self.trials if trial.name in allowed and not trial.skipped]

    def covers(self, names: Iterable[str]) -> bool:
        """True when every one of `names` was tried (usable or not)."""
        return set(names) <= {trial.name for trial in self.trials}

    def choose(self, images: int, allowed: Iterable[str]) -> Trial:
        """The usable trial that finishes `images` images soonest, set-up included; float32 if none is usable."""
        usable = self.usable(allowed)
        if not usable:
            return Trial("float32")
        return min(usable, key=lambda trial: trial.seconds_for(images))

    def summary(self, allowed: Iterable[str] | None = None) -> str:
        """The rates, e.g. "float32 21 img/s, int8 60 img/s (set-up 31 s), bfloat16 skipped (...)"."""
        parts = []
        for trial in self.trials:
            if allowed is not None and trial.name not in allowed:
                continue
            if trial.skipped:
                parts.append(f"{trial.name} skipped ({trial.skipped})")
            else:
                setup = f" (set-up {trial.setup_seconds:.0f} s)" if trial.setup_seconds >= 5 else ""
                parts.append(f"{trial.name} {trial.rate:.0f} img/s{setup}")
        return ", ".join(parts)

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict) -> Measurement:
        return cls(str(data["machine"]), [Trial(**trial) for trial in data["trials"]], float(data["seconds"]))


def measure(
    candidates: dict[str, Callable[[], Runner]],
    images: torch.Tensor,
    machine: str,
    rounds: int = ROUNDS,
    clock: Callable[[], float] = time.perf_counter,
) -> Measurement:
    """Build each candidate, warm it up on `images`, then time it on `images` `rounds` times, taking turns.

    `candidates` maps a name to a function that builds a runner (images -> features); "float32",
    when present, is the reference for the rounding check. A candidate whose build or run raises
    is skipped, with the error; one whose features round more than MAX_ROUNDING against float32's
    is skipped too. `clock` is the timer (seconds); tests pass a fake one.
    """
    started = clock()
    trials, runners = {}, {}
    for name, build in candidates.items():
        begin = clock()
        try:
            runner = build()
            runner(images)  # warm-up: oneDNN's first-call work, torch.compile's compilation
        except Exception as error:  # a missing compiler, an export that fails, too little memory...
            trials[name] = Trial(name, skipped=f"failed: {type(error).__name__}: {str(error)[:120]}")
            continue
        trials[name], runners[name] = Trial(name, setup_seconds=clock() - begin), runner
    seconds: dict[str, list[float]] = {name: [] for name in runners}
    features: dict[str, torch.Tensor] = {}
    for _ in range(rounds):
        for name, runner in list(runners.items()):
            begin = clock()
            try:
                features[name] = runner(images)
            except Exception as error:
                trials[name].skipped = f"failed: {type(error).__name__}: {str(error)[:120]}"
                del runners[name]
                continue
            seconds[name].append(clock() - begin)
    reference = features.get("float32")
    for name in runners:
        trial = trials[name]
        trial.rate = len(images) / max(statistics.median(seconds[name]), 1e-9)
        if reference is not None:
            trial.rounding = rounding_error(features[name], reference)
            if not trial.rounding <= MAX_ROUNDING:  # also catches NaN
                trial.skipped = f"rounds too much: 1 - cosine {trial.rounding:.1e} against float32"
    return Measurement(machine, [trials[name] for name in candidates], clock() - started)


def remembered(machine: str, path: Path | None = None) -> Measurement | None:
    """The measurement kept for `machine` in the decisions file, or None (no file, another machine, unreadable)."""
    data = read_json(path or decisions_file())
    if not isinstance(data, dict) or data.get("format") != FILE_FORMAT:
        return None
    entry = data.get("machines", {}).get(machine)
    try:
        return Measurement.from_json(entry) if entry else None
    except (KeyError, TypeError, ValueError):
        return None


def remember(measurement: Measurement, path: Path | None = None) -> Path:
    """Keep `measurement` in the decisions file (beside other machines' entries); returns the file."""
    path = path or decisions_file()
    data = read_json(path)
    machines = data.get("machines", {}) if isinstance(data, dict) and data.get("format") == FILE_FORMAT else {}
    machines[measurement.machine] = measurement.to_json()
    path.parent.mkdir(parents=True, exist_ok=True)
    write_json_atomically({"format": FILE_FORMAT, "machines": machines}, path)
    return path
