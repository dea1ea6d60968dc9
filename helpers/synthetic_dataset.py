"""Writing and reading synthetic data sets drawn by `helpers.synthetic`.

`generate_dataset` writes a folder laid out like the real set (dest/<class>/00001.jpg, ...),
plus `synthetic_manifest.csv` (class, filename, kind, duplicate_of for every file) and
`workbook_source.json` (the generator settings, so a matching set is reused, not redrawn).
Byte-identical duplicates are written at fixed rates (1.5 % of positives, 6.5 % of negatives) unless
asked otherwise: chosen so that notebook 02's leak shows, not measured on the real set. Everything is
built in a hidden sibling folder and swapped into place at the end (helpers.plumbing.files.replacing),
so an error, Ctrl-C or a killed run never leaves a half-written set.
"""

from __future__ import annotations

import csv
import json
import shutil
from collections.abc import Mapping
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm.auto import tqdm

from helpers.plumbing.files import check_replaceable, lock, replacing
from helpers.settings import SOURCE_FILE
from helpers.synthetic import DEFAULT_CLASSES, RECIPES, make_image

# Share of byte-identical copies in the real set: by recipe, so the default classes get
# {"Positive": 0.015, "Negative": 0.065}.
DUPLICATE_FRACTION = {"crack": 0.015, "other": 0.065}  # chosen to make the leak visible; not measured
MANIFEST_NAME = "synthetic_manifest.csv"
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")


def _duplicate_fractions(classes: Mapping[str, str], fraction: Mapping[str, float] | float | None) -> dict[str, float]:
    """One duplicate fraction per class folder, checked to lie in [0, 0.5]."""
    if fraction is None:
        result = {
            folder: DUPLICATE_FRACTION["crack" if recipe == "crack" else "other"] for folder, recipe in classes.items()
        }
    elif isinstance(fraction, Mapping):
        unknown = set(fraction) - set(classes)
        if unknown:
            raise ValueError(f"duplicate_fraction names folders that aren't classes: {sorted(unknown)}")
        result = {folder: float(fraction.get(folder, 0.0)) for folder in classes}
    else:
        result = {folder: float(fraction) for folder in classes}
    if not all(0.0 <= value <= 0.5 for value in result.values()):
        raise ValueError(f"duplicate fractions must lie between 0 and 0.5, got {result}")
    return result


def _plan_duplicates(seed: int, class_index: int, per_class: int, fraction: float) -> dict[int, int]:
    """Which file indices are copies, and of which original: {copy index: original index}."""
    n_copies = min(int(fraction * per_class + 0.5), per_class - 1)
    rng = np.random.default_rng([seed, class_index, 2])
    order = rng.permutation(per_class)
    copies, originals = order[:n_copies], np.sort(order[n_copies:])
    sources = rng.choice(originals, size=n_copies)  # one photo may be copied more than once
    return {int(c): int(s) for c, s in zip(copies, sources)}


def _write_class(
    folder: Path, recipe: str, seed: int, class_index: int, per_class: int, fraction: float, quality: int, bar: tqdm
) -> list[dict]:
    """Write one class folder; return its manifest rows in file order."""
    folder.mkdir()
    copies = _plan_duplicates(seed, class_index, per_class, fraction)
    names = [f"{i + 1:05d}.jpg" for i in range(per_class)]
    kinds: dict[int, str] = {}
    for i in range(per_class):
        if i in copies:
            continue
        image, info = make_image(np.random.default_rng([seed, class_index, 1, i]), recipe)
        image.save(folder / names[i], format="JPEG", quality=quality)
        kinds[i] = info["kind"]
        bar.update(1)
    for i, source in sorted(copies.items()):
        shutil.copyfile(folder / names[source], folder / names[i])
        bar.update(1)
    return [
        {
            "class": folder.name,
            "filename": names[i],
            "kind": kinds[copies.get(i, i)],
            "duplicate_of": names[copies[i]] if i in copies else "",
        }
        for i in range(per_class)
    ]


