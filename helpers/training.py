"""Training: the capstone's loop (cross-entropy, Adam lr 0.001, batches of 100, one epoch) on images or on cached
features, and fine-tuning. Taught in notebooks 04 (`train_head`, the fast path on the frozen backbone's features,
which ends with exactly the weights of notebook 04's five-line loop), 06 (`train` after `unfreeze`: the unfrozen
blocks learn at a smaller rate, `parameter_groups`) and 07. The frozen parts' BatchNorm layers stay in eval mode
(`set_train_mode`); freeze_batchnorm=False calls model.train() on everything, as the capstone did. ensure_checkpoint
loads what notebook 04 saved (checkpoint_metadata: what it records), or trains it the same way (notebooks 05, 06).
"""

import math
import time
from dataclasses import dataclass, field
from typing import Iterable, Sequence

import torch
from torch import nn
from tqdm.auto import tqdm

from helpers.data import DataChoice
from helpers.dataset import CrackDataset
from helpers.features import FeatureSet, extract_features
from helpers.inference import logits_from_loader
from helpers.model import Checkpoint, WeightsChoice, build_resnet18, count_parameters, load_checkpoint, resolve_weights
from helpers.model import save_checkpoint, trainable_parameter_names
from helpers.settings import default_checkpoint_path, feature_cache_dir, pick_device, quick_mode

Batches = Iterable[tuple[torch.Tensor, torch.Tensor]]  # a DataLoader, or a list of (inputs, labels)


@dataclass
class History:
    """What happened during training: losses, validation accuracy per epoch, time and settings."""

    iteration_loss: list[float] = field(default_factory=list)  # one per optimiser step (the capstone's loss_list)
    epoch_loss: list[float] = field(default_factory=list)  # the mean of each epoch's batch losses
    val_accuracy: list[float] = field(default_factory=list)  # after each epoch, between 0 and 1
    seconds: float = 0.0  # wall time of the whole training, validation included
    settings: dict = field(default_factory=dict)  # lr, batch_size, epochs, seed, device, path ...

    @property
    def final_accuracy(self) -> float | None:
        """The validation accuracy after the last epoch, or None when there was no validation."""
        return self.val_accuracy[-1] if self.val_accuracy else None


def set_train_mode(model: nn.Module) -> None:
    """model.train(), then eval() again for every module whose parameters are all frozen: their BatchNorm layers
    keep normalising with the pretrained running statistics; a Dropout in the head still trains."""
    model.train()
    for module in model.modules():
        parameters = list(module.parameters())
        if parameters and not any(p.requires_grad for p in parameters):
            module.eval()


def unfreeze(model: nn.Module, blocks: Sequence[str] = ("layer4",)) -> list[str]:
    """Let the named top-level blocks (ResNet18: conv1, bn1, layer1 ... layer4, fc) learn; returns what trains now."""
    children = dict(model.named_children())
    for name in blocks:
        if name not in children:
            raise ValueError(f"The model has no block called {name!r}; its blocks are {', '.join(children)}.")
        children[name].requires_grad_(True)
    return trainable_parameter_names(model)


def parameter_groups(model: nn.Module, head_lr: float = 1e-3, backbone_lr: float = 1e-4) -> list[dict]:
    """Adam's parameter groups, "head" (model.fc, or a bare head itself) at head_lr and "backbone" (the other
    trainable parameters) at backbone_lr; frozen parameters and empty groups are left out."""
    head = {id(p) for p in getattr(model, "fc", model).parameters()}
    trainable = [p for p in model.parameters() if p.requires_grad]
    groups = [
        {"name": "head", "params": [p for p in trainable if id(p) in head], "lr": head_lr},
        {"name": "backbone", "params": [p for p in trainable if id(p) not in head], "lr": backbone_lr},
    ]
    if not trainable:
        raise ValueError("The model has no trainable parameters (every requires_grad is False): nothing to train.")
    return [group for group in groups if group["params"]]


@torch.no_grad()
def evaluate(model: nn.Module, batches: Batches, device: str | torch.device | None = None) -> float:
    """Accuracy (between 0 and 1) of the model, in eval mode, on batches of (inputs, labels)."""
    logits, labels = logits_from_loader(model, batches, device=device)
    return (logits.argmax(dim=1) == labels).float().mean().item()


