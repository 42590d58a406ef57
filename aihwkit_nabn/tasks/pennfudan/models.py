"""Pedestrian detectors for Penn-Fudan, built from torchvision's detection API and trained here from scratch.

* ``fcos_resnet18_fpn``: torchvision's FCOS (anchor-free, one stage) on a ResNet-18 + FPN backbone from
  ``resnet_fpn_backbone(weights=None, norm_layer=BatchNorm2d)``: BatchNorm (not FrozenBatchNorm) after every
  backbone convolution, the FPN and head convolutions without BatchNorm (the FCOS head uses GroupNorm, which
  has no running statistics). Scale jitter: the detector's transform resizes each training image to a
  shorter side drawn from ``min_size``.
* ``fcos_small``: FCOS on the first three stages of a ResNet-18 (BatchNorm), an FPN of 64 channels on
  strides 8 and 16 plus P6/P7 (strides 32, 64), the FCOS head at 64 channels (3.3 M parameters): small enough
  that its checkpoint can be committed and carried to the GPU next to the data (16 MiB per file), and a
  quarter of the analog tiles of ``fcos_resnet18_fpn``. Penn-Fudan's pedestrians are large (most boxes are
  over 100 pixels tall), so the coarse levels cover them.
* ``fcos_resnet50_fpn``: torchvision's builder as it is (``weights=None, weights_backbone=None``: BatchNorm).

Both take ``list[Tensor]`` images in ``[0, 1]`` and return, in eval mode, ``list[dict(boxes, labels,
scores)]``; in training mode, with targets, a dict of losses. Every convolution of backbone, FPN and head
becomes analog under :func:`~aihwkit_nabn.analog.convert.to_analog`. The builders record their arguments on
the model (``model_kwargs``), which checkpoints keep, so a model is rebuilt with its own sizes.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, Mapping, Sequence, Union

import torch
from torch import nn
from torchvision.models import resnet18
from torchvision.models.detection import FCOS
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection import fcos_resnet50_fpn as _tv_fcos_resnet50_fpn
from torchvision.models.detection.backbone_utils import BackboneWithFPN, resnet_fpn_backbone
from torchvision.ops.feature_pyramid_network import LastLevelP6P7

from ...training.registry import register_model

__all__ = ["fcos_small", "fcos_resnet18_fpn", "fcos_resnet50_fpn", "NUM_CLASSES", "DEFAULT_MIN_SIZE", "DEFAULT_MAX_SIZE"]

_ASSETS = Path(__file__).resolve().parents[2] / "assets"
NUM_CLASSES = 2  # background + pedestrian
DEFAULT_MIN_SIZE = (384, 416, 448, 480, 512)
DEFAULT_MAX_SIZE = 800
Sizes = Union[int, Sequence[int]]


def _classes(state: Mapping[str, Any]) -> Dict[str, Any]:
    logits = state.get("head.classification_head.cls_logits.weight")
    return {"num_classes": int(logits.shape[0])} if isinstance(logits, torch.Tensor) else {}


def _sizes(min_size: Sizes) -> Any:
    return tuple(min_size) if isinstance(min_size, (list, tuple)) else int(min_size)


def _kwargs(num_classes: int, min_size: Sizes, max_size: int) -> Dict[str, Any]:
    return {"num_classes": num_classes, "min_size": list(min_size) if isinstance(min_size, (list, tuple))
            else int(min_size), "max_size": int(max_size)}


@register_model(task="pennfudan", pretrained=_ASSETS / "fcos_small_pennfudan.pt", kwargs_from_state=_classes)
def fcos_small(num_classes: int = NUM_CLASSES, min_size: Sizes = DEFAULT_MIN_SIZE,
               max_size: int = DEFAULT_MAX_SIZE) -> nn.Module:
    """A compact FCOS: ResNet-18 stages 1-3 (BatchNorm), a 64-channel FPN on strides 8-64, randomly initialised."""
    body = resnet18(weights=None, norm_layer=nn.BatchNorm2d)
    backbone = BackboneWithFPN(body, return_layers={"layer2": "0", "layer3": "1"}, in_channels_list=[128, 256],
                               out_channels=64, extra_blocks=LastLevelP6P7(64, 64))
    anchors = AnchorGenerator(((8,), (16,), (32,), (64,)), ((1.0,),) * 4)  # one "anchor" per location and level
    model = FCOS(backbone, num_classes, min_size=_sizes(min_size), max_size=max_size, anchor_generator=anchors)
    model.model_kwargs = _kwargs(num_classes, min_size, max_size)
    return model


@register_model(task="pennfudan", pretrained=_ASSETS / "fcos_resnet18_fpn_pennfudan.pt", kwargs_from_state=_classes)
def fcos_resnet18_fpn(num_classes: int = NUM_CLASSES, min_size: Sizes = DEFAULT_MIN_SIZE,
                      max_size: int = DEFAULT_MAX_SIZE) -> nn.Module:
    """FCOS on ResNet-18 + FPN (P3-P7), randomly initialised, BatchNorm in the backbone."""
    backbone = resnet_fpn_backbone(backbone_name="resnet18", weights=None, norm_layer=nn.BatchNorm2d,
                                   trainable_layers=5, returned_layers=[2, 3, 4], extra_blocks=LastLevelP6P7(256, 256))
    model = FCOS(backbone, num_classes, min_size=_sizes(min_size), max_size=max_size)
    model.model_kwargs = _kwargs(num_classes, min_size, max_size)
    return model


@register_model(task="pennfudan", pretrained=_ASSETS / "fcos_resnet50_fpn_pennfudan.pt", kwargs_from_state=_classes)
def fcos_resnet50_fpn(num_classes: int = NUM_CLASSES, min_size: Sizes = DEFAULT_MIN_SIZE,
                      max_size: int = DEFAULT_MAX_SIZE) -> nn.Module:
    """torchvision's FCOS-ResNet50-FPN, randomly initialised (no downloaded weights), BatchNorm in the backbone."""
    model = _tv_fcos_resnet50_fpn(weights=None, weights_backbone=None, num_classes=num_classes,
                                  min_size=_sizes(min_size), max_size=max_size)
    model.model_kwargs = _kwargs(num_classes, min_size, max_size)
    return model
