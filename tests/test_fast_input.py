"""Tests for helpers.speed.fast_input: JPEGs decoded in batches give the data set's very pixels, and the
number of DataLoader workers is chosen by measuring, without losing or reordering a batch.

The device's decoder is nvJPEG on a GPU; here, without one, the same code runs with
decode_jpeg on the CPU, which must give exactly what PIL gives.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

import helpers.speed.backbone as backbone_module
import helpers.speed.fast_input as fast_input
import helpers.speed.workers as workers_module
from helpers.dataset import IMAGENET_MEAN, IMAGENET_STD, CrackDataset
from helpers.folder_dataset import FolderDataset
from helpers.plumbing.images import BadImageError
from helpers.speed.fast_input import (
    DeviceDecoder,
    EncodedImages,
    Feeder,
    can_decode_on_device,
    collate_encoded,
    is_plain_jpeg,
)
from helpers.speed.workers import PROBE_BATCHES, WorkerTrial, batches_measuring_workers, can_measure, fastest
from helpers.features import extract_features, feature_cache_key
from helpers.speed import DECODERS_MEASURED_FROM, FastSettings, choose_decoding, worker_candidates
from helpers.synthetic_dataset import generate_dataset

FLOAT32 = FastSettings(bf16=False, int8=False)


@pytest.fixture(autouse=True)
def measured_afresh(monkeypatch):
    """Each test measures for itself: nothing kept from another test's run (workers, decoders)."""
    monkeypatch.setattr(workers_module, "_CHOSEN", {})
    monkeypatch.setattr(backbone_module, "_DECODERS", {})


@pytest.fixture(scope="module")
def synthetic_root(tmp_path_factory) -> Path:
    return generate_dataset(tmp_path_factory.mktemp("synthetic") / "data", per_class=20, seed=5, progress=False)


def jpeg_bytes(width: int = 227, height: int = 227, mode: str = "RGB", seed: int = 0, fmt: str = "JPEG") -> bytes:
    pixels = np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).convert(mode).save(buffer, fmt)
    return buffer.getvalue()


@pytest.fixture
def odd_root(tmp_path) -> Path:
    """A crack data set with every kind of file the device path must hand to PIL instead."""
    files = {
        "Positive/a_plain.jpg": jpeg_bytes(seed=1),
        "Positive/b_gray.jpg": jpeg_bytes(mode="L", seed=2),
        "Positive/c_wide.jpg": jpeg_bytes(300, 200, seed=3),
        "Negative/a_plain.jpg": jpeg_bytes(seed=4),
        "Negative/b_png_named_jpg.jpg": jpeg_bytes(fmt="PNG", seed=5),
        "Negative/c_cmyk.jpg": jpeg_bytes(mode="CMYK", seed=6),
    }
    for name, data in files.items():
        (tmp_path / name).parent.mkdir(exist_ok=True)
        (tmp_path / name).write_bytes(data)
    return tmp_path


# ----------------------------------------------------------------------------- the same pixels
def test_plain_jpegs_are_recognised_from_their_header():
    assert is_plain_jpeg(jpeg_bytes())
    assert not is_plain_jpeg(jpeg_bytes(mode="L"))
    assert not is_plain_jpeg(jpeg_bytes(300, 200))
    assert not is_plain_jpeg(jpeg_bytes(fmt="PNG"))
    assert not is_plain_jpeg(b"not an image at all")


def test_decoding_in_batches_gives_the_data_sets_exact_tensors(odd_root):
    dataset = CrackDataset(odd_root, split="all", progress=False)
    items, labels, indices = collate_encoded([EncodedImages(dataset)[i] for i in range(len(dataset))])
    assert [item.dim() for item in items] == [1, 1, 3, 3, 3, 3]  # two plain JPEGs go as bytes, the rest as pixels
    decoded = DeviceDecoder(dataset, "cpu")(items, indices)
    expected = torch.stack([dataset[i][0] for i in range(len(dataset))])
    assert decoded.shape == (6, 3, 227, 227)
    assert torch.equal(decoded, expected)
    assert torch.equal(labels, dataset.labels())


def test_older_torchvision_decodes_one_image_per_call_to_the_same_pixels(odd_root, monkeypatch):
    dataset = CrackDataset(odd_root, split="all", progress=False)
    items, _, indices = collate_encoded([EncodedImages(dataset)[i] for i in range(len(dataset))])
    batched = DeviceDecoder(dataset, "cpu")(items, indices)
    monkeypatch.setattr(fast_input, "BATCHED_DECODE", False)  # torchvision before 0.19 takes no list
    assert torch.equal(DeviceDecoder(dataset, "cpu")(items, indices), batched)


