"""Small, reproducible torch training helpers: for example models and for fine-tune callables.

Reproducible means one intra-op thread (float reductions run in one order) and a seeded shuffle,
so the same seed gives bit-identical weights.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
import torch
from torch import nn


@contextmanager
def single_thread() -> Iterator[None]:
    """One intra-op thread, so float reductions run in one order and training (or fine-tuning) is reproducible."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def train_classifier(
    module: nn.Module,
    inputs: np.ndarray,
    labels: np.ndarray,
    *,
    epochs: int,
    learning_rate: float,
    seed: int = 0,
    batch_size: int = 32,
) -> None:
    """Adam + cross-entropy on (inputs, labels) for ``epochs``, in place; leaves ``module`` in eval mode."""
    x, y = torch.from_numpy(np.ascontiguousarray(inputs)), torch.from_numpy(np.ascontiguousarray(labels))
    generator = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.Adam([p for p in module.parameters() if p.requires_grad], lr=learning_rate)
    module.train()
    with single_thread():
        for _ in range(epochs):
            order = torch.randperm(len(x), generator=generator)
            for start in range(0, len(x), batch_size):
                index = order[start : start + batch_size]
                optimizer.zero_grad()
                loss = nn.functional.cross_entropy(module(x[index]), y[index])
                loss.backward()  # type: ignore[no-untyped-call]
                optimizer.step()
    module.eval()
