// dk_selftest: checks of dkcore without a model, plus two helpers tests/test_cpp.py compares with the Python side.
//
//   dk_selftest                          internal checks; prints "dk_selftest: N checks passed", exit 1 on a failure
//   dk_selftest pad IN H W OUT.npy       IN as [1, C, H0, W0] floats, reflect-padded right/bottom to H x W
//   dk_selftest copy IN OUT.png [8|16]   IN -> floats -> OUT with the input's (or the given) bit depth
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <string>

#include "deploykit/error.hpp"
#include "deploykit/image.hpp"
#include "deploykit/manifest.hpp"
#include "deploykit/sha256.hpp"
#include "deploykit/tensor.hpp"

namespace {

int g_checks = 0, g_failed = 0;

void check(bool ok, const std::string& what) {
    ++g_checks;
    if (!ok) {
        ++g_failed;
        std::fprintf(stderr, "dk_selftest: FAILED: %s\n", what.c_str());
    }
}

void internal_checks() {
    // reflect without edge repeat, periodic: length 4 -> 0 1 2 3 2 1 0 1 2 ...
    const int64_t expect[] = {0, 1, 2, 3, 2, 1, 0, 1, 2, 3, 2};
    for (int64_t i = 0; i < 11; ++i) check(dk::reflect_index(i, 4) == expect[i], "reflect_index(" + std::to_string(i) + ", 4)");
    check(dk::reflect_index(5, 1) == 0, "reflect_index on length 1");

    dk::Contract c;
    c.multiple_of = 8;
    check(dk::padded_size(40, 52, c) == std::make_pair(40, 56), "padded_size 40x52 / 8");
    c.min_size = 64;
    check(dk::padded_size(40, 52, c) == std::make_pair(64, 64), "padded_size with min_size 64");
    c = dk::Contract{};
    c.square = true;
    check(dk::padded_size(30, 50, c) == std::make_pair(50, 50), "padded_size square");

    dk::Tensor t({1, 1, 2, 3});
    for (int k = 0; k < 6; ++k) t.data[static_cast<size_t>(k)] = static_cast<float>(k);
    dk::Tensor p = dk::pad_reflect(t, 4, 5);  // rows 0 1 0 1, cols 0 1 2 1 0
    const float row0[] = {0, 1, 2, 1, 0}, row1[] = {3, 4, 5, 4, 3};
    bool ok = p.shape_text() == "1x1x4x5";
    for (int y = 0; y < 4; ++y)
        for (int x = 0; x < 5; ++x) ok = ok && p.data[static_cast<size_t>(y * 5 + x)] == (y % 2 ? row1 : row0)[x];
    check(ok, "pad_reflect 2x3 -> 4x5");
    check(dk::crop(p, 2, 3).data == t.data, "crop back");

    // rounding: half to even like np.rint, clamping, NaN -> 0
    dk::Tensor v({1, 1, 1, 5});
    v.data = {0.5f / 255.f, 1.5f / 255.f, -0.2f, 1.7f, std::nanf("")};
    dk::Image q = dk::nchw_to_image(v, 8, 0.f, 1.f);
    check(q.samples[0] == 0 && q.samples[1] == 2 && q.samples[2] == 0 && q.samples[3] == 255 && q.samples[4] == 0,
          "quantise 8-bit (half-even, clamp, NaN)");

    check(dk::sha256_bytes("abc") == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad", "sha256(abc)");
    check(dk::sha256_bytes("") == "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855", "sha256('')");
    const std::string million(1000000, 'a');
    check(dk::sha256_bytes(million) == "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0",
          "sha256(a x 1e6)");
    const uint8_t crc_in[] = {'1', '2', '3', '4', '5', '6', '7', '8', '9'};
    check(dk::crc32(crc_in, 9) == 0xcbf43926u, "crc32 check value");

    check(dk::parse_version("10.9.0.34") == std::vector<int>{10, 9, 0, 34}, "parse_version");
    check(dk::parse_version("8.9") == std::vector<int>{8, 9}, "parse_version cc");

    // 16-bit PNG written by our encoder reads back through stb_image exactly
    const auto dir = std::filesystem::temp_directory_path();
    const auto png = dir / ("dk_selftest_" + std::to_string(std::rand()) + ".png");
    dk::Image img;
    img.width = 7;
    img.height = 3;
    img.channels = 3;
    img.bit_depth = 16;
    for (int k = 0; k < 7 * 3 * 3; ++k) img.samples.push_back(static_cast<uint16_t>(k * 3000 + 17));
    dk::write_png(png, img);
    dk::Image back = dk::load_image(png, 3);
    check(back.bit_depth == 16 && back.samples == img.samples && back.width == 7 && back.height == 3,
          "16-bit PNG round trip");
    img.bit_depth = 8;
    for (auto& s : img.samples) s = static_cast<uint16_t>(s % 256);
    dk::write_png(png, img);
    back = dk::load_image(png, 3);
    check(back.bit_depth == 8 && back.samples == img.samples, "8-bit PNG round trip");
    std::filesystem::remove(png);

    try {
        dk::load_image(dir / "dk_selftest_missing.png", 3);
        check(false, "missing image raises");
    } catch (const dk::Error& e) {
        check(e.exit_code() == dk::kExitUsage, "missing image -> usage exit code");
    }
}

}  // namespace

int main(int argc, char** argv) {
    try {
        const std::string mode = argc > 1 ? argv[1] : "";
        if (mode == "pad" && argc == 6) {
            dk::Image image = dk::load_image(argv[2], 3);
            dk::Tensor x = dk::image_to_nchw(image, 0.f, 1.f);
            dk::write_npy(argv[5], dk::pad_reflect(x, std::stoi(argv[3]), std::stoi(argv[4])));
            return 0;
        }
        if (mode == "copy" && (argc == 4 || argc == 5)) {
            dk::Image image = dk::load_image(argv[2], 3);
            const int depth = argc == 5 ? std::stoi(argv[4]) : image.bit_depth;
            dk::write_png(argv[3], dk::nchw_to_image(dk::image_to_nchw(image, 0.f, 1.f), depth, 0.f, 1.f));
            return 0;
        }
        if (!mode.empty()) {
            std::fprintf(stderr, "usage: dk_selftest | dk_selftest pad IN H W OUT.npy | dk_selftest copy IN OUT.png [8|16]\n");
            return dk::kExitUsage;
        }
        internal_checks();
    } catch (const dk::Error& e) {
        std::fprintf(stderr, "dk_selftest: error: %s\n", e.what());
        return e.exit_code();
    }
    if (g_failed) {
        std::fprintf(stderr, "dk_selftest: %d of %d checks failed\n", g_failed, g_checks);
        return 1;
    }
    std::printf("dk_selftest: %d checks passed\n", g_checks);
    return 0;
}
