"""Shared fixtures: a small conv net with BatchNorm, its analog version, and data."""

import os

import torch

# Without a GPU the fused Triton kernels run under Triton's interpreter (tests/test_fused.py); the variable
# must be set before triton compiles anything. The accelerated layers only dispatch CUDA tensors to them,
# so the rest of the suite runs the exact torch path as before.
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

import pytest  # noqa: E402
from torch import nn  # noqa: E402

import aihwkit_nabn as nb  # noqa: E402


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
