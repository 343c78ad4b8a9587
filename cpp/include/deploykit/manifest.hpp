// Reader for deploykit's manifest.json (schema "deploykit.manifest" v1): the contract between an export and C++.
//
// Only what a runner needs is read: the graph's input / output names and channels, the value range, the shape
// contract (scale, multiple_of, min_size, square), a fixed H x W when the export was static, the artifact list
// (ONNX / AOTInductor files with sha256) and the TensorRT engine entries (identity: TensorRT version, compute
// capability, GPU name; optimisation profile per input).
#pragma once

#include <cstdint>
#include <filesystem>
#include <map>
#include <string>
#include <vector>

namespace dk {

struct IoTensor {
    std::string name;
    int64_t channels = -1;  // -1: not a fixed number in the manifest
};

struct Contract {
    int scale = 1;
    int multiple_of = 1;
    int min_size = 1;
    bool square = false;
};

struct Artifact {
    std::string kind;       // "onnx", "aoti"
    std::string file;       // relative to the manifest's directory
    std::string sha256;     // may be empty
    std::string device;     // "cpu" / "cuda" for aoti
    std::string precision;  // "fp32" / "fp16"
    std::string torch;      // torch version that compiled an aoti package ("2.13.0+cpu")
};

struct ProfileRange {
    std::vector<int64_t> min, opt, max;  // full NCHW shapes
};

struct EngineEntry {
    std::string key, file, sha256, precision, tensorrt, compute_capability, gpu_name, created;
    std::map<std::string, ProfileRange> profile;  // per input name (may be empty in hand-written manifests)
};

struct Manifest {
    std::filesystem::path path;  // the manifest.json
    std::filesystem::path dir;   // its directory: artifact files are relative to it
    int schema_version = 0;
    std::string model_name;
    std::vector<IoTensor> inputs, outputs;
    float value_lo = 0.0f, value_hi = 1.0f;
    Contract contract;
    std::vector<int> static_hw;  // {H, W} when exported with --static, else empty
    std::vector<Artifact> artifacts;
    std::vector<EngineEntry> engines;

    // the one image input / output the runners feed and read (Error when the model needs more inputs)
    const IoTensor& image_input() const;
    const IoTensor& image_output() const;
};

// `path` is a manifest.json or the export directory holding one. Throws dk::Error (kExitArtifact) naming the file
// and the missing / malformed key.
Manifest read_manifest(const std::filesystem::path& path);

// "10.9.0.34" -> {10, 9, 0, 34}; components that are not numbers stop the parse.
std::vector<int> parse_version(const std::string& text);

}  // namespace dk
