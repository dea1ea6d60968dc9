"""Synthetic look-alikes of the 227x227 concrete photos, for running offline: a concrete-like surface with dark,
jagged, branching cracks, or without (half plain, half hard cases: stains, shadows, large pits, faint scratches).
Each class's pixel statistics are tuned to be close to a real sample; real blur, noise, JPEG history, crack shapes
and stains are not imitated. A model trained on it learns *our drawing rules*: no evidence about real concrete."""

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

# What make_image draws: "crack" (one crack, 1 in 5 two, sometimes over a stain, shadow or pits), "no_crack" (the
# mix below), "plain" (the surface alone), and the hard cases alone: "stain", "shadow", "pores", "scratch".
RECIPES = ("crack", "no_crack", "plain", "stain", "shadow", "pores", "scratch")
NO_CRACK_MIX = {"plain": 0.50, "stain": 0.15, "shadow": 0.15, "pores": 0.10, "scratch": 0.10}
DEFAULT_CLASSES = {"Positive": "crack", "Negative": "no_crack"}


def _upsample(field: np.ndarray, height: int, width: int) -> np.ndarray:
    """Resize a 2-D float array to (height, width) with bicubic interpolation."""
    image = Image.fromarray(field.astype(np.float32))
    return np.array(image.resize((width, height), Image.Resampling.BICUBIC), dtype=np.float32)


def _smooth_noise(rng: np.random.Generator, height: int, width: int, cell: float) -> np.ndarray:
    """Random blotches about `cell` pixels across, scaled to standard deviation ~1."""
    coarse = rng.standard_normal((int(height / cell) + 2, int(width / cell) + 2), dtype=np.float32)
    field = _upsample(coarse, height, width)
    return field / (field.std() + 1e-6)


