"""Floor 6: the tasks, each in its own folder, registered by name (``aihwkit-nabn reproduce <name>``).

To add a task: a folder ``tasks/<name>/`` with its data, models (registered with
:func:`~aihwkit_nabn.training.registry.register_model`), training recipes, a default ``config.toml`` and a
:class:`~aihwkit_nabn.evaluation.task.Task` subclass; then one :func:`register_task` line below.
"""

from __future__ import annotations

from typing import List, Optional, Type

from ..evaluation.task import PathLike, Task
from ..utils.registry import Registry
from .camvid import CamVidTask
from .cifar10 import Cifar10Task
from .pennfudan import PennFudanTask

__all__ = ["TASKS", "register_task", "get_task", "list_tasks"]

#: Every task, by name.
TASKS: "Registry[Type[Task]]" = Registry("task")


def register_task(task: Type[Task]) -> Type[Task]:
    """Register a :class:`Task` subclass under its ``name``; return it (usable as a decorator)."""
    TASKS.register(task.name, task)
    return task


def get_task(name: str, source: Optional[PathLike] = None) -> Task:
    """Return the task registered as ``name``, reading its data from ``source`` (default: its own search).

    Raises:
        ConfigError: for an unknown name (the message lists the known tasks).
    """
    return TASKS.get(name)(source)


def list_tasks() -> List[str]:
    """Return the names of the registered tasks."""
    return TASKS.names()


register_task(Cifar10Task)
register_task(CamVidTask)
register_task(PennFudanTask)
