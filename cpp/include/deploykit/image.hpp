// Image files <-> samples. Reading: stb_image (PNG 8 / 16 bit, JPEG, BMP, TGA, ...; 16-bit only from PNG via
// stbi_load_16). Writing: PNG only. 8-bit through stb_image_write; 16-bit through a minimal PNG encoder in
// image.cpp (IHDR bit depth 16, filter type 0 rows, big-endian samples, zlib stream from stb_image_write's
// stbi_zlib_compress, CRC-32 per chunk), because stb_image_write has no 16-bit PNG path. This keeps the C++ side
// free of libpng. Files are written to a temp name in the same directory and renamed into place.
#pragma once

#include <cstdint>
#include <filesystem>
#include <vector>

namespace dk {

struct Image {
    int width = 0;
    int height = 0;
    int channels = 0;               // samples per pixel after conversion (1 or 3)
    int bit_depth = 8;              // 8 or 16: what the file held, and what the output is written with
    int file_channels = 0;          // channels in the file before conversion (alpha is dropped)
    std::vector<uint16_t> samples;  // interleaved H x W x C, 0..255 or 0..65535
};

// Load `path` converted to `channels` (1 = gray, 3 = RGB). Throws dk::Error (kExitUsage) on a missing or
// undecodable file.
Image load_image(const std::filesystem::path& path, int channels);

// Encode as PNG (8- or 16-bit per image.bit_depth) in memory.
std::vector<uint8_t> encode_png(const Image& image);

// Write bytes atomically (temp file in the same directory + rename). Throws dk::Error (kExitUsage).
void write_file_atomic(const std::filesystem::path& path, const std::vector<uint8_t>& bytes);

// encode_png + write_file_atomic; refuses other suffixes than .png.
void write_png(const std::filesystem::path& path, const Image& image);

// CRC-32 (ISO-HDLC, as PNG chunks use).
uint32_t crc32(const uint8_t* data, size_t size, uint32_t crc = 0);

}  // namespace dk
