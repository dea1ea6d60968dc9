"""Looking inside the model: Grad-CAM and an interactive browser of the validation samples (notebook 05), and a whole
photo scanned tile by tile (notebook 06).

Grad-CAM (Selvaraju et al., ICCV 2017): the gradient of the predicted class's score, averaged over each of
`layer4`'s 512 maps, weighs the maps; the positive part of their weighted sum, stretched to the photo, is the heat
map. Our backbone is frozen, so autograd would record nothing through `layer4`: the hook hands the rest of the
network a copy of its output that requires gradients, and `torch.enable_grad()` turns them on even inside
`torch.no_grad()`.

The scan: the data set's tiles were cut from 4032x3024 photos, and shrunk to 227x227 a whole photo would lose its
thin cracks. So we cut it into tiles (overlapping when the stride is smaller than a tile; the last row and column
flush with the border), ask the model about each, and put the answers back where the tiles came from.
"""

import functools
import html
import io
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import matplotlib
import matplotlib.pyplot as plt
import numpy as np
import torch
import torch.nn.functional as F
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle
from PIL import Image
from torch import nn

from helpers.analysis import image_for_display
from helpers.dataset import default_transform
from helpers.inference import CRACK, Predictions
from helpers.plumbing import TILE_SIZE, open_photo
from helpers.workbook import denormalize, has_widget_frontend, image_grid


def gradcam(model: nn.Module, image: torch.Tensor) -> np.ndarray:
    """The (H, W) Grad-CAM heat map, in [0, 1], of one normalised (3, H, W) image for its predicted class."""
    if torch.is_inference_mode_enabled():
        raise RuntimeError("Grad-CAM needs gradients: call it outside torch.inference_mode() (no_grad() is fine).")
    kept = []

    def keep_activations(module: nn.Module, inputs: tuple, output: torch.Tensor) -> torch.Tensor:
        kept.append(output.detach().requires_grad_())  # A, a leaf we can take the gradient against
        return kept[0].clone()  # the network goes on with a copy: an in-place ReLU cannot change A

    modes = {module: module.training for module in model.modules()}
    handle = model.layer4.register_forward_hook(keep_activations)
    model.eval()  # dropout off, BatchNorm on its running statistics
    try:
        with torch.enable_grad():
            logits = model(image[None].to(next(model.parameters()).device))[0]
            (gradient,) = torch.autograd.grad(logits[logits.argmax()], kept[0])  # leaves .grad alone
    finally:
        handle.remove()
        for module, training in modes.items():
            module.training = training
    weights = gradient.mean(dim=(2, 3), keepdim=True)  # (1, K, 1, 1)
    heat = F.relu((weights * kept[0].detach()).sum(dim=1, keepdim=True))  # (1, 1, h, w)
    heat = F.interpolate(heat, size=image.shape[-2:], mode="bilinear", align_corners=False)[0, 0]
    return (heat / heat.max() if heat.max() > 0 else heat).cpu().numpy()


def overlay(image: torch.Tensor, heat: np.ndarray, alpha: float = 0.45) -> np.ndarray:
    """The heat map in colour ("jet") over the normalised (3, H, W) image, as an HxWx3 uint8 picture."""
    photo = denormalize(image.detach().float().cpu()[None])[0].permute(1, 2, 0).numpy()
    colours = matplotlib.colormaps["jet"](heat)[..., :3]
    return np.round(255 * ((1 - alpha) * photo + alpha * colours)).astype(np.uint8)


def plot_gradcam(model: nn.Module, dataset, indices: Sequence[int], titles: Sequence[str]) -> Figure:
    """Samples `indices` of `dataset`: the photos, and below them Grad-CAM for the class the model predicted."""
    images = [dataset[index][0] for index in indices]
    photos = [(denormalize(image[None])[0].permute(1, 2, 0).numpy(), title) for image, title in zip(images, titles)]
    heat = [(overlay(image, gradcam(model, image)), "") for image in images]
    return image_grid([("photo", photos), ("Grad-CAM", heat)], "Photos and where the model looked (Grad-CAM)")


def outcomes(probability: np.ndarray, labels: np.ndarray, threshold: float) -> dict[str, np.ndarray]:
    """One boolean mask per choice of the filter menu, at `threshold`."""
    predicted, actual = probability >= threshold, labels == 1
    return {
        "all samples": np.ones_like(actual),
        "misclassified": predicted != actual,
        "true positives": predicted & actual,
        "true negatives": ~predicted & ~actual,
        "false positives (false alarms)": predicted & ~actual,
        "false negatives (missed cracks)": ~predicted & actual,
    }


