"""Carrying a long benchmark over several runs (``deploykit bench --name NAME --resume``).

A 2K sweep of the zoo on a CPU takes hours; with ``--resume`` the results file is rewritten after every case and a
later run with the same options measures only the cases the file does not hold yet. Cases are only ever carried
between runs of the same machine, library versions and timing options: each record keeps the index of the run
(``segment``) that measured it, and each run's own GEMM probe, so every ``peak_fraction`` stays a same-run ratio.
"""

from __future__ import annotations

import dataclasses

from deploykit.bench.records import BenchRecord
from deploykit.errors import BenchError

# What a carried record must share with this run: the timing options (sizes and models may grow) ...
SAME_SETTINGS = ("backends", "precisions", "batch", "warmup", "iters", "seconds", "tile", "overlap", "threads")
# ... the libraries that run the cases ...
SAME_VERSIONS = ("deploykit", "torch", "onnx", "onnxruntime", "onnxruntime-gpu", "tensorrt")
# ... and a status that is a result (errors and plans run again).
DONE_STATUSES = ("ok", "skipped")


def record_key(model: str, backend: str, precision: str, input_hw, batch: int) -> tuple:
    """What identifies a case across runs."""
    return (model, backend, precision, tuple(input_hw), int(batch))


def key_of(record: BenchRecord) -> tuple:
    """The key of the case that made ``record``: a tiled record's batch is 1, its case's is ``tiles_per_run``."""
    batch = (record.tile or {}).get("tiles_per_run", record.batch)
    return record_key(record.model, record.backend, record.precision, record.input_hw, batch)


def record_from_dict(data: dict) -> BenchRecord:
    """A record read back from a results file (derived fields such as ``input_wxh`` dropped)."""
    names = {f.name for f in dataclasses.fields(BenchRecord)}
    return BenchRecord(**{k: v for k, v in data.items() if k in names})


def _machine(device: dict) -> dict:
    """The parts of ``device_info`` that must not change between runs (the clock reading does)."""
    ident = {k: v for k, v in (device.get("cpu_identity") or {}).items() if k != "mhz"}
    gpu = device.get("gpu") or {}
    return {"cpu": ident, "cores": device.get("cpu_cores_visible"), "gpu": gpu.get("name")}


def resume_mismatch(previous: dict, settings: dict, device: dict, versions: dict) -> list[str]:
    """Why ``previous`` (a loaded results file) cannot be continued by this run; empty when it can."""
    why = []
    old_settings = previous.get("settings", {})
    for key in SAME_SETTINGS:
        if old_settings.get(key) != settings.get(key):
            why.append(f"{key} {old_settings.get(key)!r} there, {settings.get(key)!r} now")
    if _machine(previous.get("device", {})) != _machine(device):
        why.append(f"machine {previous.get('device', {}).get('name')!r} there, {device.get('name')!r} now")
    old_versions = previous.get("versions", {})
    for key in SAME_VERSIONS:
        if old_versions.get(key) != versions.get(key):
            why.append(f"{key} {old_versions.get(key)} there, {versions.get(key)} now")
    return why


@dataclasses.dataclass
class Carried:
    """What a resumed run starts from: the finished records by case, and the earlier runs (``segments``)."""

    records: dict[tuple, BenchRecord]
    segments: list[dict]
    flops: dict
    interrupted: dict[tuple, BenchRecord] = dataclasses.field(default_factory=dict)  # "running" when it ended

    @classmethod
    def none(cls) -> Carried:
        return cls({}, [], {})

    @property
    def segment(self) -> int:
        """This run's index in ``segments``."""
        return len(self.segments)


def carried_from(previous: dict | None, source: str, settings: dict, device: dict, versions: dict) -> Carried:
    """The finished cases of ``previous`` (None: a fresh start), after checking that this run may continue it.

    Raises BenchError naming every difference when it may not."""
    if not previous:
        return Carried.none()
    if previous.get("settings", {}).get("plan_only"):
        raise BenchError(f"cannot resume {source}: it is a --plan-only file (nothing was measured); use another --name")
    why = resume_mismatch(previous, settings, device, versions)
    if why:
        raise BenchError(f"cannot resume {source}: " + "; ".join(why)
                         + " (run with the same options on the same machine, or use another --name)")
    segments = list(previous.get("segments") or [segment_of(previous)])
    records, interrupted = {}, {}
    for data in previous.get("records", []):
        if data.get("status") in (*DONE_STATUSES, "running"):
            record = record_from_dict(data)
            if record.segment is None:
                record.segment = 0
            key = key_of(record)
            (records if record.status in DONE_STATUSES else interrupted)[key] = record
    return Carried(records, segments, dict(previous.get("flops") or {}), interrupted)


def segment_of(data: dict) -> dict:
    """One run of a results file, as kept in ``segments``: when, how, and its own GEMM probe and load."""
    return {k: data.get(k) for k in ("started", "created", "command", "probe", "load")}
