"""Reference solutions for the exercises of notebook 06 (going further).

For teachers, and for learners who are stuck: try the exercise first. See README.md.
"""

from __future__ import annotations

import numpy as np
from torch import nn


def my_tiles_above(probabilities: np.ndarray, threshold: float) -> list[tuple[int, int]]:
    """(row, column) of every scanned tile whose crack probability is at least `threshold`, row by row."""
    rows, cols = probabilities.shape
    return [(r, c) for r in range(rows) for c in range(cols) if probabilities[r, c] >= threshold]


def my_unfreeze(model: nn.Module, n: int) -> nn.Module:
    """Let the last `n` of the four stages (layer1 ... layer4) learn as well as the head; the rest stays frozen."""
    stages = [model.layer1, model.layer2, model.layer3, model.layer4]
    for block in stages[len(stages) - n :]:  # n = 0 takes none
        for parameter in block.parameters():
            parameter.requires_grad = True
    return model


def my_parameter_groups(model: nn.Module, head_lr: float, backbone_lr: float) -> list[dict]:
    """The head at head_lr, layer4 at backbone_lr, other unfrozen blocks at backbone_lr / 10; frozen ones left out."""
    groups = []
    for name, block in model.named_children():
        learning = [p for p in block.parameters() if p.requires_grad]
        if learning:  # frozen blocks stay out of the optimiser
            rate = head_lr if name == "fc" else backbone_lr if name == "layer4" else backbone_lr / 10
            groups.append({"params": learning, "lr": rate})
    return groups
