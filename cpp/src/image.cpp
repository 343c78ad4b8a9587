#include "deploykit/image.hpp"

#include <array>
#include <cctype>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <string>
#include <system_error>

#include <unistd.h>

#include "deploykit/error.hpp"

// stb is header-only: the implementations live in this translation unit, static, so nothing clashes with another
// copy of stb in a program that links this library.
#define STB_IMAGE_STATIC
#define STB_IMAGE_IMPLEMENTATION
#define STBI_FAILURE_USERMSG
#define STB_IMAGE_WRITE_STATIC
#define STB_IMAGE_WRITE_IMPLEMENTATION
#if defined(__GNUC__)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wunused-function"
#pragma GCC diagnostic ignored "-Wmissing-field-initializers"
#endif
#include <stb_image.h>
#include <stb_image_write.h>
#if defined(__GNUC__)
#pragma GCC diagnostic pop
#endif

namespace dk {
namespace {

void append_be32(std::vector<uint8_t>& out, uint32_t v) {
    out.push_back(static_cast<uint8_t>(v >> 24));
    out.push_back(static_cast<uint8_t>(v >> 16));
    out.push_back(static_cast<uint8_t>(v >> 8));
    out.push_back(static_cast<uint8_t>(v));
}

void append_chunk(std::vector<uint8_t>& out, const char type[4], const uint8_t* body, size_t size) {
    append_be32(out, static_cast<uint32_t>(size));
    const size_t start = out.size();
    out.insert(out.end(), type, type + 4);
    out.insert(out.end(), body, body + size);
    append_be32(out, crc32(out.data() + start, size + 4));
}

void collect(void* context, void* data, int size) {
    auto* out = static_cast<std::vector<uint8_t>*>(context);
    const auto* bytes = static_cast<const uint8_t*>(data);
    out->insert(out->end(), bytes, bytes + size);
}

// Minimal 16-bit PNG: IHDR (depth 16, colour type 0 gray / 2 RGB), one IDAT with filter byte 0 per row and
// big-endian samples, zlib-compressed by stb_image_write's deflate, IEND.
std::vector<uint8_t> encode_png16(const Image& image) {
    const size_t row_bytes = static_cast<size_t>(image.width) * image.channels * 2;
    std::vector<uint8_t> raw((row_bytes + 1) * image.height);
    for (int y = 0; y < image.height; ++y) {
        uint8_t* row = raw.data() + y * (row_bytes + 1);
        row[0] = 0;  // filter: none
        const uint16_t* src = image.samples.data() + static_cast<size_t>(y) * image.width * image.channels;
        for (size_t k = 0; k < row_bytes / 2; ++k) {
            row[1 + 2 * k] = static_cast<uint8_t>(src[k] >> 8);
            row[2 + 2 * k] = static_cast<uint8_t>(src[k] & 0xff);
        }
    }
    int zlen = 0;
    unsigned char* z = stbi_zlib_compress(raw.data(), static_cast<int>(raw.size()), &zlen, 8);
    if (z == nullptr) throw Error("PNG encoder: out of memory", kExitFailure);
    std::vector<uint8_t> out = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n'};
    std::vector<uint8_t> ihdr;
    append_be32(ihdr, static_cast<uint32_t>(image.width));
    append_be32(ihdr, static_cast<uint32_t>(image.height));
    ihdr.insert(ihdr.end(), {16, static_cast<uint8_t>(image.channels == 1 ? 0 : 2), 0, 0, 0});
    append_chunk(out, "IHDR", ihdr.data(), ihdr.size());
    append_chunk(out, "IDAT", z, static_cast<size_t>(zlen));
    STBIW_FREE(z);
    append_chunk(out, "IEND", nullptr, 0);
    return out;
}

}  // namespace

uint32_t crc32(const uint8_t* data, size_t size, uint32_t crc) {
    static const std::array<uint32_t, 256> table = [] {
        std::array<uint32_t, 256> t{};
        for (uint32_t n = 0; n < 256; ++n) {
            uint32_t c = n;
            for (int k = 0; k < 8; ++k) c = (c & 1u) ? 0xedb88320u ^ (c >> 1) : c >> 1;
            t[n] = c;
        }
        return t;
    }();
    crc = ~crc;
    for (size_t i = 0; i < size; ++i) crc = table[(crc ^ data[i]) & 0xffu] ^ (crc >> 8);
    return ~crc;
}

Image load_image(const std::filesystem::path& path, int channels) {
    if (channels != 1 && channels != 3) {
        throw Error("the model takes " + std::to_string(channels) +
                        "-channel images; the C++ runners read 1- or 3-channel image files", kExitUsage);
    }
    std::error_code ec;
    if (!std::filesystem::is_regular_file(path, ec)) {
        throw Error(path.string() + ": no such file", kExitUsage);
    }
    const std::string name = path.string();
    Image image;
    int w = 0, h = 0, n = 0;
    image.bit_depth = stbi_is_16_bit(name.c_str()) ? 16 : 8;
    if (image.bit_depth == 16) {
        stbi_us* pixels = stbi_load_16(name.c_str(), &w, &h, &n, channels);
        if (pixels == nullptr) {
            throw Error(name + ": cannot decode image (" + stbi_failure_reason() + ")", kExitUsage);
        }
        image.samples.assign(pixels, pixels + static_cast<size_t>(w) * h * channels);
        stbi_image_free(pixels);
    } else {
        stbi_uc* pixels = stbi_load(name.c_str(), &w, &h, &n, channels);
        if (pixels == nullptr) {
            throw Error(name + ": cannot decode image (" + stbi_failure_reason() +
                            "; supported: PNG 8/16-bit, JPEG, BMP, TGA, PNM)", kExitUsage);
        }
        image.samples.assign(pixels, pixels + static_cast<size_t>(w) * h * channels);
        stbi_image_free(pixels);
    }
    image.width = w;
    image.height = h;
    image.channels = channels;
    image.file_channels = n;
    return image;
}

std::vector<uint8_t> encode_png(const Image& image) {
    if (image.channels != 1 && image.channels != 3) {
        throw Error("PNG output takes 1 or 3 channels, not " + std::to_string(image.channels), kExitUsage);
    }
    if (image.bit_depth == 16) return encode_png16(image);
    std::vector<uint8_t> bytes8(image.samples.size());
    for (size_t i = 0; i < bytes8.size(); ++i) bytes8[i] = static_cast<uint8_t>(image.samples[i]);
    std::vector<uint8_t> out;
    if (!stbi_write_png_to_func(collect, &out, image.width, image.height, image.channels, bytes8.data(),
                                image.width * image.channels)) {
        throw Error("PNG encoder failed", kExitFailure);
    }
    return out;
}

void write_file_atomic(const std::filesystem::path& path, const std::vector<uint8_t>& bytes) {
    std::filesystem::path dir = path.has_parent_path() ? path.parent_path() : std::filesystem::path(".");
    std::error_code ec;
    if (!std::filesystem::is_directory(dir, ec)) {
        throw Error(path.string() + ": the directory " + dir.string() + " does not exist", kExitUsage);
    }
    std::filesystem::path tmp = dir / ("." + path.filename().string() + ".tmp-" + std::to_string(::getpid()));
    {
        std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
        out.write(reinterpret_cast<const char*>(bytes.data()), static_cast<std::streamsize>(bytes.size()));
        out.flush();
        if (!out) {
            std::filesystem::remove(tmp, ec);
            throw Error(path.string() + ": cannot write (" + dir.string() + " not writable or disk full)", kExitUsage);
        }
    }
    std::filesystem::rename(tmp, path, ec);
    if (ec) {
        std::error_code ignore;
        std::filesystem::remove(tmp, ignore);
        throw Error(path.string() + ": cannot move the written file into place (" + ec.message() + ")", kExitUsage);
    }
}

void write_png(const std::filesystem::path& path, const Image& image) {
    std::string suffix = path.extension().string();
    for (auto& ch : suffix) ch = static_cast<char>(std::tolower(static_cast<unsigned char>(ch)));
    if (suffix != ".png") {
        throw Error(path.string() + ": the C++ runners write .png files only", kExitUsage);
    }
    write_file_atomic(path, encode_png(image));
}

}  // namespace dk
