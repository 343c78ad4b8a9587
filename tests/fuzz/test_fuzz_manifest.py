"""Hostile manifests: missing keys, wrong types, unknown schema versions, file names escaping the folder. Each is
read correctly or refused with one ArtifactError line; no path outside the export folder is ever handed out."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
from fuzzing import fuzz
from hypothesis import given
from hypothesis import strategies as st

from deploykit.artifacts.lookup import aoti_artifact, onnx_artifact, read_export, require_onnx, verified_file
from deploykit.artifacts.manifest import SCHEMA, read_manifest
from deploykit.errors import DeployKitError
from deploykit.util.files import sha256_file
from deploykit.zoo.registry import get_spec

SPEC = get_spec("srresnet:x2")
HOSTILE_NAMES = ["../../etc/passwd", "/etc/passwd", "..", "../manifest.json", "a/../../b.onnx", "~/x.onnx",
                 "C:\\x.onnx", "x\\..\\..\\y", "\x00.onnx", "", " ", "sub/../../../x", "//etc/passwd"]
JSON = st.recursive(st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False), st.text(max_size=8)),
                    lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=8), inner,
                                                                                        max_size=3)), max_leaves=8)


def _valid(folder: Path) -> dict:
    (folder / "srresnet_x2.fp32.onnx").write_bytes(b"graph")
    return {"schema": SCHEMA, "schema_version": 1, "model": {"name": SPEC.name},
            "artifacts": [{"kind": "onnx", "precision": "fp32", "file": "srresnet_x2.fp32.onnx",
                           "sha256": sha256_file(folder / "srresnet_x2.fp32.onnx")},
                          {"kind": "aoti", "device": "cpu", "file": "srresnet_x2.cpu.pt2"}],
            "engines": []}


def _paths_inside(folder: Path, value) -> None:
    if isinstance(value, Path):
        assert value.resolve().is_relative_to(folder.resolve()), value


def _every_reader(root: Path, folder: Path) -> None:
    """Run each reader; a DeployKitError on one line is fine, anything else (or a path outside) is not."""
    readers = [lambda: read_manifest(folder), lambda: read_export(SPEC, root)]
    try:
        manifest = read_manifest(folder)
    except DeployKitError as exc:
        assert "\n" not in str(exc)
        manifest = None
    if manifest is not None:
        readers += [lambda: onnx_artifact(manifest, "fp32"), lambda: require_onnx(manifest, folder, "fp32", SPEC),
                    lambda: aoti_artifact(manifest)]
        readers += [lambda e=e: verified_file(folder, e) for e in manifest.get("artifacts", [])]
    for read in readers:
        try:
            result = read()
        except DeployKitError as exc:
            assert "\n" not in str(exc)
            continue
        for value in (result if isinstance(result, tuple) else (result,)):
            _paths_inside(folder, value)


@pytest.fixture
def export_root(tmp_path_factory):
    def make() -> tuple[Path, Path]:
        root = tmp_path_factory.mktemp("exports")
        folder = root / SPEC.family / SPEC.variant
        folder.mkdir(parents=True)
        return root, folder
    return make


@fuzz(150)
@given(data=st.data())
def test_mutated_manifests_are_read_or_refused_in_one_line(export_root, data):
    root, folder = export_root()
    manifest = _valid(folder)
    for _ in range(data.draw(st.integers(1, 4))):
        target = data.draw(st.sampled_from(["top", "model", "artifact"]))
        artifacts = manifest.get("artifacts")
        node = {"top": manifest, "model": manifest.get("model"),
                "artifact": artifacts[0] if isinstance(artifacts, list) and artifacts else None}[target]
        if not isinstance(node, dict):
            continue
        key = data.draw(st.sampled_from(sorted(node) + ["schema_version", "file", "external_data"]))
        if data.draw(st.booleans()) and key in node:
            del node[key]
        else:
            node[key] = data.draw(st.one_of(JSON, st.sampled_from(HOSTILE_NAMES), st.integers(-5, 10**9)))
    (folder / "manifest.json").write_text(json.dumps(manifest))
    _every_reader(root, folder)


@pytest.mark.parametrize("key,name", [("file", n) for n in HOSTILE_NAMES] +
                         [("external_data", n) for n in HOSTILE_NAMES if n])  # "" external_data: none
def test_file_names_escaping_the_folder_are_refused(export_root, name, key):
    root, folder = export_root()
    manifest = _valid(folder)
    manifest["artifacts"][0][key] = name
    (folder / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(DeployKitError, match="export folder|not a file name") as info:
        read_manifest(folder)
    assert "\n" not in str(info.value)
    entry = copy.deepcopy(manifest["artifacts"][0])  # a reader handed the entry directly checks it too
    with pytest.raises(DeployKitError, match="export folder|not a file name"):
        verified_file(folder, entry)


@fuzz(80)
@given(text=st.one_of(st.binary(max_size=200), st.sampled_from([b"[]", b"null", b"1", b'"x"', b"{",
                                                                 b'{"schema": 5}', b"[" * 100000])))
def test_unparseable_manifest_files_are_refused(export_root, text):
    root, folder = export_root()
    (folder / "manifest.json").write_bytes(text)
    _every_reader(root, folder)
    with pytest.raises(DeployKitError):
        read_manifest(folder)


@pytest.mark.parametrize("version,ok", [(1, True), (0, True), (2, False), ("1", False), (None, False),
                                        (True, False), (1.5, False), (10**30, False)])
def test_schema_versions(export_root, version, ok):
    root, folder = export_root()
    manifest = _valid(folder)
    manifest["schema_version"] = version
    (folder / "manifest.json").write_text(json.dumps(manifest))
    if ok:
        assert read_manifest(folder)["schema_version"] == version
    else:
        with pytest.raises(DeployKitError, match="schema.version|schema_version"):
            read_manifest(folder)
