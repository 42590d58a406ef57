"""Segmentation networks for CamVid, registered (trained here from scratch: no weights can be downloaded).

* ``deeplabv3_resnet50``: torchvision's builder (``weights=None, weights_backbone=None``, 11 classes, no
  auxiliary head); BatchNorm after every convolution of backbone and head; returns ``{"out": logits}``.
* ``unet_small``: a compact encoder-decoder of this project (four levels of two 3x3 conv-BN-ReLU, max
  pooling down, transposed-free bilinear upsampling with skip concatenation up), ``width`` channels at the
  first level; returns logits at the input resolution. A small, fast model for the analog simulation.

Every convolution becomes analog under :func:`~aihwkit_nabn.analog.convert.to_analog`; none is grouped.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, Mapping

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.models.segmentation import deeplabv3_resnet50 as _tv_deeplabv3_resnet50

from ...training.registry import register_model
from .data import CLASSES

__all__ = ["UNetSmall", "unet_small", "deeplabv3_resnet50", "logits_of"]

_ASSETS = Path(__file__).resolve().parents[2] / "assets"
NUM_CLASSES = len(CLASSES)


def logits_of(output: Any) -> torch.Tensor:
    """The logits of a segmentation model's output: ``output["out"]`` (torchvision) or the output itself."""
    return output["out"] if isinstance(output, dict) else output


def _block(c_in: int, c_out: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True),
        nn.Conv2d(c_out, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True),
    )


class UNetSmall(nn.Module):
    """A four-level U-Net with BatchNorm after every convolution; ``forward(x) -> logits [N, C, H, W]``."""

    def __init__(self, num_classes: int = NUM_CLASSES, width: int = 32):
        super().__init__()
        w = [width, 2 * width, 4 * width, 8 * width]
        self.enc1, self.enc2, self.enc3, self.enc4 = _block(3, w[0]), _block(w[0], w[1]), _block(w[1], w[2]), \
            _block(w[2], w[3])
        self.dec3, self.dec2, self.dec1 = _block(w[3] + w[2], w[2]), _block(w[2] + w[1], w[1]), _block(w[1] + w[0], w[0])
        self.head = nn.Conv2d(w[0], num_classes, 1)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        e1 = self.enc1(x)
        e2 = self.enc2(F.max_pool2d(e1, 2))
        e3 = self.enc3(F.max_pool2d(e2, 2))
        e4 = self.enc4(F.max_pool2d(e3, 2))

        def up(t: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
            return F.interpolate(t, size=like.shape[-2:], mode="bilinear", align_corners=False)

        d3 = self.dec3(torch.cat([up(e4, e3), e3], 1))
        d2 = self.dec2(torch.cat([up(d3, e2), e2], 1))
        d1 = self.dec1(torch.cat([up(d2, e1), e1], 1))
        return self.head(d1)


def _unet_kwargs(state: Mapping[str, Any]) -> Dict[str, Any]:
    """Constructor arguments of a saved ``unet_small``: classes and width from the weights' shapes."""
    head, first = state.get("head.weight"), state.get("enc1.0.weight")
    out = {}
    if isinstance(head, torch.Tensor):
        out["num_classes"] = int(head.shape[0])
    if isinstance(first, torch.Tensor):
        out["width"] = int(first.shape[0])
    return out


def _deeplab_kwargs(state: Mapping[str, Any]) -> Dict[str, Any]:
    last = state.get("classifier.4.weight")
    return {"num_classes": int(last.shape[0])} if isinstance(last, torch.Tensor) else {}


@register_model(task="camvid", pretrained=_ASSETS / "unet_small_camvid.pt", kwargs_from_state=_unet_kwargs)
def unet_small(num_classes: int = NUM_CLASSES, width: int = 32) -> UNetSmall:
    """A compact U-Net (``width`` 32: about 1.9M parameters) for CamVid."""
    return UNetSmall(num_classes, width)


@register_model(task="camvid", pretrained=_ASSETS / "deeplabv3_resnet50_camvid.pt", kwargs_from_state=_deeplab_kwargs)
def deeplabv3_resnet50(num_classes: int = NUM_CLASSES) -> nn.Module:
    """torchvision's DeepLabV3-ResNet50, randomly initialised (no downloaded weights), no auxiliary head."""
    return _tv_deeplabv3_resnet50(weights=None, weights_backbone=None, num_classes=num_classes, aux_loss=False)
