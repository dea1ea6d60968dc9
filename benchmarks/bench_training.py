"""How much time does caching the frozen backbone's features save? Measured, then extrapolated.

Measures, on the same images (the real sample when WORKBOOK_REAL_SAMPLE is set, else a
synthetic set generated into a temporary folder):

  (a) the backbone's forward pass on images already in memory, with the workbook's settings;
  (b) extract_features from the JPEG files (no cache), with the workbook's DataLoader settings;
  (c) the capstone's loop, reading the JPEGs at every epoch: float32, model.train(), full
      forward + backward + Adam step; and its validation pass (model.eval(), forward);

plus the forward pass in each number format / memory layout, JPEG decoding with PIL and with
torchvision, and training the Linear(512, 2) head on 30,000 cached features. From these rates
it extrapolates the time to train on the full 40,000-image set (30,000 train + 10,000 validation).

    python benchmarks/bench_training.py            # about 6 minutes on 2 CPU cores
    python benchmarks/bench_training.py --quick    # fewer images, one repeat, no torch.compile

It is a benchmark, not a test: it reports numbers and checks nothing.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from copy import deepcopy
from dataclasses import replace
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import BatchSampler, SequentialSampler, default_collate

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from anywhere without installing

from helpers.dataset import CrackDataset, default_transform  # noqa: E402
from helpers.feature_cache import weights_fingerprint  # noqa: E402
from helpers.features import extract_features  # noqa: E402
from helpers.speed.int8 import (  # noqa: E402
    first_conv_8bit_unsafe_reason,
    int8_unavailable_reason,
    quantize_backbone,
    rounding_error,
)
from helpers.model import backbone_of, build_resnet18  # noqa: E402
from helpers.settings import pick_device, real_sample_dir  # noqa: E402
from helpers.speed import (  # noqa: E402
    Backbone,
    FastSettings,
    bf16_is_fast,
    candidates_here,
    choose_backbone,
    choose_decoding,
    default_num_workers,
    forget_built_backbones,
    machine_key,
    worker_candidates,
)
from helpers.speed.backbone import INT8_8BIT_CONV1, calibration_images  # noqa: E402
from helpers.synthetic_dataset import generate_dataset  # noqa: E402

TRAIN_IMAGES, VAL_IMAGES = 30_000, 10_000  # the capstone's split of the full 40,000-image set
FULL_SET = TRAIN_IMAGES + VAL_IMAGES
# Default sizes: enough for extract_features to measure its decoder and worker counts on a CPU
# (helpers.speed: from 1,000 and 1,600 images) and for its start-up to count as it does on a big
# folder (issue #19's target for b/a holds from 2,000 images); on a GPU 4,000, where 2,000 take a second.
CPU_IMAGES, GPU_IMAGES = 2000, 4000
# Not one of the workbook's candidates, measured to show why: the first convolution in float32
# (slower; see helpers/speed/int8.py). Name -> first_conv_bits.
OTHER_INT8 = {"int8 (conv1 float32), compiled": None}


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--images",
        type=int,
        default=None,
        help="images to measure on (default 2,000 on a CPU, 4,000 on a GPU, where start-up "
        "costs would otherwise decide)",
    )
    parser.add_argument("--batch-size", type=int, default=100, help="the capstone's 100 by default")
    parser.add_argument("--repeats", type=int, default=3, help="timed repeats; the median is reported")
    parser.add_argument("--quick", action="store_true", help="60 images, 1 repeat, no torch.compile")
    parser.add_argument("--no-compile", action="store_true", help="skip the torch.compile variant")
    args = parser.parse_args()
    if args.images is None:
        args.images = GPU_IMAGES if pick_device().type == "cuda" else CPU_IMAGES
    if args.quick:
        args.images, args.repeats, args.no_compile = min(args.images, 60), 1, True
    return args


def cpu_kind() -> str:
    """The CPU's matrix instructions, from /proc/cpuinfo's flags (a description only: the workbook measures)."""
    cpuinfo = Path("/proc/cpuinfo")
    flags = set()
    if cpuinfo.is_file():
        line = next((line for line in cpuinfo.read_text().splitlines() if line.startswith("flags")), "")
        flags = set(line.split(":", 1)[-1].split())
    known = {
        "avx2": "AVX2",
        "avx512f": "AVX-512",
        "avx512_vnni": "AVX512-VNNI",
        "avx_vnni": "AVX-VNNI",
        "avx512_bf16": "AVX512-BF16",
        "amx_tile": "AMX",
    }
    found = [name for flag, name in known.items() if flag in flags]
    return (", ".join(found) or platform.machine()) + ("" if "amx_tile" in flags else ", no AMX")


def describe_machine(device: torch.device) -> str:
    """CPU model, cores, torch and torchao versions, load, threads, device, and what can run here."""
    gpu = f", GPU {torch.cuda.get_device_name(device)}" if device.type == "cuda" else ""
    load = f", load average {os.getloadavg()[0]:.1f}" if hasattr(os, "getloadavg") else ""
    workers = f"measured among {worker_candidates(device)}" if device.type == "cuda" else default_num_workers(device)
    names, ruled_out = candidates_here(FastSettings(), device)
    return (
        f"CPU {machine_key()}{load}{gpu}\n"
        f"CPU kind: {cpu_kind()}\n"
        f"{torch.get_num_threads()} threads, device {device}, bf16 fast here: {bf16_is_fast(device)}, "
        f"int8: {int8_unavailable_reason(device) or 'yes'}, DataLoader workers: {workers}\n"
        f"candidates: {', '.join(names)}" + (f" (not: {'; '.join(ruled_out)})" if ruled_out else "")
    )


def benchmark_dataset(n_images: int, temp_dir: Path) -> tuple[CrackDataset, str]:
    """The first n_images of the real sample (interleaved, so both classes), or a synthetic set.

    A real sample with fewer images is gone through again until there are n_images (said so).
    """
    real = real_sample_dir()
    if real:
        linked = temp_dir / "real"  # links, so the digest cache lands in the temporary folder, not in the sample
        linked.mkdir()
        for cls in ("Positive", "Negative"):
            try:
                (linked / cls).symlink_to(real / cls, target_is_directory=True)
            except OSError:  # Windows without the right to make links: a copy
                shutil.copytree(real / cls, linked / cls)
        dataset, source = CrackDataset(linked, split="all", progress=False), f"real sample {real}"
        files = len(dataset.samples)
        if files < n_images:
            dataset.samples = [replace(dataset.samples[i % files], index=i) for i in range(n_images)]
            source += f" ({files} files, each read {n_images / files:.1f} times)"
    else:
        root = generate_dataset(temp_dir / "synthetic", per_class=(n_images + 1) // 2, seed=0, progress=False)
        dataset, source = CrackDataset(root, split="all", progress=False), "synthetic images"
    dataset.samples = dataset.samples[:n_images]  # keep the first n images only
    dataset.source_size = len(dataset.samples)  # a folder of n images, as far as the workbook's choices go
    return dataset, f"{len(dataset)} {source}, 227x227 JPEG"


def median_time(run, repeats: int) -> float:
    """Median wall-clock seconds of `repeats` calls of run(i)."""
    times = []
    for i in range(repeats):
        start = time.perf_counter()
        run(i)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def rates_taking_turns(timers: dict, repeats: int) -> dict[str, float]:
    """Images/s of each timer (a function run(i) -> images processed), median over `repeats`.

    The timers take turns, one call each per round: on a shared machine a busy moment then
    slows all of them alike instead of spoiling one.
    """
    seconds = {name: [] for name in timers}
    images = {}
    for i in range(repeats):
        for name, run in timers.items():
            start = time.perf_counter()
            images[name] = run(i)
            seconds[name].append(time.perf_counter() - start)
    return {name: images[name] / statistics.median(seconds[name]) for name in timers}


def forward_timer(
    name: str, model: nn.Module, images: torch.Tensor, settings: FastSettings, device: torch.device, batch_size: int
):
    """Times one batch through the backbone alone (eval mode, inference mode), images in memory."""
    backbone = choose_backbone(model, device, settings, FULL_SET, weights_fingerprint(model), default_transform())
    if name in OTHER_INT8:
        backbone.run = quantize_backbone(
            backbone_of(model), calibration_images(default_transform()), first_conv_bits=OTHER_INT8[name]
        )
    backbone.prepare(default_transform())
    first = backbone(images[:8])  # warm-up (and compilation, if any)
    batches = images.split(batch_size)

    def run(i: int) -> int:
        batch = batches[i % len(batches)]
        backbone(batch)
        return len(batch)

    return run, first


def capstone_timers(model: nn.Module, dataset: CrackDataset, device: torch.device, batch_size: int):
    """Time one batch of the capstone's training loop and one of its validation loop.

    As in the capstone: DataLoader(dataset, batch_size=100) with no worker processes, so each
    batch is read and decoded from the JPEG files (again at every epoch), float32, contiguous.
    Training: model.train(), forward of the whole model, loss.backward(), Adam step on fc.
    Validation: model.eval(), forward, count the correct predictions.
    """
    model = deepcopy(model).to(device)
    optimizer = torch.optim.Adam(model.fc.parameters(), lr=0.001)
    criterion = nn.CrossEntropyLoss()
    batches = list(BatchSampler(SequentialSampler(dataset), batch_size, drop_last=False))

    def load(i: int) -> tuple[torch.Tensor, torch.Tensor]:
        """What DataLoader(num_workers=0) does: read each image, then stack them into a batch."""
        x, y = default_collate([dataset[j] for j in batches[i % len(batches)]])
        return x.to(device), y.to(device)

    def train_step(i: int) -> int:
        model.train()
        x, y = load(i)
        optimizer.zero_grad()
        loss = criterion(model(x), y)
        loss.backward()
        optimizer.step()
        loss.item()  # waits for the GPU, if any
        return len(x)

    def validation_step(i: int) -> int:
        model.eval()
        x, y = load(i)
        with torch.no_grad():
            (model(x).argmax(1) == y).sum().item()
        return len(x)

    model(load(0)[0][:8]).sum().backward()  # warm-up
    return train_step, validation_step


def extract_timer(
    model: nn.Module,
    dataset: CrackDataset,
    device: torch.device,
    batch_size: int,
    settings: FastSettings,
    num_workers: int | str | None = None,
):
    """Times extract_features over every JPEG of `dataset`: no cache, `settings` (the workbook's, or a variant)."""

    def run(_: int) -> int:
        extract_features(
            model,
            dataset,
            None,
            batch_size=batch_size,
            num_workers=num_workers,
            settings=settings,
            device=device,
            progress=False,
        )
        return len(dataset)

    return run


def features_timers(
    timers: dict, model: nn.Module, dataset: CrackDataset, device: torch.device, batch_size: int, workbook: FastSettings
) -> tuple[str, list[str], str, float]:
    """Add (b), extract_features as the workbook runs it, and the other choices, to `timers`.

    (b) leaves the decoder and the DataLoader workers to the workbook: on a GPU nvJPEG and
    measured workers; on a CPU the decoder measured (PIL or decode_jpeg in batches, once per
    folder) and the workers measured where the data set is big enough. The other rows fix them:
    PIL in the main process or in one worker, decode_jpeg in batches (on a GPU: PIL only).
    The workbook measures the workers once a run, on the first pass over a folder, and keeps the
    choice: so (b) runs one pass here, untimed among the repeats (with three repeats, that pass
    would always be one of them, and the median the slower of the other two), and its rate is
    returned on its own.
    Returns (name of b, names of the others, how the decoders were chosen: the measured rates on a
    CPU, the images per second of (b)'s first pass).
    """

    def readers(workers: int) -> str:
        return "main process" if workers == 0 else f"{workers} worker{'s' if workers > 1 else ''}"

    pil = replace(workbook, decode_on_device=False)
    if device.type == "cuda":
        name_b, decoding = "(b) nvJPEG, workers measured", "nvJPEG on the GPU"
        others = {f"    PIL, {readers(n)}": (pil, n) for n in sorted({0, default_num_workers(device)})}
    else:
        batched, decoding = choose_decoding(dataset, device, workbook, measure=True)
        name_b = f"(b) {'decode_jpeg in batches' if batched else 'PIL'} (measured), workers measured"
        others = {
            "    PIL, main process": (pil, 0),
            "    PIL, 1 worker": (pil, 1),
            "    decode_jpeg in batches, main process": (replace(workbook, decode_on_device=True), 0),
        }
    timers[name_b] = extract_timer(model, dataset, device, batch_size, workbook)
    start = time.perf_counter()
    first_rate = timers[name_b](0) / (time.perf_counter() - start)  # measures the workers, once a run
    for name, (settings, workers) in others.items():
        timers[name] = extract_timer(model, dataset, device, batch_size, settings, num_workers=workers)
    return name_b, list(others), decoding, first_rate


def head_training_seconds(epochs: int, device: torch.device, batch_size: int) -> float:
    """Seconds to train Linear(512, 2) for `epochs` on 30,000 random features, validating on 10,000 each epoch."""
    torch.manual_seed(0)
    train_x, train_y = torch.randn(TRAIN_IMAGES, 512), torch.randint(0, 2, (TRAIN_IMAGES,))
    val_x, val_y = torch.randn(VAL_IMAGES, 512), torch.randint(0, 2, (VAL_IMAGES,))
    head = nn.Linear(512, 2).to(device)
    optimizer = torch.optim.Adam(head.parameters(), lr=0.001)
    criterion = nn.CrossEntropyLoss()
    start = time.perf_counter()
    for _ in range(epochs):
        for i in torch.randperm(TRAIN_IMAGES).split(batch_size):
            optimizer.zero_grad()
            criterion(head(train_x[i].to(device)), train_y[i].to(device)).backward()
            optimizer.step()
        correct = 0
        with torch.no_grad():  # validation, as the capstone does after each epoch
            for x, y in zip(val_x.split(1000), val_y.split(1000)):
                correct += (head(x.to(device)).argmax(1).cpu() == y).sum().item()
    return time.perf_counter() - start


def variants(device: torch.device, compile_too: bool) -> list[tuple[str, FastSettings]]:
    """The forward-pass settings worth comparing: layout, and every number format that can run here."""
    names, _ = candidates_here(FastSettings(), device)
    rows = [
        ("float32, contiguous", FastSettings(channels_last=False, bf16=False, int8=False)),
        ("float32, channels_last", FastSettings(channels_last=True, bf16=False, int8=False, compile=False)),
    ]
    if "bfloat16" in names or device.type == "cpu":  # emulated bfloat16 too, to show why it is ruled out
        rows.append(("bf16, channels_last", FastSettings(channels_last=True, bf16=True, compile=False)))
    if compile_too and "bfloat16 compiled" in names:
        rows.append(("bf16, channels_last, compiled", FastSettings(channels_last=True, bf16=True, compile=True)))
    if "int8" in names or INT8_8BIT_CONV1 in names:  # both first convolutions, even where 8 bits are ruled out
        rows.append(("int8, compiled", FastSettings(bf16=False, int8=True, int8_first_conv_bits=7)))
        rows.append((f"{INT8_8BIT_CONV1}, compiled", FastSettings(bf16=False, int8=True, int8_first_conv_bits=8)))
        rows.extend((name, FastSettings(bf16=False, int8=True)) for name in OTHER_INT8)
    return rows


def way(settings: FastSettings) -> str:
    """The candidate explicit `settings` run: "float32", "bfloat16", "bfloat16 compiled", "int8"..."""
    if settings.int8:
        return INT8_8BIT_CONV1 if settings.int8_first_conv_bits == 8 else "int8"
    return ("bfloat16" if settings.bf16 else "float32") + (" compiled" if settings.compile else "")


def workbook_backbone(model: nn.Module, device: torch.device) -> tuple[Backbone, FastSettings]:
    """The backbone the notebooks would choose for the full 40,000-image set (measured here, once per
    machine, when not remembered), and the same choice as explicit settings."""
    chosen = choose_backbone(model, device, FastSettings(), FULL_SET, weights_fingerprint(model), default_transform())
    int8 = chosen.number_format == "int8"
    settings = FastSettings(
        bf16=chosen.number_format == "bfloat16",
        int8=int8,
        compile=chosen.compiled,
        int8_first_conv_bits=chosen.first_conv_bits if int8 else None,
    )
    return chosen, settings


def setup_seconds(model: nn.Module, device: torch.device, settings: FastSettings) -> float:
    """Seconds to set up the workbook's backbone from scratch, as a notebook would: copy, compile or
    build int8 (calibrate, export, compile), and its first call.

    torch.compile keeps what it compiled in a cache on disk, so a second run of the benchmark
    (or of the notebooks) builds faster than the first.
    """
    forget_built_backbones()
    start = time.perf_counter()
    backbone = choose_backbone(model, device, settings, weights=weights_fingerprint(model)).prepare(default_transform())
    backbone(calibration_images(default_transform(), 10))
    return time.perf_counter() - start


def minutes(seconds: float) -> str:
    """Seconds as minutes, for the table."""
    return f"{seconds / 60:6.1f} min"


def main() -> None:
    args = parse_args()
    device = pick_device()
    started = time.perf_counter()
    torch.manual_seed(0)
    model = build_resnet18(weights=None).eval()  # random weights: the speed is the same as ImageNet's
    with tempfile.TemporaryDirectory() as temp:
        dataset, source = benchmark_dataset(args.images, Path(temp))
        batch_size = min(args.batch_size, len(dataset))
        print(describe_machine(device))
        print(f"data: {source}; batch size {batch_size}; median of {args.repeats} repeat(s), taking turns\n")
        images = torch.stack([dataset[i][0] for i in range(len(dataset))])

        chosen, workbook = workbook_backbone(model, device)  # measured here, or remembered from an earlier run
        print(f"the workbook's choice for {FULL_SET:,} images: {chosen.name} ({chosen.why})\n")
        build_seconds = setup_seconds(model, device, workbook)
        timers, notes, first = {}, {}, {}
        name_a = None
        for name, settings in variants(device, not args.no_compile):
            if way(settings) == chosen.name and settings.channels_last and name not in OTHER_INT8:
                name_a = name
                notes[name] = f"<- the workbook's choice: (a); setting it up took {build_seconds:.0f} s"
            n = batch_size
            if settings.bf16 and not bf16_is_fast(device):
                n = min(batch_size, 8)  # emulated bfloat16 is slow: a small batch is enough to see it
                notes[name] = f"batches of {n}: bfloat16 is emulated on this CPU"
            start = time.perf_counter()
            timers[name], first[name] = forward_timer(
                name, model, images[:n] if n < batch_size else images, settings, device, n
            )
            if settings.compile:
                notes[name] = f"compiling took {time.perf_counter() - start:.0f} s"
        for name, settings in variants(device, not args.no_compile):
            if settings.int8:
                error = rounding_error(first[name], first["float32, channels_last"])
                ruled_out = first_conv_8bit_unsafe_reason() if settings.int8_first_conv_bits == 8 else None
                notes[name] = "; ".join(
                    filter(
                        None,
                        [
                            f"1 - cosine vs float32 {error:.1e}",
                            notes.get(name),
                            ruled_out and f"ruled out: {ruled_out}",
                        ],
                    )
                )
        name_b, others_b, decoding, first_b = features_timers(timers, model, dataset, device, batch_size, workbook)
        name_c, name_val = "(c) capstone, training", "capstone, validation"
        timers[name_c], timers[name_val] = capstone_timers(model, dataset, device, batch_size)
        rates = rates_taking_turns(timers, args.repeats)

        # Tiny operations: timed with one thread, as in a DataLoader worker. With two, each
        # operation waits for both threads, and on a busy machine that wait can be milliseconds.
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        head_1 = statistics.median(head_training_seconds(1, device, 100) for _ in range(3))
        head_5 = statistics.median(head_training_seconds(5, device, 100) for _ in range(3))
        torch.set_num_threads(threads)

    assert name_a is not None, f"no row of (a) has the workbook's settings {workbook}"
    rate_a, rate_b, rate_c = rates[name_a], rates[name_b], rates[name_c]
    rate_val = rates[name_val]
    print("(a) the backbone's forward pass, eval mode, images in memory:")
    for name, _ in variants(device, not args.no_compile):
        print(f"  {name:<36} {rates[name]:8.1f} images/s  {notes.get(name, '')}")
    print("(b) the workbook's features pass: JPEG files -> DataLoader -> backbone, no cache:")
    target = "0.5 on a GPU" if device.type == "cuda" else "0.9"
    print(f"  {name_b:<36} {rate_b:8.1f} images/s  b/a = {rate_b / rate_a:.2f} (target >= {target})")
    print(
        f"  {'    its first pass of the run':<36} {first_b:8.1f} images/s  (measuring the workers, then keeping the choice)"
    )
    for name in others_b:
        print(f"  {name:<36} {rates[name]:8.1f} images/s  b/a = {rates[name] / rate_a:.2f} (another choice)")
    print(f"  decoders: {decoding}")
    print("(c) the capstone's loop: JPEG files -> DataLoader (0 workers) -> whole model, float32, contiguous:")
    print(f"  {name_c:<36} {rate_c:8.1f} images/s  model.train(), forward + backward + Adam step on fc")
    print(f"  {name_val:<36} {rate_val:8.1f} images/s  model.eval(), forward")
    print(
        f"head Linear(512, 2), 30,000 cached features + validation on 10,000 (1 thread, median of 3): "
        f"1 epoch {head_1:.2f} s, 5 epochs {head_5:.2f} s"
    )

    print(f"\nextrapolated to the full set ({TRAIN_IMAGES:,} train + {VAL_IMAGES:,} validation images):")
    print(
        f"  capstone = epochs x ({TRAIN_IMAGES:,} / training rate + {VAL_IMAGES:,} / validation rate), "
        "both measured in (c)"
    )
    print(
        f"  workbook = {TRAIN_IMAGES + VAL_IMAGES:,} / rate b (features, once, {chosen.name})"
        f" + head training (measured) + setting up the backbone (measured, {build_seconds:.0f} s)"
    )
    features_time = build_seconds + (TRAIN_IMAGES + VAL_IMAGES) / rate_b
    for epochs, head_time, target in ((1, head_1, 4), (5, head_5, 15)):
        capstone = epochs * (TRAIN_IMAGES / rate_c + VAL_IMAGES / rate_val)
        workbook = features_time + head_time
        print(
            f"  {epochs} epoch{'s' if epochs > 1 else ' '} + validation: capstone {minutes(capstone)}, "
            f"workbook {minutes(workbook)}, speed-up {capstone / workbook:5.1f}x (target >= {target}x)"
        )
    print(f"\nbenchmark took {time.perf_counter() - started:.0f} s; load average now {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
