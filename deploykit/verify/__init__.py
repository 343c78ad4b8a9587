"""Layer verify: judging runners -- the parity comparator, the PyTorch FP32 reference of an export, re-checking
exported artifacts and engines against it.

May import: runtime, artifacts, zoo, imaging, util, errors."""
