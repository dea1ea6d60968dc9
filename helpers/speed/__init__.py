"""The optional speed machinery behind notebook 07: how the frozen backbone computes, and how it is fed.

Nothing in here changes what the model learns; it changes how fast the features arrive. It holds
the number formats (float32, bfloat16, int8) and the choice between them, measured on this
machine (:mod:`.backbone`, :mod:`.measure`), the
int8 copy of the backbone (:mod:`.int8`), decoding the JPEGs on a GPU (:mod:`.fast_input`) and the
number of DataLoader workers (:mod:`.workers`). This ``__init__`` is the one door: the lesson
modules of :mod:`helpers` import the names below from ``helpers.speed`` and never reach into the
submodules (``tests/test_layout.py`` checks it). The submodules may import lesson modules
(``helpers.dataset``, ``helpers.synthetic``, ``helpers.model``), ``helpers.settings`` and
``helpers.plumbing``, never ``helpers.tools``.
"""

from helpers.speed.backbone import (
    NUMBER_FORMATS,
    Backbone,
    FastSettings,
    FormatChoice,
    bf16_is_fast,
    candidates_here,
    choose_backbone,
    choose_decoding,
    choose_number_format,
    decoder_key_part,
    forget_built_backbones,
)
from helpers.speed.fast_input import DECODERS_MEASURED_FROM, DecoderTrial, Feeder, measure_decoders
from helpers.speed.int8 import int8_unavailable_reason, int8_untested_reason
from helpers.speed.measure import (
    CANDIDATES,
    MEASURE_MIN_IMAGES,
    QUICK_TO_BUILD,
    SMALL_FOLDER,
    Measurement,
    decisions_file,
    machine_key,
    remembered,
)
from helpers.speed.workers import default_num_workers, planned_batches, worker_candidates

__all__ = [
    "CANDIDATES",
    "DECODERS_MEASURED_FROM",
    "DecoderTrial",
    "MEASURE_MIN_IMAGES",
    "NUMBER_FORMATS",
    "QUICK_TO_BUILD",
    "SMALL_FOLDER",
    "Backbone",
    "FastSettings",
    "Feeder",
    "FormatChoice",
    "Measurement",
    "bf16_is_fast",
    "candidates_here",
    "choose_backbone",
    "choose_decoding",
    "choose_number_format",
    "decisions_file",
    "decoder_key_part",
    "default_num_workers",
    "forget_built_backbones",
    "int8_unavailable_reason",
    "int8_untested_reason",
    "machine_key",
    "measure_decoders",
    "planned_batches",
    "remembered",
    "worker_candidates",
]
