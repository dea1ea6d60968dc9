"""Feeding the backbone: JPEGs decoded in batches (on a GPU, or on the CPU where measured faster),
worker processes chosen by measuring.

Optional material: nothing here changes what the model learns. The data set decodes each image
with PIL and normalises it on its own (ToTensor, Normalize), and the DataLoader stacks the
results. On a CPU that is 1-2 ms per image, next to the backbone's 6-26 ms: with int8 (6 ms) it
cost the features pass about a quarter of the backbone's speed (measured on a 2-core Zen 4 EPYC).
On a GPU the backbone runs at thousands of images a second and decoding becomes the slow part:
measured on an H200, the backbone alone ran at 7,342 images/s but the whole pass at 362-588.
The remedies:

* **Decode in batches.** The DataLoader only reads each file's bytes; the main process hands
  a whole batch of them to ``torchvision.io.decode_jpeg`` (libjpeg-turbo on the CPU, about
  0.2 ms per image against PIL's 0.6 here; nvJPEG with ``device="cuda"``) and normalises the
  batch at once, on the CPU into one reused buffer already in the backbone's channels_last
  layout. A file that is not a plain 227x227 RGB JPEG (a PNG, a grayscale or odd-sized photo)
  is decoded as before, with PIL, so the pixels follow the data set's rules. On a CPU the
  arithmetic is the data set's own, so the tensors are the very same (checked by a test, and on
  the first images each time the CPU's decoders are measured).
* **Measure, on a CPU, which decoder is faster** (:func:`measure_decoders`): on the first 50
  images of a big enough folder, both ways, in turns; about half a second.
* **Choose the number of worker processes by measuring** (:mod:`helpers.speed.workers`): the
  first batches with each candidate number of workers in turn (nothing is thrown away: those
  batches are part of the pass), then the rest with the fastest, start-up included.
"""

from __future__ import annotations

import contextlib
import io
from concurrent.futures import ThreadPoolExecutor
import re
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch
import torchvision
from PIL import Image
from torch.utils.data import DataLoader, Dataset, Subset, default_collate
from torchvision.io import ImageReadMode, decode_jpeg
from torchvision.transforms.functional import pil_to_tensor

from helpers.dataset import IMAGENET_MEAN, IMAGENET_STD
from helpers.plumbing.images import TENSOR_EXTENSION, TILE_SIZE, bad_image_error, load_image

# decode_jpeg takes a list (one batched nvJPEG call) from torchvision 0.19; before, one image per call.
BATCHED_DECODE = tuple(int(part) for part in re.findall(r"\d+", torchvision.__version__)[:2]) >= (0, 19)


# ----------------------------------------------------------------------------- decoding on the device
def can_decode_on_device(dataset) -> str | None:
    """None when `dataset`'s images can be decoded on the device, else why not (a few words).

    That needs the data set's default transform (ToTensor, ImageNet normalisation), which the
    device repeats exactly, and image files (not the capstone's preprocessed .pt tensors).
    """
    if not getattr(dataset, "uses_default_transform", False):
        return "the data set has its own transform"
    if any(sample.path.suffix.lower() == TENSOR_EXTENSION for sample in dataset.samples):
        return "the data set holds preprocessed .pt tensors"
    return None


def is_plain_jpeg(data: bytes) -> bool:
    """True for a 227x227 RGB JPEG: nvJPEG decodes it to exactly what the data set would hand over.

    Reads the header only (a few hundred bytes).
    """
    try:
        with Image.open(io.BytesIO(data)) as image:
            return image.format == "JPEG" and image.mode == "RGB" and image.size == (TILE_SIZE, TILE_SIZE)
    except Exception:  # not an image PIL knows: load_image will name the file and the problem
        return False


class EncodedImages(Dataset):
    """`dataset`'s images as they will reach the device: (bytes or pixels, label, index).

    A plain JPEG (see is_plain_jpeg) comes as its file's bytes, a 1-D uint8 tensor; any other
    image decoded here with the data set's rules (RGB, resized to 227x227), as a (3, 227, 227)
    uint8 tensor. The index lets the decoder name a file it cannot decode.
    """

    def __init__(self, dataset):
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, idx: int) -> tuple[torch.Tensor, int, int]:
        sample = self.dataset.samples[idx]
        try:
            data = sample.path.read_bytes()
        except OSError as error:  # gone or unreadable since the data set was listed: say which file
            raise bad_image_error(sample.path, error) from error
        if is_plain_jpeg(data):
            return torch.frombuffer(bytearray(data), dtype=torch.uint8), sample.label, idx
        return pil_to_tensor(load_image(sample.path, TILE_SIZE)), sample.label, idx


