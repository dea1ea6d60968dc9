"""Reference solutions for the exercises of notebook 06 (going further).

For teachers, and for learners who are stuck: try the exercise first. See README.md.
"""

from __future__ import annotations

import torch
from torch import nn


def my_tiles_above(probabilities: torch.Tensor, threshold: float) -> list[tuple[int, int]]:
    """(row, column) of every scanned tile whose crack probability is at least `threshold`, row by row."""
    rows, cols = probabilities.shape
    return [(r, c) for r in range(rows) for c in range(cols) if probabilities[r, c] >= threshold]


def my_unfreeze(model: nn.Module) -> nn.Module:
    """Let layer3 and layer4 learn as well as the head; everything before stays frozen."""
    for block in (model.layer3, model.layer4):
        for parameter in block.parameters():
            parameter.requires_grad = True
    return model
