"""Tests of the CIFAR ResNet models and the model registry."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

import pytest
import torch
from torch import nn

from aihwkit_nabn.tasks.cifar10.models import ResNetCIFAR
from aihwkit_nabn.training.registry import create_model, list_models

EXPECTED = {  # name: (depth, parameter count) -- He et al. report 0.27M / 0.46M / 0.85M
    "resnet20": (20, 269_722),
    "resnet32": (32, 464_154),
    "resnet56": (56, 853_018),
}


def test_registry_lists_the_models_by_task():
    assert list_models("cifar10") == ["resnet20", "resnet32", "resnet56"]
    assert list_models("camvid") == ["deeplabv3_resnet50", "unet_small"]
    assert list_models("pennfudan") == ["fcos_resnet18_fpn", "fcos_resnet50_fpn", "fcos_small"]
    assert list_models() == sorted(list_models("cifar10") + list_models("camvid") + list_models("pennfudan"))


@pytest.mark.parametrize("name", list_models("cifar10"))
def test_model_builds_with_expected_depth_and_params(name):
    model = create_model(name)
    depth, n_params = EXPECTED[name]
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    assert isinstance(model, ResNetCIFAR) and model.depth == depth
    assert len(convs) + len(linears) == depth  # weighted layers; option-A shortcuts have none
    assert sum(p.numel() for p in model.parameters()) == n_params
    assert all(c.bias is None for c in convs)
    assert isinstance(model.conv1, nn.Conv2d) and isinstance(model.fc, nn.Linear)


@pytest.mark.parametrize("name", list_models("cifar10"))
def test_batchnorm_follows_every_conv_and_forward_shape(name):
    model = create_model(name, num_classes=7)
    calls = []
    for module in model.modules():
        if isinstance(module, (nn.Conv2d, nn.BatchNorm2d)):
            module.register_forward_hook(lambda m, i, o: calls.append(type(m)))
    out = model(torch.randn(2, 3, 32, 32))
    assert out.shape == (2, 7)
    assert len(calls) % 2 == 0 and calls.count(nn.Conv2d) == calls.count(nn.BatchNorm2d)
    for conv, bn in zip(calls[0::2], calls[1::2]):
        assert conv is nn.Conv2d and bn is nn.BatchNorm2d


def test_create_model_is_case_and_dash_tolerant_and_rejects_unknown():
    assert isinstance(create_model("ResNet-20"), ResNetCIFAR)
    with pytest.raises(ValueError) as info:
        create_model("resnet18")
    assert "resnet20" in str(info.value) and "resnet56" in str(info.value)


def test_shortcut_subsamples_and_zero_pads():
    model = create_model("resnet20").eval()
    block = model.layer2[0]
    x = torch.randn(1, 16, 32, 32)
    y = block.shortcut(x)
    assert y.shape == (1, 32, 16, 16)
    assert torch.equal(y[:, 8:24], x[:, :, ::2, ::2])
    assert y[:, :8].abs().sum() == 0 and y[:, 24:].abs().sum() == 0
    assert sum(p.numel() for p in block.shortcut.parameters()) == 0


def test_convert_to_analog_converts_convs_and_linear():
    pytest.importorskip("aihwkit")
    from aihwkit.nn import AnalogConv2d, AnalogLinear
    from aihwkit.nn.conversion import convert_to_analog
    from aihwkit.simulator.configs import TorchInferenceRPUConfig

    # The pure-torch tile: the C++ InferenceRPUConfig tile refuses weights on this CPU-only build
    # ("weights must be a CPU tensor"); which modules get converted is the same for both.
    analog = convert_to_analog(create_model("resnet20"), TorchInferenceRPUConfig())
    assert sum(isinstance(m, AnalogConv2d) for m in analog.modules()) == 19
    assert sum(isinstance(m, AnalogLinear) for m in analog.modules()) == 1
    assert analog(torch.randn(2, 3, 32, 32)).shape == (2, 10)


def test_camvid_unet_small_size_batchnorm_and_output_resolution():
    model = create_model("unet_small")
    assert sum(p.numel() for p in model.parameters()) == 1_948_619
    convs = [n for n, m in model.named_modules() if isinstance(m, nn.Conv2d)]
    assert len(convs) == 15 and all(model.get_submodule(n).groups == 1 for n in convs)
    bns = [n for n, m in model.named_modules() if isinstance(m, nn.BatchNorm2d)]
    assert len(bns) == len(convs) - 1  # after every convolution but the 1x1 classifier
    out = create_model("unet_small", width=4, num_classes=11)(torch.randn(2, 3, 23, 30))  # odd sizes too
    assert out.shape == (2, 11, 23, 30)
