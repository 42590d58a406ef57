"""Hardware-aware (HWA) fine-tuning of a trained digital model on aihwkit torch tiles.

:func:`fit_hwa` converts a trained digital model with :func:`~aihwkit_nabn.analog.convert.to_analog`
(accelerated, :class:`~aihwkit_nabn.analog.hwa_preset.TorchHWAPreset` by default), initialises the
learned input ranges from data, then fine-tunes it with aihwkit's ``AnalogSGD`` in training mode (weight
noise on, input ranges and output scales learned, weights remapped and clipped after every step). The
training batches, the range-initialisation batches and the test metric come from the task; the loop,
its log and its resumable state are :func:`.loop.fit`'s. The input-range gradient fix (torch >= 2.14)
is installed for the call only.
"""

from __future__ import annotations

import math
import numbers
import os
from typing import Any, Callable, Dict, Iterable, List, Optional, Tuple, Union

import torch
import torch.nn.functional as F
from torch import Tensor, nn

import aihwkit
from aihwkit.optim import AnalogSGD
from aihwkit.simulator.configs import TorchInferenceRPUConfig

from .._aihwkit.input_range_fix import input_range_fix
from .._aihwkit.input_ranges import init_input_ranges
from .._aihwkit.post_update import uninstall_inplace_post_update
from .._aihwkit.state import analog_state, input_ranges, load_analog_state
from .._aihwkit.tiles import has_analog_tiles
from ..analog.convert import to_analog
from ..analog.hwa_preset import TorchHWAPreset
from ..analog.presets import config_fields
from ..utils.devices import device_name, resolve_device
from .cuda_graph import AnalogGraphedStep
from .distributed import world, wrap
from .loop import ResumeSpec, fit
from .schedule import PlateauSchedule, warmup_cosine

__all__ = ["fit_hwa", "check_hwa_args", "HWA_RESUME_FORMAT"]

PathLike = Union[str, os.PathLike]
HWA_RESUME_FORMAT = "aihwkit-nabn/hwa-train-state/v1"
_NO_DECAY = ("input_range", "out_scaling_alpha", "analog_ctx")  # learned periphery: no weight decay
_RESUME_KEYS = ("epochs", "batch_size", "lr", "momentum", "weight_decay", "nesterov", "n_train",
                "digital_layers", "rpu_config", "schedule")
SCHEDULES = ("cosine", "plateau")
_GRAPH_MODE = {True: "on", "on": "on", "full": "full"}


