"""BatchNorm-only fine-tuning on the chip (Bhattacharjee et al. 2023, arXiv:2305.18416).

Only the BatchNorm layers adapt to the chip: their statistics are re-estimated (:func:`calibrate_bn`)
and/or their affine parameters (gamma, beta) are trained by gradient descent on a few labeled samples,
through the model's own forward pass: for an aihwkit model, its programmed and drifted analog tiles in
inference mode, with drift compensation and no training noise. Every other parameter, every buffer and
every analog tile weight is frozen and comes back bit-identical.

Never call ``model.train()`` on an analog model to do this: aihwkit tiles in training mode add training
noise and skip drift compensation, so the BN layers would adapt to a chip that is not the deployed one.
"""

from __future__ import annotations

import math
from collections.abc import Iterator as IteratorABC
from contextlib import contextmanager
from typing import Any, Callable, Dict, Iterable, Iterator, List, Optional, Tuple, Union

import torch
from torch import nn
from tqdm.auto import tqdm

from ..errors import BatchNormConfigError, CalibrationDataError, FineTuneError
from ..utils.cuda_graph import GraphedStep, eager_update
from ..utils.batches import (
    InputFn,
    TargetFn,
    as_batches,
    batch_input,
    batch_target,
    input_size,
    model_device,
    take_samples,
    to_device,
)
from .calibrate import ForwardFn, calibrate_bn
from .layers import LayerSelector, find_bn_layers
from .snapshot import BNSnapshot, snapshot_bn

__all__ = [
    "finetune_bn",
    "finetuned_bn",
    "bn_parameters",
    "freeze_all_but_bn",
    "bn_optimizer",
    "FrozenModel",
]

OptimizerSpec = Union[str, Callable[..., torch.optim.Optimizer]]

#: What ``finetune_bn(train=...)`` adapts: affine parameters, running statistics, or both.
TRAIN_MODES = ("affine", "stats", "both")
_OPTIMIZERS = {"adam": torch.optim.Adam, "adamw": torch.optim.AdamW, "sgd": torch.optim.SGD}
# calibrate_bn options finetune_bn passes on; layers/input_fn/forward_fn/... it sets itself.
_CALIB_OPTIONS = ("num_samples", "num_batches", "mode", "blend_weight", "input_key", "batch_size")


def bn_parameters(model: nn.Module, train: str = "affine", layers: LayerSelector = None) -> List[Dict[str, Any]]:
    """Return the BatchNorm affine parameters of ``model`` as torch optimizer param groups.

    ``train`` is ``"affine"`` (gamma and beta), ``"weight"`` (gamma only) or ``"bias"`` (beta only).
    The groups are ``{"name": "bn_weight" | "bn_bias", "params": [...]}`` (empty ones left out), so a
    weight decay or learning rate can be set per group. Raises :class:`NoBatchNormError` without BN
    layers and :class:`BatchNormConfigError` if the selected layers have no affine parameters.
    """
    kinds = {"affine": ("weight", "bias"), "weight": ("weight",), "bias": ("bias",)}
    if train not in kinds:
        raise ValueError(
            f"train must be 'affine', 'weight' or 'bias' for bn_parameters, got {train!r} "
            "(running statistics are buffers, not parameters: use calibrate_bn for them)"
        )
    selected = find_bn_layers(model, layers, require_running_stats=False)
    groups = []
    for kind in kinds[train]:
        params = [getattr(m, kind) for m in selected.values() if isinstance(getattr(m, kind, None), nn.Parameter)]
        if params:
            groups.append({"name": f"bn_{kind}", "params": params})
    if not groups:
        raise BatchNormConfigError(
            f"BatchNorm layers {list(selected)} have no affine parameters (affine=False): nothing to train; "
            "use calibrate_bn / train='stats' for their statistics"
        )
    return groups


