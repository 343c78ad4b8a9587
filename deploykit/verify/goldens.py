"""Goldens: the gate's inputs and the PyTorch FP32 outputs written as ``.npy`` files plus a JSON index, so any
backend can be checked on a box without PyTorch (``deploykit parity EXPORT --golden DIR``, ``aoti_run --check``).

Layout of a golden folder (schema ``deploykit.golden`` v1)::

    golden.json                  model, variant, weights sha256, manifest sha256, tolerances, cases
    c000_r000_image.npy          run 0 of case 0: one model input (padded to the contract: a whole image or a tile)
    c000_r000_output.npy         its PyTorch FP32 output (the model's whole output for that input)

Each case lists its runs with the output window they cover (``y, x, h, w``: the output is cut to ``h x w`` and
placed at ``(y, x)`` of the case's output), so a checker compares the same pixels the gate did. Every file is
NumPy format 1.0, little-endian float32, C order (``cpp/src/golden.cpp`` reads it), listed with its sha256.
This module imports no torch.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from deploykit._version import __version__
from deploykit.artifacts.manifest import MANIFEST_NAME
from deploykit.errors import ArtifactError, InputError
from deploykit.util.files import sha256_file, write_json_atomic

SCHEMA = "deploykit.golden"
SCHEMA_VERSION = 1
INDEX = "golden.json"


def weights_id(manifest: dict) -> str:
    """The weights an export was made from: the checkpoint's sha256, or ``random-init:SEED``."""
    w = manifest.get("weights", {})
    return w.get("sha256") or f"random-init:{w.get('seed', 0)}"


def export_identity(export_dir: Path, manifest: dict) -> dict:
    model = manifest.get("model", {})
    return {"model": model.get("name"), "family": model.get("family"), "variant": model.get("variant"),
            "weights_sha256": weights_id(manifest), "manifest_sha256": sha256_file(export_dir / MANIFEST_NAME)}


class GoldenWriter:
    """Writes a golden folder into a staging folder and publishes it whole on :meth:`finish` (nothing half-written:
    an interrupted save leaves the previous golden, if any)."""

    def __init__(self, folder: str | Path, identity: dict, *, tolerances: dict, value_range, scale: int,
                 inputs: str):
        self.folder = Path(folder)
        if self.folder.exists() and not (self.folder / INDEX).is_file() and any(self.folder.iterdir()):
            raise InputError(f"--save-golden {self.folder}: the folder exists and holds no golden; "
                             "give a new or empty folder")
        self.staging = self.folder.parent / f".{self.folder.name}.staging-{os.getpid()}"
        shutil.rmtree(self.staging, ignore_errors=True)
        self.staging.mkdir(parents=True)
        self.index = {"schema": SCHEMA, "schema_version": SCHEMA_VERSION,
                      "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
                      "deploykit": __version__, **identity, "tolerances": tolerances,
                      "value_range": list(value_range), "scale": scale, "inputs": inputs, "cases": []}

    def add_case(self, case: dict) -> dict:
        entry = {**case, "runs": []}
        self.index["cases"].append(entry)
        return entry

    def add_run(self, entry: dict, feed: dict[str, np.ndarray], output: np.ndarray, window: tuple) -> None:
        c, r = len(self.index["cases"]) - 1, len(entry["runs"])
        files = {name: self._save(f"c{c:03d}_r{r:03d}_{name}.npy", arr) for name, arr in feed.items()}
        y, x, h, w = window
        entry["runs"].append({"inputs": files, "output": self._save(f"c{c:03d}_r{r:03d}_output.npy", output),
                              "y": y, "x": x, "h": h, "w": w})

    def _save(self, name: str, arr: np.ndarray) -> dict:
        np.save(self.staging / name, np.ascontiguousarray(arr, "<f4"), allow_pickle=False)
        return {"file": name, "shape": list(arr.shape), "sha256": sha256_file(self.staging / name)}

    def finish(self) -> Path:
        write_json_atomic(self.staging / INDEX, self.index)
        if self.folder.exists():
            shutil.rmtree(self.folder)
        os.replace(self.staging, self.folder)
        return self.folder

    def abort(self) -> None:
        shutil.rmtree(self.staging, ignore_errors=True)


@dataclass
class Golden:
    folder: Path
    index: dict

    @property
    def cases(self) -> list[dict]:
        return self.index["cases"]

    def load(self, entry: dict) -> np.ndarray:
        """One listed array, checked against its sha256 (a tampered golden is refused, never compared)."""
        path = self.folder / entry["file"]
        if not path.is_file():
            raise ArtifactError(f"golden file {path} is missing; re-save the golden with --save-golden")
        if sha256_file(path) != entry["sha256"]:
            raise ArtifactError(f"golden file {path} does not match its sha256 in {INDEX} (modified or corrupted); "
                                "re-save the golden with --save-golden")
        arr = np.load(path, allow_pickle=False)
        if list(arr.shape) != entry["shape"] or arr.dtype != np.float32:
            raise ArtifactError(f"golden file {path} holds {arr.dtype} {list(arr.shape)}, {INDEX} lists float32 "
                                f"{entry['shape']}; re-save the golden")
        return arr

    def load_run(self, run: dict) -> tuple[dict[str, np.ndarray], np.ndarray]:
        return {name: self.load(e) for name, e in run["inputs"].items()}, self.load(run["output"])


def read_golden(folder: str | Path) -> Golden:
    folder = Path(folder)
    path = folder / INDEX
    try:
        index = json.loads(path.read_text())
    except FileNotFoundError as exc:
        raise InputError(f"--golden {folder}: no {INDEX} there; make one with --save-golden {folder}") from exc
    except (OSError, json.JSONDecodeError) as exc:
        raise ArtifactError(f"cannot read {path}: {exc}") from exc
    if index.get("schema") != SCHEMA or index.get("schema_version", 0) > SCHEMA_VERSION:
        raise ArtifactError(f"{path} is not a deploykit golden this version reads (schema {index.get('schema')!r} "
                            f"v{index.get('schema_version')})")
    return Golden(folder, index)


def check_identity(golden: Golden, identity: dict) -> None:
    """ArtifactError when the golden was made for another model, other weights or another export."""
    g, again = golden.index, f"re-save it with 'deploykit parity EXPORT --save-golden {golden.folder}'"
    if g.get("model") != identity["model"]:
        raise ArtifactError(f"golden {golden.folder} was made for {g.get('model')}, this export is "
                            f"{identity['model']}; {again}")
    if g.get("weights_sha256") != identity["weights_sha256"]:
        raise ArtifactError(f"golden {golden.folder} was made for other weights ({str(g.get('weights_sha256'))[:16]}"
                            f"), this export has {identity['weights_sha256'][:16]}; {again}")
    if g.get("manifest_sha256") != identity["manifest_sha256"]:
        raise ArtifactError(f"golden {golden.folder} was made for another export of {identity['model']} (manifest "
                            f"sha256 {str(g.get('manifest_sha256'))[:16]}, this one {identity['manifest_sha256'][:16]}"
                            f"); {again}")
