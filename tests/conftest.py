"""Shared fixtures: a small conv net with BatchNorm, its analog version, and data."""

import pytest
import torch
from torch import nn

import aihwkit_nabn as nb


def tiny_net() -> nn.Module:
    """A small CNN with BatchNorm after each conv and a BatchNorm1d before the classifier."""
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8), nn.ReLU(),
        nn.Conv2d(8, 16, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(16), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.BatchNorm1d(16), nn.Linear(16, 10),
    ).eval()


@pytest.fixture
def digital():
    return tiny_net()


@pytest.fixture
def analog(digital):
    return nb.to_analog(digital)


@pytest.fixture
def images():
    g = torch.Generator().manual_seed(1)
    return torch.randn(96, 3, 8, 8, generator=g)
