"""Floor 5: drift-over-time evaluation -- methods, sweeps and their journal, metrics, reports, costs,
the Task interface and the task-agnostic comparison (``aihwkit-nabn reproduce <task>``)."""
