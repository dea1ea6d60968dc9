"""An interactive browser of the validation samples, for notebook 05.

Pick which samples to look at (all, the mistakes, the false alarms, the missed cracks, ...),
step through them one at a time, see the photo (and a heat map next to it, when you have one),
and move the decision threshold to watch the confusion matrix and the mistakes change live.

The module takes plain inputs - probabilities, labels, names and two small functions that
return pictures - so it does not depend on how the model was trained or evaluated.
A sample is predicted "crack" (class 1) when its crack probability is >= the threshold.

In plain Python (no Jupyter front end) `show_explorer` prints a short static summary instead.
"""

from __future__ import annotations

import html
import io
from collections.abc import Callable, Sequence

import numpy as np
import torch
from PIL import Image

from helpers.analysis import image_for_display
from helpers.inference import Predictions
from helpers.workbook import has_widget_frontend

FRONTEND_MESSAGE = (
    "The interactive explorer needs JupyterLab (or Jupyter Notebook / VS Code) "
    "with ipywidgets; showing a static summary instead."
)

# (what the filter menu shows, the value the code uses)
FILTERS = (
    ("all samples", "all"),
    ("misclassified", "misclassified"),
    ("true positives", "true_positive"),
    ("true negatives", "true_negative"),
    ("false positives (false alarms)", "false_positive"),
    ("false negatives (missed cracks)", "false_negative"),
)
CACHE_SIZE = 64  # PNG pictures kept in memory, so stepping back and forth is quick
GAP_PIXELS = 6  # white gap between the photo and its heat map


def _as_numpy(values: torch.Tensor | np.ndarray | Sequence) -> np.ndarray:
    """A flat NumPy array from a tensor, an array or a list."""
    if isinstance(values, torch.Tensor):
        values = values.detach().cpu().numpy()
    return np.asarray(values).reshape(-1)


def outcome_masks(probability: np.ndarray, labels: np.ndarray, threshold: float) -> dict[str, np.ndarray]:
    """One boolean mask per filter value: which samples are true positives, false alarms, ..."""
    predicted = probability >= threshold
    actual = labels == 1
    return {
        "all": np.ones_like(actual),
        "misclassified": predicted != actual,
        "true_positive": predicted & actual,
        "true_negative": ~predicted & ~actual,
        "false_positive": predicted & ~actual,
        "false_negative": ~predicted & actual,
    }


def side_by_side_png(picture: np.ndarray, overlay: np.ndarray | None = None) -> bytes:
    """PNG bytes of `picture` (HxWx3 uint8) and, when given, `overlay` to its right."""
    left = Image.fromarray(np.asarray(picture, dtype=np.uint8)).convert("RGB")
    if overlay is None:
        combined = left
    else:
        right = Image.fromarray(np.asarray(overlay, dtype=np.uint8)).convert("RGB")
        if right.size != left.size:
            right = right.resize(left.size)
        combined = Image.new("RGB", (2 * left.width + GAP_PIXELS, left.height), "white")
        combined.paste(left, (0, 0))
        combined.paste(right, (left.width + GAP_PIXELS, 0))
    buffer = io.BytesIO()
    combined.save(buffer, format="PNG")
    return buffer.getvalue()


