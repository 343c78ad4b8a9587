"""Small text helpers shared by every layer: one-line error text and file-name slugs."""

from __future__ import annotations

import re


def one_line(exc: BaseException | str, limit: int = 400, *, name_type: bool = False) -> str:
    """An exception (or text) as one line of at most ``limit`` characters: what a CLI error line can show.
    ``name_type`` prefixes the exception's class (for errors that are not deploykit's own one-line messages)."""
    text = " ".join(str(exc).split()) or type(exc).__name__
    if name_type and isinstance(exc, BaseException):
        text = f"{type(exc).__name__}: {text}"
    return text if len(text) <= limit else text[:limit - 1] + "…"


def slug(text: str) -> str:
    """'NVIDIA GeForce RTX 4090' -> 'NVIDIA-GeForce-RTX-4090': safe in file and folder names (case kept)."""
    return re.sub(r"[^A-Za-z0-9.]+", "-", text.strip()).strip("-") or "unknown"
