"""Floor 3: deployment on simulated chips -- presets, conversion, programmed chips, drift times, compensation."""
