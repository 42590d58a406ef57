"""Digital training of a classifier: SGD with Nesterov momentum, warmup + cosine, label smoothing, fast on GPU.

On CUDA the model runs ``channels_last`` under bf16 autocast (loss in fp32), with TF32 and cuDNN autotuning,
and optionally under ``torch.compile``; on the CPU it runs in fp32. The data (batches per epoch) and the
test metric come from the task; the loop, its log and its resumable state are :func:`.loop.fit`'s.
"""

from __future__ import annotations

import os
import warnings
from typing import Any, Callable, Dict, Iterable, Optional, Tuple, Union

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..utils.devices import device_name, resolve_device
from .distributed import wrap
from .loop import ResumeSpec, fit
from .schedule import warmup_cosine

__all__ = ["fit_classifier", "DIGITAL_RESUME_FORMAT"]

PathLike = Union[str, os.PathLike]
DIGITAL_RESUME_FORMAT = "aihwkit-nabn/train-state/v1"
_RESUME_KEYS = ("epochs", "batch_size", "lr", "momentum", "weight_decay", "nesterov",
                "label_smoothing", "warmup_epochs", "n_train")


def fit_classifier(
    model: nn.Module,
    *,
    epoch_batches: Callable[[int, torch.device], Iterable[Tuple[Tensor, Tensor]]],
    n_train: int,
    evaluate: Callable[[nn.Module, torch.device], float],
    epochs: int,
    batch_size: int = 256,
    lr: float = 0.2,
    momentum: float = 0.9,
    weight_decay: float = 5e-4,
    nesterov: bool = True,
    label_smoothing: float = 0.0,
    warmup_epochs: float = 2.0,
    seed: int = 0,
    device: Any = None,
    data_hparams: Optional[Dict[str, Any]] = None,
    data_resume_keys: Tuple[str, ...] = (),
    log_path: Optional[PathLike] = None,
    resume_path: Optional[PathLike] = None,
    progress: bool = True,
    compile: Union[bool, str] = False,  # pylint: disable=redefined-builtin
    stop_after_epochs: Optional[int] = None,
    max_seconds: Optional[float] = None,
    loss_fn: Optional[Callable[[Tensor, Tensor], Tensor]] = None,
    output_fn: Optional[Callable[[Any], Tensor]] = None,
    eval_key: str = "test_acc",
    train_step: Optional[Callable[[nn.Module, Any, Any], Tuple[Tensor, Optional[Tensor]]]] = None,
    optimizer: Optional[Callable[..., torch.optim.Optimizer]] = None,
    cudnn_benchmark: bool = True,
) -> Dict[str, Any]:
    """Train ``model`` in place with SGD + warmup/cosine LR, testing after every epoch.

    Args:
        model: a freshly initialised classifier; moved to ``device`` (``channels_last`` on CUDA).
        epoch_batches: ``fn(epoch, device)`` yielding that epoch's ``(x, y)`` training batches on
            ``device`` (``n_train // batch_size`` of them, deterministic in ``(seed, epoch)`` so a
            resumed run sees the same data).
        n_train: number of training samples (recorded; the schedule has ``n_train // batch_size`` steps
            per epoch).
        evaluate: ``fn(model, device) -> float``, the test metric after each epoch.
        epochs: total epochs (the schedule spans all of them, also across resumes).
        batch_size, lr, momentum, weight_decay, nesterov, label_smoothing, warmup_epochs: the recipe
            (peak ``lr`` after ``warmup_epochs`` of linear warmup, at most a fifth of the run, then
            cosine to 0 per step; weight decay on all parameters).
        seed: seeds torch's random stream at a fresh start (data order is the task's business).
        device: ``None`` picks CUDA when available.
        data_hparams: the task's data settings recorded with the hyper-parameters (e.g. augmentation);
            ``data_resume_keys`` of them must match on resume.
        log_path, resume_path, progress, stop_after_epochs, max_seconds: see :func:`.loop.fit`.
        compile: wrap the training forward in ``torch.compile`` (True or a mode such as
            ``"reduce-overhead"``); if compiling fails, training warns and continues uncompiled.
        loss_fn: ``loss_fn(logits, y)`` in fp32; default cross-entropy with ``label_smoothing``.
        output_fn: takes the logits out of the model's output (e.g. ``out["out"]``); default: the output.
        eval_key: the name of ``evaluate``'s value in the history records (default ``"test_acc"``).
        train_step: ``fn(model, x, y) -> (loss, logits or None)`` instead of the classifier's forward + loss
            (e.g. a detector, which returns its losses in training mode).
        optimizer: ``fn(params, lr=..., weight_decay=...)`` instead of SGD with ``momentum``/``nesterov``
            (e.g. ``torch.optim.AdamW``); the schedule is the same.
        cudnn_benchmark: cuDNN autotuning on CUDA (default True: fixed input shapes); False for inputs
            whose shape changes from batch to batch.

    Returns:
        dict with ``top1`` (the last test metric), ``history``, ``seconds``, ``epochs``, ``seed``,
        ``hparams``, ``device``, ``torch_version``, ``resumed_from_epoch``, ``epochs_done``, ``finished``.
    """
    if epochs < 1:
        raise ValueError(f"epochs must be >= 1, got {epochs}")
    dev = resolve_device(device)
    cuda = dev.type == "cuda"
    if cuda:
        # Fixed input shapes: let cuDNN pick the fastest kernels (``cudnn_benchmark``); TF32 for any fp32 matmul.
        # Inputs of varying shape (a detector's multi-scale resize) must turn it off: every new shape is
        # autotuned again.
        torch.backends.cudnn.benchmark = cudnn_benchmark
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    steps_per_epoch = max(1, n_train // batch_size)
    data_hparams = dict(data_hparams or {})
    hparams = {
        "epochs": epochs, "batch_size": batch_size, "lr": lr, "momentum": momentum,
        "weight_decay": weight_decay, "nesterov": nesterov, "label_smoothing": label_smoothing,
        "warmup_epochs": warmup_epochs, "schedule": "linear warmup + cosine to 0, per step",
        **data_hparams,
        "precision": "bf16 autocast, channels_last" if cuda else "fp32",
        "n_train": n_train, "steps_per_epoch": steps_per_epoch,
    }
    model.to(dev)
    if cuda:
        model.to(memory_format=torch.channels_last)
    if optimizer is None:
        optimizer = torch.optim.SGD(model.parameters(), lr=lr, momentum=momentum,
                                    weight_decay=weight_decay, nesterov=nesterov)
    else:
        hparams["optimizer"] = getattr(optimizer, "__name__", repr(optimizer))
        optimizer = optimizer(model.parameters(), lr=lr, weight_decay=weight_decay)
    if loss_fn is None:
        def loss_fn(logits: Tensor, y: Tensor) -> Tensor:
            return F.cross_entropy(logits, y, label_smoothing=label_smoothing)
    total_steps = epochs * steps_per_epoch
    # Cap the warmup at a fifth of the run so short runs still anneal to zero.
    warmup_steps = min(total_steps // 5, int(round(warmup_epochs * steps_per_epoch)))
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, warmup_cosine(total_steps, warmup_steps))
    if compile:
        hparams["compile"] = "default" if compile is True else str(compile)
    # Under torchrun: DDP averages the gradients of the ranks' slices of each global batch.
    trained = wrap(model, dev)
    forward = {"fn": torch.compile(trained, mode=None if compile is True else str(compile)) if compile else trained,
               "first": bool(compile)}
    autocast = torch.autocast("cuda", dtype=torch.bfloat16, enabled=cuda)

    def step(x: Tensor, y: Tensor) -> Tuple[Tensor, Tensor]:
        if not cuda:
            x = x.contiguous()
        with autocast:
            if forward["first"]:
                forward["fn"], forward["first"] = first_compiled_call(forward["fn"], model, x), False
            logits = forward["fn"](x)
            if output_fn is not None:
                logits = output_fn(logits)
        return loss_fn(logits.float(), y), logits

    def fresh_start() -> Dict[str, Any]:
        torch.manual_seed(seed)
        return {}

    run = fit(
        model, optimizer, scheduler, epochs=epochs, epoch_batches=lambda epoch: epoch_batches(epoch, dev),
        step=step if train_step is None else (lambda x, y: train_step(trained, x, y)),
        evaluate=lambda: evaluate(model, dev), hparams=hparams, seed=seed, device=dev,
        resume=ResumeSpec(DIGITAL_RESUME_FORMAT, _RESUME_KEYS + tuple(data_resume_keys)),
        save_model=lambda: {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()},
        load_model=lambda state, where: model.load_state_dict(state),
        on_fresh_start=fresh_start, log_path=log_path, resume_path=resume_path,
        stop_after_epochs=stop_after_epochs, max_seconds=max_seconds, progress=progress, desc="train",
        eval_key=eval_key,
    )
    history = run["history"]
    # nothing trained and no history (e.g. stop_after_epochs=0): measure the model as it is
    top1 = history[-1][eval_key] if history else evaluate(model, dev)
    return {
        "top1": top1, "history": history, "seconds": run["seconds"], "epochs": epochs, "seed": seed,
        "hparams": hparams, "device": device_name(dev), "torch_version": str(torch.__version__),
        "resumed_from_epoch": run["resumed_from_epoch"], "epochs_done": run["epochs_done"],
        "finished": run["finished"],
    }


def first_compiled_call(compiled: Any, model: nn.Module, x: Tensor) -> Any:
    """Compile ``compiled`` on a throw-away forward of ``x``; on failure warn and return ``model``.

    Compilation errors surface only at the first forward and backward; a speed-up must never cost the
    run. The trial step's output and gradients are discarded, but its forward updates the BatchNorm
    running statistics once, so the model's state is saved before and put back after.
    """
    saved = {k: v.clone() for k, v in model.state_dict().items()}
    try:
        compiled(x).float().sum().backward()
        return compiled
    except Exception as exc:  # pylint: disable=broad-except
        warnings.warn(f"torch.compile failed ({type(exc).__name__}: {exc}); training uncompiled", RuntimeWarning)
        return model
    finally:
        with torch.no_grad():
            for k, v in model.state_dict().items():
                v.copy_(saved[k])
        for param in model.parameters():
            param.grad = None
