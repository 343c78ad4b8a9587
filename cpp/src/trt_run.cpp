// trt_run: the deploykit front end over a TensorRT engine recorded in the manifest's `engines` list.
//
//   trt_run --manifest exports/vapsr/x4/manifest.json --input in.png --output out.png [--precision fp16]
//   trt_run --manifest exports/vapsr/x4/manifest.json --check golden/ [--min-psnr DB]   (deploykit/golden.hpp)
//
// Written against the public TensorRT 10 / 11 C++ API (IRuntime::deserializeCudaEngine; ICudaEngine getNbIOTensors
// / getIOTensorName / getTensorIOMode / getTensorDataType / getProfileShape; IExecutionContext setInputShape /
// getTensorShape / setTensorAddress / enqueueV3) and the CUDA runtime.
//
// Before the plan is deserialised, the engine's manifest entry is compared with this machine: its TensorRT version
// with getInferLibVersion(), its compute capability with cudaGetDeviceProperties(), its file with the recorded
// sha256, and the padded input shape with the recorded optimisation profile. A mismatch is one clear line and exit
// code 3, never TensorRT's deserialisation error.
#include <NvInferRuntime.h>
#include <NvInferVersion.h>
#include <cuda_runtime_api.h>

#include <algorithm>
#include <cstdio>
#include <fstream>
#include <iterator>
#include <memory>
#include <string>
#include <vector>

#include "deploykit/golden.hpp"
#include "deploykit/runner.hpp"

