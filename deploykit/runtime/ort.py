"""ONNX Runtime runner (CPU, or the CUDA execution provider when onnxruntime-gpu and a GPU are present)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from deploykit.errors import BackendUnavailableError
from deploykit.runtime.base import Backend
from deploykit.runtime.gpu import ort_provider_missing
from deploykit.util.system import cpu_count

_PROVIDERS = {"cpu": ["CPUExecutionProvider"], "cuda": ["CUDAExecutionProvider", "CPUExecutionProvider"]}


GRAPH_LEVELS = ("all", "extended")  # ORT_ENABLE_ALL (NCHWc conv layout) / ORT_ENABLE_EXTENDED (plain NCHW)


def default_threads() -> int:
    """One intra-op thread per CPU this process may run on."""
    return cpu_count()


ENV_ALLOCATORS = ("session.use_env_allocators", "1")  # session config: use the process-wide arena
ARENA_SHRINK = ("memory.enable_memory_arena_shrinkage", "cpu:0")  # run config: free the arena's idle chunks
_ENV_ARENA: list[bool] = []  # registered once per process


# the session's own power-of-two arena (ORT's default) / register_cpu_arena's / none: plain malloc, each tensor
# returned to the OS when freed (UDVD's large unfold tensors fragment an arena: 10.7 -> 8.4 GB at 1024^2)
ARENAS = ("session", "shared", "none")


def cpu_session_recipe(graph: str = "all", arena: str = "session") -> dict:
    """deploykit's CPU session as plain settings (written into each export's manifest for C++ / Triton users,
    and the one source :func:`cpu_session_options` builds from). ``arena`` is the model's (``ModelSpec.ort_arena``)."""
    if graph not in GRAPH_LEVELS:
        raise BackendUnavailableError(f"unknown ONNX Runtime graph level {graph!r} (use {' or '.join(GRAPH_LEVELS)})")
    if arena not in ARENAS:
        raise BackendUnavailableError(f"unknown ONNX Runtime CPU arena {arena!r} (use {' or '.join(ARENAS)})")
    recipe = {"graph_optimization_level": "ORT_ENABLE_ALL" if graph == "all" else "ORT_ENABLE_EXTENDED",
              "execution_mode": "ORT_SEQUENTIAL", "enable_mem_pattern": False,
              "enable_cpu_mem_arena": arena != "none",
              "cpu_arena": arena, "session_config": {}, "run_config": {},
              "threads": "intra_op = inter_op = the CPUs given to the process",
              "why": "the memory pattern costs 1.6-1.9x peak memory at no measured speed gain; the shared "
                     "same-as-requested arena 25-33 % less than the power-of-two one on single-scale nets "
                     "(benchmarks/ort_memory.py)"}
    if arena == "shared":
        recipe.update(env_cpu_arena={"arena_extend_strategy": "kSameAsRequested",
                                     "api": "CreateAndRegisterAllocator(OrtMemoryInfo Cpu arena, OrtArenaCfg "
                                            "max_mem=0, arena_extend_strategy=1, rest -1)"},
                      session_config=dict([ENV_ALLOCATORS]), run_config=dict([ARENA_SHRINK]))
    return recipe


def register_cpu_arena() -> None:
    """The process-wide CPU arena deploykit's sessions share: chunks **the size requested**
    (``kSameAsRequested``) instead of ORT's default power-of-two extension, which rounds each new region up --
    EDSR m_x4 256^2: 1,111 MB default, 765 MB same-as-requested, no measured speed cost
    (``benchmarks/ort_memory.py``, ``ort-same`` / ``ort-shrink``). Idempotent."""
    import onnxruntime as ort

    if not _ENV_ARENA:
        info = ort.OrtMemoryInfo("Cpu", ort.OrtAllocatorType.ORT_ARENA_ALLOCATOR, 0, ort.OrtMemType.DEFAULT)
        ort.create_and_register_allocator(info, ort.OrtArenaCfg(0, 1, -1, -1))  # max, kSameAsRequested, defaults
        _ENV_ARENA.append(True)


def uses_env_arena(options) -> bool:
    """Whether a SessionOptions shares the process-wide arena (then each run should shrink it)."""
    try:
        return options.get_session_config_entry(ENV_ALLOCATORS[0]) == ENV_ALLOCATORS[1]
    except Exception:  # noqa: BLE001 (ORT raises when the key was never set)
        return False


