// One exception type for every user-facing failure: a one-line message and the exit code the runner returns.
#pragma once

#include <stdexcept>
#include <string>

namespace dk {

enum ExitCode : int {
    kExitOk = 0,
    kExitFailure = 1,   // the run itself failed (runtime error inside TensorRT / libtorch, CUDA)
    kExitUsage = 2,     // bad command line, unreadable input image, unwritable output
    kExitArtifact = 3,  // manifest / artifact missing, corrupt, or built for another TensorRT / GPU / torch
};

class Error : public std::runtime_error {
public:
    explicit Error(const std::string& message, int exit_code = kExitFailure)
        : std::runtime_error(message), exit_code_(exit_code) {}
    int exit_code() const noexcept { return exit_code_; }

private:
    int exit_code_;
};

}  // namespace dk
