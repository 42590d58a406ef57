"""One training update replayed as a CUDA graph, with the eager update's numbers (no aihwkit here).

A hardware-aware ResNet step on aihwkit torch tiles launches about 3,000 small kernels (profiled on an H200:
90 ms per step on the host, 25 ms of kernel time), so the GPU waits for Python. :class:`GraphedStep`
records the update once (``torch.cuda.graph``) and replays it for every later batch of the same shape:

* ``mode="on"``: the forward and backward in the graph, the optimizer step eager;
* ``mode="full"``: the optimizer step too; the graph is recorded again whenever a learning rate or another
  optimizer setting changes (a plateau schedule: a few times per run). ``prepare_full(model)`` makes the step
  capturable first and names what cannot be (then ``full`` works as ``on``, and ``mode`` says ``on``): for
  aihwkit's ``AnalogSGD`` that is :class:`aihwkit_nabn.training.cuda_graph.AnalogGraphedStep`, whose tiles'
  clipping and remapping are made in-place by ``_aihwkit/post_update.py``.

A ``before_step(loss)`` callable (mode ``on`` only) runs between the backward pass and the optimizer step, eager or
replayed: BN fine-tuning checks its loss and gradients there (``bn/finetune.py``).

It keeps the eager update's semantics:

* the first ``warmup`` calls, and every call the graph cannot serve (another input shape, a CPU device, a failed
  capture), run the eager update itself: forward, ``zero_grad(set_to_none=True)``, backward, ``optimizer.step()``;
* the random draws are the eager ones: PyTorch's CUDA generator hands a graph the same Philox offsets as the eager
  calls would have taken, and capturing draws nothing;
* aihwkit's weight clipping and remapping after each update *replace* a tile weight's storage
  (``weight.data = clamp(...)``) when they run eagerly: before every replay each tensor the graph reads (every
  parameter, buffer and tensor attribute of the model's modules) is copied back into the storage the graph was
  recorded on, and the gradients are re-attached to the tensors the graph writes. (In mode ``on`` this also keeps
  the weight-gradient hook right: aihwkit's ``set_scales`` hook divides by the tensor that becomes the tile's
  mapping scales, so the recorded hook reads the recorded mapping scales, which the re-binding refreshes.)

Whether the replayed numbers equal the eager ones bit for bit is measured, not assumed:
``benchmarks/hwa_cuda_graph.py`` (HWA training) and ``benchmarks/bnft_cuda_graph.py`` (BN fine-tuning on a drifted
chip) run the same updates both ways from one state and compare every tensor.
"""

from __future__ import annotations

import warnings
from typing import Any, Callable, Dict, List, Optional, Tuple

import torch
from torch import Tensor, nn

__all__ = ["GraphedStep", "eager_update", "GRAPH_MODES"]

StepFn = Callable[[Tensor, Tensor], Tuple[Tensor, Optional[Tensor]]]
BeforeStep = Callable[[Tensor], None]
PrepareFull = Callable[[nn.Module], Dict[str, Optional[str]]]
GRAPH_MODES = ("on", "full")


def eager_update(step: StepFn, optimizer: torch.optim.Optimizer, x: Tensor, y: Tensor,
                 before_step: Optional[BeforeStep] = None) -> Tuple[Tensor, Optional[Tensor]]:
    """The training loop's update: ``step(x, y)``, ``zero_grad(set_to_none=True)``, ``backward``,
    ``before_step(loss)`` (if given), ``optimizer.step()``.

    Returns ``(loss, logits)`` as ``step`` does.
    """
    loss, logits = step(x, y)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    if before_step is not None:
        before_step(loss)
    optimizer.step()
    return loss, logits


def _model_tensors(model: nn.Module) -> List[Tuple[nn.Module, str, Tensor]]:
    """Every (module, attribute, tensor) of the model: parameters, buffers and plain tensor attributes."""
    found, seen = [], set()
    for mod in model.modules():
        items = list(mod._parameters.items()) + list(mod._buffers.items())
        items += [(k, v) for k, v in vars(mod).items() if isinstance(v, Tensor)]
        for name, t in items:
            if t is None or (id(mod), name) in seen:
                continue
            seen.add((id(mod), name))
            found.append((mod, name, t))
    return found


