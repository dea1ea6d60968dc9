"""Reference solutions for the exercises of notebook 04 (train the head).

For teachers, and for learners who are stuck: try the exercise first. See README.md.
"""

from __future__ import annotations

import math

import torch
from torch import nn


def my_train_one_epoch(head: nn.Module, batches: list[tuple[torch.Tensor, torch.Tensor]],
                       optimizer: torch.optim.Optimizer, criterion: nn.Module) -> list[float]:
    """One epoch of the capstone's loop over (features, labels) batches; returns the batch losses."""
    head.train()  # Dropout and BatchNorm behave as in training
    losses = []
    for features, labels in batches:
        optimizer.zero_grad()  # forget the previous batch's gradients
        outputs = head(features)
        loss = criterion(outputs, labels)
        loss.backward()        # the gradients of this batch's loss
        optimizer.step()       # update the weights with them
        losses.append(loss.item())  # a float: a tensor would keep the batch's graph alive
    return losses


def my_accuracy(logits: torch.Tensor, labels: torch.Tensor) -> float:
    """The share of images whose highest score (over the classes, dim=1) is their label."""
    predicted = logits.argmax(dim=1)  # logits have shape (images, classes)
    return (predicted == labels).float().mean().item()


def my_iterations_per_epoch(n_images: int, batch_size: int) -> int:
    """Batches in one epoch: full batches, plus one for a smaller last batch."""
    return math.ceil(n_images / batch_size)
