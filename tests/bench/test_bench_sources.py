"""deploykit.bench.sources: which models are benchmarked and where their ONNX files come from (no exports run)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from deploykit.artifacts.lookup import export_dir
from deploykit.bench.sources import Target, default_cache_dir, discover_exports, onnx_for, resolve_models
from deploykit._version import __version__
from deploykit.errors import BenchError
from deploykit.zoo.registry import get_spec


def _write_export(root: Path, name: str, *, artifacts=("fp32",), weights=None, schema="deploykit.manifest",
                  version: str = __version__) -> Path:
    spec = get_spec(name)
    folder = export_dir(spec, root)
    folder.mkdir(parents=True)
    entries = []
    for precision in artifacts:
        file = f"{spec.family}_{spec.variant}.{precision}.onnx"
        (folder / file).write_bytes(b"onnx")
        entries.append({"kind": "onnx", "precision": precision, "file": file, "sha256": "0" * 64})
    manifest = {"schema": schema, "schema_version": 1,
                "model": {"name": spec.name, "family": spec.family, "variant": spec.variant},
                "weights": weights or {"source": "random-init", "seed": 0}, "export": {"static_hw": None},
                "artifacts": entries, "tools": {"deploykit": version}}
    (folder / "manifest.json").write_text(json.dumps(manifest))
    return folder


def test_resolve_models_uses_the_export_when_there_is_one(tmp_path):
    folder = _write_export(tmp_path, "srresnet:x2")
    assert folder == tmp_path / "srresnet" / "x2"
    with_export, without = resolve_models(["srresnet:x2", "vapsr:s_x4", "srresnet:x2"], tmp_path)
    assert with_export.export_dir == folder and with_export.manifest["model"]["name"] == "srresnet:x2"
    assert without.name == "vapsr:s_x4" and without.export_dir is None and without.manifest is None


def test_discover_exports_sorted_and_foreign_manifests_skipped(tmp_path):
    _write_export(tmp_path, "vapsr:s_x4")
    _write_export(tmp_path, "srresnet:x2")
    _write_export(tmp_path, "srresnet:x4", schema="something.else")
    assert [t.name for t in discover_exports(tmp_path)] == ["srresnet:x2", "vapsr:s_x4"]
    assert [t.name for t in resolve_models(None, tmp_path)] == ["srresnet:x2", "vapsr:s_x4"]
    with pytest.raises(BenchError, match="deploykit export"):
        resolve_models(None, tmp_path / "empty")


def test_default_cache_dir_follows_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("DEPLOYKIT_CACHE", str(tmp_path / "dk"))
    assert default_cache_dir() == tmp_path / "dk" / "bench-exports"
    monkeypatch.delenv("DEPLOYKIT_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert default_cache_dir() == tmp_path / "xdg" / "deploykit" / "bench-exports"


def test_onnx_for_prefers_exports_then_the_cache(tmp_path):
    notes = []
    folder = _write_export(tmp_path / "exports", "srresnet:x2")
    (target,) = resolve_models(["srresnet:x2"], tmp_path / "exports")
    path, where, manifest, source = onnx_for(target, "fp32", tmp_path / "cache", want_fp16=False, notify=notes.append)
    assert (path, where, source) == (folder / "srresnet_x2.fp32.onnx", folder, "exports")
    cached = _write_export(tmp_path / "cache", "srresnet:x2", artifacts=("fp32", "fp16"))
    path, where, _, source = onnx_for(target, "fp16", tmp_path / "cache", want_fp16=True, notify=notes.append)
    assert (path, where) == (cached / "srresnet_x2.fp16.onnx", cached) and source == f"cache {cached}"
    bare = Target(get_spec("srresnet:x2"))  # not under exports/: the cache still serves it
    assert onnx_for(bare, "fp32", tmp_path / "cache", want_fp16=False, notify=notes.append)[0].parent == cached
    assert notes == []  # nothing was exported on the fly


def test_onnx_for_refuses_to_stand_in_for_other_weights(tmp_path):
    _write_export(tmp_path, "srresnet:x2", weights={"source": "file", "sha256": "abc"})
    (target,) = resolve_models(["srresnet:x2"], tmp_path)
    with pytest.raises(BenchError, match="re-export it with its weights"):
        onnx_for(target, "fp16", tmp_path / "cache", want_fp16=True, notify=print)


def test_a_cache_export_of_another_deploykit_version_is_not_reused(tmp_path, monkeypatch):
    """Another version may apply other export forms: its graph must not be measured under this one's name."""
    from deploykit.bench import sources

    _write_export(tmp_path / "cache", "srresnet:x2", version="0.0.1")
    fresh = []
    monkeypatch.setattr(sources, "_export_now", lambda target, precision, cache_dir, **k: fresh.append(precision) or
                        ("new.onnx", cache_dir, {}, "exported now"))
    assert onnx_for(Target(get_spec("srresnet:x2")), "fp32", tmp_path / "cache", want_fp16=False,
                    notify=print)[3] == "exported now"
    assert fresh == ["fp32"]