namespace {

using dk::Error;

void cuda_check(cudaError_t status, const std::string& what) {
    if (status != cudaSuccess) {
        throw Error("CUDA " + what + " failed: " + cudaGetErrorName(status) + " (" + cudaGetErrorString(status) + ")");
    }
}

class Logger : public nvinfer1::ILogger {
public:
    void log(Severity severity, nvinfer1::AsciiChar const* msg) noexcept override {
        if (severity <= Severity::kWARNING) std::fprintf(stderr, "trt_run: TensorRT: %s\n", msg);
    }
};

// getInferLibVersion(): (MAJOR * 100 + MINOR) * 100 + PATCH since TensorRT 10, MAJOR * 1000 + MINOR * 100 + PATCH
// before; read with the encoding of the headers this file was compiled with.
std::vector<int> runtime_tensorrt_version() {
    const int v = getInferLibVersion();
#if NV_TENSORRT_MAJOR >= 10
    return {v / 10000, (v / 100) % 100, v % 100};
#else
    return {v / 1000, (v / 100) % 10, v % 100};
#endif
}

std::string join(const std::vector<int>& parts) {
    std::string text;
    for (size_t i = 0; i < parts.size(); ++i) text += (i ? "." : "") + std::to_string(parts[i]);
    return text;
}

std::string dims_text(const std::vector<int64_t>& dims) {
    std::string text;
    for (size_t i = 0; i < dims.size(); ++i) text += (i ? "x" : "") + std::to_string(dims[i]);
    return text;
}

std::vector<int64_t> to_vector(const nvinfer1::Dims& d) {
    std::vector<int64_t> out;
    for (int i = 0; i < d.nbDims; ++i) out.push_back(static_cast<int64_t>(d.d[i]));
    return out;
}

bool within(const std::vector<int64_t>& shape, const std::vector<int64_t>& lo, const std::vector<int64_t>& hi) {
    if (lo.size() != shape.size() || hi.size() != shape.size()) return false;
    for (size_t i = 0; i < shape.size(); ++i)
        if (shape[i] < lo[i] || shape[i] > hi[i]) return false;
    return true;
}

struct GpuIdentity {
    int index = 0;
    std::string name;
    std::vector<int> cc;  // {major, minor}
};

GpuIdentity this_gpu(int index) {
    int count = 0;
    cudaError_t status = cudaGetDeviceCount(&count);
    if (status != cudaSuccess || count == 0) {
        throw Error(std::string("no CUDA GPU is usable here (") +
                    (status == cudaSuccess ? "no devices" : cudaGetErrorString(status)) +
                    "); trt_run needs an NVIDIA GPU and driver");
    }
    if (index < 0 || index >= count) {
        throw Error("--device " + std::to_string(index) + ": this machine has " + std::to_string(count) + " GPU(s)",
                    dk::kExitUsage);
    }
    cudaDeviceProp prop{};
    cuda_check(cudaGetDeviceProperties(&prop, index), "cudaGetDeviceProperties");
    return {index, prop.name, {prop.major, prop.minor}};
}

// Which engine entry to use, and whether it may be loaded here (checked before any deserialisation).
const dk::EngineEntry& choose_engine(const dk::Manifest& m, const dk::Options& opt, const std::vector<int>& trt,
                                     const GpuIdentity& gpu) {
    const std::string build_hint = "rebuild it on this machine with 'deploykit build " + m.model_name + "'";
    if (m.engines.empty()) {
        throw Error("no TensorRT engine is recorded in " + m.path.string() + "; run 'deploykit build " +
                        m.model_name + "' on this machine first", dk::kExitArtifact);
    }
    auto matches_here = [&](const dk::EngineEntry& e) {
        const auto v = dk::parse_version(e.tensorrt);
        return v.size() >= 3 && std::equal(trt.begin(), trt.end(), v.begin()) &&
               dk::parse_version(e.compute_capability) == gpu.cc;
    };
    std::vector<const dk::EngineEntry*> candidates;
    const std::string key = opt.extra.count("--key") ? opt.extra.at("--key") : "";
    const std::string precision = opt.extra.count("--precision") ? opt.extra.at("--precision") : "";
    for (const auto& e : m.engines) {
        if (!opt.artifact.empty()) {
            if (std::filesystem::path(e.file).filename() == std::filesystem::path(opt.artifact).filename())
                candidates.push_back(&e);
        } else if (!key.empty()) {
            if (e.key == key) candidates.push_back(&e);
        } else if (precision.empty() || e.precision == precision) {
            candidates.push_back(&e);
        }
    }
    if (candidates.empty()) {
        const std::string what = !opt.artifact.empty() ? opt.artifact + " is not"
                                 : !key.empty()        ? "no engine with key " + key + " is"
                                                       : "no " + precision + " engine is";
        throw Error(what + " recorded in " + m.path.string() +
                        " (trt_run checks an engine's TensorRT version and compute capability against its manifest "
                        "entry before loading it); build one with 'deploykit build " + m.model_name + "'",
                    dk::kExitArtifact);
    }
    std::stable_sort(candidates.begin(), candidates.end(),
                     [](const dk::EngineEntry* a, const dk::EngineEntry* b) { return a->created > b->created; });
    for (const auto* e : candidates)
        if (matches_here(*e)) return *e;
    // none fits this machine: explain why with the newest candidate
    const dk::EngineEntry& e = *candidates.front();
    std::vector<std::string> problems;
    const auto v = dk::parse_version(e.tensorrt);
    if (!(v.size() >= 3 && std::equal(trt.begin(), trt.end(), v.begin()))) {
        problems.push_back("it was built with TensorRT " + e.tensorrt + " and this machine has TensorRT " +
                           join(trt) + " (plans load only in the TensorRT version that built them)");
    }
    if (dk::parse_version(e.compute_capability) != gpu.cc) {
        problems.push_back("it was built for compute capability " + e.compute_capability + " (" + e.gpu_name +
                           ") and this GPU is " + join(gpu.cc) + " (" + gpu.name + ")");
    }
    std::string text;
    for (const auto& p : problems) text += (text.empty() ? "" : "; ") + p;
    throw Error("engine " + e.file + " cannot be used here: " + text + "; " + build_hint +
                    (candidates.size() > 1 ? " (" + std::to_string(candidates.size() - 1) +
                                                 " other recorded engine(s) do not fit either)" : ""),
                dk::kExitArtifact);
}

struct DeviceBuffer {
    void* ptr = nullptr;
    size_t bytes = 0;
    DeviceBuffer() = default;
    explicit DeviceBuffer(size_t n) : bytes(n) { cuda_check(cudaMalloc(&ptr, std::max<size_t>(n, 1)), "cudaMalloc"); }
    DeviceBuffer(const DeviceBuffer&) = delete;
    DeviceBuffer& operator=(const DeviceBuffer&) = delete;
    DeviceBuffer(DeviceBuffer&& o) noexcept : ptr(o.ptr), bytes(o.bytes) { o.ptr = nullptr; }
    ~DeviceBuffer() {
        if (ptr) cudaFree(ptr);
    }
};

class TrtRunner : public dk::Runner {
public:
    TrtRunner(const dk::Manifest& m, const dk::Options& opt, const std::vector<int64_t>& input_shape) : manifest_(m) {
        const std::string device = opt.extra.count("--device") ? opt.extra.at("--device") : "0";
        int index = 0;
        try {
            index = std::stoi(device);
        } catch (const std::exception&) {
            throw Error("--device takes a CUDA device index, not '" + device + "'", dk::kExitUsage);
        }
        gpu_ = this_gpu(index);
        const std::vector<int> trt = runtime_tensorrt_version();
        const dk::EngineEntry& entry = choose_engine(m, opt, trt, gpu_);
        entry_ = entry;
        const std::string hint = "rebuild it with 'deploykit build " + m.model_name + "'";
        path_ = dk::verified_artifact(m, opt.artifact.empty() ? entry.file : opt.artifact, entry.sha256, hint);

        // the profile recorded in the manifest: refuse a size the engine cannot take before loading it
        const std::string& input_name = m.image_input().name;
        auto p = entry.profile.find(input_name);
        if (p != entry.profile.end() && !within(input_shape, p->second.min, p->second.max)) {
            throw Error("input " + dims_text(input_shape) + " (after padding to the shape contract) is outside the "
                            "engine's profile: min " + dims_text(p->second.min) + ", max " +
                            dims_text(p->second.max) + "; tile the image or build an engine for it with "
                            "'deploykit build " + m.model_name + " --res WxH'", dk::kExitUsage);
        }

        cuda_check(cudaSetDevice(index), "cudaSetDevice");
        std::ifstream in(path_, std::ios::binary);
        std::vector<char> blob((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
        if (blob.empty()) throw Error("cannot read " + path_.string(), dk::kExitArtifact);
        runtime_.reset(nvinfer1::createInferRuntime(logger_));
        if (!runtime_) throw Error("cannot create the TensorRT runtime");
        engine_.reset(runtime_->deserializeCudaEngine(blob.data(), blob.size()));
        if (!engine_) {
            throw Error("TensorRT could not deserialise " + path_.string() + " (see the TensorRT message above); " +
                        hint, dk::kExitArtifact);
        }
        context_.reset(engine_->createExecutionContext());
        if (!context_) throw Error("cannot create a TensorRT execution context (out of device memory?)");
        cuda_check(cudaStreamCreate(&stream_), "cudaStreamCreate");
    }

    ~TrtRunner() override {
        if (stream_) cudaStreamDestroy(stream_);
    }

    std::string describe() const override {
        return "TensorRT " + join(runtime_tensorrt_version()) + " " + entry_.precision + " on " + gpu_.name + " (sm" +
               std::to_string(gpu_.cc[0]) + std::to_string(gpu_.cc[1]) + "), " + path_.filename().string();
    }

    dk::Tensor run(const dk::Tensor& input) override {
        if (io_.inputs.empty()) io_ = check_io();
        if (!within(input.shape, io_.lo, io_.hi)) {
            throw Error("input " + input.shape_text() + " is outside the engine's profile: min " + dims_text(io_.lo) +
                        ", max " + dims_text(io_.hi) + "; tile the image or build an engine for this size",
                        dk::kExitUsage);
        }
        if (input.shape != bound_shape_) bind(input.shape);  // once per shape: --repeat times enqueueV3, not cudaMalloc
        cuda_check(cudaMemcpyAsync(buffers_[0].ptr, input.data.data(), buffers_[0].bytes, cudaMemcpyHostToDevice,
                                   stream_), "cudaMemcpyAsync (host to device)");
        if (!context_->enqueueV3(stream_)) throw Error("TensorRT enqueueV3 failed (see the message above)");
        dk::Tensor out(out_shape_);
        cuda_check(cudaMemcpyAsync(out.data.data(), buffers_[out_index_].ptr, buffers_[out_index_].bytes,
                                   cudaMemcpyDeviceToHost, stream_), "cudaMemcpyAsync (device to host)");
        cuda_check(cudaStreamSynchronize(stream_), "cudaStreamSynchronize");
        return out;
    }

private:
    struct EngineIO {
        std::vector<std::string> inputs, outputs;
        std::vector<int64_t> lo, hi;  // profile 0 of the image input
    };

    // The engine's I/O must be the manifest's (one float32 image input, the image output among the outputs); its
    // own profile 0 is the authority on sizes.
    EngineIO check_io() const {
        const std::string in_name = manifest_.image_input().name, out_name = manifest_.image_output().name;
        EngineIO io;
        for (int32_t i = 0; i < engine_->getNbIOTensors(); ++i) {
            const char* name = engine_->getIOTensorName(i);
            if (engine_->getTensorDataType(name) != nvinfer1::DataType::kFLOAT) {
                throw Error(std::string("engine tensor '") + name + "' is not float32; deploykit engines keep FP32 "
                            "I/O (rebuild with 'deploykit build')", dk::kExitArtifact);
            }
            (engine_->getTensorIOMode(name) == nvinfer1::TensorIOMode::kINPUT ? io.inputs : io.outputs).push_back(name);
        }
        if (io.inputs.size() != 1 || io.inputs[0] != in_name ||
            std::find(io.outputs.begin(), io.outputs.end(), out_name) == io.outputs.end()) {
            throw Error("engine I/O does not match the manifest (expected input '" + in_name + "' and output '" +
                        out_name + "'); rebuild it with 'deploykit build'", dk::kExitArtifact);
        }
        io.lo = to_vector(engine_->getProfileShape(in_name.c_str(), 0, nvinfer1::OptProfileSelector::kMIN));
        io.hi = to_vector(engine_->getProfileShape(in_name.c_str(), 0, nvinfer1::OptProfileSelector::kMAX));
        return io;
    }

    // Set the input shape, size every output from the context, allocate and bind all I/O buffers.
    void bind(const std::vector<int64_t>& shape) {
        const std::string& in_name = io_.inputs[0];
        const std::string out_name = manifest_.image_output().name;
        nvinfer1::Dims dims{};
        dims.nbDims = static_cast<int32_t>(shape.size());
        for (size_t k = 0; k < shape.size(); ++k) dims.d[k] = static_cast<decltype(dims.d[0] + 0)>(shape[k]);
        if (!context_->setInputShape(in_name.c_str(), dims)) {
            throw Error("TensorRT refused input shape " + dims_text(shape) + " (see the message above)");
        }
        bound_shape_.clear();
        buffers_.clear();
        int64_t numel = 1;
        for (int64_t d : shape) numel *= d;
        buffers_.emplace_back(static_cast<size_t>(numel) * sizeof(float));
        if (!context_->setTensorAddress(in_name.c_str(), buffers_[0].ptr)) throw Error("setTensorAddress failed");
        for (const auto& name : io_.outputs) {
            const auto out = to_vector(context_->getTensorShape(name.c_str()));
            int64_t n = 1;
            for (int64_t d : out) {
                if (d < 0) throw Error("output '" + name + "' has an unresolved shape " + dims_text(out));
                n *= d;
            }
            buffers_.emplace_back(static_cast<size_t>(n) * sizeof(float));
            if (!context_->setTensorAddress(name.c_str(), buffers_.back().ptr)) throw Error("setTensorAddress failed");
            if (name == out_name) {
                out_shape_ = out;
                out_index_ = buffers_.size() - 1;
            }
        }
        bound_shape_ = shape;
    }

private:
    const dk::Manifest& manifest_;
    GpuIdentity gpu_;
    dk::EngineEntry entry_;
    std::filesystem::path path_;
    Logger logger_;
    // destruction order: context, engine, runtime (members are destroyed in reverse order of declaration)
    std::unique_ptr<nvinfer1::IRuntime> runtime_;
    std::unique_ptr<nvinfer1::ICudaEngine> engine_;
    std::unique_ptr<nvinfer1::IExecutionContext> context_;
    cudaStream_t stream_ = nullptr;
    EngineIO io_;
    std::vector<int64_t> bound_shape_, out_shape_;  // the shape the buffers below are bound for
    std::vector<DeviceBuffer> buffers_;             // [input, outputs...]; freed before the context goes
    size_t out_index_ = 0;
};

}  // namespace

int main(int argc, char** argv) {
    dk::RunnerInfo info;
    info.program = "trt_run";
    info.artifact_help = "engine file to use; it must be recorded in the manifest's engines (its identity is checked)";
    info.extra = {{"--device", "CUDA device index (default 0)"},
                  {"--precision", "fp16 or fp32: pick the newest engine of this precision that fits this machine"},
                  {"--key", "pick the engine entry with this key"}};
    info.create = [](const dk::Manifest& m, const dk::Options& o,
                     const std::vector<int64_t>& shape) -> std::unique_ptr<dk::Runner> {
        return std::make_unique<TrtRunner>(m, o, shape);
    };
    // --check GOLDEN_DIR: every golden input through the runner against the saved PyTorch FP32 outputs
    return dk::wants_check(argc, argv) ? dk::check_main(argc, argv, info) : dk::runner_main(argc, argv, info);
}
