"""The feature cache: what a cache file holds, how its key's fingerprints are made, atomic saves.

:mod:`helpers.features` computes the features; this module stores and finds them. A cache file
holds the features, labels and sample ids of one data set, the key they were computed under
and the number format (float32, bfloat16, int8) the backbone used.
"""

from __future__ import annotations

import hashlib
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import TensorDataset

from helpers.plumbing.files import atomic_path, file_hashes

FEATURE_SIZE = 512  # ResNet18's avgpool output, the input of fc


def weights_fingerprint(model: nn.Module) -> str:
    """SHA-256 of the backbone's weights and BatchNorm statistics (everything but fc)."""
    digest = hashlib.sha256()
    for name, tensor in model.state_dict().items():
        if name.startswith("fc."):
            continue
        data = tensor.detach().cpu().contiguous().reshape(-1)
        digest.update(f"{name}|{data.dtype}|{tuple(tensor.shape)}".encode())
        digest.update(data.view(torch.uint8).numpy())  # hashes the buffer in place, no copy
    return digest.hexdigest()


def dataset_fingerprint(dataset, progress: bool = False) -> str:
    """SHA-256 of what the data set will feed the backbone: files (id, label, SHA-1 of the bytes), split, transform.

    Every file is read and hashed each time (helpers.plumbing.files.file_hashes).
    """
    hashes = file_hashes([Path(sample.path) for sample in dataset.samples], progress)
    digest = hashlib.sha256()
    digest.update(f"split={dataset.split}|transform={dataset.transform!r}".encode())
    digest.update(f"|decoder={getattr(dataset, 'decoder', 'pil')}".encode())
    for sample, file_hash in zip(dataset.samples, hashes):
        digest.update(f"\n{sample.sample_id}|{sample.label}|{file_hash}".encode())
    return digest.hexdigest()


# ----------------------------------------------------------------------------- feature sets
@dataclass
class FeatureSet:
    """Features of a data set, in the data set's order, with their labels and sample ids."""

    features: torch.Tensor  # (N, 512) float32
    labels: torch.Tensor  # (N,) int64
    sample_ids: list[str]
    key: str  # the cache key it was computed under
    number_format: str = "float32"  # how the backbone computed them: float32, bfloat16 or int8

    def __len__(self) -> int:
        return len(self.labels)

    def tensor_dataset(self) -> TensorDataset:
        """(feature, label) pairs, ready for a DataLoader that trains the head."""
        return TensorDataset(self.features, self.labels)


def cache_file(cache_dir: str | Path, name: str) -> Path:
    """Where the features called `name` are cached: cache_dir/<name>.pt."""
    return Path(cache_dir) / f"{name}.pt"


def load_cached(path: Path, key: str) -> FeatureSet | None:
    """The FeatureSet stored at `path` if it was computed under `key`, else None (a miss).

    A file that cannot be read is a miss too, with a warning; it will be overwritten.
    """
    if not path.is_file():
        return None
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
        stored = FeatureSet(
            payload["features"],
            payload["labels"],
            list(payload["sample_ids"]),
            payload["key"],
            str(payload.get("number_format", "float32")),
        )
        n = len(stored.sample_ids)
        if stored.features.shape != (n, FEATURE_SIZE) or stored.labels.shape != (n,):
            raise ValueError("the arrays in it do not fit together")
    except Exception as error:  # truncated file, not a torch file, missing entries...
        warnings.warn(f"Feature cache {path} is unreadable ({type(error).__name__}: {error}); recomputing it.")
        return None
    if stored.key != key:
        print(f"feature cache {path} was computed for other data, weights or settings: recomputing")
        return None
    return stored


def save_atomically(feature_set: FeatureSet, path: Path) -> None:
    """Write the feature set to `path` through helpers.plumbing.files.atomic_path: no half file, ever."""
    payload = {
        "key": feature_set.key,
        "features": feature_set.features,
        "labels": feature_set.labels,
        "sample_ids": feature_set.sample_ids,
        "number_format": feature_set.number_format,
    }
    with atomic_path(path, size_hint=feature_set.features.nbytes + feature_set.labels.nbytes) as temp:
        torch.save(payload, temp)