def folder_of(dataset) -> str:
    """The folder behind `dataset` (or its identity, without one): what a run's measurements are kept for."""
    return str(getattr(dataset, "root", id(dataset)))


def collate_encoded(batch: list[tuple[torch.Tensor, int, int]]) -> tuple[list[torch.Tensor], torch.Tensor, list[int]]:
    """A batch of EncodedImages items: (bytes or pixels per image, labels, indices); nothing stacked."""
    items, labels, indices = zip(*batch)
    return list(items), torch.tensor(labels, dtype=torch.long), list(indices)


def _decode_jpegs(encoded: list[torch.Tensor], device: torch.device) -> list[torch.Tensor]:
    """decode_jpeg on a list, on `device`.

    On a GPU, the caller's stream is drained first: nvJPEG's hardware engine may write its output
    before work already queued on that stream has run, into memory that work still reads
    (pytorch/vision#9606, meta-pytorch/torchcodec#1634). torchvision 0.29 marks its image decoding
    deprecated (in favour of TorchCodec) with a warning at every call; the function works unchanged.
    """
    if device.type == "cuda":
        torch.cuda.current_stream(device).synchronize()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        if BATCHED_DECODE:
            return decode_jpeg(encoded, mode=ImageReadMode.RGB, device=device)
        return [decode_jpeg(data, mode=ImageReadMode.RGB, device=device) for data in encoded]


