"""Reading one image file as the workbook's data sets do: RGB, 227x227, and a clear error when it cannot.

Every image that reaches the model passes through :func:`load_image`: grayscale, palette and
RGBA images become RGB, an image of another size is resized to 227x227 (bilinear), and one
above 40 megapixels is refused from its header, before a pixel is decoded. A file that cannot
be read raises :class:`BadImageError` naming it and saying what to do. :func:`load_tensor` reads
the capstone's second format, one preprocessed image per ``.pt`` file.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import torch
from PIL import Image

TILE_SIZE = 227  # the images' width and height, and so the input size the model learns from
MAX_IMAGE_PIXELS = 40_000_000  # larger images are refused from their header: 120 MB to decode, for one tile
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp")
TENSOR_EXTENSION = ".pt"


class BadImageError(RuntimeError):
    """A file in the dataset cannot be read as an image."""


def bad_image_error(path: Path, problem: object) -> BadImageError:
    """A BadImageError that names the file and says what to do about it."""
    return BadImageError(
        f"Cannot read {path}: {problem}. Delete or replace this file, or create the dataset "
        "with bad_images='skip' to leave unreadable files out."
    )


def size_problem(size: tuple[int, int]) -> str | None:
    """Why an image of `size` (width, height) is refused, or None when it may be decoded."""
    width, height = size
    if width * height <= MAX_IMAGE_PIXELS:
        return None
    return (
        f"is {width}x{height} pixels ({width * height / 1e6:.0f} megapixels), more than the "
        f"{MAX_IMAGE_PIXELS // 1_000_000} megapixels an image may have here: shrink it, "
        f"or cut it into {TILE_SIZE}x{TILE_SIZE} tiles"
    )


def open_image(path: Path) -> Image.Image:
    """Image.open (which reads only the header), without PIL's warning about very large images:
    size_problem refuses those with a clearer message before anything is decoded."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        return Image.open(path)


def load_image(path: Path, size: int | None = None) -> Image.Image:
    """Open and fully decode an image as RGB (grayscale, palette and RGBA images too).

    The width and height in the file's header are checked before any pixel is decoded: an image
    above MAX_IMAGE_PIXELS raises BadImageError. With `size`, an image of another size is resized
    to size x size (to_size, which helpers.inference.load_image_tensor uses too); one that has it
    already is returned as decoded, with no resize.
    """
    try:
        with open_image(path) as image:
            problem = size_problem(image.size)
            if problem is None:
                rgb = image.convert("RGB")
    except Exception as error:  # PIL raises several kinds of error for broken files
        raise bad_image_error(path, error) from error
    if problem is not None:
        raise BadImageError(f"{path} {problem}.")
    return rgb if size is None else to_size(rgb, size)


def to_size(image: Image.Image, size: int = TILE_SIZE) -> Image.Image:
    """`image` as size x size (bilinear), or itself when it has that size already (no resize call)."""
    return image if image.size == (size, size) else image.resize((size, size), Image.Resampling.BILINEAR)


def load_tensor(path: Path) -> torch.Tensor:
    """Load a .pt file holding one image tensor of shape (3, H, W) or (1, H, W)."""
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:
        raise bad_image_error(path, error) from error
    if not isinstance(data, torch.Tensor):
        raise bad_image_error(path, f"expected a tensor, found a {type(data).__name__}")
    if data.dim() != 3 or data.shape[0] not in (1, 3):
        raise bad_image_error(path, f"expected shape (3, H, W), found {tuple(data.shape)}")
    if data.dtype != torch.uint8 and not data.is_floating_point():
        raise bad_image_error(path, f"expected uint8 or float values, found {data.dtype}")
    if data.shape[0] == 1:
        data = data.repeat(3, 1, 1)  # grayscale: copy the one channel into R, G and B
    return data


def is_readable(path: Path) -> bool:
    """True when the file decodes completely as an image (or loads as an image tensor)."""
    try:
        load_tensor(path) if path.suffix.lower() == TENSOR_EXTENSION else load_image(path)
    except BadImageError:
        return False
    return True


def open_photo(path: str | Path) -> Image.Image:
    """The photo at `path`, fully decoded, as an RGB image.

    A missing file raises FileNotFoundError, a file that is not an image (or is truncated)
    BadImageError; both messages start with the file: "photo.jpg: <reason>."
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file.")
    try:
        with open_image(path) as opened:  # the header only: an enormous image is refused before decoding
            problem = size_problem(opened.size)
            if problem is None:
                return opened.convert("RGB")  # also decodes the whole file, so damage shows here
    except Exception as error:  # PIL raises several kinds of error for broken files
        reason = (str(error).splitlines() or [""])[0].replace(repr(str(path)), "").strip(" :")
        raise BadImageError(f"{path}: not readable as an image ({reason or type(error).__name__}).") from error
    raise BadImageError(f"{path}: {problem}.")
