"""Hardware-aware (HWA) fine-tuning of a trained digital model on aihwkit torch tiles, and HWA checkpoints.

:func:`train_hwa` converts a trained digital model with :func:`~aihwkit_nabn.deploy.to_analog`
(accelerated, :class:`~aihwkit_nabn.hwa_preset.TorchHWAPreset` by default), initialises the learned
input ranges from data, then fine-tunes it with aihwkit's ``AnalogSGD`` in training mode (weight
noise on, input ranges and output scales learned, weights remapped and clipped after every step),
with the on-device augmentation of :mod:`aihwkit_nabn.training`. Every epoch it tests top-1 in eval
mode (unprogrammed, no drift), appends a JSON line to ``log_path`` and saves a resumable state.

:func:`save_hwa_checkpoint` writes the result *before any programming* as a plain checkpoint
(``torch.load(weights_only=True)``): the digital-equivalent weights as a registry-model state dict
(so :func:`~aihwkit_nabn.checkpoints.load_checkpoint` reads it as a digital model too), the
learned input range and output scales of every analog tile, the exact analog tensors, and meta.
:func:`load_hwa_model` rebuilds the analog model from it exactly.
"""

from __future__ import annotations

import json
import math
import numbers
import os
import time
from pathlib import Path
from typing import Any, Dict, Iterable, List, Optional, Sequence, Tuple, Union

import torch
import torch.nn.functional as F
from torch import Tensor, nn

import aihwkit
from aihwkit.nn.conversion import convert_to_digital
from aihwkit.optim import AnalogSGD
from aihwkit.simulator.configs import TorchInferenceRPUConfig
from aihwkit.simulator.tiles.module import TileModule

from .checkpoints import _check_plain, _plain, atomic_save, load_checkpoint, load_pretrained, read_checkpoint
from .deploy import has_analog_tiles, to_analog
from .errors import CheckpointError
from .fixes import apply_input_range_fix
from .hwa_preset import TorchHWAPreset, config_fields
from .models.resnet_cifar import create_model, list_models
from .training import (
    DATASET_NAME,
    _device_name,
    _normalize_on,
    _resolve_device,
    _warmup_cosine,
    CUTOUT_SIZE,
    draw_views,
    epoch_batches,
    evaluate_top1,
    load_resume_state,
    training_view,
)

__all__ = [
    "train_hwa",
    "train_hwa_cifar10",
    "init_input_ranges",
    "input_ranges",
    "save_hwa_checkpoint",
    "load_hwa_model",
    "analog_state",
    "load_analog_state",
    "HWA_FORMAT",
]

PathLike = Union[str, os.PathLike]
HWA_FORMAT = "aihwkit-nabn/hwa/v1"
_RESUME_FORMAT = "aihwkit-nabn/hwa-train-state/v1"
_NO_DECAY = ("input_range", "out_scaling_alpha", "analog_ctx")  # learned periphery: no weight decay


# --------------------------------------------------------------------------- analog state


def _named_tiles(model: nn.Module) -> List[Tuple[str, TileModule]]:
    """``(qualified name, tile)`` for every aihwkit tile module of ``model``."""
    return [(n, m) for n, m in model.named_modules() if isinstance(m, TileModule)]


def analog_state(model: nn.Module) -> Dict[str, Tensor]:
    """Return every tensor of ``model.state_dict()`` on the CPU (aihwkit's ``analog_tile_state``
    entries, which hold Python objects, are left out): tile weights, mapping scales, learned output
    scales, input ranges and their init counters, digital biases, BatchNorm state ..."""
    return {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items() if isinstance(v, Tensor)}