class DeviceDecoder:
    """Turns a batch of EncodedImages items into the normalised (N, 3, 227, 227) tensor, on `device`.

    The same numbers as the data set's default transform: pixels / 255, minus the ImageNet mean,
    divided by its standard deviation. A batch that the decoder refuses is decoded with PIL instead,
    image by image, so that a broken file raises the data set's BadImageError naming it.
    On a CPU the result is in channels_last layout, the backbone's. `reuse_buffer`: write every
    batch into the same buffer (a fresh 62 MB tensor per batch of 100 costs more than the
    arithmetic, measured: 0.9 against 0.5 ms per image), so that a batch is overwritten by the
    next one; only for a caller that is done with each batch before asking for the next.
    """

    def __init__(self, dataset, device: torch.device | str, reuse_buffer: bool = False):
        self.dataset, self.device, self.reuse_buffer = dataset, torch.device(device), reuse_buffer
        self.mean = torch.tensor(IMAGENET_MEAN, device=self.device).view(1, 3, 1, 1)
        self.std = torch.tensor(IMAGENET_STD, device=self.device).view(1, 3, 1, 1)
        # On a CPU each row of pixels, (W, 3) numbers side by side in channels_last memory, gets the
        # mean and the standard deviation repeated W times: one broadcast along rows, 3.6x faster than
        # broadcasting (1, 3, 1, 1) over that layout (measured: 0.15 against 0.53 ms per image).
        self.mean_row, self.std_row = self.mean.flatten().repeat(TILE_SIZE), self.std.flatten().repeat(TILE_SIZE)
        self.fallbacks = 0  # batches decoded with PIL because the device's decoder failed
        self.buffer: torch.Tensor | None = None  # on a CPU with reuse_buffer: the one every batch is written into

    def decoded(self, items: list[torch.Tensor], indices: list[int]) -> list[torch.Tensor]:
        """Each image's (3, 227, 227) uint8 pixels on the device (on a CPU views of (H, W, 3) pixels)."""
        pixels = list(items)  # (3, H, W) items are pixels already; 1-D ones are JPEG bytes
        encoded = [i for i, item in enumerate(items) if item.dim() == 1]
        if encoded:
            try:
                for i, image in zip(encoded, _decode_jpegs([items[i] for i in encoded], self.device)):
                    pixels[i] = image
            except RuntimeError:
                self.fallbacks += 1
                for i in encoded:  # raises BadImageError, naming the file, where PIL cannot decode it either
                    pixels[i] = pil_to_tensor(load_image(self.dataset.samples[indices[i]].path, TILE_SIZE))
        return pixels

    def pixels(self, items: list[torch.Tensor], indices: list[int]) -> torch.Tensor:
        """(N, 3, 227, 227) uint8 pixels on the device, stacked (the GPU's way; a CPU writes them into its buffer)."""
        return torch.stack([image.to(self.device, non_blocking=True) for image in self.decoded(items, indices)])

    def __call__(self, items: list[torch.Tensor], indices: list[int]) -> torch.Tensor:
        if self.device.type != "cpu":
            return (self.pixels(items, indices).float() / 255 - self.mean) / self.std
        buffer = self.buffer if self.reuse_buffer else None
        if buffer is None or len(buffer) < len(items):
            # An inference tensor, like the PIL path's batch once the backbone has it: torch.compile
            # guards on the difference, and would compile the backbone a second time (2.5 s, measured).
            with torch.inference_mode():
                buffer = torch.empty(
                    (len(items), 3, TILE_SIZE, TILE_SIZE), dtype=torch.float32, memory_format=torch.channels_last
                )
            if self.reuse_buffer:
                self.buffer = buffer
        images = buffer[: len(items)]

        @torch.inference_mode()  # writing into an inference tensor; each thread enters it on its own
        def decode_part(start: int, stop: int) -> None:
            part = images[start:stop].permute(0, 2, 3, 1)  # (n, H, W, 3): the buffer's memory order
            for row, image in zip(part, self.decoded(items[start:stop], indices[start:stop])):
                row.copy_(image.permute(1, 2, 0))  # uint8 -> float32, straight into the buffer
            rows = part.view(-1, TILE_SIZE * 3)
            # In place, step by step: ToTensor's and Normalize's numbers.
            rows.div_(255).sub_(self.mean_row).div_(self.std_row)

        # One part per CPU thread, decoded side by side (libjpeg-turbo and these operations let go of
        # Python's lock): measured on 2 cores, 0.56 against 0.82 ms per image in one part.
        parts = min(torch.get_num_threads(), max(1, len(items) // 8))
        bounds = [round(i * len(items) / parts) for i in range(parts + 1)]
        if parts == 1:
            decode_part(0, len(items))
        else:
            for done in [_threads(parts).submit(decode_part, a, b) for a, b in zip(bounds, bounds[1:])]:
                done.result()  # raises what a part raised (a BadImageError naming the file)
        return images


_POOL: dict[int, ThreadPoolExecutor] = {}  # threads that decode the parts of a batch, per count: started once a run


def _threads(count: int) -> ThreadPoolExecutor:
    """A pool of `count` threads, kept for the run, each computing on one CPU thread of its own.

    With torch's default, each decoding thread would start a team of OpenMP threads for its tensor
    operations, and those spin for a while after each one, taking the cores from the backbone that
    runs next: measured on 2 cores with int8, decoding then backbone 6.86-7.37 ms per image against
    6.39-6.82 for the backbone alone; with one thread each, 6.21 against 6.07-6.23.
    """
    if count not in _POOL:
        _POOL[count] = ThreadPoolExecutor(
            count, thread_name_prefix="decode_jpeg", initializer=torch.set_num_threads, initargs=(1,)
        )
    return _POOL[count]


# ----------------------------------------------------------------------------- which decoder, on a CPU
DECODERS_MEASURED_FROM = 1_000  # images in the folder; below, PIL (measuring would cost more than it saves)
PROBE_IMAGES = 50  # images decoded each way when measuring


@dataclass(frozen=True)
class DecoderTrial:
    """The two CPU decoders on the same images: images per second each, and whether their tensors agree."""

    pil_rate: float  # the data set's own way: PIL, ToTensor, Normalize, then stacked
    batched_rate: float  # decode_jpeg on the batch, normalised at once
    same_pixels: bool
    images: int

    @property
    def batched_is_faster(self) -> bool:
        return self.same_pixels and self.batched_rate > self.pil_rate

    def summary(self) -> str:
        """E.g. "PIL 620 img/s, decode_jpeg in batches 1,800 img/s (the same tensors, 50 images)"."""
        same = "the same tensors" if self.same_pixels else "NOT the same tensors"
        return (
            f"PIL {self.pil_rate:,.0f} img/s, decode_jpeg in batches {self.batched_rate:,.0f} img/s "
            f"({same}, {self.images} images)"
        )


def measure_decoders(
    dataset, images: int = PROBE_IMAGES, rounds: int = 2, clock: Callable[[], float] = time.perf_counter
) -> DecoderTrial:
    """Decode the first `images` images of `dataset` with PIL and with decode_jpeg in batches, in turns.

    Each way runs as the features pass would run it on a CPU (PIL in the main process on one
    thread); a first, untimed call warms both up. Keeps the fastest round of each.
    """
    count = min(images, len(dataset))
    source, decoder = EncodedImages(dataset), DeviceDecoder(dataset, "cpu", reuse_buffer=True)

    def with_pil() -> torch.Tensor:
        with one_thread():
            return default_collate([dataset[i] for i in range(count)])[0]

    def batched() -> torch.Tensor:
        with one_thread():
            items, _, indices = collate_encoded([source[i] for i in range(count)])
        return decoder(items, indices)

    same = torch.equal(with_pil(), batched())  # the warm-up compares the tensors too
    seconds: dict[str, list[float]] = {"pil": [], "batched": []}
    for _ in range(rounds):
        for name, run in (("pil", with_pil), ("batched", batched)):
            begin = clock()
            run()
            seconds[name].append(clock() - begin)
    rate = {name: count / max(min(times), 1e-9) for name, times in seconds.items()}
    return DecoderTrial(rate["pil"], rate["batched"], same, count)


# ----------------------------------------------------------------------------- batches
class Feeder:
    """The batches of `dataset`, in order, ready for the backbone: (images, labels).

    `on_device`: decode the JPEGs in batches on `device` (DeviceDecoder: nvJPEG on a GPU,
    libjpeg-turbo on a CPU); else the DataLoader's workers (or the main process) decode them
    with PIL through the data set itself. `reuse_buffer`: see DeviceDecoder (for a caller that
    is done with each batch before it asks for the next, as extract_features is).
    """

    def __init__(
        self, dataset, device: torch.device | str, batch_size: int, on_device: bool = False, reuse_buffer: bool = False
    ):
        self.dataset, self.device, self.batch_size = dataset, torch.device(device), batch_size
        self.decoder = DeviceDecoder(dataset, self.device, reuse_buffer) if on_device else None
        self.source = EncodedImages(dataset) if on_device else dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def warm_up(self) -> None:
        """Decode one image on the device, so that the decoder's one-off start (nvJPEG's handle, a
        second or so) is not counted against the first number of workers being timed."""
        if self.decoder is not None and len(self.dataset):
            item, _, index = self.source[0]
            self.decoder([item], [index])

    def batches(
        self, num_workers: int, start: int = 0, stop: int | None = None
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Batches of images start..stop-1, read by `num_workers` worker processes (0: the main process).

        With `reuse_buffer` (decoding in batches on a CPU), each batch's images are overwritten by the next batch.
        """
        stop = len(self.dataset) if stop is None else stop
        part = self.source if (start, stop) == (0, len(self.dataset)) else Subset(self.source, range(start, stop))
        loader = DataLoader(
            part,
            batch_size=self.batch_size,
            shuffle=False,
            num_workers=num_workers,
            collate_fn=collate_encoded if self.decoder else None,
            pin_memory=self.decoder is None and self.device.type == "cuda",
        )
        batches = iter(loader)
        while True:
            with one_thread(num_workers == 0):
                batch = next(batches, None)
            if batch is None:
                return
            if self.decoder is None:
                yield batch
            else:
                items, labels, indices = batch
                yield self.decoder(items, indices), labels


@contextlib.contextmanager
def one_thread(enabled: bool = True) -> Iterator[None]:
    """Run the block on one CPU thread (torch.set_num_threads(1)), then restore torch's number.

    Decoding an image calls tiny tensor operations (ToTensor, Normalize); with two or more threads
    each one waits for all of them, and when another process holds a core that wait is
    milliseconds: measured on a busy 2-core EPYC, 17-54 ms per image with 2 threads against 2.3
    with one. DataLoader workers run on one thread already; this does the same for the main process.
    """
    before = torch.get_num_threads()
    if enabled and before > 1:
        torch.set_num_threads(1)
    try:
        yield
    finally:
        if torch.get_num_threads() != before:
            torch.set_num_threads(before)
