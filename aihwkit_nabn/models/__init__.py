"""CIFAR model zoo: ResNet-20/32/56 and a small name registry."""

from aihwkit_nabn.models.resnet_cifar import (
    BasicBlock,
    ResNetCIFAR,
    create_model,
    list_models,
    register_model,
    resnet20,
    resnet32,
    resnet56,
)

__all__ = [
    "BasicBlock",
    "ResNetCIFAR",
    "create_model",
    "list_models",
    "register_model",
    "resnet20",
    "resnet32",
    "resnet56",
]
