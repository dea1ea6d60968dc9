"""Training and evaluating the new head: the capstone's loop, and a fast path on cached features.

The IBM capstone (DL0321EN) trains ResNet18's new `fc` layer with cross-entropy and Adam
(lr 0.001, batches of 100, one epoch) and reports the validation accuracy. This module
writes that loop once, in two forms:

* `train` - the direct path: every batch of images goes through the whole network at
  every step, exactly as in the capstone.
* `train_head` - the fast path: the frozen backbone's 512 numbers per image are computed
  once (helpers.features), and only the head is trained on them. With the backbone in eval
  mode, the same seed, head, order and batch size, both paths give the same head weights.

The BatchNorm trap. Setting `requires_grad=False` stops the optimiser from changing the
backbone's *weights*, but `model.train()` still tells every BatchNorm layer to normalise
with the statistics of the current batch and to update its running mean and variance.
The capstone calls `model.train()`, so its "frozen" backbone drifts a little at every step.
`set_train_mode` (used by `train(freeze_batchnorm=True)`) puts the frozen parts back into
eval mode, so the backbone really is the pretrained network, and cached features stay valid.

How good the result is (`helpers.analysis.accuracy_interval`, metrics) and the orchestration
that later notebooks need (`helpers.pipeline.ensure_checkpoint`) live elsewhere.
"""

from __future__ import annotations

import math
import time
import weakref
from dataclasses import dataclass, field

import torch
from torch import nn

from helpers.features import FeatureSet
from helpers.inference import logits_from_loader
from helpers.plumbing.progress import tqdm
from helpers.settings import pick_device


@dataclass
class History:
    """What happened during training.

    settings holds lr, batch_size, epochs, seed, optimizer, device, path ("direct" or
    "features") and backbone_mode: "eval" (frozen BatchNorm), "train" (the capstone's
    drifting BatchNorm) or "precomputed" (features computed beforehand).
    """

    iteration_loss: list[float] = field(default_factory=list)  # one per optimiser step (capstone's loss_list)
    epoch_loss: list[float] = field(default_factory=list)  # mean training loss of each epoch
    val_accuracy: list[float] = field(default_factory=list)  # after each epoch, between 0 and 1
    seconds: float = 0.0  # wall time of the whole training
    settings: dict = field(default_factory=dict)

    @property
    def final_accuracy(self) -> float | None:
        """The validation accuracy after the last epoch, or None when there was no validation."""
        return self.val_accuracy[-1] if self.val_accuracy else None


# ----------------------------------------------------------------------------- small pieces
def set_train_mode(model: nn.Module, frozen_backbone: bool = True) -> None:
    """Put the model in training mode, but keep its frozen parts in eval mode.

    model.train() is called first. Then, with frozen_backbone=True, every module that has
    parameters and none of them trainable (requires_grad False) goes back to eval(): its
    BatchNorm layers keep the running statistics the pretrained network left them, and
    normalise with those instead of the current batch's. Parameter-free modules outside
    the frozen parts (a Dropout in the head, say) stay in training mode.
    With frozen_backbone=False this is plain model.train(), as in the capstone.
    """
    model.train()
    if not frozen_backbone:
        return
    for module in model.modules():
        parameters = list(module.parameters())
        if parameters and not any(p.requires_grad for p in parameters):
            module.eval()


def trainable_parameters(model: nn.Module) -> list[nn.Parameter]:
    """The parameters the optimiser may change; an error when there are none."""
    parameters = [p for p in model.parameters() if p.requires_grad]
    if not parameters:
        raise ValueError("The model has no trainable parameters (every requires_grad is False): nothing to train.")
    return parameters


class TrainingDiverged(ValueError):
    """The loss became NaN or infinite: the weights would be useless, so training stops and nothing is saved."""


_steps: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # optimiser -> steps taken (for the message)


