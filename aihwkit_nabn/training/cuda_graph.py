"""The hardware-aware training update replayed as a CUDA graph: :class:`~aihwkit_nabn.utils.cuda_graph.GraphedStep`
with aihwkit's ``AnalogSGD`` made capturable for ``mode="full"``.

``AnalogSGD.step`` ends with each tile's weight clipping and remapping, which replace the weight's storage and so
cannot be recorded; :func:`~aihwkit_nabn._aihwkit.post_update.install_inplace_post_update` swaps in an in-place
version with the same numbers (and names the tiles it cannot serve: ``full`` then works as ``on``).
"""

from __future__ import annotations

from typing import Any

from torch import nn

from .._aihwkit.post_update import install_inplace_post_update
from ..utils.cuda_graph import GraphedStep

__all__ = ["AnalogGraphedStep"]


class AnalogGraphedStep(GraphedStep):
    """:class:`~aihwkit_nabn.utils.cuda_graph.GraphedStep` whose ``mode="full"`` records ``AnalogSGD``'s step
    with the tiles' in-place post-update (the arguments are GraphedStep's, without ``prepare_full``)."""

    def __init__(self, model: nn.Module, *args: Any, **kwargs: Any):
        super().__init__(model, *args, prepare_full=install_inplace_post_update, **kwargs)
