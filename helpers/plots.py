"""Pictures for notebooks 01 and 02: sample grids, class balance, real vs synthetic, a batch.

Every function returns the matplotlib Figure so the notebook can show it and save it with
`helpers.workbook.save_figure`.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from pathlib import Path

import matplotlib.pyplot as plt
import torch
from matplotlib.figure import Figure
from PIL import Image

from helpers.dataset import CLASS_NAMES, IMAGENET_MEAN, IMAGENET_STD, list_class_files


def pick_files(root: str | Path, class_name: str, n: int, seed: int = 0) -> list[Path]:
    """`n` files of one class, drawn at random but the same ones every time for a given seed."""
    files = list_class_files(root, class_name)
    return random.Random(seed).sample(files, min(n, len(files)))


def _show_row(axes: Sequence, paths: Sequence[Path], label: str) -> None:
    for ax in axes:
        ax.axis("off")
    for ax, path in zip(axes, paths):
        with Image.open(path) as image:
            ax.imshow(image.convert("RGB"))
        ax.set_title(path.name, fontsize=8)
    axes[0].text(
        -0.08,
        0.5,
        label,
        transform=axes[0].transAxes,
        rotation=90,
        ha="right",
        va="center",
        fontsize=10,
        fontweight="bold",
    )


def show_samples(root: str | Path, n_per_class: int = 6, seed: int = 0, title: str | None = None) -> Figure:
    """A grid of images: one row of cracks (`Positive`), one row without (`Negative`)."""
    fig, axes = plt.subplots(2, n_per_class, figsize=(1.9 * n_per_class, 4.4), squeeze=False)
    for row, class_name in enumerate(reversed(CLASS_NAMES)):
        _show_row(axes[row], pick_files(root, class_name, n_per_class, seed), class_name)
    fig.suptitle(title or f"Samples from {Path(root).name}")
    fig.tight_layout()
    return fig


def plot_class_balance(counts: dict[str, int], title: str = "Images per class") -> Figure:
    """A bar chart of how many images each class has, with the numbers written on the bars."""
    fig, ax = plt.subplots(figsize=(4.5, 3.2))
    bars = ax.bar(list(counts), list(counts.values()), color=["tab:red", "tab:blue"][: len(counts)])
    ax.bar_label(bars, labels=[f"{n:,}" for n in counts.values()])
    ax.set_ylabel("images")
    ax.set_title(title)
    ax.margins(y=0.15)
    fig.tight_layout()
    return fig


def compare_real_synthetic(
    real_root: str | Path | None, synthetic_root: str | Path, n: int = 5, seed: int = 0
) -> Figure:
    """Real and synthetic images side by side, class by class (synthetic only when no real data is at hand)."""
    rows = []
    for class_name in reversed(CLASS_NAMES):
        if real_root is not None:
            rows.append((f"real\n{class_name}", pick_files(real_root, class_name, n, seed)))
        rows.append((f"synthetic\n{class_name}", pick_files(synthetic_root, class_name, n, seed)))
    fig, axes = plt.subplots(len(rows), n, figsize=(1.9 * n, 2.1 * len(rows)), squeeze=False)
    for ax_row, (label, paths) in zip(axes, rows):
        _show_row(ax_row, paths, label)
    fig.suptitle("Real vs synthetic" if real_root is not None else "Synthetic images (no real data at hand)")
    fig.tight_layout()
    return fig


def denormalize(
    images: torch.Tensor, mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD
) -> torch.Tensor:
    """Undo ImageNet normalisation so a batch can be shown: (N, 3, H, W) -> values in [0, 1]."""
    mean_t = torch.tensor(mean).view(1, 3, 1, 1)
    std_t = torch.tensor(std).view(1, 3, 1, 1)
    return (images * std_t + mean_t).clamp(0, 1)


def show_batch(
    images: torch.Tensor,
    labels: torch.Tensor,
    class_names: Sequence[str] = CLASS_NAMES,
    ncols: int = 8,
    title: str = "One batch from the DataLoader",
) -> Figure:
    """Show a normalised batch as pictures, each titled with its label."""
    images = denormalize(images.float().cpu())
    nrows = (len(images) + ncols - 1) // ncols
    fig, axes = plt.subplots(nrows, ncols, figsize=(1.7 * ncols, 1.9 * nrows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, image, label in zip(axes.flat, images, labels):
        ax.imshow(image.permute(1, 2, 0).numpy())
        ax.set_title(f"{int(label)} = {class_names[int(label)]}", fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def show_images(paths: Sequence[str | Path], titles: Sequence[str] | None = None, title: str = "") -> Figure:
    """A single row of images from files, e.g. the members of a duplicate group."""
    fig, axes = plt.subplots(1, len(paths), figsize=(2.3 * len(paths), 2.7), squeeze=False)
    for ax, path, name in zip(axes[0], paths, titles or [Path(p).name for p in paths]):
        with Image.open(path) as image:
            ax.imshow(image.convert("RGB"))
        ax.set_title(name, fontsize=8)
        ax.axis("off")
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def plot_training_history(history, title: str = "Training the head") -> Figure:
    """The loss at every iteration (the capstone's plot) and, after several epochs, accuracy per epoch."""
    with_accuracy = len(history.val_accuracy) > 1
    fig, axes = plt.subplots(1, 2 if with_accuracy else 1, figsize=(10 if with_accuracy else 6, 3.6), squeeze=False)
    loss_ax = axes[0][0]
    loss_ax.plot(range(1, len(history.iteration_loss) + 1), history.iteration_loss, marker=".")
    loss_ax.set_xlabel("iteration (one batch)")
    loss_ax.set_ylabel("cross-entropy loss")
    loss_ax.set_title("loss per iteration")
    if with_accuracy:
        accuracy_ax = axes[0][1]
        epochs = range(1, len(history.val_accuracy) + 1)
        accuracy_ax.plot(epochs, [100 * a for a in history.val_accuracy], marker="o")
        accuracy_ax.set_xlabel("epoch")
        accuracy_ax.set_ylabel("validation accuracy (%)")
        accuracy_ax.set_title("accuracy after each epoch")
    fig.suptitle(title)
    fig.tight_layout()
    return fig