class FrozenModel:
    """Handle of :func:`freeze_all_but_bn`: :meth:`remove` (or leaving the ``with`` block) undoes it.

    ``parameters`` holds the BN parameters left trainable; ``param_groups`` holds them as
    :func:`bn_parameters` groups.
    """

    def __init__(self, model: nn.Module, param_groups: List[Dict[str, Any]], eval_mode: bool):
        self.model = model
        self.param_groups = param_groups
        self.parameters = [p for g in param_groups for p in g["params"]]
        self._flags = [(p, p.requires_grad) for p in model.parameters()]
        self._modes = [(m, m.training) for m in model.modules()] if eval_mode else []
        self._removed = False
        for param, _ in self._flags:
            param.requires_grad_(False)
        for param in self.parameters:
            param.requires_grad_(True)
        if eval_mode:
            # Never model.train(): aihwkit tiles would add training noise and drop drift compensation.
            model.eval()

    def remove(self) -> None:
        """Put back every ``requires_grad`` and (if changed) ``training`` flag exactly; idempotent."""
        if self._removed:
            return
        self._removed = True
        for param, flag in self._flags:
            param.requires_grad_(flag)
        for module, flag in self._modes:
            module.training = flag

    def __enter__(self) -> "FrozenModel":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.remove()


def freeze_all_but_bn(
    model: nn.Module, layers: LayerSelector = None, *, train: str = "affine", eval_mode: bool = True
) -> FrozenModel:
    """Freeze every parameter of ``model`` except the selected BN affine parameters; return the handle.

    A drop-in for a user's own training loop::

        with nb.freeze_all_but_bn(model) as frozen:
            opt = torch.optim.Adam(frozen.param_groups, lr=1e-3)
            ...  # forward, loss.backward(), opt.step()

    With ``eval_mode`` (default) the whole model is put in eval mode, so analog tiles run as deployed
    and BN layers normalise with their running statistics while gamma/beta train; never call
    ``model.train()`` inside. ``handle.remove()`` (or leaving the ``with`` block) restores every
    ``requires_grad`` flag and, with ``eval_mode``, every ``training`` flag exactly. ``train`` and
    ``layers`` are as in :func:`bn_parameters`.
    """
    return FrozenModel(model, bn_parameters(model, train, layers), eval_mode)


def _resolve_optimizer(optimizer: OptimizerSpec, lr: float) -> Callable[..., torch.optim.Optimizer]:
    """Return the optimizer class or factory named by ``optimizer``; raise ``ValueError`` for a bad spec or lr."""
    if isinstance(lr, bool) or not isinstance(lr, (int, float)) or not 0 < lr < math.inf:
        raise ValueError(f"lr must be a finite number > 0, got {lr!r}")
    if isinstance(optimizer, str):
        if optimizer.lower() not in _OPTIMIZERS:
            raise ValueError(f"unknown optimizer {optimizer!r}: use one of {sorted(_OPTIMIZERS)} or a factory")
        return _OPTIMIZERS[optimizer.lower()]
    if not callable(optimizer):
        raise ValueError(f"optimizer must be a name or a factory fn(params, lr=...), got {optimizer!r}")
    return optimizer


def _make_optimizer(
    param_groups: List[Dict[str, Any]], optimizer: OptimizerSpec, lr: float, **kwargs: Any
) -> torch.optim.Optimizer:
    """Return ``optimizer`` (a name or a factory ``fn(params, lr=..., **kwargs)``) over ``param_groups``."""
    return _resolve_optimizer(optimizer, lr)(param_groups, lr=lr, **kwargs)


def bn_optimizer(
    model: nn.Module,
    lr: float = 1e-3,
    *,
    train: str = "affine",
    layers: LayerSelector = None,
    optimizer: OptimizerSpec = "adam",
    **optimizer_kwargs: Any,
) -> torch.optim.Optimizer:
    """Return a torch optimizer (``"adam"``, ``"adamw"``, ``"sgd"`` or a factory) over BN parameters only.

    Parameters outside BatchNorm are not in the optimizer, so ``step()`` cannot change them; combine
    with :func:`freeze_all_but_bn` so no gradient is computed for them either.
    """
    return _make_optimizer(bn_parameters(model, train, layers), optimizer, lr, **optimizer_kwargs)


