"""Floor 4: training -- the one epoch loop, the digital and HWA recipes, the model registry and checkpoints.

Nothing here knows a task: data arrive as ``epoch_batches(epoch, device)`` callables and the test
metric as ``evaluate(model, device)``; models are built by name through :mod:`.registry`.
"""
