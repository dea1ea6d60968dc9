"""Use a trained model on new photos: from Python, or from the command line.

Training ends with a checkpoint (notebook 04). This module is the other end: it loads that
checkpoint and says, for each photo you give it, which class the model picks and how sure it
is. The class names come from the checkpoint itself, so a model trained on other folders
(or on three classes) names its own labels; nothing here assumes "Negative"/"Positive".

From the command line: ``python -m helpers predict photo1.jpg --json`` (helpers.tools.predict).

The model was trained on 227x227 tiles. A photo of another size is resized to 227x227, which
is right for a tile-sized crop but not for a whole 4032x3024 photo: a thin crack shrunk 18
times disappears. Scan a large photo tile by tile instead (helpers.scan).
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Sequence

from torch import nn

from helpers.inference import Prediction, classify_photos
from helpers.model import load_checkpoint
from helpers.plumbing.text import printable
from helpers.plumbing.images import BadImageError
from helpers.settings import default_checkpoint_path
from helpers.workbook import has_widget_frontend


def upload_classifier(model: nn.Module, class_names: Sequence[str]):
    """A widget to classify a photo the learner uploads (JupyterLab); None, with a message, elsewhere."""
    if not has_widget_frontend():
        print(
            "The upload widget needs JupyterLab (or Jupyter Notebook / VS Code); "
            "call classify_files([...], checkpoint) or `python -m helpers predict` instead."
        )
        return None
    import ipywidgets as widgets

    upload = widgets.FileUpload(accept="image/*", multiple=False, description="Upload a photo")
    output = widgets.Output()

    def classify(change) -> None:
        output.clear_output()
        for item in change["new"]:
            with tempfile.TemporaryDirectory() as folder, output:
                path = Path(folder) / Path(item["name"]).name
                path.write_bytes(bytes(item["content"]))
                try:
                    prediction = classify_photos(model, [path], class_names)[0]
                    print(f"{printable(item['name'])}: {printable(prediction.label)} ({prediction.probability:.1%})")
                except (BadImageError, FileNotFoundError) as error:
                    print(f"error: {printable(error)}")

    upload.observe(classify, names="value")
    return widgets.VBox([upload, output])


def load_model(checkpoint: str | Path | None = None) -> tuple[nn.Module, list[str]]:
    """(model, class names) from a workbook checkpoint; by default the one notebook 04 saves.

    A missing file raises FileNotFoundError; a file that is not a workbook checkpoint (damaged,
    of the wrong kind, or not fitting a ResNet18) raises CheckpointMismatchError.
    """
    path = default_checkpoint_path() if checkpoint is None else Path(checkpoint)
    checkpoint = load_checkpoint(path)  # checks the file, its classes and its weights
    return checkpoint.model, checkpoint.class_names


def classify_files(paths: Sequence[str | Path], checkpoint: str | Path | None = None) -> list[Prediction]:
    """Load the checkpoint (default_checkpoint_path() when None) and predict each photo."""
    model, class_names = load_model(checkpoint)
    return classify_photos(model, paths, class_names)


def format_prediction(prediction: Prediction) -> str:
    """One line for a person: "photo.jpg: Positive (97.3%)", without control characters."""
    return f"{printable(prediction.path)}: {printable(prediction.label)} ({100 * prediction.probability:.1f}%)"