def _labeled_batches(
    data: Iterable[Any], input_fn: Optional[InputFn], target_fn: Optional[TargetFn], max_samples: Optional[int]
) -> Iterator[Tuple[Any, Any, int, bool]]:
    """Yield ``(inputs, targets, n, first_pass)`` forever, cycling over ``data``.

    Each pass stops after ``max_samples`` samples (the last batch cut). A one-shot iterator cannot be
    read twice, so its first pass is kept and replayed. Raises :class:`CalibrationDataError` if a pass
    yields nothing.
    """
    data = as_batches(data)
    cache: Optional[List[Tuple[Any, Any, int]]] = [] if isinstance(data, IteratorABC) else None
    first = True

    def one_pass() -> Iterator[Tuple[Any, Any, int]]:
        seen = 0
        for batch in data:
            inputs, targets = batch_input(batch, input_fn), batch_target(batch, target_fn)
            n = input_size(inputs)
            if max_samples is not None and seen + n > max_samples:
                n = max_samples - seen
                inputs, targets = take_samples(inputs, n), take_samples(targets, n)
            if n == 0:
                continue
            yield inputs, targets, n
            seen += n
            if max_samples is not None and seen >= max_samples:
                return

    while True:
        count = 0
        for item in one_pass() if first or cache is None else cache:
            if first and cache is not None:
                cache.append(item)
            count += 1
            yield (*item, first)
        if count == 0:
            raise CalibrationDataError(
                "the fine-tuning data yielded no labeled samples"
                if first
                else "the fine-tuning data yielded nothing on its second pass: pass a re-iterable (list, DataLoader)"
            )
        first = False


def _check_loss(loss: Any, step: int) -> torch.Tensor:
    """Return ``loss`` if it is a one-element tensor that depends on the BN parameters; else raise."""
    if not isinstance(loss, torch.Tensor):
        raise FineTuneError(f"loss_fn returned {type(loss).__name__} at step {step}, expected a scalar tensor")
    if loss.numel() != 1:
        raise FineTuneError(
            f"loss_fn returned a tensor of shape {tuple(loss.shape)} at step {step}, expected a scalar "
            "(use reduction='mean' or 'sum')"
        )
    if not loss.requires_grad:
        raise FineTuneError(
            f"the loss at step {step} does not depend on any BatchNorm parameter (no gradient): does "
            "forward_fn or loss_fn run under torch.no_grad() or detach the output?"
        )
    return loss.reshape(())


