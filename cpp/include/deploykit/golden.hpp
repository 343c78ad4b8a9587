// Goldens written by `deploykit parity EXPORT --save-golden DIR` (schema "deploykit.golden" v1): golden.json plus
// NumPy .npy files (format 1.0/2.0, little-endian float32, C order). `RUNNER --manifest M --check DIR` runs every
// golden input through the runner and compares its output with the PyTorch FP32 output saved beside it, on the
// same output window the Python gate compares (the run's h x w at its top left): max abs, mean abs, PSNR (peak:
// the value range), NaN/Inf count per case; exit 0 when every case is within the tolerance, 1 when one is not.
#pragma once

#include <filesystem>

#include "deploykit/runner.hpp"
#include "deploykit/tensor.hpp"

namespace dk {

// A float32 .npy file as a Tensor (Error kExitArtifact for another dtype, Fortran order or a truncated file).
Tensor read_npy(const std::filesystem::path& path);

// Whether argv asks for --check (then the runner's main calls check_main instead of runner_main).
bool wants_check(int argc, char** argv);

// RUNNER --manifest M --check DIR [--min-psnr DB] [--max-abs X] [--artifact FILE] [--quiet] [runner options]:
// returns the exit code (0 pass, 1 a case failed or a run failed, 2 usage, 3 golden / manifest refused).
int check_main(int argc, char** argv, const RunnerInfo& info);

}  // namespace dk
