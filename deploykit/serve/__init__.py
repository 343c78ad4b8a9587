"""Serving an export: Triton model repositories, the Triton client runner, a local tritonserver, the C++ runners.

Sits above infer (the Triton client is a runner that infer drives): may import errors, util, imaging, zoo,
artifacts, runtime, verify, trt, exporting and infer; never bench, doctor or cli. Nothing is imported here.
"""
