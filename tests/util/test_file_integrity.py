"""sha256 checks of listed files: one flipped byte anywhere is refused with the file named and the command to run."""

from __future__ import annotations

import hashlib

import pytest

from deploykit.artifacts.engines import verify_engine_file
from deploykit.artifacts.lookup import verified_file
from deploykit.errors import ArtifactError, EngineError
from deploykit.util.files import sha256_file

DATA = bytes(range(256)) * 9 + b"tail"  # 2308 bytes


def test_sha256_file_matches_hashlib_across_chunks(tmp_path):
    path = tmp_path / "f.bin"
    path.write_bytes(DATA)
    for chunk in (1, 7, 256, 1 << 20):
        assert sha256_file(path, chunk=chunk) == hashlib.sha256(DATA).hexdigest()
    (tmp_path / "empty").write_bytes(b"")
    assert sha256_file(tmp_path / "empty") == hashlib.sha256(b"").hexdigest()


def _flip(data: bytes, at: int) -> bytes:
    return data[:at] + bytes([data[at] ^ 0x01]) + data[at + 1:]


@pytest.mark.parametrize("at", [0, 1000, len(DATA) - 1])
def test_a_flipped_byte_is_refused(tmp_path, at):
    path = tmp_path / "model.onnx"
    entry = {"file": "model.onnx", "sha256": hashlib.sha256(DATA).hexdigest()}
    path.write_bytes(DATA)
    assert verified_file(tmp_path, entry) == path
    path.write_bytes(_flip(DATA, at))
    with pytest.raises(ArtifactError) as info:
        verified_file(tmp_path, entry)
    assert str(info.value) == (f"{path} does not match the sha256 in its manifest (modified or torn update); "
                               "run 'deploykit export' again")


def test_engine_file_check_names_deploykit_build(tmp_path):
    path = tmp_path / "m.engine"
    path.write_bytes(DATA)
    entry = {"file": "m.engine", "sha256": hashlib.sha256(DATA).hexdigest()}
    assert verify_engine_file(tmp_path, entry) == path
    path.write_bytes(_flip(DATA, 17))
    with pytest.raises(EngineError, match=r"m\.engine does not match the sha256 .*run 'deploykit build' again$"):
        verify_engine_file(tmp_path, entry)
    path.write_bytes(DATA + b"\0")  # one byte more
    with pytest.raises(EngineError, match="does not match the sha256"):
        verify_engine_file(tmp_path, entry)
    path.unlink()
    with pytest.raises(EngineError, match=r"m\.engine is listed in the manifest but missing; run 'deploykit build'"):
        verify_engine_file(tmp_path, entry)


def test_unsafe_names_and_missing_external_weights_are_refused(tmp_path):
    (tmp_path / "model.onnx").write_bytes(DATA)
    entry = {"file": "model.onnx", "sha256": hashlib.sha256(DATA).hexdigest(), "external_data": "model.onnx.data"}
    with pytest.raises(ArtifactError, match=r"model\.onnx\.data \(external weights of model\.onnx\) is missing"):
        verified_file(tmp_path, entry)
    for bad in ("../model.onnx", "/etc/passwd"):
        with pytest.raises(ArtifactError, match="run 'deploykit export' again"):
            verified_file(tmp_path, {"file": bad, "sha256": entry["sha256"]})
