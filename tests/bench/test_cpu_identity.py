"""deploykit.util.system.cpu_identity: the CPU as /proc/cpuinfo names it, recorded in every bench result."""

from __future__ import annotations

from deploykit.util.system import cpu_identity, cpu_identity_text

EPYC = {"vendor_id": "AuthenticAMD", "cpu family": "25", "model": "17", "model name": "AMD EPYC", "stepping": "1",
        "cpu mhz": "2596.140", "flags": "fpu sse4_2 avx avx2 fma avx512f avx512bw avx512_bf16 vaes"}


def test_cpu_identity_parses_family_model_stepping_and_kernel_flags():
    ident = cpu_identity(EPYC)
    assert (ident["model_name"], ident["vendor"]) == ("AMD EPYC", "AuthenticAMD")
    assert (ident["family"], ident["model"], ident["stepping"]) == (25, 17, 1)
    assert ident["mhz"] == 2596.14
    assert ident["flags"] == ["sse4_2", "avx", "avx2", "fma", "avx512f", "avx512bw", "avx512_bf16"]  # no vaes/fpu
    assert ident["cpus_visible"] >= 1
    text = cpu_identity_text(ident)
    assert text.startswith("AMD EPYC (family 25 model 17 stepping 1, 2596 MHz, sse4_2 avx avx2") and "CPUs visible" in text


def test_cpu_identity_of_this_machine_is_complete():
    ident = cpu_identity()
    assert set(ident) == {"model_name", "vendor", "family", "model", "stepping", "mhz", "flags", "cpus_visible",
                          "cpus_total", "cgroup_cpu_quota", "machine"}
    assert ident["model_name"]
