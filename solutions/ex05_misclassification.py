"""Reference solutions for the exercises of notebook 05 (where and why the model fails).

For teachers, and for learners who are stuck: try the exercise first. See README.md.
"""

from __future__ import annotations

import torch


def my_confident_mistakes(probabilities: torch.Tensor, labels: torch.Tensor, k: int) -> list[int]:
    """Indices of the k mistakes the model was surest about, surest first."""
    confidence, predicted = probabilities.max(dim=1)  # the predicted class and its probability
    mistakes = [i for i in range(len(labels)) if predicted[i] != labels[i]]
    mistakes.sort(key=lambda i: float(confidence[i]), reverse=True)
    return mistakes[:k]


def my_precision_recall(confusion: torch.Tensor) -> tuple[float, float]:
    """Precision and recall of the crack class (label 1); rows = actual, columns = predicted."""
    true_positives = float(confusion[1, 1])
    called_crack = float(confusion[:, 1].sum())  # column 1: every image the model called a crack
    real_cracks = float(confusion[1, :].sum())  # row 1: every image that is a crack
    return true_positives / called_crack, true_positives / real_cracks


def my_threshold(curve: dict, recall: float = 0.95) -> float:
    """Exercise 3: the highest threshold whose recall is still at least 95% (the fewest false alarms).

    Recall can only fall as the threshold rises, so every lower threshold keeps the recall too, with
    more false alarms. In the notebook the answer is the number this returns for the run's `curve`.
    """
    return max(float(t) for t, r in zip(curve["threshold"], curve["recall"]) if r >= recall)