def finetune_bn(
    model: nn.Module,
    data: Iterable[Any],
    *,
    loss_fn: Optional[Callable[[Any, Any], torch.Tensor]] = None,
    steps: int = 200,
    lr: float = 1e-3,
    train: str = "both",
    layers: LayerSelector = None,
    optimizer: OptimizerSpec = "adam",
    labeled_samples: Optional[int] = None,
    input_fn: Optional[InputFn] = None,
    target_fn: Optional[TargetFn] = None,
    forward_fn: Optional[ForwardFn] = None,
    calib_data: Optional[Union[torch.Tensor, Iterable[Any]]] = None,
    calib_input_fn: Optional[InputFn] = None,
    calib_forward_fn: Optional[ForwardFn] = None,
    move_to_device: bool = True,
    progress: bool = False,
    cuda_graph: bool = False,
    **calib_kwargs: Any,
) -> BNSnapshot:
    """Adapt only the BatchNorm layers of ``model`` to its own (noisy, drifted) forward pass.

    * ``train="affine"``: gamma and beta of the selected BN layers are trained for ``steps`` optimizer
      steps on labeled batches of ``data`` (cycled if it has fewer batches than ``steps``). The whole
      model stays in eval mode: analog tiles run as deployed and BN layers normalise with their
      running statistics, which do not change. Only ``requires_grad`` flags change during the call.
    * ``train="stats"``: exactly :func:`calibrate_bn` on ``calib_data`` (default: the inputs of ``data``).
    * ``train="both"`` (the recipe of Bhattacharjee et al.): first ``calibrate_bn``, then ``"affine"``
      with the calibrated statistics.

    Every other parameter is frozen (``requires_grad=False``) and not given to the optimizer, so all
    non-BN parameters, buffers and analog tile weights stay bit-identical; ``requires_grad``,
    ``training`` flags and the BN parameters' ``.grad`` are restored exactly afterwards.

    Args:
        model: any ``nn.Module`` with BatchNorm layers, analog (aihwkit tiles whose forward is
            differentiable, e.g. ``TorchInferenceRPUConfig``) or digital.
        data: labeled batches: a ``DataLoader``/iterable of ``(input, target, ...)`` tuples or dicts, e.g.
            ``nb.TensorBatches(x, y)``; a small subset of the training split, never test data.
        loss_fn: ``loss_fn(outputs, targets) -> scalar tensor``; default ``nn.CrossEntropyLoss()``.
        steps: optimizer steps (one batch each) for the affine parameters.
        lr: learning rate (Adam's 1e-3 by default: gamma/beta are O(1) and few).
        train: ``"affine"``, ``"stats"`` or ``"both"`` (see above).
        layers: which BN layers to adapt: ``None`` (all), qualified names, or ``fn(name, module)``.
        optimizer: ``"adam"``, ``"adamw"``, ``"sgd"`` or a factory ``fn(param_groups, lr=...)``,
            e.g. ``functools.partial(torch.optim.SGD, momentum=0.9)``.
        labeled_samples: use only the first this many samples of ``data`` (``None``: all of it).
        input_fn / target_fn: how to take input and target out of a batch (default ``batch[0]``,
            ``batch[1]``; dict batches by key, see :data:`~aihwkit_nabn.utils.batches.DEFAULT_TARGET_KEYS`).
        forward_fn: ``fn(model, inputs)`` to call the model (used for calibration too).
        calib_data: unlabeled data for the statistics (``"stats"``/``"both"``); default: ``data``.
        calib_input_fn: how to take the input out of a ``calib_data`` batch (default: ``input_fn``
            when calibrating on ``data``, automatic otherwise).
        calib_forward_fn: ``fn(model, inputs)`` for the calibration passes (default: ``forward_fn``), for
            models whose training call differs from their inference call (a detector's losses vs its boxes).
        move_to_device: move inputs and targets to the model's device first.
        progress: show progress bars.
        cuda_graph: on CUDA, replay each step's forward and backward from a CUDA graph
            (:class:`~aihwkit_nabn.utils.cuda_graph.GraphedStep`, mode ``on``; the optimizer step and the checks stay
            eager): the same updates with far fewer kernel launches from Python. Only batches whose input and target
            are single tensors of the first graphed batch's shape are replayed (others run eagerly); the model and
            ``loss_fn`` must be capturable (no host synchronisation), else the steps stay eager after a warning.
        **calib_kwargs: passed to :func:`calibrate_bn`: ``num_samples``, ``num_batches``, ``mode``,
            ``blend_weight``, ``input_key``, ``batch_size``.

    Returns:
        A :class:`BNSnapshot` of the selected BN layers (statistics and affine parameters) from *before*
        the call; ``restore_bn(model, snapshot)`` undoes it exactly. ``snapshot.info`` records ``train``,
        ``steps``, ``labeled_samples`` (distinct labeled samples used), ``labeled_samples_seen`` (with
        repeats), ``unlabeled_samples`` (calibration), ``trained_params`` (number of scalar parameters
        trained), ``initial_loss``, ``final_loss`` (loss of the first and last step, before their
        update), ``losses`` (every step) and ``calibration`` (``calibrate_bn``'s info, or ``None``).

    Raises:
        NoBatchNormError, BatchNormConfigError: no (selected) BN layer, or none with affine parameters.
        CalibrationDataError: empty data, a batch without a target, or a calibration data problem.
        FineTuneError: a non-scalar, NaN/Inf or gradient-free loss, NaN/Inf gradients, or a selected BN
            layer that gets no gradient. On any error the BN state before the call is restored.
        ValueError: bad ``train``, ``steps``, ``lr`` or ``optimizer``; calibration options with ``"affine"``.
        TypeError: an unknown keyword (not one of the calibration options).
    """
    if train not in TRAIN_MODES:
        raise ValueError(f"train must be one of {TRAIN_MODES}, got {train!r}")
    unknown = sorted(set(calib_kwargs) - set(_CALIB_OPTIONS))
    if unknown:
        raise TypeError(f"finetune_bn got unexpected options {unknown}; calibration options are {list(_CALIB_OPTIONS)}")
    if not isinstance(cuda_graph, bool):
        raise ValueError(f"cuda_graph must be True or False, got {cuda_graph!r}")
    if train == "affine" and (calib_kwargs or calib_data is not None):
        raise ValueError("calibration options (calib_data, num_samples, ...) need train='stats' or 'both'")
    if train != "stats":
        if isinstance(steps, bool) or not isinstance(steps, int) or steps <= 0:
            raise ValueError(f"steps must be a positive integer, got {steps!r}")
        if labeled_samples is not None and (not isinstance(labeled_samples, int) or labeled_samples <= 0):
            raise CalibrationDataError(f"labeled_samples must be a positive integer, got {labeled_samples!r}")
        groups = bn_parameters(model, "affine", layers)  # fails early on a model without BN
        _resolve_optimizer(optimizer, lr)  # bad settings fail before anything is changed
    snapshot = snapshot_bn(model, list(find_bn_layers(model, layers, require_running_stats=False)))
    calibration = None
    if train != "affine":
        calib_snapshot = calibrate_bn(
            model,
            data if calib_data is None else calib_data,
            layers=layers,
            input_fn=calib_input_fn if calib_input_fn is not None or calib_data is not None else input_fn,
            forward_fn=forward_fn if calib_forward_fn is None else calib_forward_fn,
            move_to_device=move_to_device,
            progress=progress,
            **calib_kwargs,
        )
        calibration = calib_snapshot.info
    record = {"steps": 0, "labeled_samples": 0, "labeled_samples_seen": 0, "trained_params": 0,
              "initial_loss": None, "final_loss": None, "losses": []}
    if train != "stats":
        try:
            _train_affine(model, data, groups, record, loss_fn=loss_fn or nn.CrossEntropyLoss(), steps=steps,
                          lr=lr, optimizer=optimizer, labeled_samples=labeled_samples, input_fn=input_fn,
                          target_fn=target_fn, forward_fn=forward_fn, move_to_device=move_to_device,
                          progress=progress, cuda_graph=cuda_graph)
        except BaseException:
            snapshot.restore(model)
            raise
    snapshot.info = {
        "train": train,
        **record,
        "unlabeled_samples": calibration["samples"] if calibration else 0,
        "lr": lr if train != "stats" else None,
        "layers": snapshot.layer_names,
        "calibration": calibration,
    }
    return snapshot


