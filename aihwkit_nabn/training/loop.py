"""The one training loop: epochs of steps, a test after each, a JSON-lines log, resumable state, time limits.

Digital and hardware-aware training differ only in how a step computes its loss, how the model's state
is saved and loaded, and what else an epoch records; :func:`fit` takes those as arguments and does the
rest the same way for both: per-epoch log lines, an atomic resumable state after every epoch (model,
optimizer, scheduler, history, random streams), and stopping after ``stop_after_epochs`` or
``max_seconds`` so that a long run can be split over time-limited jobs and resumed exactly.
"""

from __future__ import annotations

import json
import math
import os
import time
from pathlib import Path
from typing import Any, Callable, Dict, Iterable, Optional, Tuple, Union

import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from ..errors import CheckpointError
from ..utils.io import atomic_save
from ..utils.cuda_graph import eager_update
from .distributed import is_main, shard

__all__ = ["fit", "load_resume_state", "ResumeSpec"]

PathLike = Union[str, os.PathLike]
StepFn = Callable[[Any, Any], Tuple[Tensor, Optional[Tensor]]]
_STATE_KEYS = ("format", "epoch", "model", "optimizer", "scheduler", "history", "seconds", "seed", "hparams",
               "extra", "rng_cpu", "rng_cuda")


class ResumeSpec:
    """What identifies a run's resumable state: its format tag, the settings that must match, and names.

    ``keys`` are the hyper-parameters that must equal the saved ones (and the seed); values of ``opaque``
    keys are shown as ``<differs>`` in the error (e.g. a whole rpu_config).
    """

    def __init__(self, fmt: str, keys: Tuple[str, ...], what: str = "training state", opaque: Tuple[str, ...] = ()):
        self.fmt, self.keys, self.what, self.opaque = fmt, keys, what, opaque


def load_resume_state(path: Path, hparams: Dict[str, Any], seed: int, spec: ResumeSpec) -> Dict[str, Any]:
    """Load a resumable training state (``weights_only=True``) and check it belongs to this run.

    Returns the state dict.

    Raises:
        CheckpointError: unreadable file, another format, or other settings (named in the message).
    """
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise CheckpointError(
            f"cannot read {spec.what} {str(path)!r} ({type(exc).__name__}); delete it to start afresh"
        ) from None
    if not isinstance(state, dict) or state.get("format") != spec.fmt:
        raise CheckpointError(f"{str(path)!r} is not an aihwkit-nabn {spec.what}")
    diff = {k: (state["hparams"].get(k), hparams[k]) for k in spec.keys if state["hparams"].get(k) != hparams[k]}
    if state.get("seed") != seed:
        diff["seed"] = (state.get("seed"), seed)
    if diff:
        shown = {k: ("<differs>" if k in spec.opaque else v) for k, v in diff.items()}
        raise CheckpointError(
            f"{spec.what} {str(path)!r} was made with other settings "
            f"(saved vs now: {shown}); delete it or pass a different resume_path"
        )
    return state