def _optimizer_settings(optimizer: torch.optim.Optimizer) -> tuple:
    """The numbers a recorded optimizer step has baked in (learning rates, momentum, ...), per group."""
    return tuple(tuple(sorted((k, v) for k, v in g.items() if k != "params" and isinstance(v, (bool, int, float))))
                 for g in optimizer.param_groups)


class GraphedStep:
    """``fn(x, y) -> (loss, logits)``: the eager update (forward, backward, optimizer step), replayed from a CUDA graph.

    Args:
        model: the trained module (its tensors are kept at the addresses the graph was recorded on).
        step: ``step(x, y) -> (loss, logits or None)``, the loop's forward and loss.
        optimizer: the optimizer whose ``step`` completes each update.
        mode: ``"on"`` (forward and backward recorded) or ``"full"`` (the optimizer step too), see the module.
        warmup: eager updates (on a side stream) before the first capture, as CUDA graphs need.
        before_step: ``fn(loss)`` run after every backward pass, before the optimizer step (mode ``on`` only).
        prepare_full: ``fn(model) -> {name: reason or None}`` that makes the optimizer step capturable for ``full``;
            a reason refuses ``full`` (it works as ``on``). Without it, ``full`` records the optimizer as it is.

    ``captured`` says whether a graph exists; ``replays``, ``eager_calls`` and ``captures`` count; ``failure`` holds
    the reason a capture failed (the update then stays eager for good); ``mode`` is the mode in force and
    ``mode_reason`` why ``full`` fell back to ``on`` (None otherwise).
    """

    def __init__(self, model: nn.Module, step: StepFn, optimizer: torch.optim.Optimizer, *, mode: str = "on",
                 warmup: int = 3, before_step: Optional[BeforeStep] = None,
                 prepare_full: Optional[PrepareFull] = None):
        if mode not in GRAPH_MODES:
            raise ValueError(f"mode must be one of {GRAPH_MODES}, got {mode!r}")
        if before_step is not None and mode != "on":
            raise ValueError("before_step needs mode='on' (in 'full' the optimizer step is inside the graph)")
        self.model, self.step, self.optimizer, self.warmup = model, step, optimizer, warmup
        self.before_step = before_step
        self.mode, self.mode_reason = mode, None
        if mode == "full" and prepare_full is not None:
            refused = {k: v for k, v in prepare_full(model).items() if v is not None}
            if refused:
                name, why = next(iter(refused.items()))
                self.mode, self.mode_reason = "on", f"tile {name}: {why}"
        self.graph: Optional[torch.cuda.CUDAGraph] = None
        self.failure: Optional[str] = None
        self.replays = self.eager_calls = self.captures = 0
        self._calls = 0
        self._stream: Optional[torch.cuda.Stream] = None
        self._key: Optional[tuple] = None
        self._settings: Optional[tuple] = None
        self._static: Dict[str, Any] = {}
        self._tensors: List[Tuple[nn.Module, str, Tensor, Tensor]] = []
        self._grads: List[Tuple[Tensor, Tensor]] = []

    @property
    def captured(self) -> bool:
        return self.graph is not None

    @staticmethod
    def _signature(x: Tensor, y: Tensor) -> tuple:
        return (tuple(x.shape), x.dtype, x.device, tuple(y.shape), y.dtype, y.device)

    def __call__(self, x: Tensor, y: Tensor) -> Tuple[Tensor, Optional[Tensor]]:
        if x.device.type != "cuda" or self.failure is not None:
            return self._eager(x, y)
        key = self._signature(x, y)
        if self.graph is not None:
            if key != self._key:
                return self._eager(x, y)  # e.g. a smaller last batch: the eager update, same numbers
            if self.mode == "full" and _optimizer_settings(self.optimizer) != self._settings:
                return self._capture_and_replay(x, y, key)  # a new lr: record the update again
            return self._replay(x, y)
        self._calls += 1
        if self._stream is None:
            # warm-up and capture on one side stream: the AccumulateGrad nodes the warm-up creates (kept alive by the
            # loop's last loss) then belong to the capture's stream
            self._stream = torch.cuda.Stream(x.device)
        if self._calls <= self.warmup:
            side = self._stream
            side.wait_stream(torch.cuda.current_stream(x.device))
            with torch.cuda.stream(side):
                out = self._eager(x, y)
            torch.cuda.current_stream(x.device).wait_stream(side)
            return out
        return self._capture_and_replay(x, y, key)

    def _eager(self, x: Tensor, y: Tensor) -> Tuple[Tensor, Optional[Tensor]]:
        self.eager_calls += 1
        return eager_update(self.step, self.optimizer, x, y, self.before_step)

    def _capture_and_replay(self, x: Tensor, y: Tensor, key: tuple) -> Tuple[Tensor, Optional[Tensor]]:
        try:
            self._capture(x, y, key)
        except Exception as exc:  # pylint: disable=broad-except
            # nothing ran during the failed capture (a capture records, it does not execute): eager from here
            self.graph, self.failure = None, f"{type(exc).__name__}: {exc}".splitlines()[0][:300]
            self.optimizer.zero_grad(set_to_none=True)
            warnings.warn(f"CUDA graph capture failed, the update stays eager: {self.failure}", RuntimeWarning)
            return self._eager(x, y)
        return self._replay(x, y)

    def _capture(self, x: Tensor, y: Tensor, key: tuple) -> None:
        dev = x.device
        if self._static:  # recorded again (a new lr): the same input buffers
            sx, sy = self._static["x"], self._static["y"]
        else:
            sx, sy = torch.empty_like(x, memory_format=torch.contiguous_format), torch.empty_like(y)
        self.graph = None  # frees the old graph's memory before the new one is recorded
        self.optimizer.zero_grad(set_to_none=True)  # the graph allocates the gradients in its own pool
        graph = torch.cuda.CUDAGraph()
        torch.cuda.synchronize(dev)
        self._stream.wait_stream(torch.cuda.current_stream(dev))
        with torch.cuda.graph(graph, stream=self._stream):
            loss, logits = self.step(sx, sy)
            loss.backward()
            if self.mode == "full":
                self.optimizer.step()
        self.graph, self._key, self.captures = graph, key, self.captures + 1
        self._settings = _optimizer_settings(self.optimizer)
        self._static = {"x": sx, "y": sy, "loss": loss.detach(), "logits": None if logits is None else logits.detach()}
        self._record()

    def _record(self) -> None:
        """Note the tensors the graph reads (with their storage now) and the gradient tensors it writes."""
        self._tensors = [(mod, name, t, t.data) for mod, name, t in _model_tensors(self.model)]
        self._grads = [(p, p.grad) for p in self.model.parameters() if p.grad is not None]

    def _rebind(self) -> None:
        """Put every tensor the graph reads back at its recorded address, and the graph's gradients on the params."""
        for mod, name, t, data in self._tensors:
            now = getattr(mod, name, None)
            if now is t and t.data_ptr() == data.data_ptr():
                continue
            # `t.data = new` (aihwkit's clip / remap) or the attribute replaced by another tensor: copy the values back
            if not isinstance(now, Tensor) or now.shape != data.shape or now.dtype != data.dtype:
                raise RuntimeError(f"CUDA graph: {type(mod).__name__}.{name} changed shape or type; "
                                   "this step cannot be replayed")
            with torch.no_grad():
                data.copy_(now)
            t.data = data
            if now is not t:  # the recorded tensor object back in the module
                if name in mod._parameters or name in mod._buffers:
                    setattr(mod, name, t)
                else:
                    mod.__dict__[name] = t
        for p, g in self._grads:
            if p.grad is not g:
                p.grad = g

    def _replay(self, x: Tensor, y: Tensor) -> Tuple[Tensor, Optional[Tensor]]:
        self._rebind()
        self._static["x"].copy_(x)
        self._static["y"].copy_(y)
        self.graph.replay()
        self.replays += 1
        if self.mode == "on":
            if self.before_step is not None:
                self.before_step(self._static["loss"])
            self.optimizer.step()
        return self._static["loss"], self._static["logits"]