def train(
    model: nn.Module,
    train_batches: Batches,
    val_batches: Batches | None = None,
    *,
    epochs: int = 1,
    lr: float = 1e-3,
    backbone_lr: float = 1e-4,
    seed: int = 0,
    device: str | torch.device | None = None,
    freeze_batchnorm: bool = True,
    progress: bool = True,
) -> History:
    """The capstone's loop: Adam and cross-entropy over batches of (inputs, labels), validated after each epoch; the
    head learns at lr, the blocks `unfreeze` made trainable at backbone_lr. A loss that is not a number stops
    training. The model ends in eval mode."""
    device = pick_device(device)
    torch.manual_seed(seed)  # the order of a shuffling DataLoader, and any Dropout, come from it
    model.to(device)
    groups = parameter_groups(model, lr, backbone_lr)
    optimizer = torch.optim.Adam(groups)
    criterion = nn.CrossEntropyLoss()
    rates = {group["name"]: group["lr"] for group in groups}
    settings = {"path": "direct", "epochs": epochs, "batch_size": getattr(train_batches, "batch_size", None)}
    settings |= {"learning_rates": rates, "freeze_batchnorm": freeze_batchnorm, "seed": seed, "device": str(device)}
    history = History(settings=settings)
    start = time.perf_counter()
    bar = tqdm(total=epochs * len(train_batches), desc="training", disable=not progress)
    for _ in range(epochs):
        if freeze_batchnorm:
            set_train_mode(model)
        else:
            model.train()  # the capstone's way: the frozen BatchNorm layers' statistics drift
        losses = []
        for inputs, labels in train_batches:  # the five lines of notebook 04, and a check
            optimizer.zero_grad()
            loss = criterion(model(inputs.to(device)), labels.to(device))
            if not math.isfinite(loss.item()):
                raise ValueError(
                    f"The loss became {loss.item()} at step {len(history.iteration_loss) + 1}, so training stopped "
                    "and nothing was saved: lower the learning rate (the capstone's is 0.001) and train again."
                )
            loss.backward()
            optimizer.step()
            losses.append(loss.item())
            bar.set_postfix(loss=f"{loss.item():.4f}", refresh=False)
            bar.update()
        if not losses:
            raise ValueError(
                "The training data gave no batches: give it at least one image (with drop_last=True, one full batch)."
            )
        history.iteration_loss += losses
        history.epoch_loss.append(sum(losses) / len(losses))
        if val_batches is not None:
            history.val_accuracy.append(evaluate(model, val_batches, device=device))
    bar.close()
    model.eval()
    history.seconds = time.perf_counter() - start
    return history


def train_head(
    head: nn.Module,
    train_set: FeatureSet,
    val_set: FeatureSet | None = None,
    *,
    epochs: int = 1,
    lr: float = 1e-3,
    batch_size: int = 100,
    seed: int = 0,
    device: str | torch.device | None = None,
    progress: bool = True,
) -> History:
    """The fast path: `train` the head alone on cached features, in batches of consecutive rows; from the same start
    and seed it ends with the head that `train` gives the whole model (backbone in eval mode)."""

    def batches(rows: FeatureSet) -> list[tuple[torch.Tensor, torch.Tensor]]:
        return list(zip(rows.features.split(batch_size), rows.labels.split(batch_size)))

    val_batches = None if val_set is None else batches(val_set)
    history = train(
        head, batches(train_set), val_batches, epochs=epochs, lr=lr, seed=seed, device=device, progress=progress
    )
    history.settings |= {"path": "features", "batch_size": batch_size}
    return history


def compare_runs(runs: dict[str, tuple[nn.Module, History]]) -> str:
    """A text table of runs, {name: (trained model, its History)}: trainable parameters, seconds, accuracy."""
    header = f"{'run':<24} {'trainable parameters':>20} {'seconds':>9} {'accuracy':>9}"
    lines = [header, "-" * len(header)]
    for name, (model, history) in runs.items():
        accuracy = "-" if history.final_accuracy is None else f"{history.final_accuracy:.2%}"
        lines.append(f"{name:<24} {count_parameters(model)[1]:>20,} {history.seconds:>9.1f} {accuracy:>9}")
    return "\n".join(lines)


def checkpoint_metadata(
    choice: DataChoice,
    train_set: CrackDataset,
    val_set: CrackDataset,
    weights: WeightsChoice,
    history: History,
    feature_format: str = "float32",
) -> dict:
    """What a checkpoint records: weights, data, split, accuracy, settings, the features' number format."""
    dedupe = bool(getattr(train_set, "dedupe", False))
    return {
        "weights": weights.label,
        "weights_description": weights.description,
        "data_source": choice.source,
        "data_path": str(choice.path),
        "n_train": len(train_set),
        "n_val": len(val_set),
        "split": "capstone: interleaved, first 75% train"
        + (", byte-identical copies kept on one side" if dedupe else ""),
        "val_accuracy": history.final_accuracy,
        "training": history.settings,
        "quick_mode": quick_mode(),
        "features": feature_format,
    }


def ensure_checkpoint(choice: DataChoice, progress: bool = True) -> Checkpoint:
    """The model notebook 04 trained on this data; when it is missing or was trained on other data (another folder
    or size), says so, and trains and saves one the same way: the capstone's settings, on cached features."""
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
    weights = resolve_weights()
    train_set, val_set = (CrackDataset(choice.path, split, progress=progress) for split in ("train", "val"))
    torch.manual_seed(0)
    model = build_resnet18(num_classes=len(train_set.classes), weights=weights, progress=progress)
    features = [extract_features(model, part, feature_cache_dir(), progress=progress) for part in (train_set, val_set)]
    history = train_head(model.fc, *features, progress=progress)
    metadata = checkpoint_metadata(choice, train_set, val_set, weights, history, features[0].number_format)
    save_checkpoint(path, model, train_set.classes, metadata)
    return load_checkpoint(path, num_classes=len(train_set.classes))
