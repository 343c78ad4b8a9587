#include "deploykit/golden.hpp"

#include <cmath>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <iterator>
#include <limits>

#include <nlohmann/json.hpp>

#include "deploykit/sha256.hpp"

namespace dk {
namespace {

using json = nlohmann::json;
constexpr double kPsnrCap = 150.0;  // deploykit.verify.parity.PSNR_CAP_DB

std::string one_line(std::string text) {
    for (auto& ch : text)
        if (ch == '\n' || ch == '\r' || ch == '\t') ch = ' ';
    return text.size() > 600 ? text.substr(0, 597) + "..." : text;
}

json read_json(const std::filesystem::path& path, const std::string& hint) {
    std::ifstream in(path);
    if (!in) throw Error("no " + path.filename().string() + " at " + path.string() + "; " + hint, kExitArtifact);
    try {
        return json::parse(in);
    } catch (const std::exception& exc) {
        throw Error("cannot read " + path.string() + ": " + exc.what(), kExitArtifact);
    }
}

struct CheckOptions {
    std::string manifest, golden, artifact;
    double min_psnr = std::numeric_limits<double>::quiet_NaN();
    double max_abs = std::numeric_limits<double>::quiet_NaN();
    bool quiet = false;
    std::map<std::string, std::string> extra;
};

double number(const std::string& flag, const std::string& v) {
    try {
        size_t used = 0;
        const double x = std::stod(v, &used);
        if (used == v.size() && std::isfinite(x)) return x;
    } catch (const std::exception&) {
    }
    throw Error(flag + " takes a number, not '" + v + "'", kExitUsage);
}

CheckOptions parse_check(int argc, char** argv, const RunnerInfo& info) {
    CheckOptions o;
    for (int i = 1; i < argc; ++i) {
        std::string arg = argv[i], value;
        const bool has_inline = arg.rfind("--", 0) == 0 && arg.find('=') != std::string::npos;
        if (has_inline) {
            value = arg.substr(arg.find('=') + 1);
            arg = arg.substr(0, arg.find('='));
        }
        auto get = [&]() -> std::string {
            if (has_inline) return value;
            if (i + 1 >= argc) throw Error(arg + " needs a value (see --help)", kExitUsage);
            return argv[++i];
        };
        if (arg == "--manifest") o.manifest = get();
        else if (arg == "--check") o.golden = get();
        else if (arg == "--artifact") o.artifact = get();
        else if (arg == "--min-psnr") o.min_psnr = number(arg, get());
        else if (arg == "--max-abs") o.max_abs = number(arg, get());
        else if (arg == "--quiet") o.quiet = true;
        else {
            bool known = false;
            for (const auto& [flag, help] : info.extra)
                if (arg == flag) { o.extra[flag] = get(); known = true; }
            if (!known) throw Error("unknown argument '" + arg + "' with --check (see --help)", kExitUsage);
        }
    }
    if (o.manifest.empty() || o.golden.empty()) throw Error("--check needs --manifest and --check DIR", kExitUsage);
    return o;
}

// The weights an export was made from, as deploykit.verify.goldens.weights_id writes it.
std::string weights_id(const json& manifest) {
    const json w = manifest.value("weights", json::object());
    if (w.contains("sha256") && w["sha256"].is_string() && !w["sha256"].get<std::string>().empty())
        return w["sha256"].get<std::string>();
    return "random-init:" + std::to_string(w.value("seed", 0));
}

void check_identity(const json& g, const Manifest& m, const std::filesystem::path& dir) {
    const std::string again = "; re-save it with 'deploykit parity EXPORT --save-golden " + dir.string() + "'";
    if (g.value("schema", "") != "deploykit.golden" || g.value("schema_version", 0) > 1)
        throw Error(dir.string() + "/golden.json is not a deploykit golden this runner reads", kExitArtifact);
    if (g.value("model", "") != m.model_name)
        throw Error("golden " + dir.string() + " was made for " + g.value("model", "?") + ", this export is " +
                    m.model_name + again, kExitArtifact);
    const json raw = read_json(m.path, "run 'deploykit export' first");
    if (g.value("weights_sha256", "") != weights_id(raw))
        throw Error("golden " + dir.string() + " was made for other weights (" +
                    g.value("weights_sha256", "").substr(0, 16) + "), this export has " +
                    weights_id(raw).substr(0, 16) + again, kExitArtifact);
    if (g.value("manifest_sha256", "") != sha256_file(m.path))
        throw Error("golden " + dir.string() + " was made for another export of " + m.model_name +
                    " (manifest sha256 differs)" + again, kExitArtifact);
}

Tensor load_listed(const std::filesystem::path& dir, const json& entry) {
    const std::filesystem::path path = dir / entry.at("file").get<std::string>();
    std::error_code ec;
    if (!std::filesystem::is_regular_file(path, ec))
        throw Error("golden file " + path.string() + " is missing; re-save the golden", kExitArtifact);
    if (sha256_file(path) != entry.at("sha256").get<std::string>())
        throw Error("golden file " + path.string() + " does not match its sha256 in golden.json (modified or "
                    "corrupted); re-save the golden", kExitArtifact);
    return read_npy(path);
}

struct Figures {
    double count = 0, sum_abs = 0, sum_sq = 0, max_abs = 0;
    long long nonfinite = 0;