def load_analog_state(model: nn.Module, state: Dict[str, Tensor], where: str = "analog state") -> None:
    """Copy :func:`analog_state` tensors into a converted model of the same layout, exactly.

    Also re-registers each tile's weight-gradient hook on the loaded mapping scales (aihwkit
    registers it in ``set_scales``; it divides the gradient by the squared scales), so training
    continues exactly as it would have.

    Raises:
        CheckpointError: if keys or shapes differ (e.g. another tile size or rpu_config).
    """
    own = {k: v for k, v in model.state_dict(keep_vars=True).items() if isinstance(v, Tensor)}
    missing, unexpected = sorted(set(own) - set(state)), sorted(set(state) - set(own))
    shapes = sorted(f"{k}: saved {tuple(state[k].shape)} vs model {tuple(own[k].shape)}"
                    for k in set(own) & set(state) if tuple(state[k].shape) != tuple(own[k].shape))
    if missing or unexpected or shapes:
        raise CheckpointError(
            f"{where} does not match the converted model (another rpu_config / tile layout?): "
            f"missing {missing[:5]}{'...' if len(missing) > 5 else ''}, "
            f"unexpected {unexpected[:5]}{'...' if len(unexpected) > 5 else ''}, shapes {shapes[:5]}"
        )
    with torch.no_grad():
        for key, tensor in own.items():
            tensor.copy_(state[key])
        for _, tile in _named_tiles(model):
            mapping = tile.get_mapping_scales() if hasattr(tile, "get_mapping_scales") else None
            if mapping is None or not hasattr(tile, "set_scales"):
                continue
            alpha = tile.get_learned_out_scales()
            alpha = None if alpha is None else alpha.detach().clone()
            tile.set_scales(mapping.detach().clone())  # resets the learned scales to 1 ...
            if alpha is not None:
                tile.set_learned_out_scales(alpha)  # ... so put them back


def input_ranges(model: nn.Module) -> Dict[str, float]:
    """Return ``{tile name: input range}`` for every tile with an input range."""
    return {n: float(t.input_range.detach().reshape(-1)[0])
            for n, t in _named_tiles(model) if getattr(t, "input_range", None) is not None}


@torch.no_grad()
def init_input_ranges(model: nn.Module, images: Tensor, *, batch_size: int = 128, seed: int = 0,
                      device: Any = None, cutout_size: int = CUTOUT_SIZE) -> int:
    """Initialise the input ranges from data with aihwkit's own ``init_from_data`` mechanism.

    aihwkit updates a tile's range from its first ``pre_post.input_range.init_from_data`` training
    batches (moving average of ``init_std_alpha`` x the input std). This runs those batches before
    training: random training images (uint8 ``[N, 3, H, W]``, seeded by ``seed``) augmented like
    training batches (:func:`~aihwkit_nabn.training.training_view`, Cutout of ``cutout_size``), tiles
    in training mode, every other module (BatchNorm!) in eval mode, no gradients. Tiles already
    initialised (e.g. on resume) are not touched again.

    Returns:
        the number of batches run (0 if every range was already initialised).
    """
    tiles = [t for _, t in _named_tiles(model) if getattr(t, "input_range", None) is not None]
    need = max([int(t.rpu_config.pre_post.input_range.init_from_data - t.input_range_update_idx.item())
                for t in tiles] + [0])
    if need == 0:
        return 0
    device = torch.device(device) if device is not None else next(model.parameters()).device
    gen = torch.Generator().manual_seed(seed * 1_000_003 - 1)  # apart from the per-epoch streams
    was_training = model.training
    model.eval()
    for tile in tiles:
        tile.train()
    try:
        for _ in range(need):
            # augmented like the training batches that aihwkit would initialise the ranges from
            idx = torch.randint(0, len(images), (min(batch_size, len(images)),), generator=gen)
            shifts, flips, centers = (t.to(device) for t in draw_views(len(idx), gen, tuple(images.shape[-2:])))
            model(_normalize_on(training_view(images[idx].to(device), shifts, flips, centers,
                                              cutout_size)).contiguous())
    finally:
        model.train(was_training)
    return need


# --------------------------------------------------------------------------- training