def _same_settings(dest: Path, settings: dict) -> bool:
    """True when dest/workbook_source.json records the same generator settings."""
    try:
        recorded = json.loads((dest / SOURCE_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    if not isinstance(recorded, dict):
        return False
    keys = ("source", "seed", "per_class", "classes", "duplicate_fraction", "quality")
    # Compare as JSON text: the order of the classes matters too (it seeds the images).
    return all(json.dumps(recorded.get(key)) == json.dumps(settings[key]) for key in keys)


def generate_dataset(
    dest: str | Path,
    per_class: int = 1000,
    seed: int = 0,
    *,
    classes: Mapping[str, str] | None = None,
    duplicate_fraction: Mapping[str, float] | float | None = None,
    quality: int = 90,
    overwrite: bool = False,
    progress: bool = True,
) -> Path:
    """Write a synthetic data set laid out like the real one: dest/<class>/00001.jpg, ...

    classes maps folder -> recipe (default {"Positive": "crack", "Negative": "no_crack"}).
    duplicate_fraction: share of each class written as byte-identical copies of other files;
    None = DUPLICATE_FRACTION (0.015 for crack classes, 0.065 for others), 0 = none.
    Also writes dest/synthetic_manifest.csv and dest/workbook_source.json. Each image has its
    own seed, so the same seed gives the same bytes whatever per_class or progress are.
    If dest already holds a set with the same settings it is returned untouched. overwrite=True
    replaces only a folder the generator made (its workbook_source.json says "synthetic"); any other
    non-empty folder, or a file, raises an OSError and is left as it is."""
    dest = Path(dest)
    classes = dict(DEFAULT_CLASSES if classes is None else classes)
    if per_class < 1 or not classes or not 1 <= quality <= 100:
        raise ValueError("need per_class >= 1, at least one class and 1 <= quality <= 100")
    for folder, recipe in classes.items():
        if recipe not in RECIPES:
            raise ValueError(f"class {folder!r}: unknown recipe {recipe!r}; choose one of {RECIPES}.")
    settings = {
        "source": "synthetic",
        "generator": "helpers.synthetic",
        "seed": int(seed),
        "per_class": int(per_class),
        "classes": classes,
        "duplicate_fraction": _duplicate_fractions(classes, duplicate_fraction),
        "quality": int(quality),
    }
    check_replaceable(dest, "synthetic")  # a file, or a folder the generator did not make, is refused as it is
    with lock(dest):  # a second process waits, then finds the set made
        if dest.is_dir() and _same_settings(dest, settings):
            return dest
        if dest.is_dir() and any(dest.iterdir()) and not overwrite:
            raise FileExistsError(
                f"{dest} already exists and was not made with these settings. "
                "Pass overwrite=True to replace it, or choose another folder."
            )
        with replacing(dest, "synthetic") as tmp:
            rows: list[dict] = []
            with tqdm(total=per_class * len(classes), desc="synthetic images", unit="img", disable=not progress) as bar:
                for class_index, (folder, recipe) in enumerate(classes.items()):
                    fraction = settings["duplicate_fraction"][folder]
                    rows += _write_class(
                        tmp / folder, recipe, settings["seed"], class_index, per_class, fraction, quality, bar
                    )
            with open(tmp / MANIFEST_NAME, "w", newline="") as handle:
                writer = csv.DictWriter(handle, fieldnames=["class", "filename", "kind", "duplicate_of"])
                writer.writeheader()
                writer.writerows(rows)
            created = datetime.now(timezone.utc).isoformat(timespec="seconds")
            (tmp / SOURCE_FILE).write_text(json.dumps({**settings, "created": created}, indent=2) + "\n")
    return dest


def read_manifest(folder: str | Path) -> dict[str, str]:
    """What each synthetic image shows, by sample id: {"Negative/00007.jpg": "stain", ...}; {} for real data."""
    path = Path(folder) / MANIFEST_NAME
    if not path.is_file():
        return {}
    with open(path, newline="") as handle:
        return {f"{row['class']}/{row['filename']}": row["kind"] for row in csv.DictReader(handle)}


def image_statistics(folder: str | Path, max_per_class: int | None = None) -> dict[str, dict]:
    """Pixel statistics per class sub-folder: n, mean_rgb, std_rgb, brightness_p05/_p50/_p95.

    mean_rgb and std_rgb are over all pixels of the class; brightness is each image's mean
    grey value (luma, 0.299 R + 0.587 G + 0.114 B). max_per_class picks evenly spaced files."""
    stats = {}
    class_dirs = sorted(p for p in Path(folder).iterdir() if p.is_dir() and not p.name.startswith("."))
    for class_dir in class_dirs:
        files = sorted(f for f in class_dir.iterdir() if f.suffix.lower() in IMAGE_SUFFIXES)
        if max_per_class is not None and len(files) > max_per_class:
            picks = np.linspace(0, len(files) - 1, max_per_class).round().astype(int)
            files = [files[i] for i in picks]
        if not files:
            continue
        total, total_sq, n_pixels, brightness = np.zeros(3), np.zeros(3), 0, []
        for file in files:
            with Image.open(file) as image:
                pixels = np.asarray(image.convert("RGB"), dtype=np.float64).reshape(-1, 3)
            total += pixels.sum(axis=0)
            total_sq += (pixels**2).sum(axis=0)
            n_pixels += len(pixels)
            brightness.append(float((pixels @ [0.299, 0.587, 0.114]).mean()))
        mean = total / n_pixels
        std = np.sqrt(np.maximum(total_sq / n_pixels - mean**2, 0))
        p05, p50, p95 = (float(p) for p in np.percentile(brightness, [5, 50, 95]))
        stats[class_dir.name] = {
            "n": len(files),
            "mean_rgb": mean.round(2).tolist(),
            "std_rgb": std.round(2).tolist(),
            "brightness_p05": round(p05, 2),
            "brightness_p50": round(p50, 2),
            "brightness_p95": round(p95, 2),
        }
    return stats