def _train_affine(
    model: nn.Module,
    data: Iterable[Any],
    groups: List[Dict[str, Any]],
    record: Dict[str, Any],
    *,
    loss_fn: Callable[[Any, Any], torch.Tensor],
    steps: int,
    lr: float,
    optimizer: OptimizerSpec,
    labeled_samples: Optional[int],
    input_fn: Optional[InputFn],
    target_fn: Optional[TargetFn],
    forward_fn: Optional[ForwardFn],
    move_to_device: bool,
    progress: bool,
    cuda_graph: bool = False,
) -> None:
    """Train the parameters in ``groups`` with the model in eval mode; fill ``record`` with what happened."""
    params = [p for g in groups for p in g["params"]]
    # The caller's gradients are set aside (backward would accumulate into them) and put back after.
    saved_grads = [p.grad for p in params]
    device = model_device(model)
    stream = _labeled_batches(data, input_fn, target_fn, labeled_samples)
    at = {"step": 0, "value": math.nan}

    def forward_loss(inputs: Any, targets: Any) -> Tuple[torch.Tensor, None]:
        outputs = model(inputs) if forward_fn is None else forward_fn(model, inputs)
        return _check_loss(loss_fn(outputs, targets), at["step"]), None

    def check(loss: torch.Tensor) -> None:
        # between backward and the optimizer step, eager or replayed: a bad step raises before it updates anything
        if at["step"] == 0:
            _check_all_reached(model, groups)
        grads = [p.grad for p in params if p.grad is not None]
        # One host sync per step: the loss value and whether loss and gradients are finite.
        finite = torch.stack([torch.isfinite(loss.detach()).float()] + [torch.isfinite(g).all().float() for g in grads])
        value, ok = torch.stack([loss.detach().float(), finite.min()]).tolist()
        if not ok:
            what = "loss" if not math.isfinite(value) else "gradient of the BN parameters"
            raise FineTuneError(
                f"non-finite {what} at fine-tuning step {at['step']} (loss {value}); the BatchNorm state "
                "before fine-tuning was restored (check the data, loss_fn, lr and the drift time)"
            )
        at["value"] = value

    graphed: Optional[GraphedStep] = None
    try:
        for param in params:
            param.grad = None
        bar = tqdm(range(steps), desc="finetune_bn", unit="step", disable=not progress, leave=False)
        with FrozenModel(model, groups, eval_mode=True), torch.enable_grad(), bar:
            opt = _make_optimizer(groups, optimizer, lr)
            if cuda_graph and device.type == "cuda":
                graphed = GraphedStep(model, forward_loss, opt, mode="on", before_step=check)
            for step in bar:
                inputs, targets, n, first_pass = next(stream)
                if move_to_device:
                    inputs, targets = to_device(inputs, device), to_device(targets, device)
                at["step"] = step
                if graphed is not None and isinstance(inputs, torch.Tensor) and isinstance(targets, torch.Tensor):
                    graphed(inputs, targets)
                else:
                    eager_update(forward_loss, opt, inputs, targets, check)
                value = at["value"]
                record["losses"].append(value)
                record["labeled_samples_seen"] += n
                if first_pass:
                    record["labeled_samples"] += n
                if progress:
                    bar.set_postfix_str(f"loss {value:.4f}")
    finally:
        stream.close()
        for param, grad in zip(params, saved_grads):
            param.grad = grad
    record.update(steps=steps, trained_params=sum(p.numel() for p in params),
                  initial_loss=record["losses"][0], final_loss=record["losses"][-1])
    if cuda_graph:
        record["graph"] = {"replays": graphed.replays if graphed else 0,
                           "eager_calls": graphed.eager_calls if graphed else steps,
                           "failure": graphed.failure if graphed else "not on CUDA"}


def _check_all_reached(model: nn.Module, groups: List[Dict[str, Any]]) -> None:
    """Raise :class:`FineTuneError` naming the BN parameters the first backward pass did not reach."""
    names = {id(p): n for n, p in model.named_parameters()}
    missed = [names.get(id(p), "?") for g in groups for p in g["params"] if p.grad is None]
    if missed:
        raise FineTuneError(
            f"BatchNorm parameters {missed} got no gradient: their layers are not called by the forward pass "
            "or the loss does not depend on them; exclude them with `layers=`"
        )


@contextmanager
def finetuned_bn(model: nn.Module, data: Iterable[Any], **kwargs: Any) -> Iterator[BNSnapshot]:
    """Fine-tune BatchNorm layers (see :func:`finetune_bn`) for the ``with`` block, then restore them."""
    snapshot = finetune_bn(model, data, **kwargs)
    try:
        yield snapshot
    finally:
        snapshot.restore(model)

