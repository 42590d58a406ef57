"""Floor 2: everything that touches aihwkit internals, behind one version gate (:mod:`.version`).

* :mod:`.tiles` -- the one walker over analog layers and tiles.
* :mod:`.im2col`, :mod:`.mvm`, :mod:`.accelerated` -- the exact accelerated forward of the torch tile.
* :mod:`.input_range_fix` -- the learned-input-range gradient fix (torch >= 2.14), installed explicitly.
* :mod:`.grouped` -- grouped / depthwise convolutions as one analog convolution per group.
* :mod:`.state` -- the exact tensor state of analog tiles (HWA checkpoints, resumable training).
* :mod:`.input_ranges` -- data-calibrated and data-initialised input ranges.
* :mod:`.post_update` -- the torch tile's clipping and remapping after an update, in place (CUDA-graph capturable).
"""
