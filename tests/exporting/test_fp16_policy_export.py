"""``deploykit export --fp16-policy auto``: VapSR x4 with the official weights, calibrated on crops of the real photo,
holds >= 50 dB on held-out crops; the manifest records the policy and the artifact's fp32_nodes feed plan_build."""

from __future__ import annotations

import numpy as np
import onnx
import pytest

import deploykit
from deploykit.artifacts.manifest import read_manifest
from deploykit.exporting import fp16_policy as fp
from deploykit.exporting.fp16_calib import crop, feed_for, held_out_boxes, photo
from deploykit.runtime.gpu import GpuInfo
from deploykit.runtime.ort import OrtBackend
from deploykit.trt.plan import plan_build, resolve_profile
from deploykit.verify.parity import psnr
from deploykit.zoo.registry import get_spec

from tests.conftest import NOISY_PHOTO


def test_unknown_policy_is_a_one_line_error(cli_run, tmp_path):
    code, _, err = cli_run("export", "vapsr:s_x4", "--out", str(tmp_path), "--fp16-policy", "magic")
    assert code == 2 and "unknown --fp16-policy 'magic' (use spec or auto)" in err
    assert "Traceback" not in err and not list(tmp_path.iterdir())


def test_missing_calibration_file_is_a_one_line_error(tmp_path):
    from deploykit.errors import InputError
    from deploykit.exporting.fp16_calib import calibration_set

    with pytest.raises(InputError, match="no such file or folder"):
        calibration_set(get_spec("vapsr:x4"), [tmp_path / "nope.png"])


@pytest.mark.slow
def test_vapsr_x4_real_weights_auto_policy_holds_on_held_out_crops(tmp_path, vapsr_x4_weights):
    if not NOISY_PHOTO.exists():
        pytest.skip(f"{NOISY_PHOTO} not found (../shared is absent)")
    result = deploykit.export("vapsr:x4", weights=vapsr_x4_weights, out=tmp_path, fp16_policy="auto",
                              calib=[NOISY_PHOTO])
    m = read_manifest(result.out_dir)
    policy = m["fp16"]["policy"]
    art = next(a for a in m["artifacts"] if a["precision"] == "fp16")
    assert policy["mode"] == "auto" and policy["max_res"] == 2048 and policy["min_psnr_db"] == 50.0
    assert art["fp32_nodes"] == [n["node"] for n in policy["fp32_nodes"]]
    assert art["fp32_node_count"] == policy["fp32_node_count"] <= 21  # the hand policy keeps 21
    assert all(n["reason"] in ("range", "accumulation", "accuracy", "converter") and n["detail"]
               for n in policy["fp32_nodes"])
    assert policy["min_psnr_reached_db"] >= 51.0 and len(policy["psnr_db"]) == 2
    assert policy["verified_finite"]["nonfinite"] == 0 and policy["verified_finite"]["side"] == 256
    assert policy["predicted_safe_side"] is None or policy["predicted_safe_side"] >= 2048
    # held out: three 128^2 crops of the photo's bottom half (calibration used the top half)
    spec = get_spec("vapsr:x4")
    image = photo(NOISY_PHOTO, spec)
    fp32 = onnx.load(str(result.out_dir / "vapsr_x4.fp32.onnx"))
    with OrtBackend(result.out_dir / "vapsr_x4.fp32.onnx") as ref, \
            OrtBackend(result.out_dir / art["file"], precision="fp16") as half:
        for box in held_out_boxes(*image.shape[2:], 128):
            feed = feed_for(spec, crop(image, box), str(box))
            want = ref.run(feed.inputs)["output"]
            assert psnr(want, half.run(feed.inputs)["output"]) >= 50.0  # the file, ONNX Runtime CPU
            emulated = fp._run_all(fp._session(fp.emulate(fp32, art["fp32_nodes"]), emulated=True), feed)["output"]
            assert psnr(want, emulated) >= 50.0  # FP16 storage everywhere (stricter than ORT CPU)
    # the TensorRT 10 weak-typing path pins exactly these nodes
    plan = plan_build(result.out_dir, m, spec, precision="fp16", profile=resolve_profile(spec, res="64,256"),
                      tensorrt_version="10.8.0", gpu=GpuInfo("Fake GPU", "8.6"))
    assert plan.fp32_nodes == art["fp32_nodes"] and np.isfinite(policy["min_psnr_reached_db"])