def fit(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    *,
    epochs: int,
    epoch_batches: Callable[[int], Iterable[Tuple[Tensor, Tensor]]],
    step: StepFn,
    evaluate: Callable[[], float],
    hparams: Dict[str, Any],
    seed: int,
    device: torch.device,
    resume: ResumeSpec,
    save_model: Callable[[], Dict[str, Tensor]],
    load_model: Callable[[Dict[str, Tensor], str], None],
    on_fresh_start: Callable[[], Dict[str, Any]] = dict,
    epoch_extras: Callable[[], Dict[str, Any]] = dict,
    log_path: Optional[PathLike] = None,
    resume_path: Optional[PathLike] = None,
    stop_after_epochs: Optional[int] = None,
    max_seconds: Optional[float] = None,
    progress: bool = True,
    desc: str = "train",
    eval_key: str = "test_acc",
    epoch_end: Optional[Callable[[Dict[str, Any]], bool]] = None,
    update: Optional[StepFn] = None,
) -> Dict[str, Any]:
    """Train ``model`` for the epochs not yet done; return what happened.

    Each epoch: ``model.train()``, then for every ``(x, y)`` of ``epoch_batches(epoch)``:
    ``loss, logits = step(x, y)`` (``logits`` may be None: no accuracy then), ``zero_grad``, ``backward``, ``optimizer.step()``,
    ``scheduler.step()``, with loss and accuracy summed on the device (no host sync inside the epoch; the
    accuracy is ``logits.argmax(1) == y`` over every label: per image, or per pixel for dense prediction);
    then ``evaluate()`` (the evaluation metric), a record ``{epoch, train_loss, train_acc, <eval_key>, lr,
    **epoch_extras(), epoch_seconds, seconds}`` appended to the history and to ``log_path`` (one JSON
    line), and, with ``resume_path``, the whole state saved atomically. ``epoch_end(record)``, if given, runs
    before the record is written (e.g. a validation-driven schedule); when it returns True the record gets
    ``"stopped": True`` and training ends there, finished (a resumed run that had stopped trains no more).
    ``update(x, y) -> (loss, logits)``, if given, replaces ``step``, ``zero_grad``, ``backward`` and
    ``optimizer.step()`` (e.g. a :class:`~aihwkit_nabn.utils.cuda_graph.GraphedStep`, the same update replayed from a CUDA graph).

    Resume: if ``resume_path`` exists it is checked against ``hparams``/``seed`` (:func:`load_resume_state`)
    and the model (``load_model(state["model"], where)``), optimizer, scheduler, history, seconds and random
    streams are restored, as are the keys ``on_fresh_start`` returned when the run started (e.g. the
    number of range-initialisation batches). Otherwise ``on_fresh_start()`` runs before the first epoch and
    its dict is saved with every state. The log is truncated on a fresh start and appended on resume.

    Raises:
        FloatingPointError: the training loss of an epoch is NaN or infinite.
        CheckpointError: a resume state from another run (see :func:`load_resume_state`).

    Returns:
        dict with ``history``, ``seconds`` (including earlier resumed parts), ``epochs_done``,
        ``finished``, ``stopped`` (``epoch_end`` ended it), ``resumed_from_epoch`` and ``extra`` (the
        ``on_fresh_start`` dict).
    """
    cuda = device.type == "cuda"
    start_epoch, history, prior_seconds = 0, [], 0.0
    resume_file = Path(resume_path) if resume_path is not None else None
    if resume_file is not None and resume_file.exists():
        state = load_resume_state(resume_file, hparams, seed, resume)
        load_model(state["model"], f"{resume.what} {str(resume_file)!r}")
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        start_epoch, history = int(state["epoch"]), list(state["history"])
        prior_seconds = float(state["seconds"])
        # States written before the loop was shared kept these keys at the top level.
        extra = dict(state["extra"]) if "extra" in state else {k: v for k, v in state.items() if k not in _STATE_KEYS}
        torch.set_rng_state(state["rng_cpu"])
        if cuda and state.get("rng_cuda") is not None:
            torch.cuda.set_rng_state(state["rng_cuda"], device)
    else:
        extra = on_fresh_start()
    resumed_from = start_epoch
    stopped = bool(history) and bool(history[-1].get("stopped"))

    main = is_main()  # under torchrun only rank 0 writes; every rank resumes from the same state
    log_file = Path(log_path) if log_path is not None and main else None
    if log_file is not None:
        log_file.parent.mkdir(parents=True, exist_ok=True)
        if start_epoch == 0:
            log_file.write_text("")  # fresh run: do not mix with an old log

    t_start = time.perf_counter()
    bar = tqdm(range(start_epoch, epochs if not stopped else start_epoch), initial=start_epoch, total=epochs,
               desc=desc, disable=not progress, dynamic_ncols=True)
    for epoch in bar:
        t_epoch = time.perf_counter()
        model.train()
        loss_sum = torch.zeros((), device=device)
        correct = torch.zeros((), dtype=torch.int64, device=device)
        seen = labels = 0
        for x, y in epoch_batches(epoch):
            x, y = shard(x, y)  # under torchrun: this rank's slice of the global batch
            if update is None:
                loss, logits = eager_update(step, optimizer, x, y)
            else:
                loss, logits = update(x, y)
            scheduler.step()
            # Accumulate on the device: no host sync inside the epoch.
            loss_sum += loss.detach() * len(y)
            seen += len(y)
            if logits is not None:  # a detector's step returns losses only: no accuracy
                correct += (logits.detach().argmax(1) == y).sum()
                labels += y.numel()  # one per image; per pixel for dense prediction
        train_loss = loss_sum.item() / seen
        if not math.isfinite(train_loss):
            raise FloatingPointError(f"training diverged in epoch {epoch + 1} (loss {train_loss}); lower the lr")
        test_acc = evaluate()
        record = {
            "epoch": epoch + 1,
            "train_loss": train_loss,
            "train_acc": 100.0 * correct.item() / labels if labels else None,
            eval_key: test_acc,
            "lr": optimizer.param_groups[0]["lr"],
            **epoch_extras(),
            "epoch_seconds": time.perf_counter() - t_epoch,
            "seconds": prior_seconds + time.perf_counter() - t_start,
        }
        if epoch_end is not None and epoch_end(record):
            record["stopped"] = stopped = True
        history.append(record)
        if log_file is not None:
            with open(log_file, "a") as f:
                f.write(json.dumps(record) + "\n")
        if resume_file is not None and main:
            atomic_save({
                "format": resume.fmt, "epoch": epoch + 1, "model": save_model(),
                "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                "history": history, "seconds": record["seconds"], "seed": seed, "hparams": hparams,
                "extra": extra, "rng_cpu": torch.get_rng_state(),
                "rng_cuda": torch.cuda.get_rng_state(device) if cuda else None,
            }, resume_file)
        bar.set_postfix(loss=f"{train_loss:.3f}", test=f"{test_acc:.2f}")
        done_here = epoch + 1 - resumed_from
        if stopped or (stop_after_epochs is not None and done_here >= stop_after_epochs) or (
            max_seconds is not None and time.perf_counter() - t_start >= max_seconds
        ):
            break
    bar.close()
    epochs_done = history[-1]["epoch"] if history else start_epoch
    return {
        "history": history,
        "seconds": prior_seconds + time.perf_counter() - t_start,
        "epochs_done": epochs_done,
        "finished": epochs_done >= epochs or stopped,
        "stopped": stopped,
        "resumed_from_epoch": resumed_from,
        "extra": extra,
    }
