"""Reference solutions for the exercises of notebook 02 (a Dataset for the crack images).

For teachers, and for learners who are stuck: try the exercise first. See README.md.
"""

from __future__ import annotations


def my_interleave(groups: list[tuple[int, list]]) -> tuple[list, list[int]]:
    """One file of each (label, files) group in turn, in the groups' order; all groups have the same length."""
    files, labels = [], []
    for i in range(len(groups[0][1])):  # round i takes file i of every group
        for label, group in groups:
            files.append(group[i])
            labels.append(label)
    return files, labels


def my_split_sizes(n: int) -> tuple[int, int, int]:
    """Training 70% and validation 15% of n, each rounded down; test takes the rest, so the sizes add up to n."""
    train = n * 70 // 100  # whole-number arithmetic: no float rounding surprises
    val = n * 15 // 100
    return train, val, n - train - val


def my_leak_counts(train_hashes: list[str], val_hashes: list[str]) -> tuple[int, int]:
    """Validation images with a copy in training, and validation images that repeat an earlier one."""
    in_training = set(train_hashes)  # a set answers "is it there?" at once, however large
    leaked = sum(1 for digest in val_hashes if digest in in_training)
    repeated = len(val_hashes) - len(set(val_hashes))  # every copy after the first of its picture
    return leaked, repeated
