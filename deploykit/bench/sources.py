"""Where the benchmarked models and their ONNX files come from: the exports under ``--exports``, else the bench's
own cache, else a fresh export into that cache. Found through ``artifacts.lookup``, like every other caller.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from deploykit._version import __version__
from deploykit.artifacts.lookup import DEFAULT_EXPORTS, export_dir, onnx_artifact
from deploykit.artifacts.manifest import MANIFEST_NAME, read_manifest
from deploykit.errors import BenchError, DeployKitError
from deploykit.exporting.pipeline import export
from deploykit.zoo.registry import get_spec
from deploykit.zoo.spec import ModelSpec


@dataclass
class Target:
    """A model to benchmark: its spec and, when it was exported, the export directory and manifest."""

    spec: ModelSpec
    export_dir: Path | None = None
    manifest: dict | None = None

    @property
    def name(self) -> str:
        return self.spec.name


def discover_exports(root: str | Path) -> list[Target]:
    """Every export under ``root/<family>/<variant>/manifest.json`` (sorted by family, variant)."""
    targets = []
    for path in sorted(Path(root).glob(f"*/*/{MANIFEST_NAME}")):
        try:
            manifest = read_manifest(path)
            targets.append(Target(get_spec(manifest["model"]["name"]), path.parent, manifest))
        except DeployKitError:
            continue
    return targets


def resolve_models(names: Sequence[str] | None, exports_root: str | Path = DEFAULT_EXPORTS) -> list[Target]:
    """Named models (their export under ``exports_root`` is used when it exists), or every export there."""
    if not names:
        targets = discover_exports(exports_root)
        if not targets:
            raise BenchError(f"nothing to benchmark: no exports under {exports_root}/. Export a model first "
                             "(deploykit export vapsr:s_x4) or name models: deploykit bench vapsr:s_x4 --res 256,512")
        return targets
    targets = []
    for name in dict.fromkeys(names):
        spec = get_spec(name)
        folder = export_dir(spec, exports_root)
        manifest = _read_if_present(folder)
        targets.append(Target(spec, folder if manifest else None, manifest))
    return targets


def _read_if_present(folder: Path) -> dict | None:
    """The manifest in ``folder``, None when there is none or it cannot be read."""
    if not (folder / MANIFEST_NAME).exists():
        return None
    with contextlib.suppress(DeployKitError):
        return read_manifest(folder)
    return None


def default_cache_dir() -> Path:
    """``$DEPLOYKIT_CACHE`` or ``$XDG_CACHE_HOME/deploykit`` (``~/.cache/deploykit``), ``/bench-exports``."""
    root = os.environ.get("DEPLOYKIT_CACHE") or os.path.join(os.environ.get("XDG_CACHE_HOME")
                                                             or os.path.expanduser("~/.cache"), "deploykit")
    return Path(root) / "bench-exports"


def _random_init_seed0(manifest: dict) -> bool:
    weights = manifest.get("weights", {})
    return weights.get("source") == "random-init" and int(weights.get("seed", -1)) == 0


def onnx_for(target: Target, precision: str, cache_dir: Path, *, want_fp16: bool,
             notify: Callable[[str], None]) -> tuple[Path, Path, dict, str]:
    """(onnx path, export dir, manifest, source) for ORT: the export under exports/, else the cache, else a fresh
    export into the cache (said through ``notify``)."""
    if target.manifest is not None:
        artifact = onnx_artifact(target.manifest, precision)
        if artifact is not None:
            return target.export_dir / artifact["file"], target.export_dir, target.manifest, "exports"
        if not _random_init_seed0(target.manifest):  # a random-init export of our own would not match its weights
            raise BenchError(f"{target.export_dir} has no {precision} ONNX and was exported from other weights than "
                             f"a seed-0 random init; re-export it with its weights (deploykit export {target.name} "
                             "--weights FILE, which writes FP32 and FP16)")
    cached = _cached_onnx(target, precision, cache_dir)
    if cached is not None:
        return cached
    return _export_now(target, precision, cache_dir, want_fp16=want_fp16, notify=notify)


def _cached_onnx(target: Target, precision: str, cache_dir: Path) -> tuple[Path, Path, dict, str] | None:
    """The cache's seed-0 random-init export of ``target`` when it has the ``precision`` ONNX on disk and was
    written by this deploykit version (another version may apply other export forms: a stale graph would be
    measured under the new code's name)."""
    cached = export_dir(target.spec, cache_dir)
    manifest = _read_if_present(cached)
    artifact = onnx_artifact(manifest, precision) if manifest else None
    same_version = ((manifest or {}).get("tools") or {}).get("deploykit") == __version__
    if artifact is not None and same_version and _random_init_seed0(manifest) and (cached / artifact["file"]).exists():
        return cached / artifact["file"], cached, manifest, f"cache {cached}"
    return None


def _export_now(target: Target, precision: str, cache_dir: Path, *, want_fp16: bool,
                notify: Callable[[str], None]) -> tuple[Path, Path, dict, str]:
    where = f" (no {precision} artifact under exports/)" if target.manifest is not None else " (not under exports/)"
    notify(f"exporting {target.name} on the fly into {cache_dir}{where}: random init, seed 0, "
           f"{'FP32 + FP16' if want_fp16 else 'FP32 only'}")
    start = time.perf_counter()
    result = export(target.name, out=cache_dir, fp16=want_fp16 or precision == "fp16")
    notify(f"exported {target.name} in {time.perf_counter() - start:.0f} s -> {result.out_dir}")
    artifact = onnx_artifact(result.manifest, precision)
    if artifact is None:
        raise BenchError(f"the export of {target.name} has no {precision} artifact")
    return result.out_dir / artifact["file"], result.out_dir, result.manifest, f"exported now into {cache_dir}"