class Explorer:
    """Owns the widgets and keeps them in step; `widget` is the VBox to display."""

    def __init__(
        self,
        crack_probability: torch.Tensor | np.ndarray,
        labels: torch.Tensor | np.ndarray,
        sample_ids: Sequence[str],
        load_image: Callable[[int], np.ndarray],
        heatmap: Callable[[int], np.ndarray] | None = None,
        threshold: float = 0.5,
        class_names: Sequence[str] = ("Negative", "Positive"),
    ):
        import ipywidgets as widgets

        self.probability = _as_numpy(crack_probability).astype(float)
        self.labels = _as_numpy(labels).astype(int)
        self.sample_ids = list(sample_ids)
        if not len(self.probability) == len(self.labels) == len(self.sample_ids):
            raise ValueError(
                f"got {len(self.probability)} probabilities, {len(self.labels)} labels "
                f"and {len(self.sample_ids)} sample ids; they must match"
            )
        self.load_image = load_image
        self.heatmap = heatmap
        self.class_names = tuple(class_names)
        self.filtered_indices: list[int] = []
        self._png_cache: dict[int, bytes] = {}

        self.filter = widgets.Dropdown(options=FILTERS, value="all", description="show")
        self.threshold = widgets.FloatSlider(
            value=threshold, min=0.01, max=0.99, step=0.01, description="threshold", readout_format=".2f"
        )
        # The slider counts positions 1..n in the filtered list (validation indices are in `info`).
        self.sample = widgets.IntSlider(value=1, min=1, max=1, description="sample")
        self.previous_button = widgets.Button(description="Previous", icon="arrow-left")
        self.next_button = widgets.Button(description="Next", icon="arrow-right")
        self.image = widgets.Image(format="png")
        self.info = widgets.HTML()
        self.matrix = widgets.HTML()
        self.mistakes = widgets.HTML()

        self.threshold.add_class("crack-explorer-threshold")
        self.sample.add_class("crack-explorer-sample")
        self.image.add_class("crack-explorer-image")
        self.matrix.add_class("crack-explorer-matrix")
        self.mistakes.add_class("crack-explorer-mistakes")
        self.info.add_class("crack-explorer-info")

        self.filter.observe(self._on_filter_or_threshold, names="value")
        self.threshold.observe(self._on_filter_or_threshold, names="value")
        self.sample.observe(self._on_sample, names="value")
        self.previous_button.on_click(lambda _button: self.step(-1))
        self.next_button.on_click(lambda _button: self.step(+1))

        navigation = widgets.HBox([self.previous_button, self.sample, self.next_button])
        summary = widgets.VBox([self.threshold, self.mistakes, self.matrix], layout=widgets.Layout(margin="0 0 0 16px"))
        # align_items="flex-start" keeps the picture at its own size instead of stretching it
        picture_and_summary = widgets.HBox([self.image, summary], layout=widgets.Layout(align_items="flex-start"))
        self.widget = widgets.VBox([self.filter, navigation, picture_and_summary, self.info])
        self.widget.add_class("crack-explorer")
        self._refresh_filter()

    def __repr__(self) -> str:
        """One line, so a notebook cell ending in `show_explorer(...)` does not show the widgets twice."""
        return f"<crack explorer of {len(self.labels)} samples>"  # no live numbers: they would go stale

    # --- what the widgets show -------------------------------------------------------------
    def predicted(self, index: int) -> int:
        """The predicted class (0 or 1) of sample `index` at the current threshold."""
        return int(self.probability[index] >= self.threshold.value)

    @property
    def mistake_count(self) -> int:
        """How many samples are misclassified at the current threshold."""
        return int(outcome_masks(self.probability, self.labels, self.threshold.value)["misclassified"].sum())

    @property
    def current_index(self) -> int | None:
        """The validation index on show, or None when the filter is empty."""
        if not self.filtered_indices:
            return None
        return self.filtered_indices[self.sample.value - 1]

    def png(self, index: int) -> bytes:
        """The PNG for sample `index` (photo, and heat map when given), cached."""
        if index not in self._png_cache:
            overlay = self.heatmap(index) if self.heatmap is not None else None
            if len(self._png_cache) >= CACHE_SIZE:
                del self._png_cache[next(iter(self._png_cache))]  # forget the oldest
            self._png_cache[index] = side_by_side_png(self.load_image(index), overlay)
        return self._png_cache[index]

    def matrix_html(self) -> str:
        """The confusion matrix at the current threshold as a small HTML table."""
        masks = outcome_masks(self.probability, self.labels, self.threshold.value)
        negative, positive = (html.escape(name) for name in self.class_names)
        cells = [
            [masks["true_negative"].sum(), masks["false_positive"].sum()],
            [masks["false_negative"].sum(), masks["true_positive"].sum()],
        ]
        style = "border:1px solid #999; padding:2px 8px; text-align:right"
        rows = "".join(
            f"<tr><th style='{style}'>actual {name}</th>"
            + "".join(f"<td style='{style}'>{int(count)}</td>" for count in counts)
            + "</tr>"
            for name, counts in zip((negative, positive), cells)
        )
        header = (
            f"<tr><th style='{style}'></th><th style='{style}'>predicted {negative}</th>"
            f"<th style='{style}'>predicted {positive}</th></tr>"
        )
        return f"<table style='border-collapse:collapse'>{header}{rows}</table>"

    def info_html(self) -> str:
        """File name, index, actual and predicted class and both probabilities of the sample on show."""
        index = self.current_index
        if index is None:
            label = dict((value, text) for text, value in FILTERS)[self.filter.value]
            return (
                f"<b>No samples are {html.escape(label)} at threshold {self.threshold.value:.2f}.</b> "
                "Pick another filter or move the threshold."
            )
        crack = self.probability[index]
        actual, predicted = self.class_names[self.labels[index]], self.class_names[self.predicted(index)]
        verdict = "correct" if actual == predicted else "<span style='color:#c00'>mistake</span>"
        return (
            f"<b>{html.escape(self.sample_ids[index])}</b> (validation sample #{index}, "
            f"{self.sample.value} of {len(self.filtered_indices)} shown)<br>"
            f"actual: {html.escape(actual)} &middot; predicted: {html.escape(predicted)} ({verdict})<br>"
            f"P({html.escape(self.class_names[0])}) = {1 - crack:.3f} &middot; "
            f"P({html.escape(self.class_names[1])}) = {crack:.3f}"
        )

    # --- reacting to the user --------------------------------------------------------------
    def step(self, offset: int) -> None:
        """Move `offset` samples along the filtered list, stopping at either end."""
        self.sample.value = min(max(self.sample.value + offset, self.sample.min), self.sample.max)

    def _on_filter_or_threshold(self, _change=None) -> None:
        self._refresh_filter()

    def _on_sample(self, _change=None) -> None:
        self._show_current()

    def _refresh_filter(self) -> None:
        """Recompute the filtered list (it depends on the threshold), keeping the sample on show if possible."""
        previous = self.current_index
        masks = outcome_masks(self.probability, self.labels, self.threshold.value)
        self.filtered_indices = [int(i) for i in np.flatnonzero(masks[self.filter.value])]
        position = self.filtered_indices.index(previous) + 1 if previous in self.filtered_indices else 1
        self.sample.max = max(len(self.filtered_indices), 1)  # also pulls the value down if needed
        self.sample.value = min(position, self.sample.max)
        empty = not self.filtered_indices
        for control in (self.sample, self.previous_button, self.next_button):
            control.disabled = empty
        self.matrix.value = self.matrix_html()
        self.mistakes.value = (
            f"<b>{self.mistake_count} mistakes</b> of {len(self.labels)} samples "
            f"at threshold {self.threshold.value:.2f}"
        )
        self._show_current()

    def _show_current(self) -> None:
        index = self.current_index
        self.image.layout.display = "none" if index is None else None
        if index is not None:
            self.image.value = self.png(index)
        self.info.value = self.info_html()


