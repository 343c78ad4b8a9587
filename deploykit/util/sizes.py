"""The one reader of sizes on the command line: ``N`` is N x N, ``WIDTHxHEIGHT`` is width x height.

Sizes travel inside deploykit as ``(height, width)`` tuples (NCHW order); they are printed back as ``WxH``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence

from deploykit.errors import InputError

Size = tuple[int, int]  # (height, width)


def parse_size(text: str) -> Size:
    """'2048' -> (2048, 2048); '1920x1080' (or 1920×1080) is WIDTH x HEIGHT -> (1080, 1920)."""
    raw = str(text).strip().lower().replace("×", "x")
    match = re.fullmatch(r"(\d+)(?:\s*x\s*(\d+))?", raw)
    if not match:
        raise InputError(f"cannot read the size '{text}': use N (an NxN input) or WIDTHxHEIGHT, "
                         "e.g. 512 or 1920x1080")
    width = int(match.group(1))
    height = int(match.group(2)) if match.group(2) else width
    if width <= 0 or height <= 0:
        raise InputError(f"size '{text}' must be positive")
    return height, width


def parse_sizes(items: str | Iterable[str], option: str = "--res") -> list[Size]:
    """'256,512' or ['256,1920x1080', '512'] -> sizes in the order given, duplicates dropped."""
    parts = [p for item in ([items] if isinstance(items, str) else items) for p in str(item).split(",")]
    sizes = list(dict.fromkeys(parse_size(p) for p in parts if p.strip()))
    if not sizes:
        raise InputError(f"{option} needs at least one size, e.g. {option} 512,1024,2048 or {option} 1920x1080")
    return sizes


def fmt_wxh(hw: Sequence[int]) -> str:
    """(height, width) -> 'WxH', the command line's order."""
    return f"{hw[1]}x{hw[0]}"
