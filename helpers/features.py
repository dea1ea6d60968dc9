"""Compute the frozen backbone's features once, keep them on disk, train the head in seconds.

Our model is ResNet18 with every backbone layer frozen and a new ``fc = Linear(512, 2)``.
Frozen means the backbone's weights never change, so (in eval mode) the 512 numbers it
produces for an image never change either. The capstone's training loop still pushes every
image through the whole network at every epoch, recomputing those same 512 numbers each time.
Almost all of the time goes there: the head is a single small matrix multiplication.

So we split the model in two:

1. ``backbone_of(model)``: everything but ``fc``, turning (N, 3, H, W) images into (N, 512)
   feature vectors. :func:`extract_features` runs it once over a data set and saves the
   features in a cache file.
2. ``model.fc``: trained on the cached features, for as many epochs as we like.

``head(backbone(x))`` is the same computation as ``model(x)``, so the result is the same model
(up to float rounding). Two things differ from the capstone's loop:

* the backbone runs in eval mode: BatchNorm uses its stored statistics. The capstone called
  ``model.train()``, so its BatchNorm layers used each batch's statistics (and updated the
  stored ones), which makes an image's features depend on the other images in its batch;
* the cache must be thrown away whenever anything that changes the features changes: the
  images, the split, the transform, the backbone's weights or the number format (bfloat16, int8).
  :func:`feature_cache_key` hashes all of these; a cache file with another key is recomputed
  (the files themselves are read and written by :mod:`helpers.feature_cache`).

How the backbone computes (float32, bfloat16 or int8, compiled or not) is decided in one place,
:func:`helpers.speed.choose_backbone`; this module only asks it.
"""

from __future__ import annotations

import hashlib
import warnings
from collections.abc import Iterable
from pathlib import Path

import torch
from torch import nn

from helpers.feature_cache import (
    FeatureSet,
    cache_file,
    dataset_fingerprint,
    load_cached,
    save_atomically,
    weights_fingerprint,
)
from helpers.plumbing.progress import tqdm
from helpers.speed import (
    Backbone,
    FastSettings,
    Feeder,
    choose_backbone,
    choose_decoding,
    decoder_key_part,
    planned_batches,
)

CACHE_FORMAT = "concrete-crack-workbook/features/2"  # part of the key: bump it when the recipe changes


def source_size(dataset) -> int:
    """How many images the folder behind `dataset` holds (both splits), so train and val decide alike."""
    return int(getattr(dataset, "source_size", len(dataset)))


def cache_name(dataset) -> str:
    """The cache file's name for a data set: its folder and split, e.g. "synthetic_cracks-train"."""
    root = getattr(dataset, "root", None)
    name = f"{Path(root).name}-{dataset.split}" if root is not None else str(dataset.split)
    return name + ("-dedupe" if getattr(dataset, "dedupe", False) else "")


def _key(data: str, weights: str, backbone: Backbone, batched: bool = False) -> str:
    how = backbone.key_part + decoder_key_part(backbone.device, backbone.settings, batched)
    return hashlib.sha256("\n".join([CACHE_FORMAT, data, weights, how]).encode()).hexdigest()


def feature_cache_key(
    dataset,
    model: nn.Module,
    settings: FastSettings | None = None,
    device: torch.device | str | None = None,
    weights: str | None = None,
) -> str:
    """One hash that changes whenever the cached features would: data, weights or number format.

    `weights`: weights_fingerprint(model), when already computed (hashing 45 MB takes a moment).
    """
    weights = weights or weights_fingerprint(model)
    backbone = choose_backbone(
        model, device, settings, source_size(dataset), weights, getattr(dataset, "transform", None)
    )
    on_device, _ = choose_decoding(dataset, backbone.device, backbone.settings)
    return _key(dataset_fingerprint(dataset), weights, backbone, on_device)


def compute_features(
    backbone: Backbone, batches: Iterable, total: int, desc: str, progress: bool
) -> tuple[torch.Tensor, torch.Tensor]:
    """Run the backbone over every (images, labels) batch of `batches`: (features (N, 512), labels (N,))."""
    features, labels = [], []
    with backbone.threads(), tqdm(total=total, desc=desc, unit="img", disable=not progress) as bar:
        for images, batch_labels in batches:
            features.append(backbone(images))
            labels.append(batch_labels)
            bar.update(len(batch_labels))
    return torch.cat(features), torch.cat(labels).long()