def test_features_are_the_same_whichever_way_the_jpegs_are_decoded(model, synthetic_root):
    dataset = CrackDataset(synthetic_root, split="val", progress=False)
    on_device = FastSettings(bf16=False, int8=False, decode_on_device=True)
    with_pil = extract_features(model, dataset, None, settings=FLOAT32, device="cpu", num_workers=0, progress=False)
    batched = extract_features(model, dataset, None, settings=on_device, device="cpu", num_workers=1, progress=False)
    assert torch.equal(batched.features, with_pil.features)
    assert torch.equal(batched.labels, with_pil.labels) and batched.sample_ids == with_pil.sample_ids
    # Another decoder may round differently (nvJPEG), so the cache keeps the two apart.
    assert feature_cache_key(dataset, model, on_device, "cpu") != feature_cache_key(dataset, model, FLOAT32, "cpu")


def test_a_broken_jpeg_is_named_as_with_pil(synthetic_root, tmp_path):
    for cls in ("Positive", "Negative"):
        (tmp_path / cls).mkdir()
        for file in sorted((synthetic_root / cls).iterdir())[:2]:
            (tmp_path / cls / file.name).write_bytes(file.read_bytes())
    broken = sorted((tmp_path / "Negative").iterdir())[1]
    broken.write_bytes(broken.read_bytes()[:3000])  # the header is intact, the pixels are cut off
    dataset = CrackDataset(tmp_path, split="all", progress=False)
    items, _, indices = collate_encoded([EncodedImages(dataset)[i] for i in range(len(dataset))])
    assert all(item.dim() == 1 for item in items)  # its header looks plain: the decoder meets the damage
    decoder = DeviceDecoder(dataset, "cpu")
    with pytest.raises(BadImageError, match=broken.name):
        decoder(items, indices)
    assert decoder.fallbacks == 1
    broken.unlink()
    with pytest.raises(BadImageError, match=broken.name):  # and a file gone since listing
        EncodedImages(dataset)[3]


# ----------------------------------------------------------------------------- when to decode on the device
def test_the_device_decodes_on_a_gpu_only_when_the_data_set_can(synthetic_root, small_transform):
    default = CrackDataset(synthetic_root, split="val", progress=False)
    own_transform = CrackDataset(synthetic_root, split="val", transform=small_transform(), progress=False)
    auto = FastSettings()
    assert choose_decoding(default, "cuda", auto)[0] is True  # only decided here: nothing runs on the GPU
    assert choose_decoding(default, "cpu", auto)[0] is False
    assert choose_decoding(default, "cuda", FastSettings(decode_on_device=False))[0] is False
    on, why = choose_decoding(own_transform, "cuda", auto)
    assert not on and why == "the data set has its own transform"
    with pytest.raises(ValueError, match="its own transform.*decode_on_device=None or False"):
        choose_decoding(own_transform, "cpu", FastSettings(decode_on_device=True))


def test_folder_datasets_and_tensor_files(tmp_path, synthetic_root):
    for name in ("crack", "stain"):
        (tmp_path / "own" / name).mkdir(parents=True)
        (tmp_path / "own" / name / "0.jpg").write_bytes(jpeg_bytes())
    assert can_decode_on_device(FolderDataset(tmp_path / "own", split="all")) is None
    assert can_decode_on_device(FolderDataset(tmp_path / "own", split="all", transform=None)) is not None
    for cls in ("Positive", "Negative"):
        (tmp_path / "pt" / f"{cls}_tensors").mkdir(parents=True)
        torch.save(torch.zeros(3, 8, 8), tmp_path / "pt" / f"{cls}_tensors" / "0.pt")
    tensors = CrackDataset(tmp_path / "pt", split="all", progress=False)
    assert can_decode_on_device(tensors) == "the data set holds preprocessed .pt tensors"


# ----------------------------------------------------------------------------- which decoder on a CPU, by measuring
class FakeCosts:
    """A fake clock, and the data set's two decoders patched to advance it: seconds per image each way."""

    def __init__(self, monkeypatch, dataset, pil: float, batched: float, same_pixels: bool = True):
        self.now = 0.0
        transform, decode = dataset.transform, fast_input._decode_jpegs

        def pil_transform(image):
            self.now += pil
            return transform(image)

        def batched_decode(encoded, device):
            self.now += batched * len(encoded)
            images = decode(encoded, device)
            return images if same_pixels else [image ^ 1 for image in images]  # one level off, everywhere

        dataset.transform = pil_transform
        monkeypatch.setattr(fast_input, "_decode_jpegs", batched_decode)

    def clock(self) -> float:
        return self.now


