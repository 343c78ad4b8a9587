"""AOTInductor packages (deploykit.exporting.aoti): export + compile + parity + manifest entry, and failures that leave nothing.

One real compile (VapSR-S x4, seeded random init: the lightest SR model with the real graph) is shared by the
session; the failure paths replace the compiler with fakes, so they cost no compile time.
"""

from __future__ import annotations

import json
import shutil
import types
from pathlib import Path

import numpy as np
import pytest
import torch

from deploykit.artifacts.lookup import aoti_artifact as find_aoti_artifact
from deploykit.exporting.aoti import dynamic_shapes_for, export_aoti
from deploykit.runtime.aoti import AotiBackend
from deploykit.util.files import sha256_file
from deploykit.errors import ArtifactError, BackendUnavailableError, ExportError, ParityError
from deploykit.zoo.factory import build_model
from deploykit.runtime.torch_backend import ImageOutput
from deploykit.artifacts.manifest import MANIFEST_NAME, new_manifest, read_manifest
from deploykit.zoo.registry import get_spec

MODEL = "vapsr:s_x4"


def write_export_manifest(out_dir: Path, name: str, weights: Path | None = None, seed: int = 0) -> Path:
    """The manifest an ONNX export starts from (model, contract, weights, forms, export, io), without the ONNX
    files: export_aoti reads only these keys, so the tests skip the ONNX export."""
    spec = get_spec(name)
    out_dir.mkdir(parents=True, exist_ok=True)
    manifest = new_manifest(spec)
    manifest["weights"] = ({"source": "file", "path": str(weights), "sha256": sha256_file(weights)} if weights
                           else {"source": "random-init", "seed": seed})
    manifest["forms"] = []
    manifest["export"] = {"exporter": "dynamo", "static_hw": None}
    manifest["io"] = {"layout": "NCHW", "value_range": list(spec.value_range),
                      "inputs": [{"name": t.name, "dtype": "float32", "dims": ["batch", t.channels, "height", "width"]}
                                 for t in spec.inputs],
                      "outputs": [{"name": spec.outputs[spec.image_output].name, "dtype": "float32",
                                   "dims": ["batch", spec.out_channels, "out_height", "out_width"]}]}
    manifest["artifacts"], manifest["parity"] = [], []
    manifest["engines"] = [{"kind": "tensorrt-engine", "key": "keep-me", "file": "keep-me.engine"}]  # another writer's key: must survive
    (out_dir / MANIFEST_NAME).write_text(json.dumps(manifest, indent=2))
    return out_dir


@pytest.fixture(scope="session")
def compiled(tmp_path_factory):
    out = write_export_manifest(tmp_path_factory.mktemp("aoti") / "vapsr" / "s_x4", MODEL)
    steps = []
    entry = export_aoti(out, on_step=lambda *a: steps.append(a))
    return out, entry, steps


def _files(path: Path) -> dict[str, str]:
    return {p.name: sha256_file(p) for p in path.iterdir()}


def test_package_entry_and_parity(compiled):
    out, entry, steps = compiled
    manifest = read_manifest(out)
    package = out / entry["file"]
    assert package.is_file() and entry["file"] == "vapsr_s_x4.aoti.cpu.pt2"
    assert entry["kind"] == "aoti" and entry["device"] == "cpu" and entry["precision"] == "fp32"
    assert entry["sha256"] == sha256_file(package) and entry["bytes"] == package.stat().st_size
    assert entry["torch"] == torch.__version__
    assert set(entry["dynamic_dims"]) == {"batch", "height", "width"}
    assert entry["inputs"] == ["image"] and entry["outputs"] == ["output"]
    assert entry["parity_summary"]["passed"] and entry["parity_summary"]["max_abs"] <= 1e-4
    assert find_aoti_artifact(manifest) == entry  # as stored
    records = [r for r in manifest["parity"] if r["backend"] == "aoti-cpu"]
    assert len(records) == 2 and all(r["passed"] and r["max_abs"] <= 1e-4 for r in records)
    assert len({tuple(r["shape"]) for r in records}) == 2
    assert manifest["engines"] == [{"kind": "tensorrt-engine", "key": "keep-me", "file": "keep-me.engine"}]  # other keys preserved
    assert [s[0] for s in steps if s[1] == "done"] == ["aoti export", "aoti compile", "aoti parity"]
    assert not [p for p in out.iterdir() if p.name.startswith(".")]  # no temp files left


def test_package_takes_other_sizes(compiled):
    """Dynamic batch / height / width: sizes the compile never saw (odd, non-square, batch 3)."""
    out, entry, _ = compiled
    model, spec, _ = build_model(MODEL, seed=0)
    eager = ImageOutput(model, spec.image_output)
    backend = AotiBackend(out / entry["file"], ["image"], ["output"])
    for shape in [(1, 3, 37, 21), (3, 3, 16, 50)]:
        x = torch.rand(*shape, generator=torch.Generator().manual_seed(3))
        with torch.inference_mode():
            ref = eager(x).numpy()
        got = backend.run({"image": x.numpy()})["output"]
        assert got.shape == (shape[0], 3, shape[2] * 4, shape[3] * 4)
        assert float(np.abs(got - ref).max()) <= 1e-4


