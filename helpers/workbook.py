"""What every notebook does: say what it runs on, draw its figures, and save them under images/ with a small footer
saying what produced them. Each plotting function returns a matplotlib Figure, which the notebook shows and saves."""

from __future__ import annotations

import random
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import matplotlib.pyplot as plt
import numpy as np
import torch
from matplotlib.figure import Figure
from PIL import Image

from helpers.dataset import CLASS_NAMES, IMAGENET_MEAN, IMAGENET_STD, list_class_files
from helpers.plumbing import atomic_path
from helpers.settings import images_dir, quick_mode

if TYPE_CHECKING:
    from helpers.data import DataChoice
    from helpers.model import WeightsChoice

figure_stamp = ""  # what produced this notebook's figures, e.g. "synthetic data · random backbone"


def run_stamp(source: str, weights: WeightsChoice | None = None) -> str:
    """A short label of what a result was computed with: "real data · ImageNet backbone", "synthetic data"..."""
    parts, backbones = [f"{source} data"], {"imagenet": "ImageNet backbone", None: "random backbone"}
    if weights is not None:
        parts.append(backbones.get(weights.source, f"backbone from {Path(str(weights.source)).name}"))
    return " · ".join(parts + ["quick mode"] * quick_mode())


def announce_run(choice: DataChoice, weights: WeightsChoice | None = None) -> str:
    """Print what this notebook runs on, and stamp every figure saved from now on with it; the stamp."""
    global figure_stamp
    figure_stamp = run_stamp(choice.source, weights)
    print(f"This notebook runs on: {figure_stamp}\n  data:    {choice.source}, {choice.path}: {choice.reason}")
    if weights is not None:
        print(f"  weights: {weights.description}")
    if choice.source != "real" or (weights is not None and weights.is_random):
        print(
            "  Results below show how the method works; they say nothing about real concrete or the "
            "capstone's 99.44%, which need the real data and the ImageNet weights."
        )
    return figure_stamp


def save_figure(fig, name: str, dpi: int = 110) -> Path:
    """Save a matplotlib figure under images/ with a small grey footer saying what produced it (slides travel)."""
    if figure_stamp and not getattr(fig, "_workbook_stamped", False):
        below = fig.get_tightbbox(fig.canvas.get_renderer())  # in inches: under everything drawn so far
        x, y = below.x1 / fig.get_figwidth(), (below.y0 - 0.04) / fig.get_figheight()
        fig.text(x, y, figure_stamp, ha="right", va="top", fontsize=7, color="0.4")
        fig._workbook_stamped = True  # saving twice stamps once
    path = images_dir() / name
    with atomic_path(path) as temp:
        fig.savefig(temp, dpi=dpi, bbox_inches="tight")
    return path


def has_widget_frontend() -> bool:
    """True inside a Jupyter kernel where ipywidgets imports; False in plain Python (a terminal, a script)."""
    try:
        from IPython import get_ipython
        import ipywidgets  # noqa: F401
    except ImportError:
        return False
    shell = get_ipython()
    return shell is not None and hasattr(shell, "kernel")


def denormalize(images: torch.Tensor) -> torch.Tensor:
    """Undo ImageNet normalisation so a batch can be shown: (N, 3, H, W) -> values in [0, 1]."""
    mean, std = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    return (images * std + mean).clamp(0, 1)