@pytest.mark.parametrize(
    "pil, batched, same, expected",
    [
        (1.0, 0.2, True, True),  # decode_jpeg faster, same tensors: taken
        (0.2, 1.0, True, False),  # PIL faster: kept
        (1.0, 0.2, False, False),  # faster but other pixels: never taken
    ],
)
def test_the_cpus_decoders_are_timed_and_checked(synthetic_root, monkeypatch, pil, batched, same, expected):
    dataset = CrackDataset(synthetic_root, split="all", progress=False)
    costs = FakeCosts(monkeypatch, dataset, pil, batched, same)
    trial = fast_input.measure_decoders(dataset, images=10, clock=costs.clock)
    assert trial.images == 10 and trial.same_pixels is same
    assert trial.pil_rate == pytest.approx(1 / pil) and trial.batched_rate == pytest.approx(1 / batched)
    assert trial.batched_is_faster is expected
    assert ("NOT the same tensors" in trial.summary()) is not same


def test_a_cpu_measures_its_decoders_once_per_folder_and_only_for_a_big_one(synthetic_root, monkeypatch, capsys):
    calls = []

    def measured(dataset):
        calls.append(dataset.root)
        return fast_input.DecoderTrial(pil_rate=500.0, batched_rate=1500.0, same_pixels=True, images=50)

    monkeypatch.setattr(backbone_module, "measure_decoders", measured)
    small = CrackDataset(synthetic_root, split="train", progress=False)  # 40 images in the folder
    assert choose_decoding(small, "cpu", FastSettings(), measure=True) == (
        False,
        "40 images are too few to pay for measuring the two decoders",
    )
    big = CrackDataset(synthetic_root, split="train", progress=False)
    big.source_size = DECODERS_MEASURED_FROM
    assert choose_decoding(big, "cpu", FastSettings())[0] is False and not calls  # the cache key's question: no timing
    assert choose_decoding(big, "cpu", FastSettings(), measure=True)[0] is True
    other_split = CrackDataset(synthetic_root, split="val", progress=False)
    other_split.source_size = DECODERS_MEASURED_FROM
    assert choose_decoding(other_split, "cpu", FastSettings(), measure=True)[0] is True
    assert len(calls) == 1  # the same folder: measured once
    assert capsys.readouterr().out.count("JPEG decoders measured on the first 50 images") == 1
    assert choose_decoding(big, "cpu", FastSettings(decode_on_device=False), measure=True)[0] is False


def test_the_decoder_a_cpu_measured_changes_no_feature_and_no_cache_key(model, synthetic_root, monkeypatch, capsys):
    monkeypatch.setattr(
        backbone_module,
        "measure_decoders",
        lambda dataset: fast_input.DecoderTrial(pil_rate=1.0, batched_rate=2.0, same_pixels=True, images=50),
    )
    dataset = CrackDataset(synthetic_root, split="val", progress=False)
    dataset.source_size = DECODERS_MEASURED_FROM
    auto = FastSettings(bf16=False, int8=False)
    batched = extract_features(model, dataset, None, settings=auto, device="cpu", num_workers=0, progress=False)
    assert "the JPEGs are decoded on the CPU, in batches" in capsys.readouterr().out
    with_pil = extract_features(
        model,
        dataset,
        None,
        settings=FastSettings(bf16=False, int8=False, decode_on_device=False),
        device="cpu",
        num_workers=0,
        progress=False,
    )
    assert torch.equal(batched.features, with_pil.features)
    assert batched.key == with_pil.key == feature_cache_key(dataset, model, auto, "cpu")


def test_a_reused_buffer_is_overwritten_and_a_fresh_one_is_not(synthetic_root):
    dataset = CrackDataset(synthetic_root, split="all", progress=False)
    expected = torch.stack([dataset[i][0] for i in range(20)])
    for reuse in (False, True):
        first, second = list(
            Feeder(dataset, "cpu", batch_size=10, on_device=True, reuse_buffer=reuse).batches(0, 0, 20)
        )
        assert first[0].is_contiguous(memory_format=torch.channels_last)
        # an inference tensor, as the PIL path's batch is inside the backbone: else torch.compile compiles again
        assert first[0].is_inference() and second[0].is_inference()
        assert torch.equal(second[0], expected[10:])
        assert torch.equal(first[0], expected[:10]) is not reuse  # reused: the second batch wrote over the first


