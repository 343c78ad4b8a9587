"""Layer trt: TensorRT engines -- planning a build in pure Python (path, profile, identity, FP32 layers) and
building it (TensorRT imported lazily), then proving it through verify.

May import: verify, runtime, artifacts, zoo, imaging, util, errors."""
