"""Beyond the fixed feature extractor: fine-tuning the last block of the backbone (notebook 06).

The capstone freezes all of ResNet18 and trains only a new `fc` head. Frozen ImageNet features
are general; the last block (``layer4``) holds the most ImageNet-specific ones. :func:`unfreeze`
lets that block learn too, and :func:`fine_tune` trains it with a *smaller* learning rate than
the new head (:func:`parameter_groups`), so the pretrained weights are adjusted, not overwritten.
(Your own classes, any number of them, are read by :class:`helpers.folder_dataset.FolderDataset`.)

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
from typing import Sequence

import torch
from torch import nn
from tqdm.auto import tqdm

from helpers.model import count_parameters, trainable_parameter_names
from helpers.settings import pick_device
from helpers.training import History, evaluate, train_one_epoch


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
    groups = [
        {"name": "head", "params": head, "lr": head_lr},
        {"name": "backbone", "params": backbone, "lr": backbone_lr},
    ]
    groups = [group for group in groups if group["params"]]
    if not groups:
        raise ValueError("The model has no trainable parameters (every requires_grad is False): nothing to train.")
    return groups


# ----------------------------------------------------------------------------- fine-tuning
def fine_tune(
    model: nn.Module,
    train_loader,
    val_loader=None,
    epochs: int = 1,
    head_lr: float = 1e-3,
    backbone_lr: float = 1e-4,
    device: str | torch.device | None = None,
    seed: int = 0,
    progress: bool = True,
) -> History:
    """Train every trainable parameter (call unfreeze first): Adam, the head at head_lr, the rest at backbone_lr.

    The same loop as helpers.training.train (its train_one_epoch, cross-entropy,
    torch.manual_seed(seed) first, validation accuracy after each epoch), with two learning rates
    instead of one: train() builds its optimiser from a single lr, so this function builds its own. The model is
    left in eval mode.
    """
    device = pick_device(device)
    torch.manual_seed(seed)
    model.to(device)
    optimizer = torch.optim.Adam(parameter_groups(model, head_lr=head_lr, backbone_lr=backbone_lr))
    criterion = nn.CrossEntropyLoss()
    history = History(
        settings={
            "head_lr": head_lr,
            "backbone_lr": backbone_lr,
            "batch_size": getattr(train_loader, "batch_size", None),
            "epochs": epochs,
            "seed": seed,
            "optimizer": "Adam",
            "device": str(device),
            "path": "fine-tune",
            "backbone_mode": "eval except unfrozen blocks",
            "trainable": trainable_parameter_names(model),
        }
    )
    start = time.perf_counter()
    for epoch in tqdm(range(epochs), desc="epochs", disable=not progress):
        history.epoch_loss.append(
            train_one_epoch(
                model,
                optimizer,
                criterion,
                train_loader,
                device,
                history=history,
                desc=f"epoch {epoch + 1}/{epochs}",
                progress=progress,
            )
        )
        if val_loader is not None:
            history.val_accuracy.append(evaluate(model, val_loader, device=device))
    model.eval()
    history.seconds = time.perf_counter() - start
    return history


# ----------------------------------------------------------------------------- comparing runs
def run_row(name: str, model: nn.Module, history: History) -> dict:
    """One row for compare_runs from a trained model and its History."""
    return {
        "name": name,
        "trainable": count_parameters(model)[1],
        "seconds": history.seconds,
        "accuracy": history.final_accuracy,
    }


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