# ----------------------------------------------------------------------------- workers, by measuring
def test_the_fastest_choice_counts_start_up_against_the_images_left():
    quick_start = WorkerTrial(workers=0, start_seconds=0.05, rate=600.0)
    fast_running = WorkerTrial(workers=8, start_seconds=1.5, rate=3000.0)
    assert fastest([quick_start, fast_running], remaining=500) == 0  # 0.9 s against 1.7 s
    assert fastest([quick_start, fast_running], remaining=30_000) == 8  # 50 s against 11.5 s
    same = WorkerTrial(workers=2, start_seconds=0.05, rate=600.0)
    assert fastest([same, quick_start], remaining=1000) == 0  # a tie: fewer processes


@pytest.mark.parametrize(
    "cores, expected", [(1, [0]), (2, [0, 1]), (3, [0, 1, 2]), (8, [0, 2, 4]), (16, [0, 2, 4, 8]), (64, [0, 2, 4, 8])]
)
def test_worker_candidates_follow_the_cores(monkeypatch, cores, expected):
    monkeypatch.setattr(workers_module.os, "sched_getaffinity", lambda pid: set(range(cores)), raising=False)
    assert worker_candidates("cuda") == expected


def test_measuring_needs_twice_the_images_the_trials_take():
    assert can_measure(2 * 2 * PROBE_BATCHES * 100, [0, 1], 100)
    assert not can_measure(2 * 2 * PROBE_BATCHES * 100 - 1, [0, 1], 100)
    assert not can_measure(10**6, [0], 100)  # nothing to choose from


def test_measured_batches_cover_every_image_once_in_order(synthetic_root):
    dataset = CrackDataset(synthetic_root, split="all", progress=False)  # 40 images
    feeder = Feeder(dataset, "cpu", batch_size=2, on_device=True)
    reports: list[str] = []
    batches = list(batches_measuring_workers(feeder, [0, 1], reports.append))
    images = torch.cat([images for images, _ in batches])
    labels = torch.cat([labels for _, labels in batches])
    assert torch.equal(images, torch.stack([dataset[i][0] for i in range(len(dataset))]))
    assert torch.equal(labels, dataset.labels())
    assert len(reports) == 1
    assert reports[0].startswith(f"DataLoader workers, measured on the first {2 * PROBE_BATCHES * 2} images: 0 -> ")
    assert "1 -> " in reports[0] and reports[0].endswith((" with 0", " with 1"))


def test_extract_features_reports_what_it_measured(model, synthetic_root, capsys):
    dataset = CrackDataset(synthetic_root, split="all", progress=False)
    measured = extract_features(
        model, dataset, None, batch_size=2, settings=FLOAT32, device="cpu", num_workers="measure", progress=False
    )
    assert "DataLoader workers, measured on the first" in capsys.readouterr().out
    plain = extract_features(
        model, dataset, None, batch_size=2, settings=FLOAT32, device="cpu", num_workers=0, progress=False
    )
    assert torch.allclose(measured.features, plain.features, atol=1e-5)  # batches of 2 either way
    assert measured.sample_ids == plain.sample_ids


def test_the_real_samples_jpegs_decode_to_pils_exact_pixels(real_sample):
    dataset = CrackDataset(real_sample, split="all", progress=False)
    feeder = Feeder(dataset, "cpu", batch_size=100, on_device=True)
    assert all(EncodedImages(dataset)[i][0].dim() == 1 for i in range(0, len(dataset), 50))  # plain JPEGs: bytes
    for start, (images, labels) in zip(range(0, len(dataset), 100), feeder.batches(0)):
        expected = torch.stack([dataset[i][0] for i in range(start, start + len(labels))])
        assert torch.equal(images, expected)


# ----------------------------------------------------------------------------- on a GPU (skipped without one)
needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


@needs_cuda
def test_nvjpeg_gives_nearly_pils_pixels(odd_root, synthetic_root):
    """nvJPEG may round its inverse DCT and colour conversion differently from libjpeg-turbo, by a level or two."""
    for root in (odd_root, synthetic_root):
        dataset = CrackDataset(root, split="all", progress=False)
        items, _, indices = collate_encoded([EncodedImages(dataset)[i] for i in range(len(dataset))])
        decoder = DeviceDecoder(dataset, "cuda")
        pixels = decoder.pixels(items, indices)
        assert pixels.device.type == "cuda" and decoder.fallbacks == 0
        expected = torch.stack(
            [
                (dataset[i][0] * torch.tensor(IMAGENET_STD).view(3, 1, 1) + torch.tensor(IMAGENET_MEAN).view(3, 1, 1))
                * 255
                for i in range(len(dataset))
            ]
        )
        difference = (pixels.cpu().float() - expected).abs()
        assert difference.mean() < 1.0 and difference.max() <= 16