class Explorer:
    """The explorer's widgets, kept in step with each other; `widget` is the box on show."""

    def __init__(
        self, predictions: Predictions, heatmap: Callable[[int], np.ndarray], load_image: Callable | None = None
    ):
        import ipywidgets as widgets

        self.predictions = predictions
        self.probability = predictions.crack_probability.numpy()
        self.labels = predictions.labels.numpy()
        self.heatmap = heatmap
        self.load_image = load_image or (lambda i: image_for_display(predictions.paths[i]))
        self.png = functools.lru_cache(maxsize=64)(self._png)  # stepping back and forth stays quick
        self.shown: list[int] = []  # the validation indices the filter lets through

        self.filter = widgets.Dropdown(options=list(outcomes(self.probability, self.labels, 0.5)), description="show")
        self.threshold = widgets.FloatSlider(value=0.5, min=0.01, max=0.99, step=0.01, description="threshold")
        self.sample = widgets.IntSlider(value=1, min=1, max=1, description="sample")  # position in `shown`, from 1
        self.previous_button = widgets.Button(description="Previous", icon="arrow-left")
        self.next_button = widgets.Button(description="Next", icon="arrow-right")
        self.image = widgets.Image(format="png")
        self.info, self.matrix, self.mistakes = widgets.HTML(), widgets.HTML(), widgets.HTML()
        for name in ("threshold", "sample", "image", "matrix", "mistakes"):  # the browser test finds them by these
            getattr(self, name).add_class(f"crack-explorer-{name}")

        self.filter.observe(self._refilter, names="value")
        self.threshold.observe(self._refilter, names="value")
        self.sample.observe(self._show, names="value")
        self.previous_button.on_click(lambda _: self.step(-1))
        self.next_button.on_click(lambda _: self.step(+1))

        summary = widgets.VBox([self.threshold, self.mistakes, self.matrix], layout={"margin": "0 0 0 16px"})
        self.widget = widgets.VBox(
            [
                self.filter,
                widgets.HBox([self.previous_button, self.sample, self.next_button]),
                widgets.HBox([self.image, summary], layout={"align_items": "flex-start"}),  # the picture at its size
                self.info,
            ]
        )
        self.widget.add_class("crack-explorer")
        self._refilter()

    @property
    def current(self) -> int | None:
        """The validation index on show, or None when the filter lets nothing through."""
        return self.shown[self.sample.value - 1] if self.shown else None

    def step(self, offset: int) -> None:
        """Move `offset` samples along the filtered list, stopping at either end."""
        self.sample.value = min(max(self.sample.value + offset, 1), self.sample.max)

    def _png(self, index: int) -> bytes:
        """PNG bytes of sample `index`: the photo, and its heat map to the right."""
        photo = np.asarray(self.load_image(index))
        photo = Image.fromarray(photo if photo.dtype == np.uint8 else np.round(255 * photo).astype(np.uint8)).convert(
            "RGB"
        )
        heat = Image.fromarray(self.heatmap(index)).convert("RGB").resize(photo.size)
        both = Image.new("RGB", (2 * photo.width + 6, photo.height), "white")
        both.paste(photo, (0, 0))
        both.paste(heat, (photo.width + 6, 0))
        buffer = io.BytesIO()
        both.save(buffer, format="PNG")
        return buffer.getvalue()

    def _refilter(self, _change: dict | None = None) -> None:
        """Recompute the filtered list, the matrix and the mistakes; keep the sample on show if it stays."""
        previous, threshold = self.current, self.threshold.value
        masks = outcomes(self.probability, self.labels, threshold)
        self.shown = np.flatnonzero(masks[self.filter.value]).tolist()
        self.sample.max = max(len(self.shown), 1)
        self.sample.value = self.shown.index(previous) + 1 if previous in self.shown else 1
        for control in (self.sample, self.previous_button, self.next_button):
            control.disabled = not self.shown
        negative, positive = (html.escape(name) for name in self.predictions.class_names)
        table = [
            ["", f"predicted {negative}", f"predicted {positive}"],
            [f"actual {negative}", masks["true negatives"].sum(), masks["false positives (false alarms)"].sum()],
            [f"actual {positive}", masks["false negatives (missed cracks)"].sum(), masks["true positives"].sum()],
        ]
        cell = "<td style='border:1px solid #999; padding:2px 8px'>{}</td>"
        rows = "".join("<tr>" + "".join(cell.format(value) for value in row) + "</tr>" for row in table)
        self.matrix.value = f"<table style='border-collapse:collapse'>{rows}</table>"
        mistakes = masks["misclassified"].sum()
        self.mistakes.value = f"<b>{mistakes} mistakes</b> of {len(self.labels)} samples at threshold {threshold:.2f}"
        self._show()

    def _show(self, _change: dict | None = None) -> None:
        """Show the current sample's picture and what is known about it."""
        index, threshold = self.current, self.threshold.value
        self.image.layout.display = "none" if index is None else None
        if index is None:
            self.info.value = f"<b>No samples are {self.filter.value} at threshold {threshold:.2f}.</b> Pick another."
            return
        self.image.value = self.png(index)
        names, crack = self.predictions.class_names, self.probability[index]
        actual, predicted = names[self.labels[index]], names[int(crack >= threshold)]
        verdict = "correct" if actual == predicted else "<span style='color:#c00'>mistake</span>"
        self.info.value = (
            f"<b>{html.escape(self.predictions.sample_ids[index])}</b> (validation sample #{index}, "
            f"{self.sample.value} of {len(self.shown)} shown)<br>actual: {html.escape(actual)} &middot; "
            f"predicted: {html.escape(predicted)} ({verdict}) &middot; P({html.escape(names[1])}) = {crack:.3f}"
        )


