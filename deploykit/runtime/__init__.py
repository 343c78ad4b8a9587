"""Layer runtime: runners behind one Backend interface (PyTorch, ONNX Runtime CPU/GPU, TensorRT, AOTInductor),
GPU facts, optimisation profiles, and the one door to them all: ``runtime.open.open_backend``.

May import: artifacts, zoo, imaging, util, errors. Heavy runtimes (torch, onnxruntime, tensorrt) load lazily."""