def _copy(compiled, tmp_path) -> tuple[Path, dict]:
    out, entry, _ = compiled
    copy = tmp_path / "vapsr" / "s_x4"
    shutil.copytree(out, copy)
    return copy, entry


def test_compile_failure_leaves_no_partial_package(compiled, tmp_path, monkeypatch):
    out, _ = _copy(compiled, tmp_path)
    before, manifest_before = _files(out), (out / MANIFEST_NAME).read_bytes()

    def broken_compile(program, *args, package_path=None, **kwargs):
        Path(package_path).write_bytes(b"half a package")
        raise RuntimeError("C++ compile error: simulated")

    monkeypatch.setattr(torch._inductor, "aoti_compile_and_package", broken_compile)
    with pytest.raises(ExportError, match="AOTInductor compile of vapsr:s_x4 failed: C\\+\\+ compile error"):
        export_aoti(out)
    assert _files(out) == before  # the previous package untouched, no temp file
    assert (out / MANIFEST_NAME).read_bytes() == manifest_before


def test_parity_failure_leaves_previous_package(compiled, tmp_path, monkeypatch):
    out, entry = _copy(compiled, tmp_path)
    good = compiled[0] / entry["file"]
    before, manifest_before = _files(out), (out / MANIFEST_NAME).read_bytes()
    monkeypatch.setattr(torch._inductor, "aoti_compile_and_package",
                        lambda program, *a, package_path=None, **k: shutil.copyfile(good, package_path))
    real_run = AotiBackend.run
    monkeypatch.setattr(AotiBackend, "run", lambda self, feed: {k: v + 1e-3 for k, v in real_run(self, feed).items()})
    with pytest.raises(ParityError, match="AOTInductor parity failed"):
        export_aoti(out)
    assert _files(out) == before
    assert (out / MANIFEST_NAME).read_bytes() == manifest_before


def test_rerun_replaces_entry_and_refreshes_result(compiled, tmp_path, monkeypatch):
    out, entry = _copy(compiled, tmp_path)
    good = compiled[0] / entry["file"]
    monkeypatch.setattr(torch._inductor, "aoti_compile_and_package",
                        lambda program, *a, package_path=None, **k: shutil.copyfile(good, package_path))
    result = types.SimpleNamespace(out_dir=out, manifest={})  # ExportResult-like
    again = export_aoti(result)
    manifest = read_manifest(out)
    assert [a["file"] for a in manifest["artifacts"] if a["kind"] == "aoti"] == [entry["file"]]
    assert len([r for r in manifest["parity"] if r["backend"] == "aoti-cpu"]) == 2
    assert again["sha256"] == entry["sha256"]
    assert result.manifest == manifest
    assert oct((out / entry["file"]).stat().st_mode & 0o777) == "0o644"


def test_refusals(tmp_path):
    out = write_export_manifest(tmp_path / "x", MODEL)
    if not torch.cuda.is_available():
        with pytest.raises(BackendUnavailableError, match="needs a CUDA build of PyTorch"):
            export_aoti(out, device="cuda")
    with pytest.raises(ExportError, match="'cpu', 'cuda"):
        export_aoti(out, device="mps")
    manifest = json.loads((out / MANIFEST_NAME).read_text())
    manifest["weights"] = {"source": "file", "path": str(tmp_path / "gone.pth"), "sha256": "0"}
    (out / MANIFEST_NAME).write_text(json.dumps(manifest))
    with pytest.raises(ArtifactError, match="are gone"):
        export_aoti(out)
    with pytest.raises(ArtifactError, match="no manifest"):
        export_aoti(tmp_path / "nowhere")
    with pytest.raises(ArtifactError, match="--aoti' first"):
        find_aoti_artifact({"model": {"name": MODEL}, "artifacts": []})


class _Conv(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 3, 3, padding=1)

    def forward(self, *inputs):
        return self.conv(torch.nn.functional.avg_pool2d(inputs[0], 8)).repeat_interleave(8, 2).repeat_interleave(8, 3)


def test_dynamic_dims_honour_multiple_of_and_square():
    """multiple_of 8 becomes 8 * Dim: torch.export accepts every multiple and refuses other sizes."""
    mprnet = get_spec("mprnet:deraining")
    assert mprnet.multiple_of == 8
    dims, described = dynamic_shapes_for(mprnet, None)
    assert described["height"]["multiple_of"] == 8 and described["width"]["min"] == 16
    program = torch.export.export(_Conv().eval(), (torch.rand(2, 3, 16, 24),), dynamic_shapes=dims)
    image = [n for n in program.graph.nodes if n.op == "placeholder"][-1].meta["val"]
    assert str(image.shape[2]).startswith("8*") and str(image.shape[3]).startswith("8*")  # H = 8 * blocks
    assert program.module()(torch.rand(1, 3, 32, 40)).shape == (1, 3, 32, 40)
    square = types.SimpleNamespace(multiple_of=1, min_size=1, square=True, inputs=get_spec(MODEL).inputs)
    (per_input,), described = dynamic_shapes_for(square, None)
    assert per_input[0][2] is per_input[0][3] and described["width"]["same_as"] == "height"
    (per_input,), described = dynamic_shapes_for(get_spec(MODEL), [64, 96])
    assert set(per_input[0]) == {0} and set(described) == {"batch"}  # --static: only the batch stays dynamic