def _param_groups(model: nn.Module, weight_decay: float) -> List[Dict[str, Any]]:
    """Weight decay on weights, BN and biases; none on learned input ranges / output scales."""
    decay: List[nn.Parameter] = []
    no_decay: List[nn.Parameter] = []
    for name, param in model.named_parameters():
        (no_decay if any(part in name for part in _NO_DECAY) else decay).append(param)
    groups = [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return [g for g in groups if g["params"]]


def _check_args(epochs: int, batch_size: int, lr: float, max_seconds: Optional[float],
                images: Sequence[Tensor], labels: Sequence[Tensor]) -> None:
    """Raise ``ValueError``/``TypeError`` naming the first bad argument."""
    if isinstance(epochs, bool) or not isinstance(epochs, numbers.Integral) or epochs < 1:
        raise ValueError(f"epochs must be an integer >= 1, got {epochs!r}")
    if isinstance(batch_size, bool) or not isinstance(batch_size, numbers.Integral) or batch_size < 1:
        raise ValueError(f"batch_size must be an integer >= 1, got {batch_size!r}")
    if isinstance(lr, bool) or not (isinstance(lr, numbers.Real) and math.isfinite(lr) and lr > 0):
        raise ValueError(f"lr must be a finite number > 0, got {lr!r}")
    if max_seconds is not None and not max_seconds > 0:
        raise ValueError(f"max_seconds must be > 0 (or None), got {max_seconds!r}")
    for name, x, y in zip(("train", "test"), images, labels):
        if not isinstance(x, Tensor) or x.dtype != torch.uint8 or x.dim() != 4:
            raise TypeError(f"{name} images must be a uint8 [N, 3, H, W] tensor, got "
                            f"{getattr(x, 'dtype', type(x).__name__)} {tuple(getattr(x, 'shape', ()))}")
        if len(x) != len(y):
            raise ValueError(f"{len(x)} {name} images but {len(y)} labels")
        if len(x) == 0:
            raise ValueError(f"no {name} images")


def train_hwa(
    digital_model: nn.Module,
    train_images: Tensor,
    train_labels: Tensor,
    test_images: Tensor,
    test_labels: Tensor,
    *,
    epochs: int,
    rpu_config: Optional[TorchInferenceRPUConfig] = None,
    lr: float = 0.02,
    momentum: float = 0.9,
    weight_decay: float = 1e-4,
    nesterov: bool = True,
    batch_size: int = 128,
    cutout_size: int = CUTOUT_SIZE,
    seed: int = 0,
    device: Any = None,
    digital_layers: Iterable[str] = (),
    max_seconds: Optional[float] = None,
    stop_after_epochs: Optional[int] = None,
    log_path: Optional[PathLike] = None,
    resume_path: Optional[PathLike] = None,
    progress: bool = True,
) -> Dict[str, Any]:
    """Fine-tune an analog copy of ``digital_model`` hardware-aware; ``digital_model`` is not modified.

    Applies :func:`~aihwkit_nabn.fixes.apply_input_range_fix` (needed on torch >= 2.14), converts
    with ``to_analog(accelerate=True)``, moves to ``device``, runs :func:`init_input_ranges`, then
    trains ``epochs`` epochs with ``AnalogSGD`` (cosine learning rate to 0 over all steps, per step)
    on training images augmented like the digital training (crop, flip, Cutout; :mod:`aihwkit_nabn.training`).
    fp32 throughout (no autocast: the analog simulation stays exact).

    Args:
        digital_model: a trained digital classifier (e.g. from ``load_checkpoint``).
        train_images, test_images: uint8 ``[N, 3, H, W]``; train_labels, test_labels: int ``[N]``.
        epochs: total epochs (the schedule spans all of them, also across resumes).
        rpu_config: a ``TorchInferenceRPUConfig``; default :class:`TorchHWAPreset`.
        lr, momentum, weight_decay, nesterov: SGD settings (no weight decay on input ranges and
            learned output scales).
        batch_size: images per step; the last incomplete batch of each epoch is dropped.
        cutout_size: side of the Cutout square (0: crop and flip only), as in the digital training.
        seed: fixes conversion, range initialisation, data order, augmentation and noise.
        device: None = CUDA if available else CPU.
        digital_layers: Conv/Linear layers to keep digital (e.g. ``["conv1", "fc"]``).
        max_seconds, stop_after_epochs: stop early after an epoch (``finished=False``); call
            again with the same ``resume_path`` to continue.
        log_path: JSON-lines file, one line per epoch (truncated on a fresh start).
        resume_path: training state saved atomically after every epoch (plain, ``weights_only``);
            if it exists at the start, training continues from it (settings must match).
        progress: show a tqdm bar over epochs.

    Returns:
        dict with ``model`` (the analog model, eval mode, unprogrammed), ``top1`` (test top-1 in %,
        eval mode, unprogrammed, no drift, after the last epoch), ``history``, ``seconds``,
        ``epochs``, ``epochs_done``, ``finished``, ``resumed_from_epoch``, ``seed``, ``hparams``,
        ``device``, ``torch_version``, ``aihwkit_version``, ``preset``, ``input_range_fix``,
        ``input_ranges`` and ``init_batches``.
    """
    # pylint: disable=too-many-arguments, too-many-locals, too-many-statements
    from tqdm.auto import tqdm  # pylint: disable=import-outside-toplevel

    _check_args(epochs, batch_size, lr, max_seconds, (train_images, test_images), (train_labels, test_labels))
    if not isinstance(digital_model, nn.Module) or has_analog_tiles(digital_model):
        raise TypeError("digital_model must be a digital torch model (it is converted to analog here)")
    rpu_config = TorchHWAPreset() if rpu_config is None else rpu_config
    if not isinstance(rpu_config, TorchInferenceRPUConfig):
        raise TypeError(f"rpu_config must be a TorchInferenceRPUConfig (torch tiles), got {type(rpu_config).__name__}; "
                        "aihwkit 1.1.0's C++ tiles do not run on the GPU")
    fix_status = apply_input_range_fix()
    dev = _resolve_device(device)
    digital_layers = list(digital_layers)

    n_train = len(train_images)
    steps_per_epoch = max(1, n_train // batch_size)
    hparams = {
        "epochs": epochs, "batch_size": batch_size, "lr": lr, "momentum": momentum,
        "weight_decay": weight_decay, "nesterov": nesterov, "n_train": n_train,
        "steps_per_epoch": steps_per_epoch, "digital_layers": digital_layers,
        "preset": type(rpu_config).__name__, "rpu_config": config_fields(rpu_config),
        "optimizer": "aihwkit AnalogSGD", "schedule": "cosine to 0, per step",
        "augmentation": "random crop (zero pad 4) + horizontal flip"
                        + (f" + cutout {cutout_size}x{cutout_size}" if cutout_size > 0 else ""),
        "cutout_size": cutout_size, "precision": "fp32",
    }

    torch.manual_seed(seed)
    model = to_analog(digital_model, rpu_config, digital_layers=digital_layers, accelerate=True).to(dev)
    optimizer = AnalogSGD(_param_groups(model, weight_decay), lr=lr, momentum=momentum, nesterov=nesterov)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, _warmup_cosine(epochs * steps_per_epoch, 0))

    start_epoch, history, prior_seconds, init_batches = 0, [], 0.0, 0
    resume_file = Path(resume_path) if resume_path is not None else None
    if resume_file is not None and resume_file.exists():
        state = load_resume_state(resume_file, hparams, seed, fmt=_RESUME_FORMAT, what="HWA training state",
                                  keys=("epochs", "batch_size", "lr", "momentum", "weight_decay", "nesterov",
                                        "cutout_size", "n_train", "digital_layers", "rpu_config"),
                                  opaque=("rpu_config",))
        load_analog_state(model, state["model"], f"training state {str(resume_file)!r}")
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        start_epoch, history = int(state["epoch"]), list(state["history"])
        prior_seconds, init_batches = float(state["seconds"]), int(state["init_batches"])
        torch.set_rng_state(state["rng_cpu"])
        if dev.type == "cuda" and state.get("rng_cuda") is not None:
            torch.cuda.set_rng_state(state["rng_cuda"], dev)
    else:
        init_batches = init_input_ranges(model, train_images, batch_size=batch_size, seed=seed, device=dev,
                                         cutout_size=cutout_size)
    resumed_from = start_epoch

    log_file = Path(log_path) if log_path is not None else None
    if log_file is not None:
        log_file.parent.mkdir(parents=True, exist_ok=True)
        if start_epoch == 0:
            log_file.write_text("")  # fresh run: do not mix with an old log

    x_train, y_train = train_images.to(dev), train_labels.to(dev, dtype=torch.int64)
    x_test, y_test = test_images.to(dev), test_labels.to(dev, dtype=torch.int64)
    t_start = time.perf_counter()
    bar = tqdm(range(start_epoch, epochs), initial=start_epoch, total=epochs,
               desc="hwa", disable=not progress, dynamic_ncols=True)
    for epoch in bar:
        t_epoch = time.perf_counter()
        model.train()  # HWA: weight noise on, input ranges and output scales learned
        loss_sum = torch.zeros((), device=dev)
        correct = torch.zeros((), dtype=torch.int64, device=dev)
        seen = 0
        for x, y in epoch_batches(x_train, y_train, seed, epoch, batch_size, cutout_size):
            logits = model(x.contiguous())
            loss = F.cross_entropy(logits, y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()  # also clips and remaps the tile weights (post_update_step)
            scheduler.step()
            loss_sum += loss.detach() * len(y)
            correct += (logits.detach().argmax(1) == y).sum()
            seen += len(y)
        train_loss = loss_sum.item() / seen
        if not math.isfinite(train_loss):
            raise FloatingPointError(f"HWA training diverged in epoch {epoch + 1} (loss {train_loss}); lower lr")
        test_acc = evaluate_top1(model, x_test, y_test, device=dev)
        ranges = list(input_ranges(model).values())
        record = {
            "epoch": epoch + 1, "train_loss": train_loss, "train_acc": 100.0 * correct.item() / seen,
            "test_acc": test_acc, "lr": optimizer.param_groups[0]["lr"],
            "input_range_mean": sum(ranges) / len(ranges) if ranges else None,
            "epoch_seconds": time.perf_counter() - t_epoch,
            "seconds": prior_seconds + time.perf_counter() - t_start,
        }
        history.append(record)
        if log_file is not None:
            with open(log_file, "a") as f:
                f.write(json.dumps(record) + "\n")
        if resume_file is not None:
            atomic_save({
                "format": _RESUME_FORMAT, "epoch": epoch + 1, "model": analog_state(model),
                "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                "history": history, "seconds": record["seconds"], "seed": seed, "hparams": hparams,
                "init_batches": init_batches, "rng_cpu": torch.get_rng_state(),
                "rng_cuda": torch.cuda.get_rng_state(dev) if dev.type == "cuda" else None,
            }, resume_file)
        bar.set_postfix(loss=f"{train_loss:.3f}", test=f"{test_acc:.2f}")
        done_here = epoch + 1 - resumed_from
        if (stop_after_epochs is not None and done_here >= stop_after_epochs) or (
            max_seconds is not None and time.perf_counter() - t_start >= max_seconds
        ):
            break
    bar.close()

    model.eval()
    epochs_done = history[-1]["epoch"] if history else start_epoch
    top1 = history[-1]["test_acc"] if history else evaluate_top1(model, x_test, y_test, device=dev)
    return {
        "model": model, "top1": top1, "history": history,
        "seconds": prior_seconds + time.perf_counter() - t_start,
        "epochs": epochs, "epochs_done": epochs_done, "finished": epochs_done >= epochs,
        "resumed_from_epoch": resumed_from, "seed": seed, "hparams": hparams,
        "device": _device_name(dev), "torch_version": str(torch.__version__),
        "aihwkit_version": str(aihwkit.__version__), "preset": type(rpu_config).__name__,
        "input_range_fix": fix_status, "input_ranges": input_ranges(model), "init_batches": init_batches,
    }


# --------------------------------------------------------------------------- checkpoints


def save_hwa_checkpoint(path: PathLike, analog_model: nn.Module, arch: str,
                        meta: Optional[Dict[str, Any]] = None, *, digital_layers: Iterable[str] = (),
                        rpu_config: Optional[TorchInferenceRPUConfig] = None) -> Path:
    """Save an HWA-trained analog model, unprogrammed, as a plain checkpoint (atomic write).

    The file is a regular aihwkit-nabn checkpoint (``format``, ``arch``, ``state_dict`` = the
    digital-equivalent weights from aihwkit's ``convert_to_digital``, i.e. tile weights times
    mapping and learned output scales, ``meta``) plus an ``hwa`` section: ``tiles`` (per analog
    tile: learned ``input_range`` and ``out_scales``), ``analog_state`` (every tensor of the analog
    model, for an exact rebuild), ``digital_layers``, ``preset`` (class name) and ``rpu_config``
    (its :func:`~aihwkit_nabn.hwa_preset.config_fields`; default: the tiles' own configuration).

    Raises:
        CheckpointError: unknown ``arch``, a model that has been programmed (its weights are then
            noisy: save before programming), or weights that do not fit ``arch``.
    """
    if arch not in list_models():
        raise CheckpointError(f"unknown arch {arch!r}; known: {', '.join(list_models())}")
    tiles = _named_tiles(analog_model)
    if not tiles:
        raise CheckpointError("the model has no analog tile: save digital models with save_checkpoint")
    programmed = [n for n, t in tiles if getattr(t, "programmed_weights", None) is not None]
    if programmed:
        raise CheckpointError(f"tiles {programmed[:3]} have been programmed (their weights now hold programming "
                              "noise / drift): save the HWA checkpoint before programming")
    meta = _plain(dict(meta or {}))
    _check_plain(meta, "meta")
    digital = convert_to_digital(analog_model).cpu()
    state = {k: v.detach().cpu().contiguous() for k, v in digital.state_dict().items()}
    expected = create_model(arch, num_classes=int(state["fc.weight"].shape[0]) if "fc.weight" in state else 10)
    if set(expected.state_dict()) != set(state):
        raise CheckpointError(f"the model's digital weights do not fit {arch}: "
                              f"{sorted(set(expected.state_dict()) ^ set(state))[:5]}")
    configs = [t.rpu_config for _, t in tiles]
    rpu_config = rpu_config if rpu_config is not None else configs[0]
    hwa = {
        "format": HWA_FORMAT,
        "preset": type(rpu_config).__name__,
        "rpu_config": config_fields(rpu_config),
        "digital_layers": list(digital_layers),
        "tiles": {n: {"input_range": float(t.input_range.detach().reshape(-1)[0])
                      if getattr(t, "input_range", None) is not None else None,
                      "out_scales": t.get_scales().detach().cpu().contiguous() if t.get_scales() is not None else None}
                  for n, t in tiles},
        "analog_state": analog_state(analog_model),
    }
    _check_plain(hwa, "hwa")
    path = Path(path)
    atomic_save({"format": "aihwkit-nabn/v1", "arch": arch, "state_dict": state, "meta": meta, "hwa": hwa}, path)
    return path


def load_hwa_model(path: PathLike, rpu_config: Optional[TorchInferenceRPUConfig] = None, *,
                   device: Any = None, accelerate: bool = True) -> Tuple[nn.Module, Dict[str, Any]]:
    """Rebuild the unprogrammed analog model of an HWA checkpoint exactly (``weights_only`` loading).

    Args:
        path: a checkpoint written by :func:`save_hwa_checkpoint`.
        rpu_config: the configuration to rebuild with; default: a :class:`TorchHWAPreset` when the
            model was trained with an unmodified one (else pass the configuration used). Another
            configuration with the same tile layout is accepted (e.g. without output noise).
        device: where to put the model (default CPU).
        accelerate: accelerate the analog layers (:mod:`aihwkit_nabn.acceleration`).

    Returns:
        ``(analog model in eval mode, meta)``.

    Raises:
        CheckpointError: missing/unsafe file, not an HWA checkpoint, or a configuration that
            does not rebuild the same tiles.
    """
    blob = read_checkpoint(path)
    hwa = blob.get("hwa")
    if not isinstance(hwa, dict) or hwa.get("format") != HWA_FORMAT:
        raise CheckpointError(f"{str(path)!r} is not an HWA checkpoint (no {HWA_FORMAT!r} 'hwa' section); "
                              "train one with aihwkit_nabn.train_hwa / `aihwkit-nabn hwa`")
    if rpu_config is None:
        saved, default = hwa.get("rpu_config") or {}, config_fields(TorchHWAPreset())
        differ = sorted(k for k in set(saved) | set(default) if saved.get(k) != default.get(k))
        if differ:
            raise CheckpointError(
                f"{str(path)!r} was trained with a {hwa.get('preset')} that differs from TorchHWAPreset() in "
                + ", ".join(f"{k} (saved {saved.get(k)!r})" for k in differ[:8])
                + "; pass that rpu_config to load_hwa_model")
        rpu_config = TorchHWAPreset()
    digital, meta = load_checkpoint(path)
    model = to_analog(digital, rpu_config, digital_layers=hwa.get("digital_layers", []), accelerate=accelerate)
    load_analog_state(model, hwa["analog_state"], f"HWA checkpoint {str(path)!r}")
    if device is not None:
        model.to(device)
    model.eval()
    return model, meta


# --------------------------------------------------------------------------- CIFAR-10 driver


def train_hwa_cifar10(model: str, *, epochs: int, out_path: PathLike, data_source: Optional[PathLike] = None,
                      seed: int = 0, device: Any = None, cache_dir: Optional[PathLike] = None,
                      command: Optional[str] = None, **hparams: Any) -> Dict[str, Any]:
    """HWA-fine-tune a CIFAR-10 model and save its HWA checkpoint (the ``aihwkit-nabn hwa`` command).

    ``model`` is a registry name (its shipped weights, :func:`~aihwkit_nabn.checkpoints.load_pretrained`)
    or a checkpoint path (:func:`~aihwkit_nabn.checkpoints.load_checkpoint`). ``hparams`` go to
    :func:`train_hwa`; ``log_path``/``resume_path`` default to ``<out_path>.log.jsonl`` /
    ``<out_path>.resume.pt``, so re-running the same call after an interruption (or ``max_seconds``)
    continues. The checkpoint is written once all ``epochs`` are done.

    Returns:
        the :func:`train_hwa` result plus ``out_path`` (None while unfinished) and ``meta``.
    """
    from .data.cifar10 import load_cifar10  # pylint: disable=import-outside-toplevel

    if Path(model).is_file():
        arch = read_checkpoint(model)["arch"]
        digital, source_meta = load_checkpoint(model)
    elif model in list_models():
        arch = model
        digital, source_meta = load_pretrained(model)
    else:
        raise FileNotFoundError(f"{model!r} is neither a checkpoint file nor one of the models {list_models()}")
    out = Path(out_path)
    hparams.setdefault("log_path", str(out) + ".log.jsonl")
    hparams.setdefault("resume_path", str(out) + ".resume.pt")
    train_x, train_y = load_cifar10("train", data_source, cache_dir)
    test_x, test_y = load_cifar10("test", data_source, cache_dir)
    result = train_hwa(digital, train_x, train_y, test_x, test_y, epochs=epochs, seed=seed, device=device, **hparams)
    if not result["finished"]:
        return {**result, "out_path": None, "meta": None}
    meta = {
        "arch": arch, "accuracy": result["top1"], "accuracy_kind": "HWA model, eval mode, unprogrammed, no drift",
        "digital_accuracy": source_meta.get("accuracy"), "source": str(model), "epochs": epochs, "seed": seed,
        "lr": result["hparams"]["lr"], "batch_size": result["hparams"]["batch_size"], "hparams": result["hparams"],
        "preset": result["preset"], "seconds": result["seconds"], "device": result["device"],
        "torch_version": result["torch_version"], "aihwkit_version": result["aihwkit_version"],
        "input_range_fix": result["input_range_fix"], "dataset": DATASET_NAME, "n_test": len(test_y),
        "command": command or (f"aihwkit_nabn.hwa_training.train_hwa_cifar10({str(model)!r}, epochs={epochs}, "
                               f"seed={seed}, out_path={out.name!r})"),
        "history": [{"epoch": h["epoch"], "test_acc": h["test_acc"], "train_loss": h["train_loss"]}
                    for h in result["history"]],
    }
    save_hwa_checkpoint(out, result["model"], arch, meta, digital_layers=result["hparams"]["digital_layers"])
    return {**result, "out_path": str(out), "meta": meta}
