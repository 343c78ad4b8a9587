"""The one interface every runtime implements (Polygraphy-runner style).

A backend is built from an artifact, used as a context manager, and ``run(feed)`` takes and returns named
float32 NCHW numpy arrays. Parity and bench work on this interface only.
"""

from __future__ import annotations

from abc import ABC, abstractmethod

import numpy as np


class Backend(ABC):
    """A runner: ``name`` (e.g. 'ort-cpu'), ``device`` (what it runs on), ``precision`` ('fp32'|'fp16')."""

    name: str = "backend"
    device: str = "cpu"
    precision: str = "fp32"

    def __enter__(self) -> "Backend":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        """Release sessions and device memory (default: nothing to release)."""

    @property
    @abstractmethod
    def input_names(self) -> list[str]:
        ...

    @property
    @abstractmethod
    def output_names(self) -> list[str]:
        ...

    @abstractmethod
    def run(self, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Run once; inputs and outputs are float32 numpy arrays keyed by graph names."""

    def describe(self) -> dict:
        return {"backend": self.name, "device": self.device, "precision": self.precision}