def check_loss(loss: torch.Tensor, optimizer: torch.optim.Optimizer) -> None:
    """Count this optimiser's step; raise TrainingDiverged naming the step when `loss` is NaN or infinite."""
    step = _steps.get(optimizer, 0) + 1
    _steps[optimizer] = step
    value = loss.item()
    if not math.isfinite(value):
        raise TrainingDiverged(
            f"The loss became {value} at step {step}, so training stopped and nothing was saved: "
            "lower the learning rate (the capstone's is 0.001) and train again."
        )


def training_step(
    model: nn.Module, optimizer: torch.optim.Optimizer, criterion: nn.Module, inputs: torch.Tensor, labels: torch.Tensor
) -> float:
    """One step of the capstone's loop: zero the gradients, forward, loss, backward, update.

    A loss that is not a number (NaN or infinite: the learning rate is far too high) stops
    training with TrainingDiverged, before it spoils the weights (check_loss).
    """
    optimizer.zero_grad()
    outputs = model(inputs)
    loss = criterion(outputs, labels)
    check_loss(loss, optimizer)
    loss.backward()
    optimizer.step()
    return loss.item()


def train_one_epoch(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    criterion: nn.Module,
    batches,
    device: torch.device,
    *,
    frozen_backbone: bool = True,
    history: History | None = None,
    desc: str = "epoch",
    progress: bool = False,
) -> float:
    """One pass of the capstone's loop over `batches` of (inputs, labels); returns the mean loss.

    set_train_mode first (frozen parts stay in eval mode unless frozen_backbone=False), then one
    training_step per batch, each step's loss appended to history.iteration_loss. train, train_head
    and helpers.finetune.fine_tune all run their epochs through this one function.
    """
    set_train_mode(model, frozen_backbone=frozen_backbone)
    loss_sum, seen = 0.0, 0
    bar = tqdm(batches, desc=desc, leave=False, disable=not progress)
    for inputs, labels in bar:
        loss = training_step(model, optimizer, criterion, inputs.to(device), labels.to(device))
        if history is not None:
            history.iteration_loss.append(loss)
        loss_sum, seen = loss_sum + loss * len(labels), seen + len(labels)
        bar.set_postfix(loss=f"{loss_sum / seen:.4f}")
    if seen == 0:
        raise ValueError("The training data gave no batches: nothing to train on.")
    return loss_sum / seen


