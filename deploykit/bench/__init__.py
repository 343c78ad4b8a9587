"""The benchmark layer (``deploykit bench``): latency x resolution x backend x precision, with FLOPs, a memory guard
and parity against PyTorch FP32, written as JSON/CSV/PNG/Markdown. It sits beside ``infer`` and ``serve``: it may
import ``exporting``, ``trt``, ``verify``, ``runtime``, ``artifacts``, ``zoo``, ``imaging``, ``util`` and ``errors``,
and only ``cli`` imports it.
"""
