#include "deploykit/runner.hpp"

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <iostream>
#include <sstream>

#include "deploykit/image.hpp"
#include "deploykit/sha256.hpp"

namespace dk {
namespace {

using Clock = std::chrono::steady_clock;

std::string fixed(double ms) {
    char text[32];
    std::snprintf(text, sizeof text, "%.1f", ms);
    return text;
}

double ms_since(Clock::time_point start) {
    return std::chrono::duration<double, std::milli>(Clock::now() - start).count();
}

std::string one_line(std::string text) {
    for (auto& ch : text)
        if (ch == '\n' || ch == '\r' || ch == '\t') ch = ' ';
    // libtorch / TensorRT messages can be long multi-line dumps: keep the head
    return text.size() > 600 ? text.substr(0, 597) + "..." : text;
}

}  // namespace

std::string usage(const RunnerInfo& info) {
    std::ostringstream out;
    out << "usage: " << info.program
        << " --manifest DIR/manifest.json --input IN.png --output OUT.png [--artifact FILE]\n"
        << "       [--output-raw OUT.npy] [--bit-depth 8|16] [--repeat N] [--quiet]";
    for (const auto& [flag, help] : info.extra) out << " [" << flag << " ...]";
    out << "\n\n"
        << "  --manifest PATH     manifest.json of a deploykit export (or its directory)\n"
        << "  --input PATH        image to restore (PNG 8/16-bit, JPEG, BMP, TGA, PNM)\n"
        << "  --output PATH       PNG to write, with the input's bit depth unless --bit-depth\n"
        << "  --artifact FILE     " << info.artifact_help << "\n"
        << "  --output-raw PATH   also write the float32 output (cropped, not clamped) as a NumPy .npy file\n"
        << "  --bit-depth 8|16    output PNG bit depth (default: the input's)\n"
        << "  --repeat N          run the model N times; the summary gives the first run and the median of the\n"
        << "                      others (the first run includes one-time initialisation)\n"
        << "  --quiet             no summary line on stdout\n";
    for (const auto& [flag, help] : info.extra) {
        std::string padded = flag + " X";
        padded.resize(std::max<size_t>(padded.size() + 1, 20), ' ');
        out << "  " << padded << help << "\n";
    }
    out << "\nExit codes: 0 ok, 1 run failed, 2 bad usage / input / output, 3 manifest or artifact problem.\n";
    return out.str();
}

Options parse_options(int argc, char** argv, const RunnerInfo& info) {
    Options o;
    auto value = [&](int& i, const std::string& flag) -> std::string {
        if (i + 1 >= argc) throw Error(flag + " needs a value (see --help)", kExitUsage);
        return argv[++i];
    };
    for (int i = 1; i < argc; ++i) {
        std::string arg = argv[i];
        std::string inline_value;
        bool has_inline = false;
        if (arg.rfind("--", 0) == 0 && arg.find('=') != std::string::npos) {
            inline_value = arg.substr(arg.find('=') + 1);
            arg = arg.substr(0, arg.find('='));
            has_inline = true;
        }
        auto get = [&](const std::string& flag) { return has_inline ? inline_value : value(i, flag); };
        if (arg == "-h" || arg == "--help") {
            std::cout << usage(info);
            std::exit(0);
        } else if (arg == "--manifest") {
            o.manifest = get(arg);
        } else if (arg == "--input") {
            o.input = get(arg);
        } else if (arg == "--output") {
            o.output = get(arg);
        } else if (arg == "--artifact") {
            o.artifact = get(arg);
        } else if (arg == "--output-raw") {
            o.output_raw = get(arg);
        } else if (arg == "--bit-depth") {
            const std::string v = get(arg);
            if (v != "8" && v != "16") throw Error("--bit-depth takes 8 or 16, not '" + v + "'", kExitUsage);
            o.bit_depth = std::stoi(v);
        } else if (arg == "--repeat") {
            const std::string v = get(arg);
            try {
                o.repeat = std::stoi(v);
            } catch (const std::exception&) {
                o.repeat = 0;
            }
            if (o.repeat < 1) throw Error("--repeat takes a positive count, not '" + v + "'", kExitUsage);
        } else if (arg == "--quiet") {
            o.quiet = true;
        } else {
            bool known = false;
            for (const auto& [flag, help] : info.extra) {
                if (arg == flag) {
                    o.extra[flag] = get(arg);
                    known = true;
                }
            }
            if (!known) throw Error("unknown argument '" + arg + "' (see --help)", kExitUsage);
        }
    }
    if (o.manifest.empty() || o.input.empty() || o.output.empty()) {
        throw Error("--manifest, --input and --output are required (see --help)", kExitUsage);
    }
    if (!o.output_raw.empty() && std::filesystem::path(o.output_raw).extension() != ".npy") {
        throw Error("--output-raw writes a NumPy file: give it a .npy name, not '" + o.output_raw + "'", kExitUsage);
    }
    return o;
}

std::filesystem::path verified_artifact(const Manifest& manifest, const std::string& file, const std::string& sha256,
                                        const std::string& hint) {
    std::filesystem::path path = std::filesystem::path(file).is_absolute() ? std::filesystem::path(file)
                                                                             : manifest.dir / file;
    std::error_code ec;
    if (!std::filesystem::is_regular_file(path, ec)) {
        throw Error(path.string() + " is listed in the manifest but missing; " + hint, kExitArtifact);
    }
    if (!sha256.empty() && sha256_file(path) != sha256) {
        throw Error(path.string() + " does not match the sha256 in its manifest entry (modified or torn update); " +
                        hint, kExitArtifact);
    }
    return path;
}

int runner_main(int argc, char** argv, const RunnerInfo& info) {
    try {
        const auto start = Clock::now();
        Options opt = parse_options(argc, argv, info);
        Manifest manifest = read_manifest(opt.manifest);
        const IoTensor& input_io = manifest.image_input();
        const int channels = input_io.channels > 0 ? static_cast<int>(input_io.channels) : 3;

        Image image = load_image(opt.input, channels);
        const int h = image.height, w = image.width;
        auto [ph, pw] = padded_size(h, w, manifest.contract);
        if (!manifest.static_hw.empty()) {
            if (h > manifest.static_hw[0] || w > manifest.static_hw[1]) {
                throw Error(opt.input + " is " + std::to_string(h) + "x" + std::to_string(w) +
                                " (HxW) but this export takes exactly " + std::to_string(manifest.static_hw[0]) +
                                "x" + std::to_string(manifest.static_hw[1]) +
                                "; re-export without --static or tile the image", kExitUsage);
            }
            ph = manifest.static_hw[0];
            pw = manifest.static_hw[1];
        }
        Tensor input = pad_reflect(image_to_nchw(image, manifest.value_lo, manifest.value_hi), ph, pw);

        const auto load_start = Clock::now();
        std::unique_ptr<Runner> runner = info.create(manifest, opt, input.shape);
        const double load_ms = ms_since(load_start);

        auto run_start = Clock::now();
        Tensor output = runner->run(input);
        const double run_ms = ms_since(run_start);
        std::vector<double> more;
        for (int k = 1; k < opt.repeat; ++k) {
            run_start = Clock::now();
            output = runner->run(input);
            more.push_back(ms_since(run_start));
        }
        std::string timing = "run " + fixed(run_ms) + " ms";
        if (!more.empty()) {
            std::sort(more.begin(), more.end());
            timing = "first run " + fixed(run_ms) + " ms, median of the next " + std::to_string(more.size()) + " " +
                     fixed(more[more.size() / 2]) + " ms";
        }

        const int64_t s = manifest.contract.scale;
        const int64_t out_c = manifest.image_output().channels > 0 ? manifest.image_output().channels : channels;
        if (output.shape.size() != 4 || output.shape[0] != 1 || output.shape[1] != out_c ||
            output.shape[2] != ph * s || output.shape[3] != pw * s) {
            throw Error("the model returned " + output.shape_text() + " for input " + input.shape_text() +
                            "; the manifest promises 1x" + std::to_string(out_c) + "x" + std::to_string(ph * s) + "x" +
                            std::to_string(pw * s) + " (scale " + std::to_string(s) + ")", kExitArtifact);
        }
        output = crop(std::move(output), static_cast<int>(h * s), static_cast<int>(w * s));
        const int depth = opt.bit_depth ? opt.bit_depth : image.bit_depth;
        if (!opt.output_raw.empty()) write_npy(opt.output_raw, output);
        write_png(opt.output, nchw_to_image(output, depth, manifest.value_lo, manifest.value_hi));
        if (!opt.quiet) {
            std::printf("%s: %s, %s: %dx%d -> %lldx%lld (HxW, padded to %dx%d), %s, load %.1f ms, "
                        "total %.1f ms; wrote %s (%d-bit)%s%s\n",
                        info.program.c_str(), manifest.model_name.c_str(), runner->describe().c_str(), h, w,
                        static_cast<long long>(h * s), static_cast<long long>(w * s), ph, pw, timing.c_str(),
                        load_ms, ms_since(start), opt.output.c_str(), depth, opt.output_raw.empty() ? "" : " and ",
                        opt.output_raw.c_str());
        }
        return kExitOk;
    } catch (const Error& exc) {
        std::fprintf(stderr, "%s: error: %s\n", info.program.c_str(), one_line(exc.what()).c_str());
        return exc.exit_code();
    } catch (const std::bad_alloc&) {
        std::fprintf(stderr, "%s: error: out of memory (tile the image, or use a smaller input)\n",
                     info.program.c_str());
        return kExitFailure;
    } catch (const std::exception& exc) {
        std::fprintf(stderr, "%s: error: %s\n", info.program.c_str(), one_line(exc.what()).c_str());
        return kExitFailure;
    }
}

}  // namespace dk
