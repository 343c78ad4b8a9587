"""``deploykit parity``: re-check existing artifacts against a freshly built PyTorch FP32 reference."""

from __future__ import annotations

from pathlib import Path

from deploykit.backends import OrtBackend, TorchBackend
from deploykit.checkpoints import sha256_file
from deploykit.errors import ArtifactError
from deploykit.factory import build_recorded_model
from deploykit.forms import ImageOutput
from deploykit.inputs import parity_shapes
from deploykit.manifest import MANIFEST_NAME, read_manifest
from deploykit.parity import ParityRecord, check_parity


def _locate(path: Path) -> tuple[Path, list[str] | None]:
    """Directory / manifest / .onnx file -> (export dir, artifact files to check or None for all)."""
    path = Path(path)
    if path.is_dir():
        return path, None
    if path.name == MANIFEST_NAME:
        return path.parent, None
    if path.suffix == ".onnx":
        if not path.exists():
            raise ArtifactError(f"no such ONNX file: {path}")
        return path.parent, [path.name]
    raise ArtifactError(f"{path} is not an export directory, a manifest.json or an .onnx file")


def rerun_parity(path: str | Path, *, weights: str | Path | None = None,
                 unsafe_pickle: bool = False) -> list[ParityRecord]:
    out_dir, only = _locate(Path(path))
    manifest = read_manifest(out_dir)
    model, spec = build_recorded_model(manifest, weights, unsafe_pickle=unsafe_pickle)
    static = manifest.get("export", {}).get("static_hw")
    _, shapes = parity_shapes(spec)
    if static:
        shapes = [(1, *static), (2, *static)]
    output = spec.outputs[spec.image_output].name
    reference = TorchBackend(ImageOutput(model, spec.image_output), [t.name for t in spec.inputs], [output])
    records = []
    for artifact in manifest.get("artifacts", []):
        if artifact.get("kind") != "onnx" or (only and artifact["file"] not in only):
            continue
        file = out_dir / artifact["file"]
        if not file.exists():
            raise ArtifactError(f"{file} is listed in the manifest but missing; re-run 'deploykit export'")
        if sha256_file(file) != artifact["sha256"]:
            raise ArtifactError(f"{file} does not match the sha256 in its manifest (modified or torn update)")
        with OrtBackend(file, precision=artifact["precision"]) as backend:
            records += check_parity(spec, reference, backend, shapes)
    if not records:
        raise ArtifactError(f"no ONNX artifacts to check in {out_dir}")
    return records