def cpu_session_options(threads: int | None = None, graph: str = "all", arena: str = "session"):
    """deploykit's ONNX Runtime CPU session: ``threads`` intra-op AND inter-op (default one per visible CPU),
    sequential execution, **memory pattern off**, graph optimisation ``all`` or ``extended``, the CPU arena
    ``session`` (its own, ORT's default), ``shared`` (:func:`register_cpu_arena`; each run frees its idle chunks,
    so one size's memory is not kept for the next session or size) or ``none`` (no arena: plain malloc).

    Why the memory pattern is off: with it on, a session whose first run is at the size it will keep running at
    (a bench case, an app on fixed-size frames) allocates the pattern's block on the second run while the arena
    still holds the first run's tensors -- the steady peak is 1.6-1.9x (EDSR m_x4 256^2: 1,114 MB first run,
    1,820 MB from the second on; off: 1,116 MB flat), at no measured speed cost (``benchmarks/ort_memory.py``).
    ``extended`` skips the NCHWc layout transformer: no reorder copies of full-size tensors (8-30 % less peak
    memory measured at 256^2 across the zoo) at the cost of MLAS's blocked convolutions (0-90 % slower, by model):
    the runner for frames that fit only that way (``deploykit bench`` picks it per case)."""
    import onnxruntime as ort

    recipe = cpu_session_recipe(graph, arena)
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    opts.intra_op_num_threads = threads or default_threads()
    opts.inter_op_num_threads = threads or default_threads()
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.enable_mem_pattern = recipe["enable_mem_pattern"]
    opts.enable_cpu_mem_arena = recipe["enable_cpu_mem_arena"]
    if arena == "shared":
        register_cpu_arena()
    for key, value in recipe["session_config"].items():
        opts.add_session_config_entry(key, value)
    opts.graph_optimization_level = getattr(ort.GraphOptimizationLevel, recipe["graph_optimization_level"])
    return opts


class OrtBackend(Backend):
    """One InferenceSession over an ONNX file; float16 graph inputs are fed as float16 automatically."""

    def __init__(self, path: str | Path, *, device: str = "cpu", precision: str = "fp32",
                 threads: int | None = None, session_options=None):
        """``session_options``: an ``onnxruntime.SessionOptions`` to start from (graph optimisation level,
        profiling, memory pattern …; default :func:`cpu_session_options`); its thread count is kept when set, else
        ``threads`` / one per visible CPU."""
        import onnxruntime as ort

        if device not in _PROVIDERS:
            raise BackendUnavailableError(f"unknown ONNX Runtime device '{device}' (use cpu or cuda)")
        if device == "cuda" and ort_provider_missing("CUDAExecutionProvider"):
            raise BackendUnavailableError(ort_provider_missing("CUDAExecutionProvider"))
        options = session_options if session_options is not None else cpu_session_options(threads)
        if threads or not options.intra_op_num_threads:
            options.intra_op_num_threads = threads or default_threads()
        self.session = ort.InferenceSession(str(path), sess_options=options, providers=_PROVIDERS[device])
        self.path = Path(path)
        self.name, self.device, self.precision = f"ort-{device}", device, precision
        self._in = {i.name: (np.float16 if i.type == "tensor(float16)" else np.float32)
                    for i in self.session.get_inputs()}
        self._run_options = None
        if uses_env_arena(options):
            self._run_options = ort.RunOptions()
            self._run_options.add_run_config_entry(*ARENA_SHRINK)

    @property
    def threads(self) -> int:
        """The intra-op thread count the session really has (read back from it, not what was asked for)."""
        return int(self.session.get_session_options().intra_op_num_threads)

    @property
    def arena(self) -> str:
        """Which CPU arena the session allocates from (for records and readbacks)."""
        if self._run_options is not None:
            return "shared same-as-requested, shrunk after each run"
        if not self.session.get_session_options().enable_cpu_mem_arena:
            return "none (plain malloc)"
        return "the session's own (ORT default)"

    def describe(self) -> dict:
        return {**super().describe(), "intra_op_threads": self.threads, "cpu_arena": self.arena}

    @property
    def input_names(self) -> list[str]:
        return list(self._in)

    @property
    def output_names(self) -> list[str]:
        return [o.name for o in self.session.get_outputs()]

    def run(self, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        ort_feed = {n: np.ascontiguousarray(feed[n], dtype=dt) for n, dt in self._in.items()}
        outs = self.session.run(None, ort_feed, self._run_options)
        return {n: o.astype(np.float32, copy=False) for n, o in zip(self.output_names, outs)}

    def close(self) -> None:
        self.session = None
