"""The capstone's whole method in one call, for the notebooks after 04 and the headless script.

Notebooks 01-04 teach each step: find the data, split it, build ResNet18 with a new head,
compute the frozen backbone's features, train the head, save a checkpoint. Later notebooks
need the result, not the lesson: :func:`ensure_checkpoint` loads what notebook 04 saved, or
makes it the same way when it is missing or was trained on other data. `python -m helpers train`
runs the same steps from a terminal (:func:`train_capstone_head`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from helpers.data import DataChoice
from helpers.dataset import CrackDataset
from helpers.features import FeatureSet
from helpers.features import extract_features
from helpers.model import Checkpoint, WeightsChoice, build_resnet18, load_checkpoint, resolve_weights, save_checkpoint
from helpers.settings import default_checkpoint_path, feature_cache_dir, quick_mode
from helpers.training import History, train_head

CAPSTONE_SPLIT = "capstone: interleaved, first 75% train"


@dataclass
class TrainedHead:
    """What train_capstone_head made: the model, its data, its features and how training went."""

    model: nn.Module
    train_set: CrackDataset
    val_set: CrackDataset
    train_features: FeatureSet
    val_features: FeatureSet
    history: History
    weights: WeightsChoice


def checkpoint_metadata(
    choice: DataChoice,
    train_set: CrackDataset,
    val_set: CrackDataset,
    weights: WeightsChoice,
    history: History,
    feature_format: str = "float32",
) -> dict:
    """What a checkpoint records about its training: weights, data, split, accuracy, settings.

    feature_format: how the backbone computed the features the head was trained on
    (FeatureSet.number_format: float32, bfloat16 or int8).
    """
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
    weights: WeightsChoice | str | Path | None = "imagenet",
    *,
    epochs: int = 1,
    lr: float = 1e-3,
    batch_size: int = 100,
    dedupe: bool = False,
    device: str | torch.device | None = None,
    seed: int = 0,
    progress: bool = True,
) -> TrainedHead:
    """The capstone's method on cached features: ResNet18, frozen backbone, new Linear(512, 2), Adam.

    weights: a WeightsChoice, "imagenet", a path to a state dict, or None (a random backbone: only when asked for).
    The features are cached under helpers.settings.feature_cache_dir(), so a second run with
    the same data and weights trains in seconds.
    """
    train_set = CrackDataset(choice.path, "train", dedupe=dedupe, progress=progress)
    val_set = CrackDataset(choice.path, "val", dedupe=dedupe, progress=progress)
    weights = WeightsChoice.of(weights)
    torch.manual_seed(seed)
    model = build_resnet18(num_classes=len(train_set.classes), weights=weights, progress=progress)
    train_features = extract_features(model, train_set, feature_cache_dir(), device=device, progress=progress)
    val_features = extract_features(model, val_set, feature_cache_dir(), device=device, progress=progress)
    history = train_head(
        model.fc,
        train_features,
        val_features,
        epochs=epochs,
        lr=lr,
        batch_size=batch_size,
        seed=seed,
        device=device,
        progress=progress,
    )
    return TrainedHead(model.cpu().eval(), train_set, val_set, train_features, val_features, history, weights)


def save_trained_head(path: str | Path, choice: DataChoice, trained: TrainedHead) -> Path:
    """Save the model with what it is (checkpoint_metadata) at `path`, in the format notebook 05 loads."""
    metadata = checkpoint_metadata(
        choice,
        trained.train_set,
        trained.val_set,
        trained.weights,
        trained.history,
        trained.train_features.number_format,
    )
    return save_checkpoint(path, trained.model, trained.train_set.classes, metadata)


def ensure_checkpoint(choice: DataChoice, progress: bool = True) -> Checkpoint:
    """The model notebook 04 trained on this data, or, when there is none, one trained now the same way.

    Later notebooks run on their own: when the checkpoint is missing or was trained on other data
    (another folder or size), this says so and trains the head through the fast path with the
    capstone's settings (1 epoch, Adam, lr 0.001, batches of 100), then saves it.
    """
    path = default_checkpoint_path()
    if path.is_file():
        val_size = len(CrackDataset(choice.path, "val", transform=None, progress=False))
        checkpoint = load_checkpoint(path, num_classes=len(CrackDataset.classes))
        meta = checkpoint.metadata
        if meta.get("data_path") == str(choice.path) and meta.get("n_val") == val_size:
            print(
                f"Loaded {path} (trained by notebook 04 on {meta.get('n_train'):,} images, "
                f"weights: {checkpoint.weights.description})."
            )
            return checkpoint
        print(f"{path} was trained on other data ({meta.get('data_path')}); training a new head for {choice.path}.")
    else:
        print(f"No checkpoint at {path}: training one now through the fast path, as notebook 04 does.")
    trained = train_capstone_head(choice, resolve_weights(), progress=progress)
    save_trained_head(path, choice, trained)
    return load_checkpoint(path, num_classes=len(trained.train_set.classes))
