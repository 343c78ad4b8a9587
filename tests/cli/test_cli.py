"""The deploykit command: tables, one-line errors and exit codes (no tracebacks)."""

from __future__ import annotations

import pytest


def test_list_shows_all_families_and_variants(cli_run):
    code, out, _ = cli_run("list")
    assert code == 0
    assert "10 families, 35 variants" in out
    for family in ("mirnetv2", "mirnet", "mprnet", "udvd", "vapsr", "edsr", "rcan", "srresnet", "panet", "paedsr"):
        assert f"│ {family} " in out
    assert "real_denoising*" in out and "s_x4" in out


def test_info_shows_contract_and_outputs(cli_run):
    code, out, _ = cli_run("info", "mprnet:denoising")
    assert code == 0
    assert "15,741,025" in out and "multiple_of 8" in out and "[stage3, stage2, stage1]" in out


@pytest.mark.parametrize("args,message", [
    (("info", "nosuchnet"), "unknown model 'nosuchnet'; valid models: mirnetv2"),
    (("export", "nosuchnet"), "unknown model 'nosuchnet'"),
    (("export", "vapsr:s_x4", "--weights", "/nonexistent/w.pth", "--no-fp16"), "weights file not found"),
    (("export", "vapsr:s_x4", "--form", "pixelconv=fft"), "pixelconv takes one of shift, unfold"),
])
def test_errors_are_one_line_with_nonzero_exit(cli_run, args, message):
    code, out, err = cli_run(*args)
    assert code == 2
    assert message in err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:")
    assert "Traceback" not in out + err


def test_unwritable_out_dir(cli_run, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    code, _, err = cli_run("export", "srresnet:x2", "--out", str(blocker), "--no-fp16")
    assert code == 2 and "cannot create output directory" in err and len(err.strip().splitlines()) == 1


def test_corrupt_weights_file(cli_run, tmp_path):
    bad = tmp_path / "bad.pth"
    bad.write_bytes(b"garbage" * 100)
    code, _, err = cli_run("export", "vapsr:s_x4", "--weights", str(bad), "--out", str(tmp_path))
    assert code == 2 and "cannot read" in err
    assert not (tmp_path / "vapsr").exists() or not any((tmp_path / "vapsr").rglob("*.onnx"))


def test_export_then_parity_cli(cli_run, tmp_path):
    code, out, _ = cli_run("export", "srresnet:x2", "--out", str(tmp_path), "--no-fp16")
    assert code == 0
    assert "RANDOM INIT" in out or "random initialisation" in out
    assert "srresnet_x2.fp32.onnx" in out and "pass" in out
    code, out, _ = cli_run("parity", str(tmp_path / "srresnet" / "x2"))
    assert code == 0 and "pass" in out and "FAIL" not in out


def test_parity_on_missing_dir(cli_run, tmp_path):
    code, _, err = cli_run("parity", str(tmp_path))
    assert code == 2 and "no manifest" in err


def test_export_trt_without_tensorrt_is_a_skipped_step(cli_run, tmp_path):
    from deploykit.trt.build import tensorrt_unavailable_reason

    if tensorrt_unavailable_reason(0) is None:
        pytest.skip("TensorRT and a GPU are present: the build really runs here")
    code, out, err = cli_run("export", "srresnet:x2", "--out", str(tmp_path), "--no-fp16", "--trt")
    assert code == 0, err
    assert "skipped tensorrt engine" in out and "deploykit[gpu]" in out
    assert (tmp_path / "srresnet" / "x2" / "srresnet_x2.fp32.onnx").exists()


def test_failed_parity_exits_nonzero(cli_run, monkeypatch, tmp_path):
    code, _, _ = cli_run("export", "srresnet:x2", "--out", str(tmp_path), "--no-fp16")
    assert code == 0
    monkeypatch.setattr("deploykit.verify.figures.Figures.passed", lambda self, tolerance: False)
    code, _, err = cli_run("parity", str(tmp_path / "srresnet" / "x2"))
    assert code == 1 and "parity failed" in err


def test_light_imports_do_not_load_torch():
    """The CLI's help, the Triton client and ONNX Runtime runs must not pay for importing torch (seconds)."""
    import subprocess
    import sys

    code = ("import sys, deploykit, deploykit.cli.app, deploykit.serve.triton_client, deploykit.artifacts.manifest\n"
            "from deploykit.runtime.ort import OrtBackend\n"
            "deploykit.get_spec('vapsr:x4')\n"
            "assert 'torch' not in sys.modules, 'torch was imported'\n"
            "deploykit.create_model  # the lazy attribute resolves\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]


def test_doctor_reports_what_runs_here_and_what_to_install(cli_run, monkeypatch):
    import json

    from deploykit import doctor

    code, out, _ = cli_run("doctor")
    assert code == 0 and "deploykit doctor" in out and "onnxruntime" in out
    code, out, _ = cli_run("doctor", "--json")
    checks = {c["name"]: c for c in json.loads(out)}
    assert code == 0 and checks["onnxruntime"]["status"] == "ok" and "CPUExecutionProvider" in checks["onnxruntime"][
        "detail"]
    try:
        import tensorrt  # noqa: F401
    except ImportError:
        assert checks["tensorrt"]["status"] == "missing"
        assert "pip install 'deploykit[gpu]'" in checks["tensorrt"]["fix"]
    # onnxruntime and onnxruntime-gpu side by side: only one provider set shows up -> a warning with the fix
    real = doctor._version
    monkeypatch.setattr(doctor, "_version", lambda d: "1.31.1" if d == "onnxruntime-gpu" else real(d))
    clash = [c for c in doctor.run_checks() if c.area == "onnxruntime" and c.status == doctor.WARN]
    assert len(clash) == 1 and "pip uninstall -y onnxruntime onnxruntime-gpu" in clash[0].fix


@pytest.mark.parametrize("args,reason", [
    (("list", "--nosuch"), "No such option"),
    (("bench", "vapsr", "--threads", "x"), "Invalid value for '--threads'"),
    (("nosuchcmd",), "No such command 'nosuchcmd'"),
    (("export",), "Missing argument"),
])
def test_usage_errors_through_the_console_script(args, reason):
    """Usage mistakes print typer's usage line and the reason and exit 2, through the installed script (a new
    typer once made every one of them a traceback)."""
    import shutil
    import subprocess

    script = shutil.which("deploykit")
    if script is None:
        pytest.skip("the deploykit console script is not installed (pip install -e .)")
    proc = subprocess.run([script, *args], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.lstrip().startswith(f"Usage: deploykit {args[0] if args[0] != 'nosuchcmd' else ''}".rstrip())
    assert reason in proc.stderr
    assert "Traceback" not in proc.stdout + proc.stderr
