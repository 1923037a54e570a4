"""A small ResNet-style image classifier defined beside the tests (torchvision is not a dependency).

``make`` is the ``source: torch`` factory the image tests name as ``resnet_tiny:make``.
"""

from __future__ import annotations

import torch
from torch import nn


class Block(nn.Module):
    """ResNet's basic block: conv-bn-relu-conv-bn, plus the input, then relu."""

    def __init__(self, width: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(width, width, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, width, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.relu(self.bn1(self.conv1(x)))
        return torch.relu(self.bn2(self.conv2(y)) + x)


class TinyResNet(nn.Module):
    """Stem (conv-bn-relu), two residual blocks, global average pooling, a linear layer."""

    def __init__(self, classes: int, width: int) -> None:
        super().__init__()
        self.stem = nn.Sequential(
            nn.Conv2d(3, width, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(width), nn.ReLU()
        )
        self.blocks = nn.Sequential(Block(width), Block(width))
        self.head = nn.Linear(width, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pooled = self.blocks(self.stem(x)).mean(dim=(2, 3))
        return self.head(pooled)


def make(classes: int = 3, width: int = 8) -> TinyResNet:
    """The model, randomly initialised (the torch source seeds torch first, so it is reproducible)."""
    return TinyResNet(classes, width)
