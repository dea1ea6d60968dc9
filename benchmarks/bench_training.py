"""How much time does computing the frozen backbone's features once save? Measured, then extrapolated.

On the same images (the real sample when WORKBOOK_REAL_SAMPLE is set, each file read again until
there are --images, else synthetic images) it measures, in images per second:

  (a) the workbook's backbone alone on images in memory: int8 where it measures faster here, else float32;
  (b) extract_features from the JPEG files with that backbone (no cache): b/a says what reading costs;
  (c) the capstone's loop: the JPEGs read at every epoch, float32, model.train(), forward, backward,
      Adam step on fc; and its validation pass;

then extrapolates one and five epochs on the full set (30,000 train + 10,000 validation images):
the capstone's loop against the workbook's features (once) plus the head (each epoch).

    python benchmarks/bench_training.py                    # about 4 minutes on 2 CPU cores
    python benchmarks/bench_training.py --compare 4e66c0c  # (a) and (b) of another commit beside this one's

It is a benchmark, not a test: it reports numbers and checks nothing.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import DataLoader

TRAIN_IMAGES, VAL_IMAGES = 30_000, 10_000  # the capstone's split of the full 40,000-image set
ROOT = Path(__file__).resolve().parent.parent


def benchmark_dataset(n_images: int, folder: Path):
    """The first n_images of the real sample (read again until there are n), or a synthetic set of n images."""
    from helpers.dataset import CrackDataset
    from helpers.settings import real_sample_dir
    from helpers.synthetic_dataset import generate_dataset

    real = real_sample_dir()
    if real is None:
        if not (folder / "synthetic").is_dir():
            generate_dataset(folder / "synthetic", per_class=(n_images + 1) // 2, seed=0, progress=False)
        dataset, source = CrackDataset(folder / "synthetic", split="all", progress=False), "synthetic images"
    else:
        dataset, source = CrackDataset(real, split="all", progress=False), f"the real sample {real}"
        files = len(dataset.samples)
        dataset.samples = [replace(dataset.samples[i % files], index=i) for i in range(max(n_images, files))]
        source += f" ({files} files, each read {n_images / files:.1f} times)"
    dataset.samples = dataset.samples[:n_images]
    dataset.source_size = len(dataset.samples)  # the code before issue 26 chose by the folder's size
    return dataset, f"{len(dataset):,} images from {source}"


def rates_in_turns(timers: dict, repeats: int) -> dict[str, float]:
    """Images/s of each timer (run() -> images processed), median of `repeats` rounds taken in turns."""
    seconds: dict[str, list[float]] = {name: [] for name in timers}
    images = {}
    for _ in range(repeats):
        for name, run in timers.items():
            start = time.perf_counter()
            images[name] = run()
            seconds[name].append(time.perf_counter() - start)
    return {name: images[name] / statistics.median(seconds[name]) for name in timers}


def measure_this_tree(n_images: int, repeats: int, folder: Path) -> dict:
    """(a) and (b) with the helpers package found first on sys.path (this tree's, or --compare's)."""
    import helpers.speed as speed
    from helpers.dataset import default_transform
    from helpers.features import extract_features
    from helpers.model import build_resnet18
    from helpers.settings import pick_device

    device = pick_device()

    torch.manual_seed(0)
    model = build_resnet18(weights=None).eval()  # random weights: the speed is the same as ImageNet's
    dataset, _ = benchmark_dataset(n_images, folder)
    images = torch.stack([dataset[i][0] for i in range(len(dataset))])
    if hasattr(speed, "choose_backbone"):  # the code before issue 26 measured and chose by itself
        from helpers.feature_cache import weights_fingerprint

        args = (model, device, speed.FastSettings(), TRAIN_IMAGES + VAL_IMAGES, weights_fingerprint(model))
        speed.choose_backbone(*args, default_transform())  # measures once, remembers
        speed.forget_built_backbones()
        start = time.perf_counter()
        backbone = speed.choose_backbone(*args, default_transform()).prepare(default_transform())
        backbone(images[:8].to(device))
        setup, name = time.perf_counter() - start, backbone.number_format
    else:
        speed.enable(speed.measure(model))  # switches int8 on where it measures faster
        start = time.perf_counter()
        backbone, name = speed.backbone_for(model, device)
        backbone(images[:8].to(device))  # int8: builds it
        setup = time.perf_counter() - start
    extract_features(model, dataset, None, device=device, progress=False)  # a first pass: whatever it sets up

    def a() -> int:
        with torch.no_grad():
            for batch in images.split(100):
                backbone(batch.to(device)).cpu()
        return len(images)

    def b() -> int:
        return len(extract_features(model, dataset, None, device=device, progress=False))

    return {"format": name, "setup": setup, **rates_in_turns({"a": a, "b": b}, repeats)}


def measure_tree(tree: Path, args: argparse.Namespace, folder: Path) -> dict:
    """measure_this_tree in a fresh process whose `helpers` is the one in `tree`, with a data folder of its own."""
    data = Path(tempfile.mkdtemp(dir=folder))
    environment = {**os.environ, "PYTHONPATH": str(tree), "WORKBOOK_DATA_DIR": str(data)}
    command = [sys.executable, __file__, "--worker", "--images", str(args.images), "--repeats", str(args.repeats)]
    output = subprocess.run(command + ["--folder", str(folder)], env=environment, cwd=tree, check=True,
                            capture_output=True, text=True).stdout  # fmt: skip
    return json.loads(output.strip().splitlines()[-1])


def capstone_rates(n_images: int, repeats: int, folder: Path) -> tuple[float, float]:
    """(c): images/s of the capstone's training loop and of its validation pass, reading the JPEGs each time."""
    from helpers.model import build_resnet18
    from helpers.settings import pick_device

    device = pick_device()
    dataset, _ = benchmark_dataset(min(n_images, 300), folder)
    torch.manual_seed(0)
    model = build_resnet18(weights=None).to(device)
    optimizer, criterion = torch.optim.Adam(model.fc.parameters(), lr=0.001), nn.CrossEntropyLoss()

    def train() -> int:
        model.train()
        for x, y in DataLoader(dataset, batch_size=100):
            optimizer.zero_grad()
            criterion(model(x.to(device)), y.to(device)).backward()
            optimizer.step()
        return len(dataset)

    def validate() -> int:
        model.eval()
        with torch.no_grad():
            for x, y in DataLoader(dataset, batch_size=100):
                (model(x.to(device)).argmax(1).cpu() == y).sum().item()
        return len(dataset)

    rates = rates_in_turns({"train": train, "val": validate}, repeats)
    return rates["train"], rates["val"]