def _pores_and_specks(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """Dark pores and light specks of aggregate as offsets from 0 (-0.2: 20 % darker), drawn for PIL to soften."""
    layer = Image.new("L", (width, height), 128)
    draw = ImageDraw.Draw(layer)
    area = height * width / 114**2  # 1.0 for the half-size field of a 227 tile
    for sign, density, (low, high) in ((-1, rng.uniform(3, 30), (0.05, 0.3)), (+1, rng.uniform(0, 15), (0.04, 0.15))):
        n = rng.poisson(density * area)
        xs, ys = rng.uniform(0, width, n), rng.uniform(0, height, n)
        radii = 0.5 + rng.exponential(0.45, n)  # mostly tiny, now and then larger
        stretch = rng.uniform(0.75, 1.3, (n, 2))  # slightly oval
        values = 128 + 300 * sign * rng.uniform(low, high, n)
        for x, y, r, (sx, sy), value in zip(xs, ys, radii, stretch, values):
            draw.ellipse([x - r * sx, y - r * sy, x + r * sx, y + r * sy], fill=int(value))
    return (np.asarray(layer.filter(ImageFilter.GaussianBlur(0.6)), dtype=np.float32) - 128) / 300


def _sample_brightness(rng: np.random.Generator, kind: str) -> float:
    """Mean grey level of a surface: in the real set cracked ones are darker and vary less (a weak clue, copied)."""
    if kind == "crack":
        return float(np.clip(rng.normal(176, 17), 95, 225))
    if rng.random() < 0.15:  # some intact surfaces: dim or dark concrete
        return float(np.clip(rng.normal(145, 15), 95, 200))
    return float(np.clip(rng.normal(192, 15), 120, 240))


def make_surface(
    rng: np.random.Generator, height: int = 227, width: int = 227, *, brightness: float | None = None
) -> np.ndarray:
    """A concrete-like surface of any size, float32 (height, width, 3) in [0, 255], mean grey `brightness` or random."""
    brightness = _sample_brightness(rng, "plain") if brightness is None else brightness
    half_h, half_w = (height + 1) // 2, (width + 1) // 2  # built at half size and enlarged: soft, as the photos are
    shade = (
        1.0
        + rng.uniform(0.006, 0.03) * _smooth_noise(rng, half_h, half_w, cell=14)  # broad blotches
        + rng.uniform(0.01, 0.03) * _smooth_noise(rng, half_h, half_w, cell=3)  # small blotches
        + rng.uniform(0.01, 0.025) * rng.standard_normal((half_h, half_w), dtype=np.float32)  # grain
        + _pores_and_specks(rng, half_h, half_w)
    )
    # uneven lighting: a linear gradient in a random direction, mostly gentle, now and then strong
    strength, angle = min(rng.exponential(0.055), 0.45), rng.uniform(0, 2 * np.pi)
    ys = np.linspace(-0.5, 0.5, half_h, dtype=np.float32)[:, None] * half_h / max(half_h, half_w)
    xs = np.linspace(-0.5, 0.5, half_w, dtype=np.float32)[None, :] * half_w / max(half_h, half_w)
    shade += strength * (np.cos(angle) * xs + np.sin(angle) * ys)
    shade = _upsample(shade, height, width)
    warmth = rng.beta(1.6, 2.0) * 0.18  # a tint from neutral grey to beige (real photos: R - B from ~2 to ~25)
    cast = rng.normal(0, 0.005, size=3)  # a slight colour cast of the camera
    colour = brightness * (np.array([1 + warmth / 3, 1.0, 1 - 2 * warmth / 3]) + cast)
    surface = np.empty((height, width, 3), dtype=np.float32)
    for channel in range(3):  # channel by channel: faster than broadcasting
        surface[:, :, channel] = shade * colour[channel]
    return np.clip(surface, 0, 255, out=surface)


def _gradual_noise(rng: np.random.Generator, n: int, window: int) -> np.ndarray:
    """n random numbers (std ~1) that change gradually, over about `window` steps."""
    return np.convolve(rng.standard_normal(n + window - 1), np.ones(window) / np.sqrt(window), mode="valid")


def _random_walk(
    rng: np.random.Generator, start: tuple, angle: float, length: float, *, meander: float, jitter: float, step=2.5
) -> tuple[np.ndarray, np.ndarray]:
    """Points (n, 2) of a path from `start` heading `angle`, and their headings; `meander` bends, `jitter` zig-zags."""
    n = max(3, int(length / step))
    slow_turns = _gradual_noise(rng, n, window=16)
    zigzag = np.repeat(rng.standard_normal(n // 4 + 1), 4)[:n]  # kinks every 4 steps
    heading = angle + meander * slow_turns + jitter * (zigzag + 0.5 * rng.standard_normal(n))
    steps = step * np.stack([np.cos(heading), np.sin(heading)], axis=1)
    points = np.asarray(start, dtype=float) + np.cumsum(steps, axis=0)
    return points, heading


def _fill_path(
    mask: Image.Image, rng: np.random.Generator, points: np.ndarray, heading: np.ndarray, width: float, two_tips: bool
) -> np.ndarray:
    """Fill a path into `mask`, its width wobbling around `width` and thinning at the end (and start if `two_tips`),
    ragged: a 4-sided piece per step (no holes at sharp bends), a 1 px centre line (no gaps); return the widths."""
    n, draw = len(points), ImageDraw.Draw(mask)
    wobble = _gradual_noise(rng, n, window=10)
    taper_steps = (3 * width + 5) / 2.5
    from_end = np.arange(n)[::-1] / taper_steps
    from_start = np.arange(n) / taper_steps if two_tips else np.full(n, np.inf)
    taper = np.minimum(1.0, np.minimum(from_start, from_end))
    widths = np.clip(width * np.exp(0.25 * wobble) * taper, 0.5, 1.6 * width)
    smooth = np.convolve(np.pad(heading, 6, mode="edge"), np.ones(13) / 13, mode="valid")
    normal = np.stack([-np.sin(smooth), np.cos(smooth)], axis=1)  # at right angles to the path
    padded = np.pad(points, ((2, 2), (0, 0)), mode="edge")
    middle = sum(padded[k : k + n] for k in range(5)) / 5  # the zig-zag, smoothed for the edges
    ragged = [np.exp(0.12 * _gradual_noise(rng, n, window=5)) for _side in range(2)]
    left = (middle + normal * (widths / 2 * ragged[0])[:, None]).tolist()
    right = (middle - normal * (widths / 2 * ragged[1])[:, None]).tolist()
    for i in range(n - 1):
        if widths[i] > 1.5:
            draw.polygon([tuple(left[i]), tuple(left[i + 1]), tuple(right[i + 1]), tuple(right[i])], fill=255)
    draw.line([tuple(p) for p in points.tolist()], fill=255, width=1)
    return widths


def _darken(surface: np.ndarray, amount: np.ndarray) -> None:
    """surface *= 1 - amount, in place (amount: HxW or HxWx3, 0 = unchanged, negative = lighter)."""
    factor = 1.0 - amount
    for channel in range(3):  # channel by channel: faster than broadcasting
        surface[:, :, channel] *= factor if factor.ndim == 2 else factor[:, :, channel]
    np.clip(surface, 0, 255, out=surface)


def _blurred(mask: Image.Image, radius: float) -> np.ndarray:
    """An "L" mask blurred by `radius` px, float32 in [0, 1]; a wide blur on a quarter-size copy: 4x faster, alike."""
    if radius >= 4:
        small = mask.reduce(4).filter(ImageFilter.GaussianBlur(radius / 4))
        blurred = small.resize(mask.size, Image.Resampling.BILINEAR)
    else:
        blurred = mask.filter(ImageFilter.GaussianBlur(radius))
    return np.asarray(blurred, dtype=np.float32) / 255


def draw_crack(
    surface: np.ndarray,
    rng: np.random.Generator,
    *,
    start: tuple[float, float] | None = None,
    angle: float | None = None,
    length: float | None = None,
    width: float | None = None,
) -> np.ndarray:
    """Draw one crack with a few branches into `surface` (in place); return its bool HxW mask. start is (x, y), angle
    in radians (0 = right); None: random (4 in 5 cross the tile from an edge; widths 2 to 26 px, half under 7)."""
    rows, cols = surface.shape[:2]
    diagonal = float(np.hypot(rows, cols))
    width = float(np.exp(rng.uniform(np.log(2.0), np.log(26.0)))) if width is None else float(width)
    crosses = start is None and rng.random() < 0.8
    if crosses:  # enter from a random point on the top, right, bottom or left edge
        along = rng.uniform(0.1, 0.9)
        edges = [(along * cols, 0.0), (cols, along * rows), (along * cols, rows), (0.0, along * rows)]
        start = edges[int(rng.integers(4))]
        toward_centre = np.arctan2(rows / 2 - start[1], cols / 2 - start[0])
        angle = toward_centre + rng.uniform(-0.6, 0.6) if angle is None else angle
    elif start is None:
        start = (rng.uniform(0.15, 0.85) * cols, rng.uniform(0.15, 0.85) * rows)
    angle = rng.uniform(0, 2 * np.pi) if angle is None else float(angle)
    if length is None:
        length = 1.4 * diagonal if crosses else rng.uniform(0.35, 0.8) * diagonal
    mask_image = Image.new("L", (cols, rows), 0)
    points, heading = _random_walk(rng, start, angle, length, meander=0.35, jitter=0.35)
    margin, (x, y) = 3 * width + 10, points.T  # drop the points after the path first leaves the tile: only time
    on_tile = (x > -margin) & (x < cols + margin) & (y > -margin) & (y < rows + margin)
    keep = len(points) if on_tile.all() else max(int(np.argmin(on_tile)), 2)
    points, heading = points[:keep], heading[:keep]
    widths = _fill_path(mask_image, rng, points, heading, width, two_tips=not crosses)
    for _ in range(rng.poisson(0.8)):  # branches split off at a slant and thin out
        k = int(rng.integers(len(points) // 6, len(points) * 5 // 6 + 1))
        branch_angle = heading[k] + rng.choice([-1, 1]) * rng.uniform(0.35, 1.1)
        branch_length = rng.uniform(0.15, 0.5) * min(length, diagonal)
        b_points, b_heading = _random_walk(rng, tuple(points[k]), branch_angle, branch_length, meander=0.3, jitter=0.35)
        _fill_path(mask_image, rng, b_points, b_heading, max(1.0, widths[k] * rng.uniform(0.3, 0.7)), two_tips=False)
    core, halo = _blurred(mask_image, 0.7), _blurred(mask_image, 4 + 1.5 * width)
    darkness = rng.uniform(0.55, 0.8) * core + rng.uniform(0.1, 0.3) * halo
    if rng.random() < 0.5:  # a lit edge on one side, like a spalled rim
        shift = (int(rng.integers(-2, 3)), int(rng.integers(-2, 3)))
        darkness -= rng.uniform(0.08, 0.2) * np.clip(np.roll(core, shift, axis=(0, 1)) - core, 0, 1)
    _darken(surface, np.clip(darkness, -0.3, 0.88))
    return np.asarray(mask_image) > 127


def add_stain(surface: np.ndarray, rng: np.random.Generator) -> None:
    """One to three soft dark blobs with blotchy edges, grey to brownish (damp, dirt)."""
    rows, cols = surface.shape[:2]
    ys = np.arange(0, rows, 4, dtype=np.float32)[:, None]  # every 4th pixel: stains are smooth
    xs = np.arange(0, cols, 4, dtype=np.float32)[None, :]
    blob = np.zeros((len(ys), xs.shape[1]), dtype=np.float32)
    for _ in range(rng.integers(1, 4)):
        cx, cy, theta = rng.uniform(0, cols), rng.uniform(0, rows), rng.uniform(0, np.pi)
        rx, ry = rng.uniform(15, 70, size=2)
        u = ((xs - cx) * np.cos(theta) + (ys - cy) * np.sin(theta)) / rx
        v = (-(xs - cx) * np.sin(theta) + (ys - cy) * np.cos(theta)) / ry
        blob = np.maximum(blob, np.exp(-(u**2 + v**2)))
    blob = _upsample(np.clip(blob * (1.3 + 0.35 * _smooth_noise(rng, *blob.shape, cell=3)) - 0.3, 0, 1), rows, cols)
    brownish = 1.0 + rng.uniform(0, 0.25) * np.array([0.0, 0.3, 0.7])  # blue darkens most
    _darken(surface, rng.uniform(0.1, 0.3) * blob[:, :, None] * brownish.astype(np.float32))


def add_shadow(surface: np.ndarray, rng: np.random.Generator) -> None:
    """A soft-edged darker band across the tile, or (1 in 3) one side of it in shade."""
    rows, cols = surface.shape[:2]
    ys = np.arange(rows, dtype=np.float32)[:, None]
    xs = np.arange(cols, dtype=np.float32)[None, :]
    theta, x0, y0 = rng.uniform(0, np.pi), rng.uniform(0, cols), rng.uniform(0, rows)
    distance = (xs - x0) * np.cos(theta) + (ys - y0) * np.sin(theta)  # signed, from a line through (x0, y0)
    softness = rng.uniform(3, 25)
    edge = distance if rng.random() < 1 / 3 else rng.uniform(12, 60) - np.abs(distance)  # one side, or a band
    inside = 1 / (1 + np.exp(-edge / softness))
    _darken(surface, rng.uniform(0.08, 0.25) * inside)


def add_pits(surface: np.ndarray, rng: np.random.Generator) -> None:
    """Larger pores and pits (2-12 px), each a few overlapping ellipses (irregular outlines), deep or shallow."""
    rows, cols = surface.shape[:2]
    layer = Image.new("L", (cols, rows), 0)
    draw = ImageDraw.Draw(layer)
    for _ in range(int(rng.integers(5, 25) * rows * cols / 227**2)):
        x, y, size, depth = rng.uniform(0, cols), rng.uniform(0, rows), rng.uniform(1, 4), int(rng.integers(80, 256))
        for _part in range(rng.integers(1, 4)):
            px, py = x + rng.normal(0, size / 2), y + rng.normal(0, size / 2)
            rx, ry = size * rng.uniform(0.5, 1.2, size=2)
            draw.ellipse([px - rx, py - ry, px + rx, py + ry], fill=depth)
    _darken(surface, rng.uniform(0.35, 0.6) * _blurred(layer, 0.8))


def add_scratches(surface: np.ndarray, rng: np.random.Generator) -> None:
    """One to three faint, thin, nearly straight lines: darker (2 in 3) or lighter than the surface."""
    rows, cols = surface.shape[:2]
    layer = Image.new("L", (cols, rows), 0)
    draw = ImageDraw.Draw(layer)
    for _ in range(rng.integers(1, 4)):
        start = (rng.uniform(0, cols), rng.uniform(0, rows))
        angle, length = rng.uniform(0, 2 * np.pi), rng.uniform(0.4, 1.2) * float(np.hypot(rows, cols))
        points, _ = _random_walk(rng, start, angle, length, meander=0.04, jitter=0.02, step=4.0)
        width = 2 if rng.random() < 1 / 3 else 1
        draw.line([tuple(p) for p in points.tolist()], fill=int(rng.integers(90, 200)), width=width)
    sign = 1.0 if rng.random() < 2 / 3 else -1.0
    _darken(surface, sign * rng.uniform(0.1, 0.25) * _blurred(layer, 0.5))


HARD_CASES = {"stain": add_stain, "shadow": add_shadow, "pores": add_pits, "scratch": add_scratches}


def make_image(rng: np.random.Generator, recipe: str = "crack") -> tuple[Image.Image, dict]:
    """A 227x227 RGB image drawn by `recipe` (see RECIPES), and {"recipe", "kind": what was drawn, "mask": cracks}."""
    if recipe not in RECIPES:
        raise ValueError(f"Unknown recipe {recipe!r}; choose one of {RECIPES}.")
    kind = str(rng.choice(list(NO_CRACK_MIX), p=list(NO_CRACK_MIX.values()))) if recipe == "no_crack" else recipe
    surface = make_surface(rng, brightness=_sample_brightness(rng, kind))
    mask = np.zeros(surface.shape[:2], dtype=bool)
    if kind == "crack":
        if rng.random() < 0.2:  # so that a stain alone doesn't mean "no crack"
            HARD_CASES[str(rng.choice(["stain", "shadow", "pores"]))](surface, rng)
        mask |= draw_crack(surface, rng)
        if rng.random() < 0.2:
            mask |= draw_crack(surface, rng)
    elif kind in HARD_CASES:
        HARD_CASES[kind](surface, rng)
    return Image.fromarray(np.round(surface).astype(np.uint8)), {"recipe": recipe, "kind": kind, "mask": mask}
