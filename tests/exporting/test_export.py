"""deploykit export: real architectures to ONNX with forms, read-back checks, simplification, FP16, parity."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
import torch

import deploykit
from deploykit.exporting import pipeline as export_pipeline
from deploykit.errors import ArtifactError, ExportError, UnknownModelError
from deploykit.artifacts.manifest import SCHEMA, SCHEMA_VERSION, read_manifest
from deploykit.exporting.onnx_export import check_dims, dim_request, export_onnx
from deploykit.verify.gate import check

# the lightest released variant of every family: real architectures, exported and proven at small sizes
FAMILY_CASES = ["mirnetv2:real_denoising", "mirnet:base", "mprnet:deraining", "udvd:x2", "vapsr:s_x4",
                "edsr:m_x4", "rcan:x2", "srresnet:x4"]


@pytest.fixture(scope="module")
def exports(tmp_path_factory):
    """Export each case once (module scope: the expensive part) and hand the results to the tests."""
    root = tmp_path_factory.mktemp("exports")
    return root, {}


def _export(exports, name):
    root, done = exports
    if name not in done:
        done[name] = deploykit.export(name, out=root)
    return done[name]


@pytest.mark.slow
@pytest.mark.parametrize("name", FAMILY_CASES)
def test_every_family_exports_with_parity(exports, name):
    result = _export(exports, name)
    spec = result.spec
    m = read_manifest(result.out_dir)
    assert (m["schema"], m["schema_version"], m["model"]["name"]) == (SCHEMA, SCHEMA_VERSION, spec.name)
    assert m["weights"]["source"] == "random-init" and m["weights"]["seed"] == 0
    # dynamic N/H/W on every input, one image output
    for io in m["io"]["inputs"]:
        assert io["dims"][0] == "batch" and io["dims"][2:] == ["height", "width"]
    assert [o["name"] for o in m["io"]["outputs"]] == ["output"]
    assert m["io"]["outputs"][0]["dims"][2:] == (["height", "width"] if spec.scale == 1
                                                 else ["out_height", "out_width"])
    # artifacts exist, hashes match, FP32 + FP16
    files = {a["precision"]: result.out_dir / a["file"] for a in m["artifacts"]}
    assert set(files) == {"fp32", "fp16"} and all(f.exists() for f in files.values())
    assert not list(result.out_dir.glob(".staging-*"))
    # parity: FP32 <= 1e-4 (expected ~1e-6) at two shapes different from the export example, FP16 >= floor
    fp32 = [p for p in m["parity"] if p["precision"] == "fp32"]
    fp16 = [p for p in m["parity"] if p["precision"] == "fp16"]
    assert len(fp32) == 2 and len(fp16) == 2 and all(p["passed"] for p in m["parity"])
    assert max(p["max_abs"] for p in fp32) <= 1e-4
    assert min(p["psnr_db"] for p in fp16) >= spec.fp16.min_psnr_db
    example = m["export"]["example_shape"]
    assert all(p["shape"][0] != example[0] or p["shape"][2] != example[1] * spec.scale for p in fp32)
    assert {tuple(p["shape"][:1]) for p in fp32} == {(1,), (2,)}
    assert any(p["shape"][2] != p["shape"][3] for p in fp32)  # one non-square check
    # FP16 graph: float32 I/O, float16 weights
    model16 = onnx.load(str(files["fp16"]))
    assert model16.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    assert any(i.data_type == onnx.TensorProto.FLOAT16 for i in model16.graph.initializer)
    assert m["simplify"]["nodes_after"] <= m["simplify"]["nodes_before"]


@pytest.mark.slow
def test_forms_recorded_for_udvd_and_mprnet(exports):
    udvd = read_manifest(_export(exports, "udvd:x2").out_dir)
    assert [f["name"] for f in udvd["forms"]] == ["pixelconv"] and udvd["forms"][0]["option"] == "shift"
    assert len(udvd["forms"][0]["checks"]) >= 3
    mpr = read_manifest(_export(exports, "mprnet:deraining").out_dir)
    assert [f["name"] for f in mpr["forms"]] == ["mprnet-split"]
    ops = {a["precision"]: a["op_types"] for a in mpr["artifacts"]}["fp32"]
    assert "AveragePool" in ops


@pytest.mark.slow
def test_parity_command_rechecks_and_detects_tampering(exports):
    result = _export(exports, "vapsr:s_x4")
    report = check(result.out_dir)  # seeded random inputs at the export's two parity shapes, FP32 and FP16
    assert len(report.cases) == 4 and report.passed and report.exit_code == 0
    only32 = check(result.out_dir / "vapsr_s_x4.fp32.onnx")
    assert {c.precision for c in only32.cases} == {"fp32"}
    fp16 = result.out_dir / "vapsr_s_x4.fp16.onnx"
    data = bytearray(fp16.read_bytes())
    data[-10] ^= 0xFF
    fp16.write_bytes(bytes(data))
    tampered = check(result.out_dir)
    assert tampered.exit_code == 2 and not tampered.passed
    assert {c.status for c in tampered.cases if c.precision == "fp16"} == {"skipped"}
    assert all("does not match the sha256" in c.reason for c in tampered.cases if c.precision == "fp16")


def test_export_with_real_weights_records_them(tmp_path, vapsr_x4_weights):
    result = deploykit.export("vapsr:x4", weights=vapsr_x4_weights, out=tmp_path, fp16=False)
    w = result.manifest["weights"]
    assert w["source"] == "file" and w["wrapper_key"] == "params_ema" and len(w["sha256"]) == 64
    assert all(p["passed"] and p["max_abs"] <= 1e-4 for p in result.parity)


def test_static_export_pins_height_and_width(tmp_path):
    result = deploykit.export("vapsr:s_x4", out=tmp_path, static="24x40", fp16=False, simplify_graph=False)
    dims = result.manifest["io"]["inputs"][0]["dims"]
    assert dims == ["batch", 3, 24, 40]
    recipe = result.manifest["onnxruntime_cpu"]  # the session C++ / Triton users should open: VapSR keeps its own arena
    assert recipe["enable_mem_pattern"] is False and recipe["cpu_arena"] == "session" and not recipe["run_config"]
    assert result.files[0].name == "vapsr_s_x4_24x40.fp32.onnx"
    with pytest.raises(ExportError, match="HxW"):
        deploykit.export("vapsr:s_x4", out=tmp_path, static="24by40")


def _tiny():
    return torch.nn.Conv2d(3, 3, 3, padding=1).eval()


def test_read_back_catches_a_pinned_dim(tmp_path):
    dynamic = dim_request([("image", 3)], [("output", 3)], None, 1)
    static = dim_request([("image", 3)], [("output", 3)], (16, 24), 1)
    model, _ = export_onnx(_tiny(), (torch.rand(2, 3, 16, 24),), tmp_path / "s.onnx", static, exporter="legacy")
    with pytest.raises(ExportError, match=r"axis 2 \(height\) came out fixed to 16"):
        check_dims(model, dynamic, "test")


def test_read_back_catches_merged_height_and_width(tmp_path):
    request = dim_request([("image", 3)], [("output", 3)], None, 1)
    model, _ = export_onnx(_tiny(), (torch.rand(2, 3, 16, 24),), tmp_path / "d.onnx", request, exporter="legacy")
    for value in (model.graph.input[0], model.graph.output[0]):
        value.type.tensor_type.shape.dim[3].dim_param = "height"
    with pytest.raises(ExportError, match="height and width were merged"):
        check_dims(model, request, "test")


def test_opset_actually_written_is_checked(tmp_path, monkeypatch):
    from deploykit.exporting import onnx_export

    real = onnx_export._export_legacy
    monkeypatch.setattr(onnx_export, "_export_legacy", lambda m, a, p, r, opset: real(m, a, p, r, 18))
    request = dim_request([("image", 3)], [("output", 3)], None, 1)
    with pytest.raises(ExportError, match="wrote opset 18 although 17 was asked"):
        export_onnx(_tiny(), (torch.rand(2, 3, 16, 24),), tmp_path / "o.onnx", request, exporter="legacy", opset=17)


def test_failed_export_leaves_previous_artifacts_intact(tmp_path, monkeypatch):
    first = deploykit.export("vapsr:s_x4", out=tmp_path)
    before = {p.name: p.read_bytes() for p in first.out_dir.iterdir()}

    def boom(*args, **kwargs):
        raise ExportError("simulated failure during FP16 conversion")

    monkeypatch.setattr(export_pipeline, "convert_to_fp16", boom)
    with pytest.raises(ExportError, match="simulated failure"):
        deploykit.export("vapsr:s_x4", out=tmp_path, seed=1)
    after = {p.name: p.read_bytes() for p in first.out_dir.iterdir()}
    assert after == before  # same files, same bytes, no staging leftovers


def test_failed_first_export_writes_nothing(tmp_path, monkeypatch):
    monkeypatch.setattr(export_pipeline, "check_parity",
                        lambda *a, **k: (_ for _ in ()).throw(ExportError("simulated parity crash")))
    with pytest.raises(ExportError):
        deploykit.export("srresnet:x2", out=tmp_path, fp16=False)
    assert [p for p in (tmp_path / "srresnet" / "x2").iterdir()] == []


def test_unwritable_out_dir_and_unknown_model(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    with pytest.raises(ArtifactError, match="cannot create output directory"):
        deploykit.export("vapsr:s_x4", out=blocker / "sub", fp16=False)
    with pytest.raises(UnknownModelError):
        deploykit.export("swinir", out=tmp_path)


def test_manifest_is_strict_json(tmp_path):
    result = deploykit.export("srresnet:x2", out=tmp_path, fp16=False)
    text = (result.out_dir / "manifest.json").read_text()
    assert "Infinity" not in text and "NaN" not in text
    data = json.loads(text)
    assert data["tools"]["onnxruntime"] and data["export"]["opset"] == 18
    assert data["shape_contract"] == {"scale": 2, "multiple_of": 1, "min_size": 1, "square": False,
                                      "padding": "reflect right/bottom to multiple_of, crop the output back"}
    assert np.isfinite([p["max_abs"] for p in data["parity"]]).all()


def test_graphs_over_the_protobuf_limit_use_an_external_data_file(tmp_path, monkeypatch):
    from deploykit.exporting import onnx_export

    monkeypatch.setattr(onnx_export, "TWO_GB", 4096)  # pretend every graph is over 2 GB
    result = deploykit.export("srresnet:x2", out=tmp_path, fp16=False)
    artifact = result.manifest["artifacts"][0]
    assert artifact["external_data"] == "srresnet_x2.fp32.onnx.data"
    assert (result.out_dir / artifact["external_data"]).stat().st_size > 4 * 1_000_000
    assert (result.out_dir / artifact["file"]).stat().st_size < 1_000_000
    assert all(p["passed"] for p in result.parity)
    assert check(result.out_dir).passed
