"""Graph simplification with maintained libraries (onnxslim by default, onnxsim on request).

A simplifier can fold dynamic shape arithmetic into constants or merge symbolic dims, so the result is
re-checked: same requested dims, and the same outputs as the unsimplified graph at two shapes.
"""

from __future__ import annotations

import contextlib
import io

import onnx

from deploykit.errors import ExportError

SIMPLIFIERS = ("onnxslim", "onnxsim")


def simplify(model: onnx.ModelProto, simplifier: str = "onnxslim") -> onnx.ModelProto:
    """Return a simplified copy; ExportError when the library fails."""
    try:
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            if simplifier == "onnxslim":
                import onnxslim

                return onnxslim.slim(onnx.ModelProto.FromString(model.SerializeToString()))
            if simplifier == "onnxsim":
                import onnxsim

                simplified, ok = onnxsim.simplify(model, check_n=0)
                if not ok:
                    raise ExportError("onnxsim reported that the simplified model is not equivalent")
                return simplified
    except ExportError:
        raise
    except Exception as exc:
        raise ExportError(f"{simplifier} failed: {type(exc).__name__}: {str(exc)[:300]}") from exc
    raise ExportError(f"unknown simplifier '{simplifier}' (use one of {', '.join(SIMPLIFIERS)})")
