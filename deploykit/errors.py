"""One exception type per user-facing failure family.

Every message says what was wrong and what to do; the CLI prints it as one line and exits non-zero.
"""


class DeployKitError(Exception):
    """Base of every error deploykit raises on purpose (the CLI turns these into one-line messages)."""

    exit_code = 2


class UnknownModelError(DeployKitError):
    """A model or variant name that the zoo does not know."""


class CheckpointError(DeployKitError):
    """A weights file that cannot be read, unwrapped or loaded strictly."""


class ShapeContractError(DeployKitError):
    """An input size the model cannot take (multiple_of, minimum size, square)."""


class FormCheckError(DeployKitError):
    """An export form (numerically identical rewrite) that did not match the reference module."""


class ExportError(DeployKitError):
    """ONNX export, read-back or simplification failed or produced a graph we cannot trust."""


class ParityError(DeployKitError):
    """A backend's output is outside the tolerance against PyTorch FP32."""


class ArtifactError(DeployKitError):
    """Artifacts or a manifest that are missing, unreadable or cannot be written."""


class BackendUnavailableError(DeployKitError):
    """A runtime (TensorRT, a CUDA provider) that is not installed or has no device on this machine."""


class EngineError(DeployKitError):
    """A TensorRT engine that cannot be planned, built, loaded or trusted (profile, build, identity)."""


class EngineMismatchError(EngineError):
    """An engine built for another TensorRT version, GPU compute capability or ONNX file than the one at hand."""


class InputError(DeployKitError):
    """An input that `infer` cannot use: an unreadable, corrupt or unsupported image file, an output that cannot be
    written, or inference options that do not fit the model (degradation spec, dual-pixel pair, tile size)."""


class BenchError(DeployKitError):
    """A benchmark request that cannot be run as given (sizes, backends, nothing to benchmark)."""


class CppBuildError(DeployKitError):
    """The C++ runners cannot be found, configured, built or run (missing tools, headers, sources or binaries)."""


class TritonRequestError(DeployKitError):
    """The server answered a request with an error (bad shape or dtype, model failure, timeout)."""
