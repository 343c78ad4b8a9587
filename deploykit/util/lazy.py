"""Module attributes imported on first use, so importing a package does not pay for torch."""

from __future__ import annotations

import importlib


def lazy_attributes(namespace: dict, sources: dict[str, str]):
    """A module ``__getattr__``: NAME comes from module ``sources[NAME]`` when first asked for, then is cached in
    ``namespace`` (the module's ``globals()``)."""

    def __getattr__(name: str):
        if name not in sources:
            raise AttributeError(f"module {namespace['__name__']!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(sources[name]), name)
        namespace[name] = value
        return value

    return __getattr__
