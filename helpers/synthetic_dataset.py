"""Synthetic data sets drawn by `helpers.synthetic`, laid out like the real set, with `synthetic_manifest.csv` (what
each file shows, which files are copies of which) and `workbook_source.json` (the settings, to reuse a set)."""

import csv
import json
import shutil
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm.auto import tqdm

from helpers.plumbing import IMAGE_EXTENSIONS, check_replaceable, lock, read_json, replacing
from helpers.settings import SOURCE_FILE
from helpers.synthetic import DEFAULT_CLASSES, RECIPES, make_image

# Byte-identical copies, as a share of each class: chosen so that notebook 02's leak shows, not measured on real data.
CRACK_DUPLICATES, OTHER_DUPLICATES = 0.015, 0.065
MANIFEST_NAME = "synthetic_manifest.csv"


def _write_class(folder: Path, recipe: str, seed: int, class_index: int, fraction: float, per_class: int, bar: tqdm):
    """Write one class folder; return its manifest rows (class, filename, kind, duplicate_of) in file order."""
    n_copies = min(int(fraction * per_class + 0.5), per_class - 1)
    rng = np.random.default_rng([seed, class_index, 2])
    order = rng.permutation(per_class)
    sources = rng.choice(np.sort(order[n_copies:]), size=n_copies)  # one photo may be copied more than once
    copies = {int(c): int(s) for c, s in zip(order[:n_copies], sources)}  # {copy index: original index}
    folder.mkdir()
    names, rows = [f"{i + 1:05d}.jpg" for i in range(per_class)], {}
    for i in range(per_class):
        if i not in copies:  # each image has its own seed: the same bytes whatever per_class is
            image, info = make_image(np.random.default_rng([seed, class_index, 1, i]), recipe)
            image.save(folder / names[i], format="JPEG", quality=90)
            rows[i] = (folder.name, names[i], info["kind"], "")
        bar.update(1)
    for i, source in copies.items():
        shutil.copyfile(folder / names[source], folder / names[i])
        rows[i] = (folder.name, names[i], rows[source][2], names[source])
    return [rows[i] for i in range(per_class)]


def generate_dataset(
    dest: str | Path,
    per_class: int = 1000,
    seed: int = 0,
    *,
    classes: dict[str, str] | None = None,
    duplicate_fraction: float | None = None,
    overwrite: bool = False,
    progress: bool = True,
) -> Path:
    """Write a synthetic data set, dest/<class>/00001.jpg, ..., and return dest. classes maps folder -> recipe;
    duplicate_fraction is the share of each class written as byte-identical copies (None: 1.5% of a crack class,
    6.5% of the others). A set made with the same settings is reused; overwrite=True replaces one made with others."""
    dest, classes = Path(dest), dict(DEFAULT_CLASSES if classes is None else classes)
    if per_class < 1 or not classes or not set(classes.values()) <= set(RECIPES):
        raise ValueError(
            f"per_class must be 1 or more and each class a recipe of {RECIPES}, not {per_class}, {classes}."
        )
    if duplicate_fraction is not None and not 0 <= duplicate_fraction <= 0.5:
        raise ValueError(f"duplicate_fraction must lie between 0 and 0.5 (or be None), not {duplicate_fraction}.")
    by_recipe = {name: CRACK_DUPLICATES if r == "crack" else OTHER_DUPLICATES for name, r in classes.items()}
    fractions = by_recipe if duplicate_fraction is None else dict.fromkeys(classes, float(duplicate_fraction))
    settings = {"source": "synthetic", "seed": int(seed), "per_class": int(per_class), "classes": classes}
    settings["duplicate_fraction"] = fractions
    check_replaceable(dest, "synthetic")  # a file, or a folder the generator did not make, is refused as it is
    with lock(dest):  # a second process waits, then finds the set made
        recorded = read_json(dest / SOURCE_FILE)  # compared as JSON text: the classes' order seeds the images too
        if all(json.dumps(recorded.get(key)) == json.dumps(value) for key, value in settings.items()):
            return dest
        if dest.is_dir() and any(dest.iterdir()) and not overwrite:
            raise FileExistsError(
                f"{dest} holds a synthetic set made with other settings: pass overwrite=True, or choose another folder."
            )
        with replacing(dest, "synthetic") as tmp:
            rows = []
            with tqdm(total=per_class * len(classes), desc="synthetic images", disable=not progress) as bar:
                for index, (folder, recipe) in enumerate(classes.items()):
                    rows += _write_class(tmp / folder, recipe, int(seed), index, fractions[folder], per_class, bar)
            with open(tmp / MANIFEST_NAME, "w", newline="") as handle:
                csv.writer(handle).writerows([("class", "filename", "kind", "duplicate_of"), *rows])
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


@dataclass
class ImageStatistics:
    """A class folder's channel means and stds over all pixels, and percentiles of its images' mean luma."""

    n: int
    mean_rgb: list[float]
    std_rgb: list[float]
    brightness_p05: float
    brightness_p50: float
    brightness_p95: float


def image_statistics(folder: str | Path, max_per_class: int | None = None) -> dict[str, ImageStatistics]:
    """ImageStatistics of each class folder in `folder`, from at most `max_per_class` evenly spaced images."""
    stats = {}
    for class_dir in sorted(p for p in Path(folder).iterdir() if p.is_dir() and not p.name.startswith(".")):
        files = sorted(p for p in class_dir.iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS)
        if max_per_class is not None and len(files) > max_per_class:
            files = [files[i] for i in np.linspace(0, len(files) - 1, max_per_class).round().astype(int)]
        total, total_sq, n_pixels, brightness = np.zeros(3), np.zeros(3), 0, []
        for file in files:
            with Image.open(file) as image:
                pixels = np.asarray(image.convert("RGB"), dtype=np.float64).reshape(-1, 3)
            total, total_sq, n_pixels = total + pixels.sum(0), total_sq + (pixels**2).sum(0), n_pixels + len(pixels)
            brightness.append(float((pixels @ [0.299, 0.587, 0.114]).mean()))
        if not files:
            continue
        mean = total / n_pixels
        std = np.sqrt(np.maximum(total_sq / n_pixels - mean**2, 0))
        percentiles = np.percentile(brightness, [5, 50, 95]).round(2).tolist()
        stats[class_dir.name] = ImageStatistics(len(files), mean.round(2).tolist(), std.round(2).tolist(), *percentiles)
    return stats
