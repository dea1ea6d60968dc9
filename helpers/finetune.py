"""Beyond the capstone: more than two classes, and fine-tuning the last block of the backbone.

The capstone freezes all of ResNet18 and trains only a new `fc` head on two folders of
photos. Two natural next steps, used by notebook 06:

* **Any number of classes.** :class:`FolderDataset` reads the usual ``ImageFolder`` layout,
  ``root/<class name>/<images>``, with as many class folders as you like (crack, stain,
  no_defect...). It follows the same rules as :class:`helpers.dataset.CrackDataset`: sorted
  files, stable ids such as ``"crack/00007.jpg"``, RGB conversion, clear errors, and the same
  ``samples`` list, so helpers.features and helpers.analysis work on it unchanged.
* **Fine-tuning.** Frozen ImageNet features are general; the last block (``layer4``) holds
  the most ImageNet-specific ones. :func:`unfreeze` lets that block learn too, and
  :func:`fine_tune` trains it with a *smaller* learning rate than the new head
  (:func:`parameter_groups`), so the pretrained weights are adjusted, not overwritten.

The split. For every class separately, the first 75% of its sorted files go to training and
the rest to validation, so both splits keep the class balance and every machine gets the
same split. The chosen files are then taken in turn from each class (round robin), like the
capstone's positive/negative interleaving, so even an unshuffled loader sees mixed batches.

BatchNorm after unfreezing. :func:`helpers.training.set_train_mode` puts back into eval mode
every module whose parameters are *all* frozen. After ``unfreeze(model, ("layer4",))`` the
BatchNorm layers inside layer4 have trainable weights, so they stay in training mode and
update their running statistics (they are learning now); the BatchNorm layers of conv1 and
layer1-3 are still all frozen, so they keep the pretrained statistics.

Cached features (helpers.features) describe the frozen backbone: after fine-tuning, the
backbone's weights have changed, and its features must be computed again.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Callable, Literal, Sequence

import torch
from torch import nn
from tqdm.auto import tqdm

from helpers.dataset import (
    IMAGE_EXTENSIONS,
    SPLITS,
    DatasetNotFoundError,
    Sample,
    SampleSplit,
    default_transform,
    is_data_file,
    load_image,
    split_index,
)
from helpers.model import count_parameters, trainable_parameter_names
from helpers.training import History, evaluate, resolve_device, set_train_mode, training_step


# ----------------------------------------------------------------------------- the dataset
def class_folders(root: Path) -> list[str]:
    """The class names of an ImageFolder layout: the sorted names of root's visible sub-folders."""
    if not root.is_dir():
        raise DatasetNotFoundError(f"Dataset folder {root} does not exist: expected root/<class name>/<images>.")
    names = sorted(entry.name for entry in root.iterdir() if entry.is_dir() and not entry.name.startswith("."))
    if len(names) < 2:
        raise DatasetNotFoundError(f"Dataset folder {root} has {len(names)} class folder(s) ({', '.join(names)}); "
                                   "a classifier needs at least 2: root/<class name>/<images>.")
    return names


def image_files(folder: Path) -> list[Path]:
    """The image files of one class folder, sorted by name; .DS_Store, .pt and other files are ignored."""
    files = sorted((path for path in folder.iterdir()
                    if is_data_file(path) and path.suffix.lower() in IMAGE_EXTENSIONS), key=lambda p: p.name)
    if not files:
        raise DatasetNotFoundError(f"Class folder {folder} holds no images "
                                   f"({', '.join(IMAGE_EXTENSIONS)}): add some, or remove the folder.")
    return files


def take_in_turn(groups: Sequence[Sequence]) -> list:
    """One item from each group in turn: [[a1, a2], [b1], [c1, c2]] -> [a1, b1, c1, a2, c2]."""
    longest = max((len(group) for group in groups), default=0)
    return [group[i] for i in range(longest) for group in groups if i < len(group)]


class FolderDataset(SampleSplit):
    """Images in root/<class name>/ folders: labels 0, 1, 2... in the sorted order of the folder names.

    split "train" holds the first `train_fraction` of each class's sorted files, "val" the rest,
    "all" everything. `transform` is "default" (ToTensor and ImageNet normalisation), None
    (PIL images) or any callable.
    """

    def __init__(self, root: str | Path, split: Literal["train", "val", "all"] = "train",
                 transform: Callable | None | Literal["default"] = "default", train_fraction: float = 0.75):
        if split not in SPLITS:
            raise ValueError(f"split must be one of {', '.join(map(repr, SPLITS))}; got {split!r}")
        if isinstance(transform, str) and transform != "default":
            raise ValueError(f"transform must be a callable, None or 'default'; got {transform!r}")
        self.root = Path(root)
        self.split = split
        self.transform = default_transform() if transform == "default" else transform
        self.classes = class_folders(self.root)
        per_class, self.source_size = [], 0  # source_size: images in the folder, both splits
        for label, name in enumerate(self.classes):
            files = image_files(self.root / name)
            self.source_size += len(files)
            per_class.append([(path, label) for path in self._choose(files, train_fraction)])
        self.samples = [Sample(index=i, sample_id=f"{path.parent.name}/{path.name}", path=path, label=label)
                        for i, (path, label) in enumerate(take_in_turn(per_class))]
        if not self.samples:
            raise DatasetNotFoundError(f"The {split!r} split of {self.root} is empty: each class needs more images.")

    def _choose(self, files: list[Path], train_fraction: float) -> list[Path]:
        """This split's share of one class's sorted files."""
        cut = split_index(len(files), train_fraction)
        if self.split == "all":
            return files
        return files[:cut] if self.split == "train" else files[cut:]

    def __getitem__(self, idx: int) -> tuple[torch.Tensor, int]:
        sample = self.samples[idx]
        image = load_image(sample.path)  # RGB; a BadImageError names the file when it cannot be read
        if self.transform is not None:
            image = self.transform(image)
        return image, sample.label