def extract_features(
    model: nn.Module,
    dataset,
    cache_dir: str | Path | None = None,
    *,
    name: str | None = None,
    batch_size: int = 100,
    num_workers: int | str | None = None,
    settings: FastSettings | None = None,
    device: torch.device | str | None = None,
    progress: bool = True,
) -> FeatureSet:
    """The backbone features of every image of `dataset` (a CrackDataset), from the cache when possible.

    With `cache_dir`, the features live in cache_dir/<name>.pt (by default cache_name(dataset),
    e.g. "synthetic_cracks-train") together with the key they were computed under; a file with
    the same key is loaded instead of recomputed. `device` defaults to pick_device(); the images
    go through the backbone in `batch_size` batches, in the data set's order, read by
    `num_workers` DataLoader workers (see planned_batches: a number, None or "measure").
    On a GPU the JPEGs are decoded there, on a CPU in batches where measured faster
    (settings.decode_on_device, helpers.speed.choose_decoding).
    """
    weights = weights_fingerprint(model)  # once: the cache key and the int8 backbone both need it
    transform = getattr(dataset, "transform", None)
    backbone = choose_backbone(model, device, settings, source_size(dataset), weights, transform)
    on_device, _ = choose_decoding(dataset, backbone.device, backbone.settings)  # what the key needs
    data = dataset_fingerprint(dataset)
    name = name or cache_name(dataset)
    path = cache_file(cache_dir, name) if cache_dir is not None else None
    if path is not None:
        cached = load_cached(path, _key(data, weights, backbone, on_device))
        if cached is not None:
            print(f"features loaded from cache: {path}")
            return cached

    backbone.prepare(transform)  # may fall back from int8 to float32
    on_device, decode_why = choose_decoding(dataset, backbone.device, backbone.settings, measure=True)
    print(f"computing the features of {len(dataset):,} images in {backbone.number_format} ({backbone.why})")
    if on_device:
        where = "GPU" if backbone.device.type == "cuda" else backbone.device.type.upper()
        print(f"the JPEGs are decoded on the {where}, in batches ({decode_why})")
    notes: list[str] = []  # what measuring the workers found: printed once the progress bar is done
    feeder = Feeder(dataset, backbone.device, batch_size, on_device, reuse_buffer=True)  # each batch is used at once
    batches = planned_batches(feeder, num_workers, notes.append)
    features, labels = compute_features(backbone, batches, len(dataset), f"features ({name})", progress)
    for note in notes:
        print(note)
    feature_set = FeatureSet(
        features,
        labels,
        [sample.sample_id for sample in dataset.samples],
        _key(data, weights, backbone, on_device),
        backbone.number_format,
    )
    if path is not None:
        try:
            save_atomically(feature_set, path)
        except OSError as error:  # a full disk or a read-only folder must not throw the work away
            warnings.warn(
                f"The features are kept in memory and this run carries on, but they were not cached in {path}: {error}"
            )
    return feature_set


def features_for(dataset, *sources: FeatureSet) -> FeatureSet:
    """The features of `dataset`'s images, in its order, taken by sample id from feature sets already computed.

    An image's features do not depend on the split it sits in, so another split of the same folder
    (`dedupe=True`, a subset) needs no new pass through the backbone. The sources must share one
    number format; an image none of them holds raises ValueError naming it.
    """
    formats = {source.number_format for source in sources}
    if len(formats) != 1:
        raise ValueError(
            f"the feature sets were computed in different number formats ({', '.join(sorted(formats))}): "
            "compute them with the same settings."
        )
    rows = {sample_id: (source, row) for source in sources for row, sample_id in enumerate(source.sample_ids)}
    wanted = [sample.sample_id for sample in dataset.samples]
    missing = [sample_id for sample_id in wanted if sample_id not in rows]
    if missing:
        raise ValueError(
            f"{len(missing)} images of this data set have no features here (first: {missing[0]}): "
            "extract_features computes them."
        )
    picked = [rows[sample_id] for sample_id in wanted]
    features = torch.stack([source.features[row] for source, row in picked]) if picked else torch.empty(0, 512)
    labels = torch.tensor([int(source.labels[row]) for source, row in picked], dtype=torch.long)
    key = hashlib.sha256("\n".join(["selected", *sorted({s.key for s in sources}), *wanted]).encode()).hexdigest()
    return FeatureSet(features, labels, wanted, key, formats.pop())
