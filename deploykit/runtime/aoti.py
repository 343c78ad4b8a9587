"""AOTInductor package runner: a compiled ``.pt2`` loaded with ``torch._inductor.aoti_load_package``."""

from __future__ import annotations

from pathlib import Path

import torch

from deploykit.errors import ArtifactError
from deploykit.runtime.torch_backend import CallableBackend
from deploykit.util.text import one_line


class AotiBackend(CallableBackend):
    """An AOTInductor package behind the common Backend interface (``run(feed)`` -> named float32 arrays)."""

    precision = "fp32"

    def __init__(self, path: str | Path, input_names: list[str], output_names: list[str], *, device: str = "cpu"):
        self.path = Path(path)
        self.name = f"aoti-{device.split(':')[0]}"
        try:
            package = torch._inductor.aoti_load_package(str(self.path))
        except Exception as exc:  # torch raises RuntimeError / zipfile errors for a bad package
            raise ArtifactError(f"cannot load AOTInductor package {self.path}: {one_line(exc, 300)}") \
                from exc
        super().__init__(package, input_names, output_names, device=device)
