"""The capstone's whole method in one call (notebooks 01-04 teach each step), for the notebooks after 04 and
`python -m helpers train`: ensure_checkpoint loads what notebook 04 saved, or trains it the same way."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from helpers.data import DataChoice
from helpers.dataset import CrackDataset
from helpers.features import FeatureSet, extract_features
from helpers.model import Checkpoint, WeightsChoice, build_resnet18, load_checkpoint, resolve_weights, save_checkpoint
from helpers.settings import default_checkpoint_path, feature_cache_dir, quick_mode
from helpers.training import History, train_head

CAPSTONE_SPLIT = "capstone: interleaved, first 75% train"


@dataclass
class TrainedHead:
    """What train_capstone_head made: the model, the validation images and their features, how training went."""

    model: nn.Module
    val_set: CrackDataset
    val_features: FeatureSet
    history: History
    metadata: dict  # what its checkpoint records (checkpoint_metadata)

    def save(self, path: str | Path) -> Path:
        """Save the model and its metadata at `path`, as notebook 04 does."""
        return save_checkpoint(path, self.model, self.val_set.classes, self.metadata)


def checkpoint_metadata(
    choice: DataChoice,
    train_set: CrackDataset,
    val_set: CrackDataset,
    weights: WeightsChoice,
    history: History,
    feature_format: str = "float32",
) -> dict:
    """What a checkpoint records about its training: weights, data, split, accuracy, settings, feature_format
    (the number format of the features the head learned from: FeatureSet.number_format, float32 or int8)."""
    dedupe = bool(getattr(train_set, "dedupe", False))
    return {
        "weights": weights.label,
        "weights_description": weights.description,
        "data_source": choice.source,
        "data_path": str(choice.path),
        "n_train": len(train_set),
        "n_val": len(val_set),
        "split": CAPSTONE_SPLIT + (", byte-identical copies kept on one side" if dedupe else ""),
        "val_accuracy": history.final_accuracy,
        "training": history.settings,
        "quick_mode": quick_mode(),
        "features": feature_format,
    }


def train_capstone_head(
    choice: DataChoice,
    weights: WeightsChoice,
    *,
    seed: int = 0,
    dedupe: bool = False,
    device: str | torch.device | None = None,
    progress: bool = True,
    **training,
) -> TrainedHead:
    """The capstone's method on cached features (feature_cache_dir()): ResNet18, frozen backbone, new head, Adam.

    training: train_head's epochs, lr and batch_size (by default the capstone's 1, 0.001 and 100)."""
    train_set = CrackDataset(choice.path, "train", dedupe=dedupe, progress=progress)
    val_set = CrackDataset(choice.path, "val", dedupe=dedupe, progress=progress)
    torch.manual_seed(seed)
    model = build_resnet18(num_classes=len(train_set.classes), weights=weights, progress=progress)
    train_features = extract_features(model, train_set, feature_cache_dir(), device=device, progress=progress)
    val_features = extract_features(model, val_set, feature_cache_dir(), device=device, progress=progress)
    history = train_head(
        model.fc, train_features, val_features, seed=seed, device=device, progress=progress, **training
    )
    metadata = checkpoint_metadata(choice, train_set, val_set, weights, history, train_features.number_format)
    return TrainedHead(model.cpu().eval(), val_set, val_features, history, metadata)


def ensure_checkpoint(choice: DataChoice, progress: bool = True) -> Checkpoint:
    """The model notebook 04 trained on this data; when it is missing or was trained on other data (another folder
    or size), says so, and trains and saves one the same way (the capstone's settings)."""
    path = default_checkpoint_path()
    if path.is_file():
        val_size = len(CrackDataset(choice.path, "val", transform=None, progress=False))
        checkpoint = load_checkpoint(path, num_classes=len(CrackDataset.classes))
        meta = checkpoint.metadata
        if meta.get("data_path") == str(choice.path) and meta.get("n_val") == val_size:
            print(f"Loaded {path} ({meta.get('n_train')} training images, {checkpoint.weights.description}).")
            return checkpoint
        print(f"{path} was trained on other data ({meta.get('data_path')}); training a new head for {choice.path}.")
    else:
        print(f"No checkpoint at {path}: training one now, as notebook 04 does.")
    trained = train_capstone_head(choice, resolve_weights(), progress=progress)
    trained.save(path)
    return load_checkpoint(path, num_classes=len(trained.val_set.classes))