# ----------------------------------------------------------------------------- unfreezing
def unfreeze(model: nn.Module, blocks: Sequence[str] = ("layer4",)) -> list[str]:
    """Let the named top-level blocks learn again; returns the names of all trainable parameters now.

    For ResNet18 the blocks are conv1, bn1, layer1 ... layer4 and fc. After unfreeze(model)
    the trainable parameters are layer4's and the head's.
    """
    children = dict(model.named_children())
    for name in blocks:
        if name not in children:
            raise ValueError(f"The model has no block called {name!r}; its blocks are {', '.join(children)}.")
        for parameter in children[name].parameters():
            parameter.requires_grad = True
    return trainable_parameter_names(model)


def parameter_groups(model: nn.Module, head_lr: float = 1e-3, backbone_lr: float = 1e-4) -> list[dict]:
    """Optimiser parameter groups: the head (`fc`) at head_lr, the other trainable parameters at backbone_lr.

    Frozen parameters are left out. A group with no parameters (nothing unfrozen yet) is
    left out too. Each group carries a "name" ("head" or "backbone") to read it back.
    """
    head_ids = {id(parameter) for parameter in model.fc.parameters()}
    head = [p for p in model.parameters() if p.requires_grad and id(p) in head_ids]
    backbone = [p for p in model.parameters() if p.requires_grad and id(p) not in head_ids]
    groups = [{"name": "head", "params": head, "lr": head_lr},
              {"name": "backbone", "params": backbone, "lr": backbone_lr}]
    groups = [group for group in groups if group["params"]]
    if not groups:
        raise ValueError("The model has no trainable parameters (every requires_grad is False): nothing to train.")
    return groups


# ----------------------------------------------------------------------------- fine-tuning
def train_one_epoch(model: nn.Module, optimizer: torch.optim.Optimizer, criterion: nn.Module, loader,
                    device: torch.device, history: History, desc: str, progress: bool) -> float:
    """One pass over `loader` with helpers.training.training_step; returns the mean loss."""
    set_train_mode(model, frozen_backbone=True)  # frozen blocks in eval mode, unfrozen ones learn
    loss_sum, seen = 0.0, 0
    batches = tqdm(loader, desc=desc, leave=False, disable=not progress)
    for inputs, labels in batches:
        loss = training_step(model, optimizer, criterion, inputs.to(device), labels.to(device))
        history.iteration_loss.append(loss)
        loss_sum, seen = loss_sum + loss * len(labels), seen + len(labels)
        batches.set_postfix(loss=f"{loss_sum / seen:.4f}")
    if seen == 0:
        raise ValueError("The training loader gave no batches: nothing to train on.")
    return loss_sum / seen


def fine_tune(model: nn.Module, train_loader, val_loader=None, epochs: int = 1, head_lr: float = 1e-3,
              backbone_lr: float = 1e-4, device: str | torch.device | None = None, seed: int = 0,
              progress: bool = True) -> History:
    """Train every trainable parameter (call unfreeze first): Adam, the head at head_lr, the rest at backbone_lr.

    The same loop as helpers.training.train (cross-entropy, torch.manual_seed(seed) first,
    validation accuracy after each epoch), with two learning rates instead of one: train()
    builds its optimiser from a single lr, so this function builds its own. The model is
    left in eval mode.
    """
    device = resolve_device(device)
    torch.manual_seed(seed)
    model.to(device)
    optimizer = torch.optim.Adam(parameter_groups(model, head_lr=head_lr, backbone_lr=backbone_lr))
    criterion = nn.CrossEntropyLoss()
    history = History(settings={
        "head_lr": head_lr, "backbone_lr": backbone_lr, "batch_size": getattr(train_loader, "batch_size", None),
        "epochs": epochs, "seed": seed, "optimizer": "Adam", "device": str(device), "path": "fine-tune",
        "backbone_mode": "eval except unfrozen blocks", "trainable": trainable_parameter_names(model),
    })
    start = time.perf_counter()
    for epoch in tqdm(range(epochs), desc="epochs", disable=not progress):
        history.epoch_loss.append(train_one_epoch(model, optimizer, criterion, train_loader, device, history,
                                                  f"epoch {epoch + 1}/{epochs}", progress))
        if val_loader is not None:
            history.val_accuracy.append(evaluate(model, val_loader, device=device))
    model.eval()
    history.seconds = time.perf_counter() - start
    return history


# ----------------------------------------------------------------------------- comparing runs
def run_row(name: str, model: nn.Module, history: History) -> dict:
    """One row for compare_runs from a trained model and its History."""
    return {"name": name, "trainable": count_parameters(model)[1], "seconds": history.seconds,
            "accuracy": history.final_accuracy}


def compare_runs(rows: list[dict]) -> str:
    """A small text table of runs: name, trainable parameters, seconds, accuracy.

    Each row is a dict with "name", "trainable" (a count), "seconds" and "accuracy" (0 to 1,
    or None when there was no validation), e.g. from run_row().
    """
    header = f"{'run':<24} {'trainable parameters':>20} {'seconds':>9} {'accuracy':>9}"
    lines = [header, "-" * len(header)]
    for row in rows:
        accuracy = "-" if row.get("accuracy") is None else f"{100 * row['accuracy']:.2f}%"
        lines.append(f"{row['name']:<24} {row['trainable']:>20,} {row['seconds']:>9.1f} {accuracy:>9}")
    return "\n".join(lines)
