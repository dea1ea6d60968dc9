"""The optional speed machinery behind notebook 07: how the frozen backbone computes, and how it is fed.

Nothing in here changes what the model learns; it changes how fast the features arrive. It holds
the number formats (float32, bfloat16, int8) and the choice between them (:mod:`.backbone`), the
int8 copy of the backbone (:mod:`.int8`), decoding the JPEGs on a GPU (:mod:`.fast_input`) and the
number of DataLoader workers (:mod:`.workers`). This ``__init__`` is the one door: the lesson
modules of :mod:`helpers` import the names below from ``helpers.speed`` and never reach into the
submodules (``tests/test_layout.py`` checks it). The submodules may import lesson modules
(``helpers.dataset``, ``helpers.synthetic``, ``helpers.model``), ``helpers.settings`` and
``helpers.plumbing``, never ``helpers.tools``.
"""

from helpers.speed.backbone import (
    INT8_MIN_IMAGES,
    NUMBER_FORMATS,
    Backbone,
    FastSettings,
    bf16_is_fast,
    choose_backbone,
    choose_decoding,
    choose_number_format,
    forget_int8_backbones,
)
from helpers.speed.fast_input import Feeder
from helpers.speed.int8 import int8_unavailable_reason, int8_untested_reason
from helpers.speed.workers import default_num_workers, planned_batches, worker_candidates

__all__ = [
    "INT8_MIN_IMAGES", "NUMBER_FORMATS", "Backbone", "FastSettings", "Feeder", "bf16_is_fast", "choose_backbone",
    "choose_decoding", "choose_number_format", "default_num_workers", "forget_int8_backbones",
    "int8_unavailable_reason", "int8_untested_reason", "planned_batches", "worker_candidates",
]
