"""Layer exporting: the export job -- a PyTorch model through export forms, ONNX export, simplification and FP16
to proven artifacts and a manifest, plus the AOTInductor package and the optional engine (not named "export":
``deploykit.export`` is the facade's function, and a subpackage of that name would shadow it).

May import: trt, verify, runtime, artifacts, zoo, imaging, util, errors."""
