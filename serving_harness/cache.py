"""Prediction cache: an LRU of outputs keyed by a hash of the input tensors (off unless cache_size > 0)."""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from collections.abc import Mapping

import numpy as np

__all__ = ["PredictionCache"]

Arrays = dict[str, np.ndarray]


class PredictionCache:
    """At most ``capacity`` entries; the least recently used one goes first."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._entries: OrderedDict[bytes, Arrays] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    @staticmethod
    def key(inputs: Mapping[str, np.ndarray]) -> bytes:
        """A digest of every input's name, dtype, shape and values."""
        digest = hashlib.blake2b(digest_size=16)
        for name in sorted(inputs):
            array = inputs[name]
            digest.update(f"{name}\0{array.dtype.str}\0{array.shape}\0".encode())
            if array.dtype == object:
                for item in array.ravel():
                    data = item if isinstance(item, bytes) else str(item).encode()
                    digest.update(len(data).to_bytes(4, "little") + data)
            else:
                digest.update(np.ascontiguousarray(array).data)
        return digest.digest()

    def get(self, key: bytes) -> Arrays | None:
        """The cached outputs, or None."""
        outputs = self._entries.get(key)
        if outputs is not None:
            self._entries.move_to_end(key)
        return outputs

    def put(self, key: bytes, outputs: Mapping[str, np.ndarray]) -> None:
        """Keep a copy of ``outputs`` (not views into a whole batch's arrays)."""
        self._entries[key] = {name: np.array(array, copy=True) for name, array in outputs.items()}
        self._entries.move_to_end(key)
        while len(self._entries) > self.capacity:
            self._entries.popitem(last=False)
