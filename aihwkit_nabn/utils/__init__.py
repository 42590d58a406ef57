"""Floor 1: helpers with no aihwkit and no task in them (batches, flags, random streams, devices, files)."""
