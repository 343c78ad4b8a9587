"""Faithful PyTorch references of the official image-restoration architectures.

One file per architecture family. Parameter names, module structure and constructor defaults follow the
official repositories so that the released checkpoints load with ``strict=True``. Nothing here imports
from :mod:`deploykit`; export-only rewrites live in ``deploykit.export.forms``.
"""
