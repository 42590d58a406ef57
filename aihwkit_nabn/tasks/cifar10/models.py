"""ResNet-20/32/56 for CIFAR-10 (He et al., 2016, Sec. 4.2), registered with their shipped weights.

Three stages of 16/32/64 channels with ``n`` basic blocks each (depth ``6n + 2``),
BatchNorm after every convolution and the parameter-free "option A" shortcut
(stride-2 subsampling plus zero-padding of the new channels). The models are
plain ``nn.Module``s of ``nn.Conv2d(bias=False)``, ``nn.BatchNorm2d``, ``nn.ReLU``
and a final ``nn.Linear`` so that ``aihwkit.nn.conversion.convert_to_analog``
converts every convolution and the classifier. The stem convolution is named
``conv1`` and the classifier ``fc`` so users can keep them digital by name.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Dict, Mapping

import torch
from torch import nn
import torch.nn.functional as F

from ...training.registry import register_model

__all__ = ["BasicBlock", "ResNetCIFAR", "resnet20", "resnet32", "resnet56"]


class ShortcutA(nn.Module):
    """Option-A shortcut: subsample spatially by ``stride`` and zero-pad channels.

    It has no parameters, so it never becomes an analog tile.
    """

    def __init__(self, in_planes: int, planes: int, stride: int) -> None:
        super().__init__()
        self.stride = stride
        self.pad = planes - in_planes
        if self.pad < 0:
            raise ValueError("option-A shortcut cannot reduce the number of channels")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.stride != 1:
            x = x[:, :, :: self.stride, :: self.stride]
        if self.pad:
            # Pad the channel dimension symmetrically, as in the reference
            # implementation (half of the new channels before, half after).
            before = self.pad // 2
            x = F.pad(x, (0, 0, 0, 0, before, self.pad - before))
        return x

    def extra_repr(self) -> str:
        return f"stride={self.stride}, pad_channels={self.pad}"


class BasicBlock(nn.Module):
    """Two 3x3 conv-BN layers with a residual connection: ``relu(bn2(conv2(relu(bn1(conv1(x))))) + x)``."""

    expansion = 1

    def __init__(self, in_planes: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu1 = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.relu2 = nn.ReLU(inplace=True)
        if stride != 1 or in_planes != planes:
            self.shortcut: nn.Module = ShortcutA(in_planes, planes, stride)
        else:
            self.shortcut = nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu1(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu2(out + self.shortcut(x))


class ResNetCIFAR(nn.Module):
    """CIFAR ResNet of depth ``6 * num_blocks + 2``.

    Args:
        num_blocks: basic blocks per stage (3 -> ResNet-20, 5 -> 32, 9 -> 56).
        num_classes: size of the classifier output.
        widths: channels of the three stages.
    """

    def __init__(self, num_blocks: int, num_classes: int = 10, widths=(16, 32, 64)) -> None:
        super().__init__()
        if num_blocks < 1:
            raise ValueError(f"num_blocks must be >= 1, got {num_blocks}")
        self.num_blocks = num_blocks
        self.depth = 6 * num_blocks + 2
        self.conv1 = nn.Conv2d(3, widths[0], 3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(widths[0])
        self.relu = nn.ReLU(inplace=True)
        in_planes = widths[0]
        stages = []
        for i, width in enumerate(widths):
            stride = 1 if i == 0 else 2
            blocks = []
            for b in range(num_blocks):
                blocks.append(BasicBlock(in_planes, width, stride if b == 0 else 1))
                in_planes = width
            stages.append(nn.Sequential(*blocks))
        self.layer1, self.layer2, self.layer3 = stages
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(widths[-1], num_classes)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Kaiming-normal init for convolutions (fan_out, ReLU) and the classifier; BN to (1, 0)."""
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.kaiming_normal_(m.weight)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(self.bn1(self.conv1(x)))
        x = self.layer3(self.layer2(self.layer1(x)))
        x = torch.flatten(self.avgpool(x), 1)
        return self.fc(x)


# --------------------------------------------------------------------------- registry

_ASSETS = Path(__file__).resolve().parents[2] / "assets"


def _num_classes(state: Mapping[str, Any]) -> Dict[str, Any]:
    """Constructor arguments of a saved CIFAR ResNet: the number of classes, from the classifier's shape."""
    weight = state.get("fc.weight")
    return {"num_classes": int(weight.shape[0])} if isinstance(weight, torch.Tensor) else {}


def _register(fn: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
    return register_model(task="cifar10", pretrained=_ASSETS / f"{fn.__name__}_cifar10.pt",
                          kwargs_from_state=_num_classes)(fn)


@_register
def resnet20(num_classes: int = 10) -> ResNetCIFAR:
    """ResNet-20 for CIFAR (3 blocks per stage, ~0.27M parameters)."""
    return ResNetCIFAR(3, num_classes)


@_register
def resnet32(num_classes: int = 10) -> ResNetCIFAR:
    """ResNet-32 for CIFAR (5 blocks per stage, ~0.46M parameters)."""
    return ResNetCIFAR(5, num_classes)


@_register
def resnet56(num_classes: int = 10) -> ResNetCIFAR:
    """ResNet-56 for CIFAR (9 blocks per stage, ~0.85M parameters)."""
    return ResNetCIFAR(9, num_classes)