def row_batches(
    features: torch.Tensor, labels: torch.Tensor, batch_size: int, order: torch.Tensor | None = None
) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Split rows into (features, labels) batches, in order or in the given `order` of row indices."""
    if order is not None:
        features, labels = features[order], labels[order]
    return [
        (features[start : start + batch_size], labels[start : start + batch_size])
        for start in range(0, len(labels), batch_size)
    ]


# ----------------------------------------------------------------------------- evaluation
@torch.no_grad()
def evaluate(model: nn.Module, loader, device: str | torch.device | None = None, progress: bool = False) -> float:
    """Accuracy (between 0 and 1) of the model, in eval mode, on a loader of (inputs, labels)."""
    logits, labels = logits_from_loader(model, loader, device=device, progress=progress)
    predicted = logits.argmax(dim=1)
    return (predicted == labels).float().mean().item()


# ----------------------------------------------------------------------------- training
def train(
    model: nn.Module,
    train_loader,
    val_loader=None,
    *,
    epochs: int = 1,
    lr: float = 1e-3,
    device: str | torch.device | None = None,
    seed: int = 0,
    freeze_batchnorm: bool = True,
    progress: bool = True,
) -> History:
    """The direct path: train the model's trainable parameters on batches of images.

    Cross-entropy loss and Adam over the parameters with requires_grad=True (the new `fc`).
    torch.manual_seed(seed) is set first, so a shuffling DataLoader gives the same order again.
    freeze_batchnorm=True keeps the frozen backbone in eval mode (see set_train_mode);
    False calls model.train() on everything, as the capstone did, and its BatchNorm running
    statistics drift. With val_loader, the validation accuracy is measured after each epoch.
    The model is left in eval mode, ready for predictions.
    """
    device = pick_device(device)
    torch.manual_seed(seed)
    model.to(device)
    optimizer = torch.optim.Adam(trainable_parameters(model), lr=lr)
    criterion = nn.CrossEntropyLoss()
    history = History(
        settings={
            "lr": lr,
            "batch_size": getattr(train_loader, "batch_size", None),
            "epochs": epochs,
            "seed": seed,
            "optimizer": "Adam",
            "device": str(device),
            "path": "direct",
            "backbone_mode": "eval" if freeze_batchnorm else "train",
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
                frozen_backbone=freeze_batchnorm,
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


def _rows(feature_set: FeatureSet, name: str) -> tuple[torch.Tensor, torch.Tensor]:
    """A feature set's features as float32 (N, D) and labels as int64 (N,), or a clear error."""
    features, labels = getattr(feature_set, "features", None), getattr(feature_set, "labels", None)
    if not isinstance(features, torch.Tensor) or not isinstance(labels, torch.Tensor):
        raise TypeError(
            f"{name}: need a FeatureSet (helpers.features.extract_features), not {type(feature_set).__name__}"
        )
    if features.dim() != 2 or labels.dim() != 1 or len(features) != len(labels) or len(labels) == 0:
        raise ValueError(
            f"{name}: need features of shape (N, D) and labels of shape (N,) with N > 0; "
            f"got {tuple(features.shape)} and {tuple(labels.shape)}"
        )
    return features.float(), labels.long()


def train_head(
    head: nn.Module,
    train_set: FeatureSet,
    val_set: FeatureSet | None = None,
    *,
    epochs: int = 1,
    lr: float = 1e-3,
    batch_size: int = 100,
    shuffle: bool = False,
    seed: int = 0,
    device: str | torch.device | None = None,
    progress: bool = True,
) -> History:
    """The fast path: the same optimisation as `train`, on precomputed backbone features.

    train_set, val_set: FeatureSets (helpers.features.extract_features), or anything with
    `features` (N, 512) and `labels` (N,) tensors. Batches are consecutive rows (like a
    DataLoader without shuffling), or, with shuffle=True, rows in a new random order each epoch
    drawn from a generator seeded with `seed`. With the same seed, head, order and batch size,
    and features from the backbone in eval mode, the head ends with the same weights as after
    `train(..., freeze_batchnorm=True)`. The head is left in eval mode.
    """
    train_features, train_labels = _rows(train_set, "training data")
    if val_set is not None:
        val_batches = row_batches(*_rows(val_set, "validation data"), batch_size)
    device = pick_device(device)
    torch.manual_seed(seed)
    order_generator = torch.Generator().manual_seed(seed)
    head.to(device)
    optimizer = torch.optim.Adam(trainable_parameters(head), lr=lr)
    criterion = nn.CrossEntropyLoss()
    history = History(
        settings={
            "lr": lr,
            "batch_size": batch_size,
            "epochs": epochs,
            "seed": seed,
            "optimizer": "Adam",
            "device": str(device),
            "path": "features",
            "backbone_mode": "precomputed",
            "shuffle": shuffle,
        }
    )
    start = time.perf_counter()
    bar = tqdm(range(epochs), desc="epochs", disable=not progress)
    for _ in bar:
        order = torch.randperm(len(train_labels), generator=order_generator) if shuffle else None
        batches = row_batches(train_features, train_labels, batch_size, order)
        history.epoch_loss.append(train_one_epoch(head, optimizer, criterion, batches, device, history=history))
        if val_set is not None:
            history.val_accuracy.append(evaluate(head, val_batches, device=device))
        bar.set_postfix(loss=f"{history.epoch_loss[-1]:.4f}")
    head.eval()
    history.seconds = time.perf_counter() - start
    return history
