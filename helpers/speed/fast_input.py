"""Feeding the backbone on a GPU: JPEGs decoded on the device, worker processes chosen by measuring.

Optional material: nothing here changes what the model learns. On a CPU the backbone is the
slow part, and PIL decodes each JPEG (in the main process where there are fewer than 8 cores):
about 1 ms of the backbone's 3-20 ms per image. On a GPU the backbone runs at thousands of images a second,
and decoding becomes the slow part: measured on an H200, the backbone alone ran at 7,342
images/s but the whole pass at 362-588, slower than the capstone's own loop. Two remedies:

* **Decode on the device.** The DataLoader only reads each file's bytes; the main process
  hands a whole batch of them to ``torchvision.io.decode_jpeg(..., device="cuda")`` (nvJPEG)
  and normalises on the GPU. A file that is not a plain 227x227 RGB JPEG (a PNG, a grayscale or
  odd-sized photo) is decoded as before, with PIL, so the pixels follow the data set's rules.
  On a CPU, ``decode_jpeg`` gives the very same pixels as PIL (both use libjpeg-turbo; checked
  by a test), which is how this path is tested on machines without a GPU.
* **Choose the number of worker processes by measuring.** :func:`batches_measuring_workers`
  computes the first batches with each candidate number of workers in turn (nothing is thrown
  away: those batches are part of the pass), then the rest with the fastest, start-up included.
"""

from __future__ import annotations

import contextlib
import io
import re
import warnings
from collections.abc import Iterator

import torch
import torchvision
from PIL import Image
from torch.utils.data import DataLoader, Dataset, Subset
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
    divided by its standard deviation. A batch that nvJPEG refuses is decoded with PIL instead,
    image by image, so that a broken file raises the data set's BadImageError naming it.
    """

    def __init__(self, dataset, device: torch.device | str):
        self.dataset, self.device = dataset, torch.device(device)
        self.mean = torch.tensor(IMAGENET_MEAN, device=self.device).view(1, 3, 1, 1)
        self.std = torch.tensor(IMAGENET_STD, device=self.device).view(1, 3, 1, 1)
        self.fallbacks = 0  # batches decoded with PIL because the device's decoder failed

    def pixels(self, items: list[torch.Tensor], indices: list[int]) -> torch.Tensor:
        """(N, 3, 227, 227) uint8 pixels on the device."""
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
        return torch.stack([image.to(self.device, non_blocking=True) for image in pixels])

    def __call__(self, items: list[torch.Tensor], indices: list[int]) -> torch.Tensor:
        return (self.pixels(items, indices).float() / 255 - self.mean) / self.std


# ----------------------------------------------------------------------------- batches
class Feeder:
    """The batches of `dataset`, in order, ready for the backbone: (images, labels).

    `on_device`: decode the JPEGs on `device` (DeviceDecoder); else the DataLoader's workers (or
    the main process) decode them with PIL through the data set itself.
    """

    def __init__(self, dataset, device: torch.device | str, batch_size: int, on_device: bool = False):
        self.dataset, self.device, self.batch_size = dataset, torch.device(device), batch_size
        self.decoder = DeviceDecoder(dataset, self.device) if on_device else None
        self.source = EncodedImages(dataset) if on_device else dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def warm_up(self) -> None:
        """Decode one image on the device, so that the decoder's one-off start (nvJPEG's handle, a
        second or so) is not counted against the first number of workers being timed."""
        if self.decoder is not None and len(self.dataset):
            item, _, index = self.source[0]
            self.decoder([item], [index])

    def batches(self, num_workers: int, start: int = 0, stop: int | None = None) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Batches of images start..stop-1, read by `num_workers` worker processes (0: the main process)."""
        stop = len(self.dataset) if stop is None else stop
        part = self.source if (start, stop) == (0, len(self.dataset)) else Subset(self.source, range(start, stop))
        loader = DataLoader(part, batch_size=self.batch_size, shuffle=False, num_workers=num_workers,
                            collate_fn=collate_encoded if self.decoder else None,
                            pin_memory=self.decoder is None and self.device.type == "cuda")
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
