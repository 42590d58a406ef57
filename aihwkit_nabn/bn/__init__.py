"""Floor 2: BatchNorm layers of any model -- find them, snapshot/restore them, calibrate and fine-tune them.

Nothing here knows aihwkit: analog tiles stay in inference mode simply because only the BatchNorm
layers are ever put in training mode.
"""
