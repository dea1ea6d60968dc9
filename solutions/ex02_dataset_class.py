"""Reference solutions for the exercises of notebook 02 (a Dataset for the crack images).

For teachers, and for learners who are stuck: try the exercise first. See README.md.
"""

from __future__ import annotations


def my_interleave(positives: list, negatives: list) -> tuple[list, list[int]]:
    """Positives at even positions (label 1), negatives at odd positions (label 0); equal counts."""
    files = [None] * (len(positives) + len(negatives))
    files[::2] = positives   # even positions: cracks
    files[1::2] = negatives  # odd positions: no cracks
    labels = [1 if i % 2 == 0 else 0 for i in range(len(files))]
    return files, labels


def my_split_index(n: int) -> int:
    """How many of n samples go to training: the first 75%, rounded down (40,000 -> 30,000)."""
    return n * 3 // 4  # whole-number arithmetic: no float rounding surprises


def my_count_leaks(train_hashes: list[str], val_hashes: list[str]) -> int:
    """How many validation images have the same content hash as some training image."""
    in_training = set(train_hashes)  # a set answers "is it there?" at once, however large
    return sum(1 for digest in val_hashes if digest in in_training)
