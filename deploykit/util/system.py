"""Facts about this machine and this process, read from /proc and /sys: memory, load, CPU identity, peak RSS.

The one reader of ``/proc/self/status`` and the one peak-RSS probe (:func:`probe_peak_rss`) that ``bench``'s
memory calibration and ``infer --tile auto`` both use.
"""

from __future__ import annotations

import contextlib
import ctypes
import gc
import os
import platform
import threading
from collections.abc import Callable, Sequence
from pathlib import Path

from deploykit.util.text import slug


def status_field(name: str) -> str | None:
    """The value of one ``/proc/self/status`` field (``VmRSS``, ``VmHWM``, ``Umask`` …), None off Linux."""
    with contextlib.suppress(OSError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(name + ":"):
                return line.split(":", 1)[1].strip()
    return None


def status_bytes(name: str) -> int | None:
    """A ``/proc/self/status`` size field (``VmRSS``, ``VmHWM``) in bytes."""
    value = status_field(name)
    with contextlib.suppress(ValueError, IndexError, AttributeError):
        return int(value.split()[0]) * 1024
    return None


def reset_peak_rss() -> bool:
    """Reset ``VmHWM`` to the current RSS (``/proc/self/clear_refs``); False where the kernel does not allow it."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def release_memory() -> None:
    """Collect garbage and hand freed heap pages back to the OS (glibc malloc_trim), so RSS means 'in use'."""
    gc.collect()
    with contextlib.suppress(Exception):
        ctypes.CDLL("libc.so.6").malloc_trim(0)


def peak_rss_measurable() -> bool:
    return status_bytes("VmHWM") is not None and reset_peak_rss()


def probe_peak_rss(run_at: Callable[[int], None], sizes: Sequence[int], warm: int, repeats: int = 1) -> list[int]:
    """Peak RSS growth (bytes) over ``repeats`` runs at each size, each above the RSS just before that size (after a
    warm-up run at ``warm``: thread pools, kernel caches), as a case measures it; the peak is reset before each
    size, and a size's growth never counts what an earlier size left allocated."""
    run_at(warm)
    peaks = []
    for size in sizes:
        release_memory()
        base = status_bytes("VmRSS") or 0
        reset_peak_rss()
        for _ in range(repeats):
            run_at(size)
        peaks.append(max(0, (status_bytes("VmHWM") or base) - base))
    return peaks


class RssMeter:
    """Peak RSS over a block: VmHWM after a reset through /proc/self/clear_refs, or a 5 ms sampling thread."""

    def __init__(self):
        self.before = 0
        self.peak = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.method = "VmHWM"

    def start(self) -> RssMeter:
        release_memory()
        self.before = status_bytes("VmRSS") or 0
        if not reset_peak_rss():
            self.method = "sampled VmRSS (5 ms)"
            self.peak = self.before
            self._thread = threading.Thread(target=self._sample, daemon=True)
            self._thread.start()
        return self

    def _sample(self) -> None:
        while not self._stop.wait(0.005):
            self.peak = max(self.peak, status_bytes("VmRSS") or 0)

    def stop(self) -> dict:
        if self._thread is not None:
            self._stop.set()
            self._thread.join()
        else:
            self.peak = status_bytes("VmHWM") or self.before
        return {"rss_before_bytes": self.before, "rss_peak_bytes": self.peak,
                "rss_peak_delta_bytes": max(0, self.peak - self.before), "rss_method": self.method}


def meminfo() -> dict[str, int]:
    """/proc/meminfo fields in bytes (empty off Linux)."""
    out: dict[str, int] = {}
    with contextlib.suppress(OSError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            key, _, rest = line.partition(":")
            parts = rest.split()
            if parts and parts[0].isdigit():
                out[key] = int(parts[0]) * (1024 if len(parts) > 1 and parts[1] == "kB" else 1)
    return out


def available_memory() -> int:
    """Bytes this process may still use: MemAvailable (/proc/meminfo), capped by a cgroup v2/v1 limit."""
    avail = meminfo().get("MemAvailable")
    if avail is None:
        try:
            avail = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        except (ValueError, OSError, AttributeError):
            avail = 4 << 30
    for limit_file, usage_file in (("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory.current"),
                                   ("/sys/fs/cgroup/memory/memory.limit_in_bytes",
                                    "/sys/fs/cgroup/memory/memory.usage_in_bytes")):
        try:
            limit = Path(limit_file).read_text().strip()
            if limit != "max" and int(limit) < (1 << 60):
                avail = min(avail, int(limit) - int(Path(usage_file).read_text().strip()))
        except (OSError, ValueError):
            continue
    return max(int(avail), 0)


def host_reserve(total: int | None = None) -> int:
    """Memory a memory guard leaves free for the OS and the other processes on the machine."""
    total = total if total is not None else meminfo().get("MemTotal", 16 << 30)
    return max(1 << 30, int(0.10 * total))


def loadavg() -> list[float] | None:
    try:
        return [float(v) for v in Path("/proc/loadavg").read_text().split()[:3]]
    except (OSError, ValueError):
        return None


def cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine() or "unknown CPU"


def cpu_count() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def cpu_slug() -> str:
    """Results folder name of this CPU machine (``benchmarks/results/<slug>/``), e.g. ``cpu-amd-epyc-2cpu``."""
    return f"cpu-{slug(cpu_model()).lower()}-{cpu_count()}cpu"


KERNEL_FLAGS = ("sse4_2", "avx", "avx2", "fma", "f16c", "avx512f", "avx512bw", "avx512vl", "avx512_vnni",
                "avx512_bf16", "avx512_fp16", "avx_vnni", "amx_tile", "amx_bf16", "amx_int8", "amx_fp16")


def _cpuinfo_first() -> dict[str, str]:
    """The fields of the first processor block of /proc/cpuinfo (empty off Linux)."""
    fields: dict[str, str] = {}
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if not line.strip():
                if fields:
                    break
                continue
            key, _, value = line.partition(":")
            fields.setdefault(key.strip().lower(), value.strip())
    return fields


def cgroup_cpu_quota() -> float | None:
    """CPUs this cgroup may use (quota / period, cgroup v2 cpu.max or v1 cfs_quota_us), None when unlimited."""
    with contextlib.suppress(OSError, ValueError):
        quota, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()[:2]
        return None if quota == "max" else int(quota) / int(period)
    with contextlib.suppress(OSError, ValueError):
        quota = int(Path("/sys/fs/cgroup/cpu/cpu.cfs_quota_us").read_text())
        period = int(Path("/sys/fs/cgroup/cpu/cpu.cfs_period_us").read_text())
        return None if quota <= 0 else quota / period
    return None


def cpu_identity(cpuinfo: dict[str, str] | None = None) -> dict:
    """The CPU as /proc/cpuinfo names it: model name, vendor, family/model/stepping, MHz, the SIMD/matrix flags
    the kernels care about (present ones only), visible CPUs (affinity), all CPUs, and the cgroup CPU quota."""
    info = _cpuinfo_first() if cpuinfo is None else cpuinfo
    flags = set(info.get("flags", "").split())

    def number(key: str):
        with contextlib.suppress(ValueError, TypeError):
            value = float(info[key])
            return int(value) if value.is_integer() and key != "cpu mhz" else value
        return None

    return {"model_name": info.get("model name") or cpu_model(), "vendor": info.get("vendor_id"),
            "family": number("cpu family"), "model": number("model"), "stepping": number("stepping"),
            "mhz": number("cpu mhz"), "flags": [f for f in KERNEL_FLAGS if f in flags],
            "cpus_visible": cpu_count(), "cpus_total": os.cpu_count(), "cgroup_cpu_quota": cgroup_cpu_quota(),
            "machine": platform.machine()}


def cpu_identity_text(ident: dict) -> str:
    """'AMD EPYC (family 25 model 17 stepping 1, 2596 MHz, avx2 avx512f …, 2 CPUs visible)'."""
    mhz = f", {ident['mhz']:.0f} MHz" if ident.get("mhz") else ""
    quota = f", cgroup quota {ident['cgroup_cpu_quota']:g} CPUs" if ident.get("cgroup_cpu_quota") else ""
    return (f"{ident.get('model_name')} (family {ident.get('family')} model {ident.get('model')} stepping "
            f"{ident.get('stepping')}{mhz}, {' '.join(ident.get('flags') or []) or 'no AVX'}, "
            f"{ident.get('cpus_visible')} CPUs visible{quota})")
