"""Reference solutions for the exercises of notebook 03 (replace the head).

For teachers, and for learners who are stuck: try the exercise first. See README.md.
"""

from __future__ import annotations

from torch import nn


def my_new_head(model: nn.Module, num_classes: int) -> nn.Module:
    """Freeze every parameter, then give the model a new head for `num_classes` classes (which is trainable)."""
    for parameter in model.parameters():
        parameter.requires_grad = False
    features = model.fc.in_features  # what the layer before the head gives, whatever the network
    model.fc = nn.Linear(features, num_classes)  # a new layer starts with requires_grad=True
    return model


def my_trainable_per_block(model: nn.Module) -> dict[str, int]:
    """For each top-level block of the model, how many of its numbers the optimiser may change."""
    counts = {}
    for name, block in model.named_children():
        counts[name] = sum(p.numel() for p in block.parameters() if p.requires_grad)
    return counts  # frozen blocks give 0, which the check accepts as well as leaving them out
