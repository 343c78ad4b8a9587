"""Finding artifacts: the export folder of a model, the artifact of a kind and precision in a manifest, and a
listed file checked against its recorded sha256. Every caller (infer, bench, parity, build, aoti, Triton) finds
files through these, so an export is found, and trusted, one way.
"""

from __future__ import annotations

from pathlib import Path

from deploykit.artifacts.manifest import MANIFEST_NAME, check_member_name, read_manifest
from deploykit.errors import ArtifactError
from deploykit.util.files import sha256_file
from deploykit.util.locks import wait_for_writer
from deploykit.zoo.spec import ModelSpec

AOTI_KIND = "aoti"
DEFAULT_EXPORTS = Path("exports")


def export_dir(spec: ModelSpec, root: str | Path = DEFAULT_EXPORTS) -> Path:
    """Where ``deploykit export`` writes ``spec``: ``ROOT/<family>/<variant>/``."""
    return Path(root) / spec.family / spec.variant


def read_export(spec: ModelSpec, root: str | Path = DEFAULT_EXPORTS, hint: str = "") -> tuple[Path, dict]:
    """(folder, manifest) of ``spec``'s export under ``root``; ArtifactError naming the command that makes it."""
    folder = export_dir(spec, root)
    todo = f"run 'deploykit export {spec.name}' first{hint}"
    if not (folder / MANIFEST_NAME).is_file():
        raise ArtifactError(f"no exported {spec.name} under {folder}; {todo} (or point --exports at the export root)")
    manifest = read_manifest(folder)
    if manifest.get("model", {}).get("name") != spec.name:
        raise ArtifactError(f"{folder} holds {manifest.get('model', {}).get('name')}, not {spec.name}; {todo}")
    return folder, manifest


def onnx_artifacts(manifest: dict | None) -> list[dict]:
    """The manifest's ONNX artifacts (entries written before ``kind`` existed are ONNX)."""
    return [a for a in (manifest or {}).get("artifacts", []) if a.get("kind", "onnx") == "onnx"]


def onnx_artifact(manifest: dict | None, precision: str) -> dict | None:
    """The manifest's ONNX artifact of ``precision`` ('fp32' / 'fp16'), or None."""
    return next((a for a in onnx_artifacts(manifest) if a.get("precision") == precision), None)


def require_onnx(manifest: dict, folder: Path, precision: str, spec: ModelSpec) -> dict:
    """The ONNX artifact of ``precision``, present on disk; ArtifactError saying which exist and what to run."""
    artifact = onnx_artifact(manifest, precision)
    if artifact is None:
        have = sorted({str(a.get("precision")) for a in onnx_artifacts(manifest)})
        hint = " (export without --no-fp16)" if precision == "fp16" else ""
        raise ArtifactError(f"no {precision} ONNX artifact for {spec.name} in {folder} (have: "
                            f"{', '.join(have) or 'none'}); run 'deploykit export {spec.name}'{hint} first")
    if not (folder / check_member_name(artifact.get("file"), "artifact file")).is_file():
        raise ArtifactError(f"{folder / artifact['file']} is listed in the manifest but missing; run "
                            f"'deploykit export {spec.name}' again")
    return artifact


def aoti_artifact(manifest: dict, device: str = "cpu") -> dict:
    """The manifest's AOTInductor entry for ``device`` (ArtifactError naming the command when there is none)."""
    kind = str(device).split(":")[0]
    for artifact in manifest.get("artifacts", []):
        if artifact.get("kind") == AOTI_KIND and artifact.get("device") == kind:
            return artifact
    raise ArtifactError(f"no {kind} AOTInductor package is recorded in this manifest; run "
                        f"'deploykit export {manifest.get('model', {}).get('name', 'MODEL')} --aoti' first")


def verified_file(folder: str | Path, entry: dict, *, again: str = "deploykit export",
                  error: type[Exception] = ArtifactError) -> Path:
    """The file a manifest entry lists, present and matching its recorded sha256 (no torn or foreign file).
    ``again`` names the command that rewrites it; ``error`` is the failure family of the caller's layer. When the
    file does not match while a writer holds the folder's lock (``util.locks``), it waits for the writer and
    checks the file against the manifest the writer left (a reader never takes a torn update for a broken one)."""
    problem = _file_problem(folder, entry, again)
    if problem and wait_for_writer(folder):
        entry = _current_entry(folder, entry) or entry
        problem = _file_problem(folder, entry, again)
    if problem:
        raise error(problem)
    return Path(folder) / entry["file"]


def _file_problem(folder: str | Path, entry: dict, again: str) -> str | None:
    """Why ``entry``'s file cannot be trusted (missing, sha256 mismatch, external weights missing), or None."""
    try:
        check_member_name(entry.get("file") if isinstance(entry, dict) else None, "manifest entry file")
        if entry.get("external_data"):
            check_member_name(entry["external_data"], "manifest entry external_data")
    except ArtifactError as exc:
        return f"{exc} in the manifest in {folder}; run '{again}' again"
    path = Path(folder) / entry["file"]
    if not path.is_file():
        return f"{path} is listed in the manifest but missing; run '{again}' again"
    if entry.get("sha256") and sha256_file(path) != entry["sha256"]:
        return (f"{path} does not match the sha256 in its manifest (modified or torn update); "
                f"run '{again}' again")
    data = entry.get("external_data")
    if data and not (Path(folder) / data).is_file():
        return f"{Path(folder) / data} (external weights of {path.name}) is missing; run '{again}' again"
    return None


def _current_entry(folder: str | Path, entry: dict) -> dict | None:
    """The entry listing the same file in the manifest on disk now (after a writer finished)."""
    try:
        manifest = read_manifest(folder)
    except ArtifactError:
        return None
    return next((e for section in ("artifacts", "engines") for e in manifest.get(section, [])
                 if e.get("file") == entry.get("file")), None)


def locate(path: str | Path) -> tuple[Path, list[str] | None]:
    """An export directory, its manifest.json or one of its .onnx files -> (export dir, files to use or None)."""
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