@needs_cuda
def test_on_a_gpu_the_workers_are_measured(model, synthetic_root, capsys):
    dataset = CrackDataset(synthetic_root, split="all", progress=False)  # 40 images: enough for batches of 1
    gpu = extract_features(model, dataset, None, batch_size=1, settings=FLOAT32, device="cuda", progress=False)
    out = capsys.readouterr().out
    assert "the JPEGs are decoded on the GPU, in batches" in out
    assert "DataLoader workers, measured on the first" in out or not can_measure(40, worker_candidates("cuda"), 1)
    cpu = extract_features(
        model, dataset, None, batch_size=1, settings=FLOAT32, device="cpu", num_workers=0, progress=False
    )
    assert nn.functional.cosine_similarity(gpu.features, cpu.features, dim=1).min() > 0.99


def test_on_a_cpu_the_workers_are_measured_for_a_big_enough_data_set(model, synthetic_root, capsys, monkeypatch):
    monkeypatch.setattr(workers_module, "worker_candidates", lambda device=None: [0, 1])
    dataset = CrackDataset(synthetic_root, split="all", progress=False)  # 40 images
    measured = extract_features(model, dataset, None, batch_size=2, settings=FLOAT32, device="cpu", progress=False)
    assert f"DataLoader workers, measured on the first {2 * PROBE_BATCHES * 2} images" in capsys.readouterr().out
    too_few = extract_features(model, dataset, None, batch_size=10, settings=FLOAT32, device="cpu", progress=False)
    assert "DataLoader workers" not in capsys.readouterr().out  # 2 x 2 x 4 batches of 10 > 40 images
    assert torch.allclose(measured.features, too_few.features, atol=1e-4)


def test_the_main_process_decodes_on_one_thread_and_the_backbone_keeps_its_threads(synthetic_root):
    dataset = CrackDataset(synthetic_root, split="all", progress=False)
    transform, seen = dataset.transform, []

    def counting(image):
        seen.append(torch.get_num_threads())
        return transform(image)

    dataset.transform = counting
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        for images, _ in Feeder(dataset, "cpu", batch_size=10).batches(0):
            assert torch.get_num_threads() == 2  # what the backbone gets between batches
        assert seen and set(seen) == {1}
        # decode_jpeg's threads compute on one thread each (no OpenMP team spinning after them), the backbone keeps 2
        from helpers.speed.fast_input import _threads

        assert [done.result() for done in [_threads(2).submit(torch.get_num_threads) for _ in range(4)]] == [1] * 4
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)


def test_a_batch_decoded_in_parts_side_by_side_is_the_data_sets_tensors(synthetic_root):
    dataset = CrackDataset(synthetic_root, split="all", progress=False)  # 40 images: one part per thread
    before = torch.get_num_threads()
    torch.set_num_threads(3)
    try:
        ((images, labels),) = Feeder(dataset, "cpu", batch_size=40, on_device=True).batches(0)
    finally:
        torch.set_num_threads(before)
    assert 3 in fast_input._POOL  # three parts, decoded by three threads
    assert torch.equal(images, torch.stack([dataset[i][0] for i in range(len(dataset))]))
    assert torch.equal(labels, dataset.labels())


def test_workers_are_measured_once_a_run_for_a_folder(model, synthetic_root, capsys, monkeypatch):
    monkeypatch.setattr(workers_module, "worker_candidates", lambda device=None: [0, 1])
    every, train, val = (CrackDataset(synthetic_root, split=split, progress=False) for split in ("all", "train", "val"))
    extract_features(model, every, None, batch_size=2, settings=FLOAT32, device="cpu", progress=False)  # 40 images
    assert "DataLoader workers, measured on the first" in capsys.readouterr().out
    chosen = list(workers_module._CHOSEN.values())
    assert len(chosen) == 1 and chosen[0] in (0, 1)
    for dataset in (train, val):  # the same folder, fed the same way: not measured again
        extract_features(model, dataset, None, batch_size=2, settings=FLOAT32, device="cpu", progress=False)
        assert "DataLoader workers" not in capsys.readouterr().out
    extract_features(
        model, every, None, batch_size=2, settings=FLOAT32, device="cpu", num_workers="measure", progress=False
    )
    assert "DataLoader workers, measured on the first" in capsys.readouterr().out  # asked for: measured
