"""Find cracks in a whole photo by classifying it tile by tile (notebook 06).

The data set's 227x227 images were cut from 4032x3024 photos, and shrunk to 227x227 a whole photo
would lose its thin cracks. So we cut it into tiles (overlapping when the stride is smaller than a
tile; the last row and column flush with the border), ask the model about each, and put the answers
back where the tiles came from: a coarse map of where the cracks are.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import torch
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle
from PIL import Image
from torch import nn

from helpers.dataset import default_transform
from helpers.inference import CRACK
from helpers.plumbing import TILE_SIZE, open_photo


@dataclass
class ScanResult:
    """A photo, the crack probability of each of its tiles, and where the tiles were."""

    photo: Image.Image
    probabilities: np.ndarray  # (rows, columns): each tile's crack probability
    boxes: list[tuple[int, int]]  # (top, left) of each tile, row by row


def tile_positions(height: int, width: int, stride: int = TILE_SIZE) -> tuple[list[int], list[int]]:
    """(tops, lefts) of the tiles that together cover the photo; the last on each side ends at the border."""
    if stride > TILE_SIZE:
        raise ValueError(f"A stride of {stride} leaves gaps between {TILE_SIZE}-pixel tiles: use {TILE_SIZE} or less.")
    if min(height, width) < TILE_SIZE:
        raise ValueError(
            f"The photo ({height}x{width}) is smaller than one tile: classify it whole (helpers.inference.classify_photos)."
        )
    return tuple(sorted({*range(0, side - TILE_SIZE + 1, stride), side - TILE_SIZE}) for side in (height, width))


def scan(model: nn.Module, image: str | Path | Image.Image | np.ndarray, stride: int = TILE_SIZE) -> ScanResult:
    """Every tile's crack probability: tiles normalised as in training, 32 at a time, on the model's device.

    image: a path (a missing or unreadable file is named), a PIL image or an HxWx3 uint8 array."""
    if isinstance(image, (str, Path)):
        photo = open_photo(image)
    elif np.asarray(image).dtype == np.uint8:
        photo = Image.fromarray(np.asarray(image)).convert("RGB")
    else:
        raise ValueError("Pass the photo as uint8 values 0-255, e.g. (photo * 255).round().astype(np.uint8).")
    tops, lefts = tile_positions(photo.height, photo.width, stride)
    boxes = [(top, left) for top in tops for left in lefts]
    pixels = default_transform()(photo)  # (3, H, W), normalised once for all tiles
    tiles = [pixels[:, top : top + TILE_SIZE, left : left + TILE_SIZE] for top, left in boxes]
    device, scores = next(model.parameters()).device, []
    model.eval()
    with torch.no_grad():
        for start in range(0, len(tiles), 32):
            logits = model(torch.stack(tiles[start : start + 32]).to(device))
            scores.append(torch.softmax(logits, dim=1)[:, CRACK].cpu())
    return ScanResult(photo, torch.cat(scores).numpy().reshape(len(tops), len(lefts)), boxes)


def probability_map(result: ScanResult) -> np.ndarray:
    """An (H, W) map: each pixel gets the mean probability of the tiles that cover it."""
    size = result.photo.height, result.photo.width
    total, count = np.zeros(size), np.zeros(size)
    for (top, left), probability in zip(result.boxes, result.probabilities.ravel()):
        total[top : top + TILE_SIZE, left : left + TILE_SIZE] += probability
        count[top : top + TILE_SIZE, left : left + TILE_SIZE] += 1
    return total / count


def plot_scan(result: ScanResult, threshold: float = 0.5) -> Figure:
    """The photo with the probability map over it, and the tiles above `threshold` outlined."""
    fig, ax = plt.subplots(figsize=(10, 10 * result.photo.height / result.photo.width + 0.6))
    ax.imshow(result.photo)
    shown = ax.imshow(probability_map(result), cmap="jet", vmin=0, vmax=1, alpha=0.35)
    fig.colorbar(shown, ax=ax, fraction=0.03, label="crack probability")
    flagged = [box for box, probability in zip(result.boxes, result.probabilities.ravel()) if probability > threshold]
    for top, left in flagged:
        ax.add_patch(Rectangle((left, top), TILE_SIZE, TILE_SIZE, fill=False, edgecolor="white", linewidth=2))
    ax.set_title(f"{len(flagged)} of {len(result.boxes)} tiles above {threshold:.0%}")
    ax.axis("off")
    fig.tight_layout()
    return fig