def _param_groups(model: nn.Module, weight_decay: float) -> List[Dict[str, Any]]:
    """Weight decay on weights, BN and biases; none on learned input ranges / output scales."""
    decay: List[nn.Parameter] = []
    no_decay: List[nn.Parameter] = []
    for name, param in model.named_parameters():
        (no_decay if any(part in name for part in _NO_DECAY) else decay).append(param)
    groups = [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return [g for g in groups if g["params"]]


def check_hwa_args(epochs: Any, batch_size: Any, lr: Any, max_seconds: Any) -> None:
    """Raise ``ValueError`` naming the first bad training argument."""
    if isinstance(epochs, bool) or not isinstance(epochs, numbers.Integral) or epochs < 1:
        raise ValueError(f"epochs must be an integer >= 1, got {epochs!r}")
    if isinstance(batch_size, bool) or not isinstance(batch_size, numbers.Integral) or batch_size < 1:
        raise ValueError(f"batch_size must be an integer >= 1, got {batch_size!r}")
    if isinstance(lr, bool) or not (isinstance(lr, numbers.Real) and math.isfinite(lr) and lr > 0):
        raise ValueError(f"lr must be a finite number > 0, got {lr!r}")
    if max_seconds is not None and not max_seconds > 0:
        raise ValueError(f"max_seconds must be > 0 (or None), got {max_seconds!r}")


def fit_hwa(
    digital_model: nn.Module,
    *,
    epoch_batches: Callable[[int, torch.device], Iterable[Tuple[Tensor, Tensor]]],
    range_init_batches: Callable[[torch.device], Iterable[Tensor]],
    n_train: int,
    evaluate: Callable[[nn.Module, torch.device], float],
    epochs: int,
    rpu_config: Optional[TorchInferenceRPUConfig] = None,
    lr: float = 0.02,
    momentum: float = 0.9,
    weight_decay: float = 1e-4,
    nesterov: bool = True,
    batch_size: int = 128,
    seed: int = 0,
    device: Any = None,
    digital_layers: Iterable[str] = (),
    data_hparams: Optional[Dict[str, Any]] = None,
    data_resume_keys: Tuple[str, ...] = (),
    loss_fn: Callable[[Tensor, Tensor], Tensor] = F.cross_entropy,
    output_fn: Optional[Callable[[Any], Tensor]] = None,
    eval_key: str = "test_acc",
    train_step: Optional[Callable[[nn.Module, Any, Any], Tuple[Tensor, Optional[Tensor]]]] = None,
    schedule: str = "cosine",
    patience: int = 5,
    stop_patience: int = 15,
    min_epochs: int = 0,
    max_seconds: Optional[float] = None,
    stop_after_epochs: Optional[int] = None,
    log_path: Optional[PathLike] = None,
    resume_path: Optional[PathLike] = None,
    progress: bool = True,
    cuda_graph: Union[bool, str] = False,
) -> Dict[str, Any]:
    """Fine-tune an analog copy of ``digital_model`` hardware-aware; ``digital_model`` is not modified.

    Installs the input-range gradient fix for the call (:func:`~aihwkit_nabn._aihwkit.input_range_fix.input_range_fix`,
    needed on torch >= 2.14; aihwkit is left as it was found), seeds torch with ``seed``, converts with
    ``to_analog(accelerate=True)``, moves to ``device``, initialises the input ranges from
    ``range_init_batches(device)`` (aihwkit's ``init_from_data``, at a fresh start only), then trains with
    ``AnalogSGD`` on ``epoch_batches(epoch, device)``, in fp32 (no autocast: the analog simulation stays
    exact): ``epochs`` epochs with a cosine learning rate to 0 over all steps (``schedule="cosine"``), or, with
    ``schedule="plateau"``, at ``lr`` halved whenever the validation metric has not improved for ``patience``
    epochs, until its best is ``stop_patience`` epochs old (not before ``min_epochs``; at most ``epochs``):
    :class:`~.schedule.PlateauSchedule`, which needs ``evaluate`` to be a validation metric.

    Args:
        digital_model: a trained digital model.
        epoch_batches: ``fn(epoch, device)`` yielding the epoch's ``(x, y)`` training batches.
        range_init_batches: ``fn(device)`` yielding training-like model inputs for the range init.
        n_train: number of training samples (``n_train // batch_size`` steps per epoch).
        evaluate: ``fn(model, device) -> float``, the test metric after each epoch (eval mode).
        epochs: total epochs (the schedule spans all of them, also across resumes).
        rpu_config: a ``TorchInferenceRPUConfig``; default :class:`TorchHWAPreset`.
        lr, momentum, weight_decay, nesterov: SGD settings (no weight decay on input ranges and
            learned output scales).
        batch_size: recorded and used for the schedule (the batches come from ``epoch_batches``).
        seed: fixes conversion, range initialisation and aihwkit's noise.
        digital_layers: Conv/Linear layers to keep digital (e.g. ``["conv1", "fc"]``).
        data_hparams / data_resume_keys: the task's data settings, recorded (and checked on resume).
        loss_fn: ``loss_fn(logits, targets)``; default cross-entropy.
        output_fn: takes the logits out of the model's output (e.g. ``out["out"]``); default: the output.
        eval_key: the name of ``evaluate``'s value in the history records (default ``"test_acc"``).
        train_step: ``fn(model, x, y) -> (loss, logits or None)`` instead of the classifier's forward + loss
            (e.g. a detector, which returns its losses in training mode).
        schedule, patience, stop_patience, min_epochs: the learning-rate schedule (above).
        max_seconds, stop_after_epochs, log_path, resume_path, progress: see :func:`.loop.fit`.
        cuda_graph: on CUDA, replay each update from a CUDA graph (:class:`~.cuda_graph.AnalogGraphedStep`, the eager
            update's numbers): ``"on"`` (or True) the forward and backward, ``"full"`` the optimizer step too;
            ``"off"`` / False: eager. Each epoch record then has ``graph_mode``, ``graph_replays`` and
            ``graph_captures`` (cumulative over the call) and ``graph_failure``. Not under torchrun.

    Returns:
        dict with ``model`` (the analog model, eval mode, unprogrammed), ``top1`` (the last test metric),
        ``history``, ``seconds``, ``epochs``, ``epochs_done``, ``finished``, ``resumed_from_epoch``,
        ``seed``, ``hparams``, ``device``, ``torch_version``, ``aihwkit_version``, ``preset``,
        ``input_range_fix``, ``input_ranges`` and ``init_batches``.
    """
    # pylint: disable=too-many-arguments, too-many-locals
    check_hwa_args(epochs, batch_size, lr, max_seconds)
    if schedule not in SCHEDULES:
        raise ValueError(f"schedule must be one of {SCHEDULES}, got {schedule!r}")
    graph_mode = _GRAPH_MODE.get(cuda_graph) if isinstance(cuda_graph, (bool, str)) else None
    if cuda_graph not in (False, "off") and graph_mode is None:
        raise ValueError(f"cuda_graph must be one of off, on, full (or a bool), got {cuda_graph!r}")
    plateau = None
    if schedule == "plateau":
        if not eval_key.startswith("val"):
            raise ValueError(f"schedule='plateau' decides on the evaluated metric, here {eval_key!r}: it must be a "
                             "validation metric (hold a val split out of the training data, e.g. --val-samples 5000)")
        plateau = PlateauSchedule(patience=patience, stop_patience=stop_patience, min_epochs=min_epochs)
        if min_epochs > epochs:
            raise ValueError(f"min_epochs ({min_epochs}) is more than epochs ({epochs}, the most)")
    if not isinstance(digital_model, nn.Module) or has_analog_tiles(digital_model):
        raise TypeError("digital_model must be a digital torch model (it is converted to analog here)")
    rpu_config = TorchHWAPreset() if rpu_config is None else rpu_config
    if not isinstance(rpu_config, TorchInferenceRPUConfig):
        raise TypeError(f"rpu_config must be a TorchInferenceRPUConfig (torch tiles), got {type(rpu_config).__name__}; "
                        "aihwkit 1.1.0's C++ tiles do not run on the GPU")
    with input_range_fix() as fix_status:
        dev = resolve_device(device)
        digital_layers = list(digital_layers)
        steps_per_epoch = max(1, n_train // batch_size)
        hparams = {
            "epochs": epochs, "batch_size": batch_size, "lr": lr, "momentum": momentum,
            "weight_decay": weight_decay, "nesterov": nesterov, "n_train": n_train,
            "steps_per_epoch": steps_per_epoch, "digital_layers": digital_layers,
            "preset": type(rpu_config).__name__, "rpu_config": config_fields(rpu_config),
            "optimizer": "aihwkit AnalogSGD",
            "schedule": "cosine to 0, per step" if plateau is None else plateau.describe(eval_key, epochs),
            **dict(data_hparams or {}), "precision": "fp32",
        }
        torch.manual_seed(seed)
        model = to_analog(digital_model, rpu_config, digital_layers=digital_layers, accelerate=True).to(dev)
        optimizer = AnalogSGD(_param_groups(model, weight_decay), lr=lr, momentum=momentum, nesterov=nesterov)
        scheduler = torch.optim.lr_scheduler.LambdaLR(
            optimizer, warmup_cosine(epochs * steps_per_epoch, 0) if plateau is None else plateau)

        def plateau_end(record: Dict[str, Any]) -> bool:
            stop = plateau.epoch_end(record[eval_key], record["epoch"])
            # LambdaLR applies a new multiplier at its next step: set it now, for the next epoch's first step
            for group, base in zip(optimizer.param_groups, scheduler.base_lrs):
                group["lr"] = base * plateau.scale
            return stop

        trained = wrap(model, dev, find_unused_parameters=True)  # under torchrun: DDP over the ranks' slices of each global batch

        def step(x: Tensor, y: Tensor) -> Tuple[Tensor, Tensor]:
            logits = trained(x.contiguous())
            if output_fn is not None:
                logits = output_fn(logits)
            return loss_fn(logits, y), logits

        the_step = step if train_step is None else (lambda x, y: train_step(trained, x, y))
        graphed = None
        if graph_mode is not None:  # off CUDA the graphed update is the eager one (graph_replays stays 0)
            if world()[1] > 1:
                raise ValueError("cuda_graph is not supported under torchrun (DDP); leave it off")
            graphed = AnalogGraphedStep(model, the_step, optimizer, mode=graph_mode)

        def range_mean() -> Dict[str, Any]:
            ranges = list(input_ranges(model).values())
            extras = {"input_range_mean": sum(ranges) / len(ranges) if ranges else None}
            if graphed is not None:  # cumulative over this call
                extras.update(graph_mode=graphed.mode, graph_replays=graphed.replays, graph_captures=graphed.captures,
                              graph_failure=graphed.failure)
            return extras

        run = fit(
            model, optimizer, scheduler, epochs=epochs, epoch_batches=lambda epoch: epoch_batches(epoch, dev),
            step=the_step, update=graphed,
            evaluate=lambda: evaluate(model, dev), hparams=hparams, seed=seed, device=dev,
            resume=ResumeSpec(HWA_RESUME_FORMAT, _RESUME_KEYS + tuple(data_resume_keys), "HWA training state",
                              opaque=("rpu_config",)),
            save_model=lambda: analog_state(model),
            load_model=lambda state, where: load_analog_state(model, state, where),
            on_fresh_start=lambda: {"init_batches": init_input_ranges(model, range_init_batches(dev))},
            epoch_extras=range_mean, log_path=log_path, resume_path=resume_path,
            stop_after_epochs=stop_after_epochs, max_seconds=max_seconds, progress=progress, desc="hwa",
            eval_key=eval_key, epoch_end=None if plateau is None else plateau_end,
        )
        if graphed is not None:
            uninstall_inplace_post_update(model)  # "full" gave the tiles an in-place post-update: aihwkit's own again
        model.eval()
        history = run["history"]
        top1 = history[-1][eval_key] if history else evaluate(model, dev)
    return {
        "model": model, "top1": top1, "history": history, "seconds": run["seconds"],
        "epochs": epochs, "epochs_done": run["epochs_done"], "finished": run["finished"], "stopped": run["stopped"],
        "resumed_from_epoch": run["resumed_from_epoch"], "seed": seed, "hparams": hparams,
        "device": device_name(dev), "torch_version": str(torch.__version__),
        "aihwkit_version": str(aihwkit.__version__), "preset": type(rpu_config).__name__,
        "input_range_fix": fix_status, "input_ranges": input_ranges(model),
        "init_batches": int(run["extra"].get("init_batches", 0)),
    }
