"""Reference solutions for the exercises of notebook 04 (train the head).

For teachers, and for learners who are stuck: try the exercise first. See README.md.
Exercises 2 and 3 are decisions, not functions: the answers below say how to reach them.
"""

from __future__ import annotations

import torch
from torch import nn


def my_train_epochs(
    head: nn.Module,
    batches: list[tuple[torch.Tensor, torch.Tensor]],
    optimizer: torch.optim.Optimizer,
    criterion: nn.Module,
    epochs: int,
) -> list[float]:
    """`epochs` passes of the capstone's loop over (features, labels) batches; returns each epoch's mean loss."""
    head.train()  # Dropout and BatchNorm behave as in training
    means = []
    for _ in range(epochs):
        losses = []
        for features, labels in batches:
            optimizer.zero_grad()  # forget the previous batch's gradients
            outputs = head(features)
            loss = criterion(outputs, labels)
            loss.backward()  # the gradients of this batch's loss
            optimizer.step()  # update the weights with them
            losses.append(loss.item())  # a float: a tensor would keep the batch's graph alive
        means.append(sum(losses) / len(losses))
    return means


def my_decision(comparison) -> str:
    """Exercise 2, worked out from the run's `comparison`: only the images where the heads disagree count.

    If the split of those images would be unremarkable for two equally good heads (p-value of 5% or more),
    the data show no difference; otherwise the head right alone on more of them is the better one.
    In the notebook the answer is the string this returns for the run's own `comparison`.
    """
    if comparison.p_value >= 0.05 or comparison.only_first_right == comparison.only_second_right:
        return "no clear difference"
    return "ten epochs" if comparison.only_second_right > comparison.only_first_right else "one epoch"


# Exercise 3: training mode updates the running statistics (and counts the batch) even with
# requires_grad=False; the weight and bias are parameters, which only an optimiser step changes.
my_prediction = {"running_mean", "running_var", "num_batches_tracked"}
