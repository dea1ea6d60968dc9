"""Reading one image file as the workbook does: fully decoded as RGB (grayscale, palette and RGBA images too), or one
sentence naming the file. An image above 40 megapixels is refused from its header: 120 MB to decode, for one tile."""

from __future__ import annotations

import warnings
from pathlib import Path

from PIL import Image

TILE_SIZE = 227  # the images' width and height, and so the input size the model learns from
MAX_IMAGE_PIXELS = 40_000_000
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp")


class BadImageError(RuntimeError):
    """A file cannot be read as an image."""


def open_photo(path: str | Path) -> Image.Image:
    """The image at `path`, fully decoded, as RGB; FileNotFoundError or BadImageError start with the file's name."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file.")
    try:
        with warnings.catch_warnings():  # PIL's warning about large images: refused below, in plainer words
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(path) as image:  # reads the header only
                width, height = image.size
                if width * height <= MAX_IMAGE_PIXELS:
                    return image.convert("RGB")  # decodes the whole file, so damage shows here
    except Exception as error:  # PIL raises several kinds of error for broken files
        reason = (str(error).splitlines() or [""])[0].replace(repr(str(path)), "").strip(" :")
        raise BadImageError(
            f"{path}: not readable as an image ({reason or type(error).__name__}); delete or replace the file."
        ) from error
    raise BadImageError(
        f"{path} is {width}x{height} pixels ({width * height / 1e6:.0f} megapixels), more than the "
        f"{MAX_IMAGE_PIXELS // 1_000_000} megapixels an image may have here: shrink it, "
        f"or cut it into {TILE_SIZE}x{TILE_SIZE} tiles."
    )


def to_size(image: Image.Image, size: int = TILE_SIZE) -> Image.Image:
    """`image` as size x size (bilinear), or itself when it has that size already (no resize call)."""
    return image if image.size == (size, size) else image.resize((size, size), Image.Resampling.BILINEAR)
