"""How many DataLoader worker processes read the images while the backbone runs.

Optional material, like the rest of :mod:`helpers.speed`. Whether worker processes help depends
on the machine (on a CPU they overlap decoding with the backbone but compete with its threads;
on a GPU decoding is the slow part), so for a big enough data set
:func:`batches_measuring_workers` computes the first batches with each candidate number of
workers in turn (nothing is thrown away: those batches are part of the pass), then the rest with
the fastest, start-up included. Smaller data sets use :func:`default_num_workers` (on a CPU with
fewer than 8 cores, the main process decodes). :func:`planned_batches` picks between the two.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

import torch

from helpers.speed.fast_input import Feeder, folder_of

PROBE_BATCHES = 4  # batches computed with each candidate number of workers before choosing


def cores() -> int:
    """The cores this process may use."""
    try:
        return len(os.sched_getaffinity(0))  # Linux
    except AttributeError:
        return os.cpu_count() or 1


def worker_candidates(device: torch.device | str | None = None) -> list[int]:
    """The numbers of DataLoader workers worth measuring: 0, then powers of two below the core count, up to 8.

    (1 is left out where 4 or more can run.) One core: [0]; 2 cores: [0, 1]; 16 cores: [0, 2, 4, 8].
    """
    limit = min(8, cores() - 1)
    counts = [n for n in (1, 2, 4, 8) if n <= limit]
    return [0] + [n for n in counts if not (n == 1 and limit >= 4)]


def default_num_workers(device: torch.device | str | None = None) -> int:
    """DataLoader worker processes that decode the JPEGs while the backbone runs.

    On a CPU the backbone needs every core, and decoding a 227x227 JPEG (about 1 ms) is a few
    per cent of its work: with fewer than 8 cores the main process decodes (measured on 2 cores
    with int8: one worker process competing with the backbone's threads cut 55 images/s to 39);
    with more, one worker per 8 cores, up to 4. With a GPU (or MPS) decoding is the slow part:
    up to 8 workers. (On a GPU, extract_features measures instead, for a big enough data set:
    see batches_measuring_workers below.)
    """
    available = cores()
    accelerator = device is not None and torch.device(device).type in ("cuda", "mps")
    if accelerator:
        return 0 if available <= 1 else min(8, available - 1)
    return min(4, available // 8)


@dataclass
class WorkerTrial:
    """How one number of worker processes did on its share of the first batches."""

    workers: int
    start_seconds: float  # from creating the DataLoader until its first batch is ready
    rate: float  # images per second after the first batch

    def seconds_for(self, images: int) -> float:
        """The time this choice would take for `images` more images, start-up included."""
        return self.start_seconds + images / self.rate


def fastest(trials: list[WorkerTrial], remaining: int) -> int:
    """The number of workers that would finish `remaining` images soonest; fewer workers on a tie."""
    return min(trials, key=lambda trial: (trial.seconds_for(remaining), trial.workers)).workers


def can_measure(total: int, candidates: list[int], batch_size: int) -> bool:
    """Measuring pays when the trials take at most half the images: each gets PROBE_BATCHES batches."""
    return len(candidates) > 1 and 2 * len(candidates) * PROBE_BATCHES * batch_size <= total


def batches_measuring_workers(
    feeder: Feeder, candidates: list[int], report: Callable[[str], None] = print
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Every batch of `feeder`, in order; the first ones with each of `candidates` workers in turn.

    The time between batches includes what the caller does with each (the backbone), so a trial
    measures the whole pass. After the trials, the remaining images go through with the number of
    workers that `fastest` picks, and `report` gets one line that says what was measured.
    """
    total, probe = len(feeder), PROBE_BATCHES * feeder.batch_size
    position, trials = 0, []
    feeder.warm_up()
    for workers in candidates:
        stop = min(position + probe, total)
        started, first_ready, after_first, first_images, images = time.perf_counter(), None, None, 0, 0
        for batch in feeder.batches(workers, position, stop):
            if first_ready is None:  # start-up: workers started, first batch read (not yet computed)
                first_ready = time.perf_counter()
            yield batch  # the caller computes this batch's features before the loop goes on
            images += len(batch[1])
            if after_first is None:  # the rate leaves out the first batch, and so the backbone's warm-up
                after_first, first_images = time.perf_counter(), images
        elapsed = time.perf_counter() - after_first
        trials.append(WorkerTrial(workers, first_ready - started, (images - first_images) / max(elapsed, 1e-9)))
        position = stop
    best = fastest(trials, total - position)
    _CHOSEN[_run_key(feeder)] = best
    measured = ", ".join(
        f"{trial.workers} -> {trial.rate:,.0f} img/s (start {trial.start_seconds:.1f} s)" for trial in trials
    )
    report(
        f"DataLoader workers, measured on the first {position:,} images: {measured}; "
        f"the other {total - position:,} images with {best}"
    )
    yield from feeder.batches(best, position, total)


_CHOSEN: dict[tuple, int] = {}  # the number of workers measured fastest, per folder and way of feeding: once a run


def _run_key(feeder: Feeder) -> tuple:
    return (
        folder_of(feeder.dataset),
        str(feeder.device),
        feeder.decoder is not None,
        feeder.batch_size,
    )


def planned_batches(feeder: Feeder, num_workers: int | str | None, report: Callable[[str], None]) -> Iterable:
    """The feeder's batches with `num_workers` workers: a number, None (the default), or "measure".

    None and "measure" time the candidates (speed.worker_candidates) on the first batches, where
    the data set is big enough for that to pay (can_measure); None only once a run for a folder
    and way of feeding (a second split, a second pass reuse the number); else None means default_num_workers
    (on a CPU with fewer than 8 cores: the main process decodes). On a CPU whether a worker
    process helps depends on the machine: it overlaps decoding with the backbone, but competes
    with the backbone's threads for the cores (measured on 2 cores: from 0.7x to 1.2x).
    """
    if num_workers is None and _run_key(feeder) in _CHOSEN:
        return feeder.batches(_CHOSEN[_run_key(feeder)])
    if num_workers in (None, "measure"):
        candidates = worker_candidates(feeder.device)
        if can_measure(len(feeder), candidates, feeder.batch_size):
            return batches_measuring_workers(feeder, candidates, report)
        if feeder.decoder is not None:
            return feeder.batches(0)  # too few images to measure; decoding on the device, reading bytes is quick
    return feeder.batches(num_workers if isinstance(num_workers, int) else default_num_workers(feeder.device))