def build_explorer(
    crack_probability: torch.Tensor | np.ndarray,
    labels: torch.Tensor | np.ndarray,
    sample_ids: list[str],
    load_image: Callable[[int], np.ndarray],
    heatmap: Callable[[int], np.ndarray] | None = None,
    threshold: float = 0.5,
    class_names: Sequence[str] = ("Negative", "Positive"),
):
    """The explorer's VBox (CSS class "crack-explorer"); `box.explorer` is the `Explorer` behind it."""
    explorer = Explorer(crack_probability, labels, sample_ids, load_image, heatmap, threshold, class_names)
    explorer.widget.explorer = explorer
    return explorer.widget


def static_summary(
    crack_probability: torch.Tensor | np.ndarray, labels: torch.Tensor | np.ndarray, threshold: float = 0.5
) -> str:
    """How many samples fall in each outcome at `threshold`, as plain text."""
    masks = outcome_masks(_as_numpy(crack_probability).astype(float), _as_numpy(labels).astype(int), threshold)
    lines = [f"Outcomes at threshold {threshold:.2f}:"]
    lines += [f"  {text:<32} {int(masks[value].sum()):>6}" for text, value in FILTERS]
    return "\n".join(lines)


def show_explorer(
    predictions: Predictions,
    heatmap: Callable[[int], np.ndarray] | None = None,
    threshold: float = 0.5,
    load_image: Callable[[int], np.ndarray] | None = None,
) -> Explorer | None:
    """Show the explorer for `predictions` in Jupyter; elsewhere print a static summary and return None.

    predictions: helpers.analysis.Predictions of a two-class model (probabilities, labels, ids, paths).
    heatmap(i): an overlay to show beside picture i (e.g. Grad-CAM), or None. The pictures are read
    from predictions.paths; `load_image(i)` replaces that (pictures that are not files).
    In Jupyter it returns the `Explorer` (its `widget` is the VBox on show), so
    `explorer.threshold.value = 0.3` moves the slider from code.
    """
    if has_widget_frontend():
        from IPython.display import display

        box = build_explorer(
            predictions.crack_probability,
            predictions.labels,
            predictions.sample_ids,
            load_image or (lambda i: image_for_display(predictions.paths[i])),
            heatmap,
            threshold,
            predictions.class_names,
        )
        display(box)
        return box.explorer
    print(FRONTEND_MESSAGE)
    print(static_summary(predictions.crack_probability, predictions.labels, threshold))
    return None
