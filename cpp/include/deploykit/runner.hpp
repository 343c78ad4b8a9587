// The front end both runners share:
//
//   RUNNER --manifest DIR/manifest.json --input in.png --output out.png [--artifact FILE]
//          [--output-raw out.npy] [--bit-depth 8|16] [--repeat N] [--quiet] [runner options]
//
// read the manifest (I/O names, value range, shape contract, scale) -> load the image -> reflect-pad right/bottom
// to the contract -> Runner::run -> check the output shape -> crop to scale x the input -> write the PNG with the
// input's bit depth (and the float output as .npy when asked). Every failure is one line on stderr,
// "RUNNER: error: ...", and a non-zero exit code (see dk::ExitCode).
#pragma once

#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "deploykit/error.hpp"
#include "deploykit/manifest.hpp"
#include "deploykit/tensor.hpp"

namespace dk {

struct Options {
    std::string manifest, input, output, artifact, output_raw;
    int bit_depth = 0;  // 0: the input's
    int repeat = 1;     // run the model this many times (timing: first run and median of the others)
    bool quiet = false;
    std::map<std::string, std::string> extra;  // runner-specific options, "--device" -> "cuda"
};

// One backend: built from the manifest (plus options), then run on padded NCHW inputs.
class Runner {
public:
    virtual ~Runner() = default;
    virtual std::string describe() const = 0;  // e.g. "AOTInductor cpu, vapsr_x4.aoti.cpu.pt2"
    virtual Tensor run(const Tensor& input) = 0;
};

struct RunnerInfo {
    std::string program;                                   // "aoti_run"
    std::string artifact_help;                             // what --artifact names for this runner
    std::vector<std::pair<std::string, std::string>> extra;  // {"--device", "help text"}
    // build the backend for a padded input of `input_shape` (N, C, H, W): a runner can refuse a shape its artifact
    // cannot take (a TensorRT profile) before it loads anything
    std::function<std::unique_ptr<Runner>(const Manifest&, const Options&, const std::vector<int64_t>& input_shape)>
        create;
};

Options parse_options(int argc, char** argv, const RunnerInfo& info);  // throws Error(kExitUsage); exits on --help
std::string usage(const RunnerInfo& info);

// The whole front end; returns the process exit code (never throws).
int runner_main(int argc, char** argv, const RunnerInfo& info);

// Artifact file for a manifest entry, checked to exist and to match the recorded sha256 (Error kExitArtifact).
std::filesystem::path verified_artifact(const Manifest& manifest, const std::string& file, const std::string& sha256,
                                        const std::string& hint);

}  // namespace dk