def image_grid(rows: Sequence[tuple[str, Sequence[tuple[Path | np.ndarray, str]]]], title: str) -> Figure:
    """Pictures in rows, each row (label, [(picture, caption), ...]); a picture is a file or an HxWx3 array."""
    ncols = max(len(pictures) for _, pictures in rows)
    fig, axes = plt.subplots(len(rows), ncols, figsize=(1.9 * ncols, 2.3 * len(rows)), squeeze=False)
    for ax_row, (label, pictures) in zip(axes, rows):
        for ax in ax_row:
            ax.axis("off")
        for ax, (picture, caption) in zip(ax_row, pictures):
            if isinstance(picture, Path):
                with Image.open(picture) as image:
                    picture = image.convert("RGB")
            ax.imshow(picture)
            ax.set_title(caption, fontsize=8)
        ax_row[0].text(-0.08, 0.5, label, transform=ax_row[0].transAxes, rotation=90, ha="right", va="center")
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def _files(root: str | Path, class_name: str, n: int) -> list[tuple[Path, str]]:
    """`n` files of one class with their names, drawn at random but the same ones on every run."""
    files = list_class_files(root, class_name)
    return [(path, path.name) for path in random.Random(0).sample(files, min(n, len(files)))]


def show_samples(root: str | Path, n_per_class: int = 6, title: str | None = None) -> Figure:
    """A grid of images: one row of cracks (`Positive`), one row without (`Negative`)."""
    rows = [(name, _files(root, name, n_per_class)) for name in reversed(CLASS_NAMES)]
    return image_grid(rows, title or f"Samples from {Path(root).name}")


def compare_real_synthetic(real_root: str | Path | None, synthetic_root: str | Path, n: int = 5) -> Figure:
    """Real and synthetic images, class by class (synthetic only when no real data is at hand)."""
    roots = ([("real", real_root)] if real_root is not None else []) + [("synthetic", synthetic_root)]
    rows = [(f"{kind}\n{name}", _files(root, name, n)) for name in reversed(CLASS_NAMES) for kind, root in roots]
    return image_grid(rows, "Real vs synthetic" if real_root is not None else "Synthetic images (no real data at hand)")


def show_images(paths: Sequence[str | Path], titles: Sequence[str], title: str) -> Figure:
    """One row of images from files, e.g. the members of a duplicate group."""
    return image_grid([("", [(Path(path), name) for path, name in zip(paths, titles)])], title)


def show_batch(images: torch.Tensor, labels: torch.Tensor) -> Figure:
    """A normalised batch as pictures, eight to a row, each titled with its label."""
    pictures = [
        (image.permute(1, 2, 0).numpy(), f"{int(label)} = {CLASS_NAMES[int(label)]}")
        for image, label in zip(denormalize(images.float().cpu()), labels)
    ]
    rows = [("", pictures[start : start + 8]) for start in range(0, len(pictures), 8)]
    return image_grid(rows, "One batch from the DataLoader")


def plot_class_balance(counts: dict[str, int]) -> Figure:
    """A bar chart of how many images each class has, with the numbers written on the bars."""
    fig, ax = plt.subplots(figsize=(4.5, 3.2))
    bars = ax.bar(list(counts), list(counts.values()), color=["tab:red", "tab:blue"][: len(counts)])
    ax.bar_label(bars, labels=[f"{n:,}" for n in counts.values()])
    ax.set(ylabel="images", title="Images per class")
    ax.margins(y=0.15)
    fig.tight_layout()
    return fig


def plot_training_history(history, title: str) -> Figure:
    """A helpers.training.History: the loss at every iteration and, after several epochs, accuracy per epoch."""
    with_accuracy = len(history.val_accuracy) > 1
    fig, axes = plt.subplots(1, 1 + with_accuracy, figsize=(10 if with_accuracy else 6, 3.6), squeeze=False)
    steps = range(1, len(history.iteration_loss) + 1)
    axes[0][0].plot(steps, history.iteration_loss, marker=".")
    axes[0][0].set(xlabel="iteration (one batch)", ylabel="cross-entropy loss", title="loss per iteration")
    if with_accuracy:
        epochs = range(1, len(history.val_accuracy) + 1)
        axes[0][1].plot(epochs, [100 * a for a in history.val_accuracy], marker="o")
        axes[0][1].set(xlabel="epoch", ylabel="validation accuracy (%)", title="accuracy after each epoch")
    fig.suptitle(title)
    fig.tight_layout()
    return fig