    // out and ref are [N, C, H, W] of one shape; only rows < h and columns < w are compared
    void add(const Tensor& ref, const Tensor& out, int64_t h, int64_t w) {
        const int64_t n = ref.dim(0), c = ref.dim(1), H = ref.dim(2), W = ref.dim(3);
        for (int64_t i = 0; i < n * c; ++i)
            for (int64_t y = 0; y < std::min(h, H); ++y)
                for (int64_t x = 0; x < std::min(w, W); ++x) {
                    const size_t k = static_cast<size_t>((i * H + y) * W + x);
                    const float v = out.data[k];
                    double d = 0.0;
                    if (!std::isfinite(v)) ++nonfinite;
                    else d = std::fabs(static_cast<double>(ref.data[k]) - static_cast<double>(v));
                    count += 1;
                    sum_abs += d;
                    sum_sq += d * d;
                    max_abs = std::max(max_abs, d);
                }
    }
    double psnr(double peak) const {
        if (count == 0) return 0.0;
        const double mse = sum_sq / count;
        return mse == 0.0 ? kPsnrCap : std::min(kPsnrCap, 10.0 * std::log10(peak * peak / mse));
    }
};

}  // namespace

Tensor read_npy(const std::filesystem::path& path) {
    std::ifstream in(path, std::ios::binary);
    const std::string bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    const auto bad = [&](const std::string& why) { return Error(path.string() + ": " + why, kExitArtifact); };
    if (bytes.size() < 10 || bytes.compare(0, 6, "\x93NUMPY") != 0) throw bad("not a NumPy .npy file");
    const int major = static_cast<unsigned char>(bytes[6]);
    size_t header_len = 0, start = 0;
    if (major == 1) {
        header_len = static_cast<unsigned char>(bytes[8]) | (static_cast<unsigned char>(bytes[9]) << 8);
        start = 10;
    } else if (major == 2 || major == 3) {
        if (bytes.size() < 12) throw bad("truncated header");
        for (int b = 3; b >= 0; --b) header_len = (header_len << 8) | static_cast<unsigned char>(bytes[8 + b]);
        start = 12;
    } else {
        throw bad(".npy format version " + std::to_string(major) + " is not supported");
    }
    if (bytes.size() < start + header_len) throw bad("truncated header");
    const std::string header = bytes.substr(start, header_len);
    if (header.find("'descr': '<f4'") == std::string::npos) throw bad("not little-endian float32 ('<f4')");
    if (header.find("'fortran_order': False") == std::string::npos) throw bad("Fortran order is not supported");
    const size_t open = header.find('(', header.find("'shape'")), close = header.find(')', open);
    if (open == std::string::npos || close == std::string::npos) throw bad("no shape in the header");
    std::vector<int64_t> shape;
    std::string dims = header.substr(open + 1, close - open - 1);
    size_t pos = 0;
    while (pos < dims.size()) {
        const size_t comma = dims.find(',', pos);
        const std::string item = dims.substr(pos, comma == std::string::npos ? std::string::npos : comma - pos);
        if (item.find_first_not_of(" ") != std::string::npos) shape.push_back(std::stoll(item));
        if (comma == std::string::npos) break;
        pos = comma + 1;
    }
    Tensor t(shape);
    const size_t payload = static_cast<size_t>(t.numel()) * sizeof(float), offset = start + header_len;
    if (bytes.size() != offset + payload) throw bad("payload size does not match the shape " + t.shape_text());
    std::memcpy(t.data.data(), bytes.data() + offset, payload);  // x86-64 / aarch64: little-endian
    return t;
}

bool wants_check(int argc, char** argv) {
    for (int i = 1; i < argc; ++i)
        if (std::strcmp(argv[i], "--check") == 0 || std::strncmp(argv[i], "--check=", 8) == 0) return true;
    return false;
}

int check_main(int argc, char** argv, const RunnerInfo& info) {
    const std::string program = info.program;
    try {
        const CheckOptions co = parse_check(argc, argv, info);
        const Manifest manifest = read_manifest(co.manifest);
        const std::filesystem::path dir(co.golden);
        const json g = read_json(dir / "golden.json", "make one with 'deploykit parity EXPORT --save-golden DIR'");
        check_identity(g, manifest, dir);
        // tolerance: the golden's FP32 one (these runners run FP32 packages) unless given
        double max_abs = co.max_abs, min_psnr = co.min_psnr;
        if (std::isnan(max_abs) && std::isnan(min_psnr)) {
            const json t = g.at("tolerances").at("fp32");
            if (t.contains("max_abs") && t["max_abs"].is_number()) max_abs = t["max_abs"].get<double>();
            if (t.contains("min_psnr_db") && t["min_psnr_db"].is_number()) min_psnr = t["min_psnr_db"].get<double>();
        }
        const auto range = g.value("value_range", std::vector<double>{0.0, 1.0});
        Options opt;
        opt.manifest = co.manifest;
        opt.artifact = co.artifact;
        opt.extra = co.extra;
        std::unique_ptr<Runner> runner;
        int failed = 0, cases = 0;
        for (const json& c : g.at("cases")) {
            Figures f;
            for (const json& r : c.at("runs")) {
                if (r.at("inputs").size() != 1)
                    throw Error(manifest.model_name + " takes " + std::to_string(r.at("inputs").size()) +
                                " inputs; the C++ runners feed one image", kExitUsage);
                const Tensor input = load_listed(dir, r.at("inputs").begin().value());
                const Tensor ref = load_listed(dir, r.at("output"));
                if (!runner) runner = info.create(manifest, opt, input.shape);
                const Tensor out = runner->run(input);
                if (out.shape != ref.shape)
                    throw Error("the model returned " + out.shape_text() + " for " + input.shape_text() +
                                "; the golden holds " + ref.shape_text(), kExitFailure);
                f.add(ref, out, r.at("h").get<int64_t>(), r.at("w").get<int64_t>());
            }
            const double psnr = f.psnr(range.at(1) - range.at(0));
            const bool ok = f.nonfinite == 0 && f.count > 0 && (std::isnan(max_abs) || f.max_abs <= max_abs) &&
                            (std::isnan(min_psnr) || psnr >= min_psnr);
            ++cases;
            failed += ok ? 0 : 1;
            if (!co.quiet || !ok)
                std::printf("%s: %s %s: max abs %.3g, mean abs %.3g, PSNR %.2f dB, NaN/Inf %lld: %s\n",
                            program.c_str(), runner ? runner->describe().c_str() : "", c.value("key", "?").c_str(),
                            f.max_abs, f.count ? f.sum_abs / f.count : 0.0, psnr, f.nonfinite, ok ? "pass" : "FAIL");
        }
        std::string tol;
        if (!std::isnan(max_abs)) tol += "max abs <= " + std::to_string(max_abs);
        if (!std::isnan(min_psnr)) tol += (tol.empty() ? "" : " and ") + std::string("PSNR >= ") +
                                          std::to_string(min_psnr) + " dB";
        std::printf("%s: check %s: %d of %d cases passed (%s, no NaN/Inf)\n", program.c_str(), dir.string().c_str(),
                    cases - failed, cases, tol.c_str());
        return failed || cases == 0 ? kExitFailure : kExitOk;
    } catch (const Error& exc) {
        std::fprintf(stderr, "%s: error: %s\n", program.c_str(), one_line(exc.what()).c_str());
        return exc.exit_code();
    } catch (const std::exception& exc) {
        std::fprintf(stderr, "%s: error: %s\n", program.c_str(), one_line(exc.what()).c_str());
        return kExitFailure;
    }
}

}  // namespace dk
