"""Compute the frozen backbone's features once, keep them on disk, train the head in seconds. Taught in notebook 04.

A frozen backbone in eval mode gives an image the same 512 numbers at every epoch, so we run it once over a data set
and train ``fc`` on the (N, 512) features: ``fc(backbone(x))`` is ``model(x)``, up to float rounding. A cache file is
recomputed when its key (:func:`feature_cache_key`: files, split, transform, weights, number format) does not fit."""

import hashlib
import os
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset
from tqdm.auto import tqdm

from helpers import speed
from helpers.model import weights_digest
from helpers.plumbing import atomic_path
from helpers.settings import pick_device

CACHE_FORMAT = "concrete-crack-workbook/features/3"  # part of the key: bump it when the recipe changes


@dataclass
class FeatureSet:
    """The backbone's features of a data set, in its order, with their labels and sample ids."""

    features: torch.Tensor  # (N, 512) float32
    labels: torch.Tensor  # (N,) int64
    sample_ids: list[str]
    number_format: str = "float32"  # or "int8" (helpers.speed)

    def __len__(self) -> int:
        return len(self.labels)

    def tensor_dataset(self) -> TensorDataset:
        """(feature, label) pairs, ready for a DataLoader that trains the head."""
        return TensorDataset(self.features, self.labels)


def cache_name(dataset) -> str:
    """The cache file's name for a data set: its folder and split, e.g. "synthetic_cracks-train"."""
    return f"{Path(dataset.root).name}-{dataset.split}" + ("-dedupe" if getattr(dataset, "dedupe", False) else "")


def feature_cache_key(dataset, model: nn.Module, number_format: str = "float32") -> str:
    """One hash that changes whenever the features would: files, split, transform, backbone weights, number format."""
    recipe = f"{number_format} ({speed.RECIPE})" if number_format == "int8" else number_format
    digest = hashlib.sha256(f"{CACHE_FORMAT}|{dataset.split}|{dataset.transform!r}|{recipe}".encode())
    for sample in dataset.samples:
        stat = os.stat(sample.path)
        digest.update(f"\n{sample.sample_id}|{sample.label}|{stat.st_size}|{stat.st_mtime_ns}".encode())
    digest.update(weights_digest(model).encode())
    return digest.hexdigest()


def extract_features(
    model: nn.Module,
    dataset,
    cache_dir: str | Path | None = None,
    *,
    batch_size: int = 100,
    device: torch.device | str | None = None,
    progress: bool = True,
) -> FeatureSet:
    """The backbone features of every image of `dataset` (a CrackDataset), from cache_dir/<name>.pt when its key fits.
    The backbone is a frozen eval-mode copy of all but `model.fc` (int8 where notebook 07 switched that on)."""
    device = pick_device(device)
    number_format = speed.number_format(device)  # the backbone itself is copied only when the cache misses
    path = Path(cache_dir) / f"{cache_name(dataset)}.pt" if cache_dir is not None else None
    key = feature_cache_key(dataset, model, number_format) if path is not None else ""
    ids = [sample.sample_id for sample in dataset.samples]
    labels = torch.tensor([sample.label for sample in dataset.samples], dtype=torch.long)
    if path is not None and path.is_file():
        try:
            stored = torch.load(path, map_location="cpu", weights_only=True)
            if stored["key"] == key:
                cached = FeatureSet(stored["features"], stored["labels"], stored["sample_ids"], stored["number_format"])
                found = (cached.sample_ids, cached.labels.tolist(), cached.labels.dtype, cached.number_format)
                found += (cached.features.dtype, cached.features.shape, bool(cached.features.isfinite().all()))
                if found != (ids, labels.tolist(), torch.long, number_format, torch.float32, (len(ids), 512), True):
                    raise ValueError("its key fits, its content does not")
                print(f"features loaded from the cache: {path}")
                return cached
        except Exception as error:  # a truncated, foreign or edited file is a miss: it is overwritten below
            why = f"is damaged or does not fit the data set ({type(error).__name__})"
            warnings.warn(f"The feature cache {path} {why}; recomputing it.", stacklevel=2)

    backbone, _ = speed.backbone_for(model, device, number_format)  # the format the key was computed for
    print(f"computing the features of {len(dataset):,} images in {number_format} on {device}")
    batches = speed.jpeg_batches(dataset, batch_size, reuse=True) if device.type == "cpu" else None
    if batches is None:  # on a GPU worker processes read the images; on a CPU the backbone uses every core
        workers = min(8, os.cpu_count() or 1) if device.type == "cuda" else 0
        batches = one_thread(DataLoader(dataset, batch_size=batch_size, num_workers=workers))
    features = []
    with torch.no_grad():
        total = -(-len(dataset) // batch_size)
        for images, _ in tqdm(batches, desc="features", total=total, disable=not progress):
            features.append(backbone(images.to(device)).float().cpu())
    result = FeatureSet(torch.cat(features) if features else torch.empty(0, 512), labels, ids, number_format)
    if path is not None:
        try:
            with atomic_path(path) as temporary:
                torch.save({"key": key, **result.__dict__}, temporary)
        except (OSError, RuntimeError) as error:  # a full disk (torch.save says RuntimeError) or a read-only folder
            warnings.warn(f"The features are kept in memory, but not cached in {path}: {error}", stacklevel=2)
    return result


def one_thread(batches):
    """The batches, each read on one CPU thread, then torch's threads back for the backbone: ToTensor and Normalize gain
    nothing from more threads, and on a busy machine wait for each other (17-54 ms per image with 2, 2.3 with 1)."""
    threads, batches = torch.get_num_threads(), iter(batches)
    while True:
        torch.set_num_threads(1)
        try:
            batch = next(batches, None)
        finally:
            torch.set_num_threads(threads)
        if batch is None:
            return
        yield batch


def features_for(dataset, *sources: FeatureSet) -> FeatureSet:
    """`dataset`'s features, in its order, taken by sample id from sets computed already (e.g. of another split)."""
    formats = {source.number_format for source in sources}
    if len(formats) != 1:
        raise ValueError(f"the feature sets were computed in different number formats ({', '.join(sorted(formats))}).")
    rows = {sample_id: (source, row) for source in sources for row, sample_id in enumerate(source.sample_ids)}
    wanted = [sample.sample_id for sample in dataset.samples]
    missing = [sample_id for sample_id in wanted if sample_id not in rows]
    if missing:
        raise ValueError(f"{len(missing)} images have no features here (first: {missing[0]}): run extract_features.")
    picked = [rows[sample_id] for sample_id in wanted]
    features = torch.stack([source.features[row] for source, row in picked]) if picked else torch.empty(0, 512)
    labels = torch.tensor([int(source.labels[row]) for source, row in picked], dtype=torch.long)
    return FeatureSet(features, labels, wanted, formats.pop())
