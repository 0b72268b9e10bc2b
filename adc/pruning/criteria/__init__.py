"""Channel importance criteria: which channels of a unit to keep.

The agent decides *how many* channels a unit keeps; a criterion decides
*which*. Each criterion is a small callable ``(context, unit) -> scores`` (one
score per channel of the unit, higher = more important), registered by name
in :data:`CRITERIA`. Scores are computed on the unpruned model, once per
search: the ranking of a unit's channels does not depend on how other units
are pruned. The families, one module each:

- :mod:`~adc.pruning.criteria.weights`: ``l1``, ``l2``, ``fpgm``, ``bn_scale``, ``random``.
- :mod:`~adc.pruning.criteria.gradients`: ``taylor``, ``taylor_weight``, ``obd``, ``fisher``, ``snip``.
- :mod:`~adc.pruning.criteria.activations`: ``apoz``, ``entropy``.
- :mod:`~adc.pruning.criteria.selection`: ``thinet``, ``lasso`` (next layers' reconstruction error).

Data-driven criteria (:data:`DATA_CRITERIA`; those that differentiate the loss
also need labels, :data:`LABEL_CRITERIA`) read the search's calibration batches
through the shared, lazily filled :class:`ScoreContext`.
"""

from adc.pruning.criteria import activations, gradients, selection, weights  # noqa: F401  (they register)
from adc.pruning.criteria.base import CRITERIA, Batch, Criterion, as_batches, needs_data, needs_labels, register_criterion
from adc.pruning.criteria.context import ScoreContext

DATA_CRITERIA: frozenset[str] = needs_data()
"""Criteria that read calibration batches (the others read only the weights)."""
LABEL_CRITERIA: frozenset[str] = needs_labels()
"""Criteria that need the calibration batches' labels (they differentiate the loss)."""

__all__ = ["CRITERIA", "DATA_CRITERIA", "LABEL_CRITERIA", "Batch", "Criterion", "ScoreContext", "as_batches",
           "register_criterion"]