def show_explorer(
    predictions: Predictions, heatmap: Callable[[int], np.ndarray], load_image: Callable | None = None
) -> None:
    """Show the explorer of a two-class model's validation Predictions in Jupyter, with heatmap(i) (an HxWx3 uint8
    picture, e.g. Grad-CAM) beside photo i (load_image(i), else read from predictions.paths); elsewhere print how
    many samples fall in each outcome at threshold 0.5."""
    if not has_widget_frontend():
        masks = outcomes(predictions.crack_probability.numpy(), predictions.labels.numpy(), 0.5)
        print("The interactive explorer needs JupyterLab (or Jupyter Notebook / VS Code) with ipywidgets; here is")
        print("a summary instead. Samples per outcome at threshold 0.50:")
        print("\n".join(f"  {name:<32} {mask.sum():>6}" for name, mask in masks.items()))
        return
    from IPython.display import display

    display(Explorer(predictions, heatmap, load_image).widget)


@dataclass
class ScanResult:
    """A photo, the crack probability of each of its tiles, and where the tiles were."""

    photo: Image.Image
    probabilities: np.ndarray  # (rows, columns): each tile's crack probability
    boxes: list[tuple[int, int]]  # (top, left) of each tile, row by row


def tile_positions(height: int, width: int, stride: int = TILE_SIZE) -> tuple[list[int], list[int]]:
    """(tops, lefts) of the tiles that together cover the photo; the last on each side ends at the border."""
    if stride > TILE_SIZE:
        raise ValueError(f"A stride of {stride} leaves gaps between {TILE_SIZE}-pixel tiles: use {TILE_SIZE} or less.")
    if min(height, width) < TILE_SIZE:
        raise ValueError(
            f"The photo ({height}x{width}) is smaller than one tile: classify it whole (helpers.inference.classify_photos)."
        )
    return tuple(sorted({*range(0, side - TILE_SIZE + 1, stride), side - TILE_SIZE}) for side in (height, width))


def scan(model: nn.Module, image: str | Path | Image.Image | np.ndarray, stride: int = TILE_SIZE) -> ScanResult:
    """Every tile's crack probability, 32 tiles at a time on the model's device, of `image`: a path (a missing or
    unreadable file is named), a PIL image or an HxWx3 uint8 array."""
    if isinstance(image, (str, Path)):
        photo = open_photo(image)
    elif np.asarray(image).dtype == np.uint8:
        photo = Image.fromarray(np.asarray(image)).convert("RGB")
    else:
        raise ValueError("Pass the photo as uint8 values 0-255, e.g. (photo * 255).round().astype(np.uint8).")
    tops, lefts = tile_positions(photo.height, photo.width, stride)
    boxes = [(top, left) for top in tops for left in lefts]
    pixels = default_transform()(photo)  # (3, H, W), normalised once for all tiles
    tiles = [pixels[:, top : top + TILE_SIZE, left : left + TILE_SIZE] for top, left in boxes]
    device, scores = next(model.parameters()).device, []
    model.eval()
    with torch.no_grad():
        for start in range(0, len(tiles), 32):
            logits = model(torch.stack(tiles[start : start + 32]).to(device))
            scores.append(torch.softmax(logits, dim=1)[:, CRACK].cpu())
    return ScanResult(photo, torch.cat(scores).numpy().reshape(len(tops), len(lefts)), boxes)


def probability_map(result: ScanResult) -> np.ndarray:
    """An (H, W) map: each pixel gets the mean probability of the tiles that cover it."""
    size = result.photo.height, result.photo.width
    total, count = np.zeros(size), np.zeros(size)
    for (top, left), probability in zip(result.boxes, result.probabilities.ravel()):
        total[top : top + TILE_SIZE, left : left + TILE_SIZE] += probability
        count[top : top + TILE_SIZE, left : left + TILE_SIZE] += 1
    return total / count


def plot_scan(result: ScanResult, threshold: float = 0.5) -> Figure:
    """The photo with the probability map over it, and the tiles above `threshold` outlined."""
    fig, ax = plt.subplots(figsize=(10, 10 * result.photo.height / result.photo.width + 0.6))
    ax.imshow(result.photo)
    shown = ax.imshow(probability_map(result), cmap="jet", vmin=0, vmax=1, alpha=0.35)
    fig.colorbar(shown, ax=ax, fraction=0.03, label="crack probability")
    flagged = [box for box, probability in zip(result.boxes, result.probabilities.ravel()) if probability > threshold]
    for top, left in flagged:
        ax.add_patch(Rectangle((left, top), TILE_SIZE, TILE_SIZE, fill=False, edgecolor="white", linewidth=2))
    ax.set_title(f"{len(flagged)} of {len(result.boxes)} tiles above {threshold:.0%}")
    ax.axis("off")
    fig.tight_layout()
    return fig
