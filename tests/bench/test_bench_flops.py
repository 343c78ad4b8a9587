"""deploykit.bench.flops: FLOPs per image (meta device, scaled by pixels) and the traced activation peak."""

from __future__ import annotations

from types import SimpleNamespace

import torch
from torch import nn

from deploykit.bench.flops import count_flops, flops_at, flops_of, meta_copy, trace_peak_bytes
from deploykit.zoo.registry import get_spec


def test_flops_of_single_conv_is_analytic():
    cin, cout, k, h, w = 3, 8, 3, 16, 20
    conv = nn.Conv2d(cin, cout, k, padding=k // 2)
    analytic = 2 * cin * cout * k * k * h * w
    assert flops_of(conv, [torch.rand(1, cin, h, w)]) == analytic
    assert flops_of(conv.to("meta"), [torch.empty(1, cin, h, w, device="meta")]) == analytic


def test_count_flops_scales_linearly_by_pixels():
    cin, cout, k = 4, 6, 5
    conv = nn.Conv2d(cin, cout, k, padding=k // 2, bias=False)
    spec = SimpleNamespace(name="conv", inputs=[SimpleNamespace(name="image", channels=cin)],
                           valid_size=lambda s: s)
    count = count_flops(conv, spec, base=32)
    assert count.base_flops == 2 * cin * cout * k * k * 32 * 32
    assert count.linearity_error == 0.0 and count.linear
    assert count.at(1080, 1920) == 2 * cin * cout * k * k * 1080 * 1920
    assert "scaled linearly" in count.method
    assert flops_at(meta_copy(conv), spec, 24, 40) == 2 * cin * cout * k * k * 24 * 40


def test_flops_of_zoo_model_is_linear_in_pixels():
    model = get_spec("vapsr:s_x4").build().eval()
    count = count_flops(model, get_spec("vapsr:s_x4"))
    assert count.flops_per_pixel > 0 and count.linearity_error < 1e-3


def test_traffic_counts_each_op_operands_once_and_views_not_at_all():
    """conv (input, weight, bias read; output written) -> flatten (a view: nothing) -> relu (read, write)."""
    from deploykit.bench.flops import traffic_of

    conv = nn.Conv2d(3, 8, 3, padding=1)
    model = nn.Sequential(conv, nn.Flatten(), nn.ReLU()).to("meta")
    h, w = 16, 20
    fmap = 8 * h * w * 4
    conv_bytes = 3 * h * w * 4 + conv.weight.numel() * 4 + 8 * 4 + fmap
    assert traffic_of(model, [torch.empty(1, 3, h, w, device="meta")]) == conv_bytes + 2 * fmap
    spec = SimpleNamespace(name="conv", inputs=[SimpleNamespace(name="image", channels=3)], valid_size=lambda s: s)
    count = count_flops(nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU()), spec, base=16)
    weights = (8 * 3 * 9 + 8) * 4  # read once whatever the size: the line's fixed part
    assert count.traffic_at(100, 60) == weights + (3 + 8 + 8 + 8) * 4 * 100 * 60


def test_trace_peak_bytes_of_a_conv():
    conv = nn.Conv2d(3, 16, 3, padding=1)
    spec = SimpleNamespace(inputs=[SimpleNamespace(name="image", channels=3)])
    trace = trace_peak_bytes(conv, spec, 64, 32)
    assert trace.peak_bytes >= 16 * 64 * 32 * 4  # at least the output feature map
    assert trace.output_bytes == 16 * 64 * 32 * 4
    half = trace_peak_bytes(conv, spec, 64, 32, dtype=torch.float16)
    assert half.output_bytes == trace.output_bytes // 2 and half.dtype == "float16"
    assert next(conv.parameters()).device.type == "cpu"  # traced on a meta copy, the module is untouched
