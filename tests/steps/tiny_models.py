"""Tiny real models and loaders that tests name as 'tiny_models:function' (see the tiny_models fixture)."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn


def build_mlp(width: int = 512, classes: int = 10, features: int = 64) -> nn.Module:
    """Two big Linear layers (exported as Gemm): most bytes are in weights worth quantizing."""
    return nn.Sequential(
        nn.Linear(features, width), nn.ReLU(), nn.Linear(width, width), nn.ReLU(), nn.Linear(width, classes)
    )


class TwoHeads(nn.Module):
    """Token inputs (batch, sequence) → a per-token output and a pooled output."""

    def __init__(self, vocab: int = 50, dim: int = 16) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab, dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        hidden = self.proj(self.embed(tokens))
        return hidden, hidden.mean(dim=1)


def build_two_heads() -> nn.Module:
    return TwoHeads()


def load_tiny_data(count: int = 5) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """A custom dataset loader: (inputs, labels)."""
    rng = np.random.default_rng(0)
    return {"input": rng.standard_normal((count, 64)).astype(np.float32)}, np.arange(count) % 10


def negative_mean_abs_error(outputs: dict[str, np.ndarray], reference: dict[str, np.ndarray], labels: object) -> float:
    """A custom metric, higher is better."""
    name = next(iter(reference))
    return -float(np.mean(np.abs(outputs[name] - reference[name])))


def mean_abs_error(outputs: dict[str, np.ndarray], reference: dict[str, np.ndarray], labels: object) -> float:
    """A custom metric, lower is better."""
    return -negative_mean_abs_error(outputs, reference, labels)


mean_abs_error.higher_is_better = False  # type: ignore[attr-defined]
