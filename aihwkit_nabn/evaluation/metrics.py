"""Metrics for sweeps: callables ``metric(model) -> float`` bound to their evaluation data."""

from __future__ import annotations

from typing import Any, Callable, Iterable, Optional

import torch
from torch import nn

from ..utils.batches import batch_input, model_device, to_device
from ..utils.modes import preserved_training_flags


class Top1Accuracy:
    """Top-1 accuracy in percent of a classifier on fixed data; ``metric(model) -> float``.

    ``data`` yields ``(inputs, targets)`` batches (a ``DataLoader``, :class:`TensorBatches`, a list).
    The model is evaluated in eval mode (analog tiles in inference mode) and its flags are restored.
    """

    name = "top1"
    higher_is_better = True

    def __init__(
        self,
        data: Iterable[Any],
        *,
        input_fn: Optional[Callable[[Any], Any]] = None,
        target_fn: Optional[Callable[[Any], torch.Tensor]] = None,
        samples: Optional[int] = None,
    ):
        self.data = data
        #: Number of evaluation samples, when known (recorded with sweeps).
        self.samples = samples
        self.input_fn = input_fn
        self.target_fn = target_fn if target_fn is not None else (lambda batch: batch[1])

    @torch.no_grad()
    def __call__(self, model: nn.Module) -> float:
        device = model_device(model)
        correct = total = 0
        with preserved_training_flags(model):
            model.eval()
            for batch in self.data:
                inputs = to_device(batch_input(batch, self.input_fn), device)
                targets = self.target_fn(batch).to(device)
                logits = model(inputs)
                correct += (logits.argmax(dim=1) == targets).sum()
                total += targets.numel()
        if total == 0:
            raise ValueError("Top1Accuracy: the evaluation data yielded no samples")
        return 100.0 * float(correct) / total


class MeanIoU:
    """Mean intersection-over-union in percent of a dense classifier on fixed data; ``metric(model) -> float``.

    ``data`` yields ``(inputs, labels)`` batches with labels ``[N, H, W]``; the model's output (or
    ``output_fn(output)``, e.g. ``output["out"]``) is ``[N, C, H, W]`` logits at the label resolution.
    Pixels labelled ``ignore_index`` count nowhere. The confusion matrix is torchmetrics'
    ``MulticlassConfusionMatrix``; from it, per class ``IoU = TP / (TP + FP + FN)`` and the mean over the
    classes (a class absent from labels and predictions alike would count 0; CamVid's test split holds all).
    After a call, ``last`` holds ``{"miou", "pixel_acc", "iou": [per class]}`` in percent.
    """

    name = "miou"
    higher_is_better = True

    def __init__(self, data: Iterable[Any], *, num_classes: int, ignore_index: Optional[int] = None,
                 output_fn: Optional[Callable[[Any], torch.Tensor]] = None, samples: Optional[int] = None):
        self.data, self.num_classes, self.ignore_index = data, num_classes, ignore_index
        self.output_fn = output_fn
        self.samples = samples
        self.last: dict = {}

    @torch.no_grad()
    def confusion(self, model: nn.Module) -> torch.Tensor:
        """Return the ``[C, C]`` confusion matrix (rows: label, columns: prediction) of ``model`` on the data."""
        # imported on first use: torchmetrics takes about a second to import
        from torchmetrics.classification import MulticlassConfusionMatrix  # pylint: disable=import-outside-toplevel

        device = model_device(model)
        confusion = MulticlassConfusionMatrix(self.num_classes, ignore_index=self.ignore_index).to(device)
        with preserved_training_flags(model):
            model.eval()
            for batch in self.data:
                inputs = to_device(batch_input(batch), device)
                labels = batch[1].to(device)
                output = model(inputs)
                logits = self.output_fn(output) if self.output_fn is not None else output
                confusion.update(logits.argmax(dim=1), labels.long())
        return confusion.compute()

    def __call__(self, model: nn.Module) -> float:
        matrix = self.confusion(model).double()
        if matrix.sum() == 0:
            raise ValueError("MeanIoU: the evaluation data yielded no labelled pixels")
        tp = matrix.diag()
        union = matrix.sum(0) + matrix.sum(1) - tp
        iou = torch.where(union > 0, tp / union.clamp_min(1), torch.zeros_like(tp))
        self.last = {"miou": 100.0 * float(iou.mean()), "pixel_acc": 100.0 * float(tp.sum() / matrix.sum()),
                     "iou": [100.0 * float(v) for v in iou]}
        return self.last["miou"]


class DetectionAP:
    """COCO box AP of a detector on fixed data, in percent: ``metric(model) -> {"ap50": ..., "map": ...}``.

    ``data`` yields ``(images, targets)`` batches as torchvision's detectors take them (lists of
    ``[3, H, W]`` images and of ``{"boxes", "labels"}`` dicts); the model in eval mode returns lists of
    ``{"boxes", "scores", "labels"}``. AP@[.5:.95] (``map``) and AP50 (``ap50``) are torchmetrics'
    ``MeanAveragePrecision`` (the pycocotools backend: COCO's own evaluation). After a call, ``last`` holds
    every value torchmetrics computed (percent).
    """

    names = ("ap50", "map")
    name = "ap50+map"
    higher_is_better = True

    def __init__(self, data: Iterable[Any], *, samples: Optional[int] = None):
        self.data, self.samples = data, samples
        self.last: dict = {}

    @torch.no_grad()
    def __call__(self, model: nn.Module) -> dict:
        # imported on first use: torchmetrics takes about a second to import
        from torchmetrics.detection import MeanAveragePrecision  # pylint: disable=import-outside-toplevel

        device = model_device(model)
        metric = MeanAveragePrecision(box_format="xyxy", iou_type="bbox", backend="pycocotools")
        with preserved_training_flags(model):
            model.eval()
            for images, targets in self.data:
                outputs = model([to_device(image, device) for image in images])
                metric.update([{k: v.detach().cpu() for k, v in out.items()} for out in outputs],
                              [{k: v.cpu() for k, v in target.items()} for target in targets])
        result = metric.compute()
        self.last = {k: 100.0 * float(v) for k, v in result.items() if isinstance(v, torch.Tensor) and v.numel() == 1}
        return {"ap50": self.last["map_50"], "map": self.last["map"]}
