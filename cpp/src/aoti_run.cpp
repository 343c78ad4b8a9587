// aoti_run: the deploykit front end over an AOTInductor package (torch.export + aoti_compile_and_package),
// loaded with torch::inductor::AOTIModelPackageLoader from the libtorch that ships inside the torch wheel.
//
//   aoti_run --manifest exports/vapsr/x4/manifest.json --input in.png --output out.png
//   aoti_run --manifest exports/vapsr/x4/manifest.json --check golden/ [--min-psnr DB]   (deploykit/golden.hpp)
//
// The package is the manifest's artifact of kind "aoti" for --device (default cpu), or --artifact FILE. Its sha256
// is checked against the manifest, and the torch version that compiled it against this libtorch (a package runs
// only with the libtorch it was compiled for: a different version is reported on stderr before loading).
#include <ATen/Functions.h>
#include <ATen/core/Tensor.h>
#include <c10/core/Device.h>
#include <torch/csrc/inductor/aoti_package/model_package_loader.h>
#include <torch/headeronly/version.h>

#include <cstdio>
#include <cstring>
#include <memory>

#include "deploykit/golden.hpp"
#include "deploykit/runner.hpp"

namespace {

using dk::Error;

std::string device_kind(const std::string& device) { return device.substr(0, device.find(':')); }

class AotiRunner : public dk::Runner {
public:
    AotiRunner(const dk::Manifest& manifest, const dk::Options& opt) {
        device_ = opt.extra.count("--device") ? opt.extra.at("--device") : "cpu";
        const std::string kind = device_kind(device_);
        if (kind != "cpu" && kind != "cuda") throw Error("--device takes cpu or cuda[:N], not '" + device_ + "'",
                                                         dk::kExitUsage);
        const std::string hint = "run 'deploykit export " + manifest.model_name + " --aoti' again";
        std::string file = opt.artifact, sha256;
        std::string torch_version;  // of the package, from the manifest
        for (const auto& a : manifest.artifacts) {
            const bool match = opt.artifact.empty()
                                   ? (a.kind == "aoti" && a.device == kind)
                                   : std::filesystem::path(a.file).filename() ==
                                         std::filesystem::path(opt.artifact).filename();
            if (match) {
                file = opt.artifact.empty() ? a.file : opt.artifact;
                sha256 = a.sha256;
                torch_version = a.torch;
            }
        }
        if (file.empty()) {
            throw Error("no " + kind + " AOTInductor package is recorded in " + manifest.path.string() + "; " +
                            "run 'deploykit export " + manifest.model_name + " --aoti' first (or pass --artifact)",
                        dk::kExitArtifact);
        }
        path_ = dk::verified_artifact(manifest, file, sha256, hint);
        if (!torch_version.empty() && torch_version.substr(0, torch_version.find('+')) != TORCH_VERSION) {
            std::fprintf(stderr, "aoti_run: warning: %s was compiled by torch %s, this is libtorch %s; if loading "
                         "fails, re-export with the torch that matches this libtorch\n", path_.filename().c_str(),
                         torch_version.c_str(), TORCH_VERSION);
        }
        c10::DeviceIndex index = -1;
        if (kind == "cuda" && device_.find(':') != std::string::npos) {
            index = static_cast<c10::DeviceIndex>(std::stoi(device_.substr(device_.find(':') + 1)));
        }
        try {
            loader_ = std::make_unique<torch::inductor::AOTIModelPackageLoader>(path_.string(), "model", false, 1,
                                                                                 index);
        } catch (const std::exception& exc) {
            throw Error("cannot load AOTInductor package " + path_.string() + " with libtorch " TORCH_VERSION
                        " (a package loads only in the torch version that compiled it, on the device it was "
                        "compiled for; " + hint + "): " + exc.what(), dk::kExitArtifact);
        }
    }

    std::string describe() const override {
        return "AOTInductor " + device_ + " (libtorch " TORCH_VERSION "), " + path_.filename().string();
    }

    dk::Tensor run(const dk::Tensor& input) override {
        at::Tensor x = at::from_blob(const_cast<float*>(input.data.data()), input.shape, at::kFloat)
                           .to(c10::Device(device_), /*non_blocking=*/false, /*copy=*/true);
        std::vector<at::Tensor> outputs;
        try {
            outputs = loader_->run({x});
        } catch (const std::exception& exc) {
            throw Error(std::string("AOTInductor run failed on ") + input.shape_text() + ": " + exc.what());
        }
        if (outputs.empty()) throw Error("the AOTInductor package returned no outputs");
        at::Tensor y = outputs.front().to(at::kCPU, at::kFloat).contiguous();
        dk::Tensor out(std::vector<int64_t>(y.sizes().begin(), y.sizes().end()));
        std::memcpy(out.data.data(), y.data_ptr<float>(), static_cast<size_t>(out.numel()) * sizeof(float));
        return out;
    }

private:
    std::string device_;
    std::filesystem::path path_;
    std::unique_ptr<torch::inductor::AOTIModelPackageLoader> loader_;
};

}  // namespace

int main(int argc, char** argv) {
    dk::RunnerInfo info;
    info.program = "aoti_run";
    info.artifact_help = "AOTInductor package (.pt2) to use instead of the manifest's aoti entry for --device";
    info.extra = {{"--device", "cpu (default) or cuda[:N]: the device the package was compiled for"}};
    info.create = [](const dk::Manifest& m, const dk::Options& o,
                     const std::vector<int64_t>&) -> std::unique_ptr<dk::Runner> {
        return std::make_unique<AotiRunner>(m, o);
    };
    // --check GOLDEN_DIR: every golden input through the runner against the saved PyTorch FP32 outputs
    return dk::wants_check(argc, argv) ? dk::check_main(argc, argv, info) : dk::runner_main(argc, argv, info);
}
