"""One training step's forward and backward replayed as a CUDA graph, with the eager step's numbers.

A hardware-aware ResNet step on aihwkit torch tiles launches about 3,000 small kernels (profiled on an H200:
90 ms per step on the host, 25 ms of kernel time), so the GPU waits for Python. :class:`GraphedStep`
records the step's forward and backward once (``torch.cuda.graph``) and replays it for every later batch
of the same shape; the optimizer step stays eager. It keeps the eager step's semantics:

* the first ``warmup`` calls, and every call the graph cannot serve (another input shape, a CPU device,
  a failed capture), run the eager step itself: ``zero_grad(set_to_none=True)``, forward, backward;
* the random draws are the eager step's: PyTorch's CUDA generator hands a graph the same Philox offsets
  as the eager calls would have taken, and capturing draws nothing;
* aihwkit's weight clipping and remapping after each update *replace* a tile weight's storage
  (``weight.data = clamp(...)``): before every replay each tensor the graph read (every parameter, buffer and
  tensor attribute of the model's modules) is copied back into the storage the graph was recorded on, and
  the gradients are re-attached to the tensors the graph writes.

Whether the replayed numbers equal the eager ones bit for bit is measured, not assumed:
``benchmarks/hwa_cuda_graph.py`` runs the same steps both ways from one state and compares every weight.
"""

from __future__ import annotations

import warnings
from typing import Any, Callable, Dict, List, Optional, Tuple

import torch
from torch import Tensor, nn

__all__ = ["GraphedStep", "eager_step"]

StepFn = Callable[[Tensor, Tensor], Tuple[Tensor, Optional[Tensor]]]


def eager_step(step: StepFn, optimizer: torch.optim.Optimizer, x: Tensor, y: Tensor) -> Tuple[Tensor, Optional[Tensor]]:
    """The training loop's forward and backward: ``step(x, y)``, ``zero_grad(set_to_none=True)``, ``backward``.

    Returns ``(loss, logits)`` as ``step`` does.
    """
    loss, logits = step(x, y)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
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


class GraphedStep:
    """``fn(x, y) -> (loss, logits)``: the eager step's forward and backward, replayed from a CUDA graph.

    Args:
        model: the trained module (its tensors are kept at the addresses the graph was recorded on).
        step: ``step(x, y) -> (loss, logits or None)``, the loop's forward and loss.
        optimizer: its ``zero_grad`` is called by the eager calls; the graph writes the gradients itself.
        warmup: eager calls (on a side stream) before the capture, as CUDA graphs need.

    ``captured`` says whether a graph exists; ``replays`` and ``eager_calls`` count the calls; ``failure`` holds
    the reason a capture failed (the step then stays eager for good).
    """

    def __init__(self, model: nn.Module, step: StepFn, optimizer: torch.optim.Optimizer, warmup: int = 3):
        self.model, self.step, self.optimizer, self.warmup = model, step, optimizer, warmup
        self.graph: Optional[torch.cuda.CUDAGraph] = None
        self.failure: Optional[str] = None
        self.replays = self.eager_calls = 0
        self._calls = 0
        self._stream: Optional[torch.cuda.Stream] = None
        self._key: Optional[tuple] = None
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
                return self._eager(x, y)  # e.g. a smaller last batch: the eager step, same numbers
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
        try:
            self._capture(x, y, key)
        except Exception as exc:  # pylint: disable=broad-except
            # nothing ran during the failed capture (a capture records, it does not execute): eager from here
            self.graph, self.failure = None, f"{type(exc).__name__}: {exc}".splitlines()[0][:300]
            self.optimizer.zero_grad(set_to_none=True)
            warnings.warn(f"CUDA graph capture failed, the step stays eager: {self.failure}", RuntimeWarning)
            return self._eager(x, y)
        return self._replay(x, y)

    def _eager(self, x: Tensor, y: Tensor) -> Tuple[Tensor, Optional[Tensor]]:
        self.eager_calls += 1
        return eager_step(self.step, self.optimizer, x, y)

    def _capture(self, x: Tensor, y: Tensor, key: tuple) -> None:
        dev = x.device
        sx = torch.empty_like(x, memory_format=torch.contiguous_format)
        sy = torch.empty_like(y)
        self.optimizer.zero_grad(set_to_none=True)  # the graph allocates the gradients in its own pool
        graph = torch.cuda.CUDAGraph()
        torch.cuda.synchronize(dev)
        self._stream.wait_stream(torch.cuda.current_stream(dev))
        with torch.cuda.graph(graph, stream=self._stream):
            loss, logits = self.step(sx, sy)
            loss.backward()
        self.graph, self._key = graph, key
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
            if now is not t:  # an attribute replaced by another tensor object: back to the recorded one
                if not isinstance(now, Tensor) or now.shape != data.shape or now.dtype != data.dtype:
                    raise RuntimeError(f"CUDA graph: {type(mod).__name__}.{name} changed shape or type; "
                                       "this step cannot be replayed")
                with torch.no_grad():
                    data.copy_(now)
                t.data = data
                if name in mod._parameters or name in mod._buffers:
                    setattr(mod, name, t)
                else:
                    mod.__dict__[name] = t
            elif t.data_ptr() != data.data_ptr():  # `t.data = new` (aihwkit's clip / remap): copy back
                if t.shape != data.shape or t.dtype != data.dtype:
                    raise RuntimeError(f"CUDA graph: {type(mod).__name__}.{name} changed shape or type; "
                                       "this step cannot be replayed")
                with torch.no_grad():
                    data.copy_(t.data)
                t.data = data
        for p, g in self._grads:
            if p.grad is not g:
                p.grad = g

    def _replay(self, x: Tensor, y: Tensor) -> Tuple[Tensor, Optional[Tensor]]:
        self._rebind()
        self._static["x"].copy_(x)
        self._static["y"].copy_(y)
        self.graph.replay()
        self.replays += 1
        return self._static["loss"], self._static["logits"]