def head_seconds(epochs: int) -> float:
    """Training Linear(512, 2) on 30,000 cached features for `epochs`, with a validation pass on 10,000 each epoch."""
    features, labels = torch.randn(TRAIN_IMAGES, 512), torch.randint(0, 2, (TRAIN_IMAGES,))
    head, start = nn.Linear(512, 2), time.perf_counter()
    optimizer = torch.optim.Adam(head.parameters(), lr=0.001)
    for _ in range(epochs):
        for x, y in zip(features.split(100), labels.split(100)):
            optimizer.zero_grad()
            nn.functional.cross_entropy(head(x), y).backward()
            optimizer.step()
        with torch.no_grad():
            head(features[:VAL_IMAGES]).argmax(1)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=2000, help="images for (a) and (b) (default 2,000)")
    parser.add_argument("--repeats", type=int, default=3, help="rounds taken in turns; the median is kept")
    parser.add_argument("--compare", metavar="COMMIT", help="also measure (a) and (b) of another commit")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--folder", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(measure_this_tree(args.images, args.repeats, args.folder)))
        return
    sys.path.insert(0, str(ROOT))
    from helpers.speed import machine

    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as temp:
        folder = Path(temp)
        _, source = benchmark_dataset(args.images, folder)
        print(f"{machine()}; load average {os.getloadavg()[0]:.1f}\ndata: {source}; median of {args.repeats}\n")
        trees = {"this tree": ROOT}
        if args.compare:
            old = folder / "compare"
            subprocess.run(
                ["git", "-C", str(ROOT), "worktree", "add", "--detach", "-q", str(old), args.compare], check=True
            )
            trees = {args.compare: old, **trees}
        try:
            results = {name: measure_tree(tree, args, folder) for name, tree in trees.items()}
        finally:
            if args.compare:
                subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(old)], check=False)
        train_rate, val_rate = capstone_rates(args.images, args.repeats, folder)
    heads = {epochs: statistics.median(head_seconds(epochs) for _ in range(3)) for epochs in (1, 5)}

    print(f"(c) the capstone's loop: training {train_rate:.1f} images/s, validation {val_rate:.1f} images/s")
    print(f"head on 30,000 cached features: 1 epoch {heads[1]:.2f} s, 5 epochs {heads[5]:.2f} s\n")
    print(
        f"{'':<12}{'format':<9}{'set-up s':>9}{'(a) img/s':>11}{'(b) img/s':>11}{'b/a':>6}{'1 epoch':>9}{'5 epochs':>9}"
    )
    for name, r in results.items():
        features = r["setup"] + (TRAIN_IMAGES + VAL_IMAGES) / r["b"]
        speedups = [e * (TRAIN_IMAGES / train_rate + VAL_IMAGES / val_rate) / (features + heads[e]) for e in (1, 5)]
        print(
            f"{name:<12}{r['format']:<9}{r['setup']:9.1f}{r['a']:11.1f}{r['b']:11.1f}{r['b'] / r['a']:6.2f}"
            f"{speedups[0]:8.1f}x{speedups[1]:8.1f}x"
        )
    if args.compare:
        new, old = results["this tree"], results[args.compare]
        print(f"\nthis tree / {args.compare}: (a) {new['a'] / old['a']:.2f}, (b) {new['b'] / old['b']:.2f}")
    print("\nspeed-up = the capstone's epochs (c) / (set-up + 40,000 images at rate b + the head's epochs)")
    print(f"benchmark took {time.perf_counter() - started:.0f} s; load average now {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
